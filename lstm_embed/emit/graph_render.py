"""Emitter of a graph: the C of a quantized graph, rendered from templates/graph_model.*.j2 with
the same layer templates as a chain.

run() goes node by node over the window, in topological order (a node depends only on its
inputs, so this equals any other order bit for bit): a layer that steps is called once per
timestep, a whole-window layer (Conv1D "same", Bidirectional) once. Where each tensor lives:
- a model input: the caller's pointer ``x_<input>``;
- a model output: the caller's pointer ``y_<output>``, written by its node (copied there at
  the end when it lives elsewhere: a returned state, an input);
- a recurrent layer's last output and its returned states (return_state=True): the layer's
  own state members (no copy);
- any other tensor: a slice of ``state->arena_q`` planned by liveness (``emit.buffers``).
step() (one timestep) exists when every node can run one timestep at a time: the nodes run in
the same order for one timestep; those whose input is a vector (after a recurrent layer that
returns its last output, or a static input) run every step too, as a chain's head does.
A mask is a tensor too (int16 0/1 per timestep, in the arena): Masking's call writes it, and
a recurrent node that reads one skips its call at a masked timestep (its state, and so its
output, stay as they are).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.emit.buffers import Interval, plan
from lstm_embed.emit.render import MODEL_FILES, layer_contexts, model_context, render
from lstm_embed.kinds.base import IRError
from lstm_embed.quantize.graph_quantizer import QGraph
from lstm_embed.quantize.qir import QModel

GRAPH_FILES = (
    ("graph_model.h.j2", ".h"),
    ("graph_model.c.j2", ".c"),
    ("model_weights.h.j2", "_weights.h"),
    ("model_kernels.h.j2", "_kernels.h"),
)
assert [suffix for _, suffix in GRAPH_FILES] == [suffix for _, suffix in MODEL_FILES]


def window_timesteps(qgraph: QGraph) -> int:
    """The window length of the graph: its first sequence input's (NAME_TIMESTEPS).

    Sequences may have other lengths (inputs of different lengths, a Concatenate on the time
    axis): then every node loops over its own input's declared length and run() takes whole
    windows (``fixed_windows``). Refused: a layer other than a time-axis Concatenate that
    changes the timesteps of a sequence."""
    graph = qgraph.graph
    steps = [t.shape[0] for t in graph.inputs if t.sequence]
    if None in steps:
        raise IRError(
            f"{graph.source}: a graph's C holds sequences in buffers sized by the timesteps;"
            " an input has none (Input((None, m))): build the model with Input((T, m))"
        )
    if not steps:
        raise IRError(f"{graph.source}: the graph has no sequence input")
    for node in graph.nodes:
        first, out = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
        keeps = first.sequence and out.sequence and not node.layer.joins_timesteps
        if keeps and out.shape[0] != first.shape[0]:
            raise IRError(
                f"{graph.source}: tensor '{out.name}' has {out.shape[0]} timesteps, its"
                f" input {first.shape[0]}; in a graph, supported: layers that keep the"
                " timesteps or make one vector, and Concatenate on the time axis"
            )
    return int(steps[0])  # type: ignore[arg-type]


def fixed_windows(qgraph: QGraph) -> bool:
    """Sequences of different lengths: run() takes whole windows, nodes loop over constants."""
    return len({t.shape[0] for t in qgraph.graph.tensors.values() if t.sequence}) > 1


def _c(name: str) -> str:
    """A tensor name as part of a C identifier."""
    text = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    return text if text[:1].isalpha() else f"t_{text}"


def _pseudo_chain(qgraph: QGraph, timesteps: int) -> QModel:
    """The graph's layers as a QModel, for what every model's C shares (tables, kernels,
    helpers, state fields): the layer templates see the same context either way."""
    first = qgraph.graph.inputs[0]
    return QModel(
        name=qgraph.name,
        source=qgraph.source,
        input_size=first.features,
        timesteps=timesteps,
        input_scale=qgraph.scales[first.name].astype(np.float32),
        output_scale=1.0,
        layers=qgraph.graph.layers,
        tables=qgraph.tables,
        params=qgraph.params,
    )


def storage(qgraph: QGraph) -> tuple[dict[str, str], list[Interval], list[dict[str, Any]]]:
    """Where each tensor lives (C expressions), the arena tensors to plan, the outputs."""
    graph = qgraph.graph
    where: dict[str, str] = {t.name: f"x_{_c(t.name)}" for t in graph.inputs}
    for index, node in enumerate(graph.nodes):
        layer = node.layer
        if node.returns_state:
            for out, member in zip(node.outputs[1:], layer.state_members(), strict=True):
                where[out] = f"state->{member}_{index}"
        out = graph.tensors[node.outputs[0]]
        if layer.recurrent and not out.sequence and not _whole_window(layer, True):
            where[out.name] = f"state->{layer.state_fields()[0]['name']}_{index}"
    outputs, used = [], set()
    for position, name in enumerate(graph.outputs):
        c_name = f"y_{_c(name)}" if name not in used else f"y_{_c(name)}_{position}"
        used.add(name)
        copy = name in where
        if not copy:
            where[name] = c_name
        outputs.append({"tensor": name, "c_name": c_name, "copied": copy})
    intervals = []
    for index, node in enumerate(graph.nodes):
        for out in node.outputs:
            if out in where:
                continue
            readers = [i for i, n in enumerate(graph.nodes) if out in n.reads]
            size = graph.tensors[out].values()
            intervals.append(Interval(out, size, index, max(readers, default=index)))
    return where, intervals, outputs


def _whole_window(layer: Any, sequence_in: bool) -> bool:
    """Called once over the window: a kind with its own window function, or a layer of
    several inputs that needs every timestep (Attention)."""
    several = layer.arity is None and not layer.streaming
    return sequence_in and (layer.window is not None or several)


def node_wiring(qgraph: QGraph, where: dict[str, str], fixed: bool = False) -> list[dict[str, Any]]:
    """What each node's call reads and writes: ``srcs`` (per timestep ``t`` when it loops),
    ``dst``, the copy of a recurrent layer's state into its sequence output."""
    graph = qgraph.graph
    wiring = []
    for index, node in enumerate(graph.nodes):
        layer = node.layer
        ins = [graph.tensors[t] for t in node.inputs]
        out = graph.tensors[node.outputs[0]]
        sequence_in = ins[0].sequence
        whole = _whole_window(layer, sequence_in)
        loops = sequence_in and not whole
        steps = str(ins[0].shape[0]) if fixed else "timesteps"
        backwards = bool(layer.go_backwards)
        at = f"({steps} - 1 - t)" if backwards else "t"
        srcs = [
            f"{where[t.name]} + {at} * {t.features}" if loops and t.sequence else where[t.name]
            for t in ins
        ]
        dst = where[out.name]
        copy = ""
        if layer.recurrent and not whole:
            state_h = f"state->{layer.state_fields()[0]['name']}_{index}"
            if out.sequence:
                copy = f"{dst} + t * {out.features}"
            dst = state_h
        elif loops and out.sequence:
            dst = f"{dst} + t * {out.features}"
        wiring.append(
            {
                **_mask_wiring(node, where, f"{at} * 1" if loops else "0", whole),
                "srcs": srcs,
                "src": srcs[0],
                "dst": dst,
                "tmp": "state->scratch_q[0]",
                "loops": loops,
                "loop_steps": steps,
                "whole_window": whole,
                **_window_steps(layer, ins[0], fixed and whole),
                "copy_to": copy,
                "copy_from": dst,
                "copy_width": out.features,
                "backwards": backwards,
                "inputs_text": ", ".join(node.inputs),
                "outputs_text": ", ".join(node.outputs),
            }
        )
    return wiring


