"""Emitter: integer IR -> C sources, rendered from the Jinja2 templates in templates/.

The only place that writes C. One Environment (StrictUndefined); literals are formatted by the
helpers in ``cformat``; the context is plain data (no numpy inside the templates).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.emit.window_plan import window_context
from lstm_embed.kinds.masking import mask_reach, masking_index
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.qir import QModel
from lstm_embed.resources import templates_dir
from lstm_embed.version import __version__


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["c_comment"] = cformat.c_comment
    env.filters["c_int_array"] = cformat.c_int_array
    env.filters["c_float"] = cformat.c_float
    return env


def render(template_name: str, **context: Any) -> str:
    return environment().get_template(template_name).render(**context)


def _table_context(table: fp.ActivationTable) -> dict[str, Any]:
    """The stored table: tanh's, signed over [-range, range]."""
    entries = table.signed_entries
    return {
        "name": table.name,
        "description": f"tanh(u) on [-{2**table.log2_range}, {2**table.log2_range}]",
        "count": len(table.entries) - 1,
        "size": len(entries),
        "index_shift": table.index_shift,
        "entries": cformat.c_int_array(entries),
    }


def _mve_pairs(table: fp.ActivationTable) -> str:
    """{E[j], E[j+1] - E[j]} as the low and high halfwords of one int32 per knot: one word
    gather per lookup on MVE (two halfword gathers need two base addresses, which GCC 12
    recomputes per lookup)."""
    e = table.signed_entries
    slope = np.append(np.diff(e), 0)
    return cformat.c_int_array((slope << 16) + (e & 0xFFFF), per_line=8)


def _lookup_context(lookup: fp.SignedLookup) -> dict[str, Any]:
    """Constants of fp.signed_lookup; the DSP form packs {2^shift - frac, frac} as halfwords
    (frac * 65535 + 2^shift), so one SMLAD does both products."""
    if 1 << lookup.shift > fp.INT16_MAX:
        raise ValueError("table interpolation needs shift <= 14")  # guarded by the CLI's range
    return {
        "shift": lookup.shift,
        "limit": lookup.limit,
        "offset": lookup.offset,
        "out_shift": lookup.out_shift,
        "mask": (1 << lookup.shift) - 1,
        "saturate_bits": lookup.limit.bit_length(),
    }


def wire(model: QModel) -> list[dict[str, str]]:
    """C expressions each layer reads from (src), writes to (dst) and works in (tmp).

    Recurrent layers write their output into their own state; other layers write into one of
    the two ping-pong scratch buffers (never the one they read), the head's last layer into
    y_q. The head is called with the advance's output as ``h_q15``, which may be a scratch
    buffer (a per-step layer with state that is not recurrent ends the advance): the head's
    first layer then writes the other one.
    """
    wiring, src, src_buffer = [], "x_q", None
    last = len(model.layers) - 1
    for index, layer in enumerate(model.layers):
        if index == model.head_start:
            src = "h_q15"
        free = 1 if src_buffer == 0 else 0
        scratch = f"state->scratch_q[{free}]"
        if layer.recurrent:
            dst = f"state->h_q15_{index}"
            wiring.append({"src": src, "dst": dst, "tmp": scratch})
            src, src_buffer = dst, None
        else:
            dst = "y_q" if index == last and index >= model.head_start else scratch
            wiring.append({"src": src, "dst": dst, "tmp": ""})
            src, src_buffer = dst, free
    return wiring


def scratch_size(model: QModel) -> int:
    """Widest value a layer keeps in a ping-pong scratch buffer (the last layer writes y_q
    when it is in the head)."""
    last = len(model.layers) - 1
    widths = [la.scratch_width() for la in model.layers[:-1]]
    widths += [la.scratch_width() for la in model.layers[-1:] if last < model.head_start]
    return max(widths, default=1)


def stack_arrays(model: QModel, core: str = "all") -> dict[str, int]:
    """The largest local arrays of one layer's step, per kernel the file holds (layers run one
    after another, so the largest layer's is the model's), for the header's stack statement."""
    sizes = {kernel: 0 for kernel in core_kernels(core)}
    for leaf in model.leaf_layers:
        for kernel, size in leaf.kernel_stack_bytes().items():
            if kernel in sizes:
                sizes[kernel] = max(sizes[kernel], size)
    return sizes


def shared_scratch(model: QModel, core: str = "all") -> list[dict[str, Any]]:
    """Scratch members several layers may share, each as large as its largest user; a member
    only some kernels use ("kernels") only where the file holds one of them."""
    merged: dict[str, dict[str, Any]] = {}
    emitted = set(core_kernels(core))
    for layer in model.layers:
        for field in layer.shared_scratch():
            if not emitted & set(field.get("kernels", emitted)):
                continue
            old = merged.get(field["name"])
            if old is None or field["size"] > old["size"]:
                merged[field["name"]] = dict(field)
    return list(merged.values())


def _member(field: dict[str, Any], index: int) -> str:
    """The state struct member of a layer's field: <name>_<index>, then the field's suffix
    (a Bidirectional's inner layers: <name>_<index>f, <name>_<index>b)."""
    return f"{field['name']}_{index}{field.get('suffix', '')}"