def step_wiring(qgraph: QGraph, where: dict[str, str]) -> list[dict[str, Any]]:
    """The nodes for one timestep (step()): sequences hold one timestep, vectors themselves."""
    graph = qgraph.graph
    wiring = []
    for index, node in enumerate(graph.nodes):
        layer = node.layer
        srcs = [where[t] for t in node.inputs]
        dst = where[node.outputs[0]]
        if layer.recurrent:
            dst = f"state->{layer.state_fields()[0]['name']}_{index}"
        out = graph.tensors[node.outputs[0]]
        copy = where[out.name] if layer.recurrent and where[out.name] != dst else ""
        wiring.append({"srcs": srcs, "src": srcs[0], "dst": dst, "tmp": "state->scratch_q[0]",
                       "copy_to": copy, "copy_from": dst, "copy_width": out.features,
                       **_mask_wiring(node, where, "0")})  # fmt: skip
    return wiring


def _window_steps(layer: Any, first: Any, fixed_whole: bool) -> dict[str, int]:
    """A whole-window node of a fixed-window graph runs over its input's declared length
    (a time-axis Concatenate knows its operands' lengths itself)."""
    return {"window_steps": first.shape[0]} if fixed_whole and not layer.joins_timesteps else {}


def _mask_wiring(node: Any, where: dict[str, str], at: str, whole: bool = False) -> dict:
    """The mask a node writes (``mask_dst``) or reads at timestep ``at`` (``mask_src``), or,
    called once over the window, reads whole (``mask_ptr``)."""
    wiring = {}
    if node.mask_output:
        wiring["mask_dst"] = f"({where[node.mask_output]} + {at})"
    if node.mask and whole:
        wiring["mask_ptr"] = where[node.mask]
    elif node.mask:
        wiring["mask_src"] = f"{where[node.mask]}[{at}]"
    return wiring


def step_storage(qgraph: QGraph, outputs: list[dict[str, Any]]) -> tuple[dict, list[Interval]]:
    """As ``storage`` for one timestep: sequences hold one timestep's features; a recurrent
    layer's output (any) lives in its state."""
    graph = qgraph.graph
    step_where = {t.name: f"x_{_c(t.name)}" for t in graph.inputs}
    for index, node in enumerate(graph.nodes):
        layer = node.layer
        if node.returns_state:
            for out, member in zip(node.outputs[1:], layer.state_members(), strict=True):
                step_where[out] = f"state->{member}_{index}"
        if layer.recurrent:
            step_where[node.outputs[0]] = f"state->{layer.state_fields()[0]['name']}_{index}"
    for item in outputs:
        step_where.setdefault(item["tensor"], item["c_name"])
    step_intervals = []
    for index, node in enumerate(graph.nodes):
        for out in node.outputs:
            if out in step_where:
                continue
            readers = [i for i, n in enumerate(graph.nodes) if out in n.reads]
            size = graph.tensors[out].features
            step_intervals.append(Interval(out, size, index, max(readers, default=index)))
    layout = plan(step_intervals)
    for name, offset in layout.offsets.items():
        step_where[name] = f"(state->arena_q + {offset})"
    return step_where, step_intervals