def _state_groups(fields: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
    """State members zeroed by reset(), grouped by length (one loop each); a member with
    start values (``initial``: a constant initial state) has a loop of its own."""
    groups: dict[int, list[str]] = {}
    started = []
    for field in fields:
        if "initial" in field:
            started.append({"size": field["size"], "fields": [_member(field, index)],
                            "type": field["type"], "initial": field["initial"]})  # fmt: skip
        else:
            groups.setdefault(field["size"], []).append(_member(field, index))
    zeroed = [{"size": size, "fields": names, "initial": None} for size, names in groups.items()]
    return zeroed + started


def layer_contexts(model: QModel) -> list[dict[str, Any]]:
    contexts = []
    for index, (layer, wiring) in enumerate(zip(model.layers, wire(model), strict=True)):
        fields = [{**f, "member": _member(f, index)} for f in layer.state_fields()]
        contexts.append(
            {
                **layer.context(index),
                "stateful": bool(layer.stateful),
                **wiring,
                "kind": layer.kind,
                "masked": mask_reach(model.layers)[index],  # skips masked timesteps
                "template": layer.template,
                "call_template": layer.template.replace(".c.j2", "_call.c.j2"),
                "state_fields": fields,
                "state_groups": _state_groups(fields, index),
            }
        )
    return contexts


HARD_SIGMOID_DESCRIPTIONS = {
    "hard_sigmoid": "relu6(z + 3) / 6 = clamp(z / 6 + 1/2, 0, 1)",
    "hard_sigmoid_keras2": "Keras 2's hard_sigmoid: clamp(0.2 z + 1/2, 0, 1)",
}


def _hard_sigmoid_slope(model: QModel) -> dict[str, int]:
    """The one hard_sigmoid slope of the model's C (Keras 2 and 3 differ; a file has one)."""
    kinds = {la.recurrent_activation for la in model.leaf_layers if la.hard_sigmoid}
    if len(kinds) > 1:
        raise ValueError(f"{model.source}: layers mix hard_sigmoid slopes ({sorted(kinds)})")
    kind = kinds.pop() if kinds else "hard_sigmoid"
    slope = fp.HARD_SIGMOID_SLOPES[kind]
    return {
        "multiplier": slope.multiplier,
        "shift": slope.shift,
        "description": HARD_SIGMOID_DESCRIPTIONS[kind],
    }


# --core: which kernels' layouts the .c holds. "all": every one, chosen at compile time by the
# core's features; a core: its optimized kernel only (the DSP kernel builds anywhere, its three
# instructions in C where the core lacks them; MVE keeps the reference kernel for other cores).
PLAIN_CORES = ("m0", "m0plus", "m3", "m23")
DSP_CORES = ("m4", "m7", "m33", "m35p")
MVE_CORES = ("m55", "m85")
CORE_KERNELS: dict[str, tuple[str, ...]] = {
    "all": ("reference", "plain", "dsp", "mve"),
    "portable": ("reference",),
    **{core: ("plain",) for core in PLAIN_CORES},
    **{core: ("dsp",) for core in DSP_CORES},
    **{core: ("mve", "reference") for core in MVE_CORES},
}


# the summary's name of each kernel's cores (the common ones of the lists above)
KERNEL_LABELS = {"plain": "M0/M3", "dsp": "M4/M7/M33", "mve": "M55", "reference": "portable"}


def core_kernels(core: str) -> tuple[str, ...]:
    if core not in CORE_KERNELS:
        raise ValueError(f"--core {core!r} is not supported (supported: {', '.join(CORE_KERNELS)})")
    return CORE_KERNELS[core]


def layout_note(folder_core: str, board_core: str) -> str | None:
    """A line for a folder built for a core whose own optimized kernel it does not hold."""
    own = CORE_KERNELS[board_core][0]
    held = CORE_KERNELS.get(folder_core, ())
    if own in held:
        return None
    return (
        f"converted with --core {folder_core}, so {board_core} runs the {held[0]} kernel, not its"
        f" own {own} kernel (convert with --core {board_core}, or --core all, for that)"
    )


def model_context(model: QModel, name: str, core: str = "all") -> dict[str, Any]:
    name = cformat.c_identifier(name)
    layers = layer_contexts(model)
    head = layers[model.head_start :]
    uses = set().union(*(la.uses() for la in model.layers))
    dense_activations = {f.removeprefix("dense_") for f in uses if f.startswith("dense_")}
    table_users = {f.removeprefix("table_") for f in uses if f.startswith("table_")}
    # tables some layer reads (quantize always builds tanh; a relu SimpleRNN model needs none)
    needed = set().union(*(la.tables_needed() for la in model.layers))
    tables = [t for t in model.tables.values() if t.name in {fp.TABLE_OF[f] for f in needed}]
    tanh_table = model.tables["tanh"]
    # the recurrent kinds the file holds, for its comments ("Fixed-point GRU model")
    recurrent = dict.fromkeys(la.type_name for la in model.leaf_layers if la.recurrent)
    return {
        "model_kinds": " and ".join(recurrent),
        "tool_version": __version__,
        "core": core,
        "kernels": list(core_kernels(core)),
        "source": model.source,
        "name": name,
        "NAME": name.upper(),
        "input_size": model.input_size,
        "output_size": model.output_size,
        "timesteps": model.timesteps or 0,
        "return_sequences": model.return_sequences,
        "masking": masking_index(model.layers) is not None,
        # ids below this number in, one per timestep (an Embedding first); 0: features
        "input_ids": model.layers[0].input_dim if model.layers[0].takes_ids else 0,
        "output_scale": cformat.c_float(model.output_scale),
        "input_inv_scale": cformat.c_float_array(model.input_inv_scale),
        "z_frac_bits": fp.Z_FRAC_BITS,
        "layers": layers,
        # every layer with a template of its own, in the file's order: what kinds that bring
        # shared helpers once (GRU) look through
        "leaf_layers": [inner for la in layers for inner in la.get("inners", [la])],
        "advance_layers": layers[: model.head_start],
        "advance_output": layers[model.head_start - 1]["dst"],
        "head_layers": head,
        # a head layer reads the state when it writes there or uses scratch (which lives in
        # the state struct, e.g. softmax's logits); else the head leaves it unused
        "head_uses_state": any(
            "state->" in la["dst"] or q.shared_scratch()
            for la, q in zip(head, model.layers[model.head_start :], strict=True)
        ),
        # the Dense rows and their activations, also for kinds that run them (Conv1D)
        "dense_layers": [
            la for la, q in zip(layers, model.layers, strict=True) if "dense" in q.uses()
        ],
        "dense_activations": sorted(dense_activations),
        # activations evaluated outside the recurrent kernels (Dense heads, activation layers)
        "table_users": sorted(dense_activations | table_users),
        "scratch_size": scratch_size(model),
        "shared_scratch": shared_scratch(model, core),
        "stack_arrays": stack_arrays(model, core),
        "softmax_logit_max": fp.SOFTMAX_LOGIT_MAX,
        "exp_poly": {
            "u_max": fp.EXP_U_MAX,
            "log2e_q30": fp.EXP_LOG2E_Q30,
            "v_frac_bits": fp.EXP_V_FRAC_BITS,
            "v_shift": 30 + fp.Z_FRAC_BITS - fp.EXP_V_FRAC_BITS,
            "poly": list(fp.EXP_POLY_Q30),
            "zero_from": fp.EXP_ZERO_FROM,
        },
        "tables": [_table_context(t) for t in tables],
        "table_by_name": {t.name: _table_context(t) for t in tables},
        "mve_pairs": _mve_pairs(tanh_table),
        "mve_pairs_count": len(tanh_table.signed_entries),
        # sigmoid and tanh read the one tanh table (fp.signed_lookup)
        "lookups": {
            "sigmoid": _lookup_context(fp.sigmoid_lookup(tanh_table)),
            "tanh": _lookup_context(fp.tanh_lookup(tanh_table)),
        },
        "hard_sigmoid": _hard_sigmoid_slope(model),
        "uses": {
            flag: flag in uses
            for flag in (
                "hard_sigmoid",
                "softmax",
                "lstm",
                "wide_lstm",
                "lstm_unbounded",
                "wide_lstm_unbounded",
                "portable_recurrent",
                "optimized_recurrent",
                "wide_dense",
                "quad_rows",
                "depthwise",
                "conv2d_pairs",
                "affine",
                "rsqrt",
                "relu_family",
                "wide_rows",
                "blocked_rows",
                "window_geometry",
                "div_round",
                "exp",
            )
        }
        | {"sigmoid": "sigmoid" in needed, "tanh": "tanh" in needed},
        "wide_acc_shift": fp.WIDE_ACC_SHIFT,
        "int8_block_columns": fp.INT8_BLOCK_COLUMNS,
        **_chain_context(model, layers),
    }


def _chain_context(model: QModel, layers: list[dict[str, Any]]) -> dict[str, Any]:
    """What run() does besides stepping: which layers it resets (not the stateful ones), and
    for a run-only model the layer-by-layer window (``window_wiring``)."""
    context: dict[str, Any] = {
        "stateful": model.stateful,
        "stateful_names": ", ".join(
            f"'{cformat.c_comment(la.name)}'" for la in model.stateful_layers
        ),
        "restart_layers": [la for la in layers if la["state_groups"] and not la["stateful"]],
        "streaming": model.streaming,
        "run_only_reason": cformat.c_comment(model.run_only_reason),
    }
    if model.streaming:
        return context
    return context | window_context(model, layers)


# The C files of a model NAME, each with its template: the API, the one translation unit (the
# layer parameters, the state and the entry points), and the two files NAME.c includes once
# each, beside it: every constant array, and the helpers and kernels.
MODEL_FILES = (
    ("model.h.j2", ".h"),
    ("model.c.j2", ".c"),
    ("model_weights.h.j2", "_weights.h"),
    ("model_kernels.h.j2", "_kernels.h"),
)


def model_file_names(name: str) -> tuple[str, ...]:
    """The C files convert writes for model ``name``: NAME.h, NAME.c, NAME_weights.h,
    NAME_kernels.h. Builds compile NAME.c alone; the others are read through it."""
    return tuple(f"{cformat.c_identifier(name)}{suffix}" for _, suffix in MODEL_FILES)


def emit_model(
    model: QModel, out_dir: Path, name: str, core: str = "all", bench_layer: int | None = None
) -> list[Path]:
    """Render the files of MODEL_FILES into out_dir (``core``: see CORE_KERNELS); returns the
    files written."""
    context = model_context(model, name, core)
    # `lstm-embed bench` only: the bench harness's markers around this layer's call
    context["bench_layer"] = bench_layer
    written = []
    for (template, _), file_name in zip(MODEL_FILES, model_file_names(name), strict=True):
        path = out_dir / file_name
        path.write_text(render(template, **context))
        written.append(path)
    return written