def graph_context(qgraph: QGraph, name: str, core: str = "all") -> dict[str, Any]:
    name = cformat.c_identifier(name)
    graph = qgraph.graph
    timesteps = window_timesteps(qgraph)
    fixed = fixed_windows(qgraph)
    chain = _pseudo_chain(qgraph, timesteps)
    context = model_context(chain, name, core)
    where, intervals, outputs = storage(qgraph)
    layout = plan(intervals)
    for tensor, offset in layout.offsets.items():
        where[tensor] = f"(state->arena_q + {offset})"
    streaming = qgraph.streaming and not fixed
    step_where: dict[str, str] = {}
    step_layout = None
    if streaming:
        step_where, step_intervals = step_storage(qgraph, outputs)
        step_layout = plan(step_intervals)
    base = layer_contexts(chain)
    layers = []
    steps = step_wiring(qgraph, step_where) if streaming else [{}] * len(base)
    for ctx, wiring, one in zip(base, node_wiring(qgraph, where, fixed), steps, strict=True):
        layers.append({**ctx, **wiring, "step": {**ctx, **one}})
    context["layers"] = layers
    context["leaf_layers"] = [inner for la in layers for inner in la.get("inners", [la])]
    context["graph_inputs"] = [_input_context(qgraph, t, fixed) for t in graph.inputs]
    context["graph_outputs"] = [
        _output_context(qgraph, item, where, step_where, fixed) for item in outputs
    ]
    arena = max(layout.arena, step_layout.arena if step_layout else 0)
    context |= {
        "graph": True,
        "timesteps": timesteps,
        "streaming": streaming,
        "fixed_windows": fixed,
        "run_only_reason": cformat.c_comment(_run_only_reason(qgraph, fixed)),
        "arena_size": arena,
        "scratch_size": max([la.scratch_width() for la in graph.layers] + [1]),
        "window_restore": any(la["whole_window"] for la in layers),
        "window_loops": any(la["loops"] for la in layers),
        "copies": any(la["copy_to"] for la in layers)
        or any(o["copied"] for o in context["graph_outputs"]),
        "buffers": {
            "arena_bytes": 2 * layout.arena,
            "peak_live_bytes": 2 * layout.peak,
            "tensors": {t: 2 * i.size for t, i in ((i.name, i) for i in intervals)},
            "step_arena_bytes": 2 * step_layout.arena if step_layout else 0,
            "step_peak_live_bytes": 2 * step_layout.peak if step_layout else 0,
        },
    }
    return context


def _run_only_reason(qgraph: QGraph, fixed: bool = False) -> str:
    layer = next((la for la in qgraph.graph.layers if not la.streaming), None)
    if layer is None:
        return "its sequences have different lengths" if fixed else ""
    return f"layer '{layer.name}' needs the whole window ({layer.whole_window_reason})"


def _rows(spec: Any, fixed: bool) -> dict[str, Any]:
    """How many rows a sequence holds: in C (``rows``: the run's ``timesteps``, or its declared
    length when the graph's windows are fixed) and in a buffer (``buffer_rows``)."""
    if not spec.sequence:
        return {"rows": "1", "buffer_rows": 1, "steps": None}
    steps = int(spec.shape[0])
    return {"rows": str(steps) if fixed else "timesteps", "buffer_rows": steps, "steps": steps}


def _input_context(qgraph: QGraph, spec: Any, fixed: bool = False) -> dict[str, Any]:
    return {
        **_rows(spec, fixed),
        "name": spec.name,
        "c": _c(spec.name),
        "C": _c(spec.name).upper(),
        "size": spec.features,
        "sequence": spec.sequence,
        "inv_scale": cformat.c_float_array(qgraph.inv_scale(spec.name)),
    }


def _output_context(qgraph, item, where, step_where, fixed=False) -> dict[str, Any]:
    spec = qgraph.graph.tensors[item["tensor"]]
    c = item["c_name"].removeprefix("y_")
    return {
        **_rows(spec, fixed),
        **item,
        "c": c,
        "C": c.upper(),
        "size": spec.features,
        "sequence": spec.sequence,
        "storage": where[spec.name],
        "step_storage": step_where.get(spec.name, ""),
        "step_copy": bool(step_where) and step_where[spec.name] != item["c_name"],
        "scale": cformat.c_float_array(qgraph.scales[spec.name]),
    }


def emit_graph(qgraph: QGraph, out_dir: Path, name: str, core: str = "all") -> dict[str, Any]:
    """Render the graph's C files into out_dir; returns the context (its buffer plan)."""
    context = graph_context(qgraph, name, core)
    for template, suffix in GRAPH_FILES:
        (out_dir / f"{context['name']}{suffix}").write_text(render(template, **context))
    return context


__all__ = ["emit_graph", "graph_context"]
