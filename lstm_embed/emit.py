"""Emitter: integer IR -> C sources, rendered from the Jinja2 templates in templates/.

The only place that writes C. One Environment (StrictUndefined); literals are formatted by the
helpers in ``cformat``; the context is plain data (no numpy inside the templates).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from . import __version__, cformat, layouts
from . import fixedpoint as fp
from .qir import QDenseLayer, QLSTMLayer, QModel

PACKAGE_DIR = Path(__file__).resolve().parent


def templates_dir() -> Path:
    """templates/ beside the package in a checkout, or packaged inside it in a wheel."""
    for candidate in (PACKAGE_DIR.parent / "templates", PACKAGE_DIR / "templates"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("lstm-embed templates/ folder not found")


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


TABLE_DESCRIPTIONS = {"sigmoid": "sigmoid(u)", "tanh": "tanh(u)", "exp": "1 - exp(-u)"}


def _table_context(table: fp.ActivationTable) -> dict[str, Any]:
    return {
        "name": table.name,
        "description": TABLE_DESCRIPTIONS[table.name],
        "count": len(table.entries) - 1,
        "range": 2**table.log2_range,
        "index_shift": table.index_shift,
        "entries": cformat.c_int_array(table.entries),
    }


def _lstm_context(layer: QLSTMLayer, index: int) -> dict[str, Any]:
    return {
        "index": index,
        "name": layer.name,
        "input_size": layer.input_size,
        "units": layer.units,
        "rows": 4 * layer.units,
        "return_sequences": layer.return_sequences,
        "recurrent_activation": layer.recurrent_activation,
        "has_bias": layer.has_bias,
        "cell_frac": layer.cell_frac,
        "cell_int_bits": layer.cell_int_bits,
        "wide_cell": layer.wide_cell,
        "cell_type": "int32_t" if layer.wide_cell else "int16_t",
        "cell_format": f"Q{layer.cell_int_bits}.{layer.cell_stored_frac}"
        + (" (int32)" if layer.wide_cell else ""),
        "weights": cformat.c_int_array(layer.weights, per_line=layer.row_length),
        "weights_count": layer.weights.size,
        **_weight_format(layer.weight_bits),
        "bias": cformat.c_int_array(layer.bias_s32, per_line=8),
        "multiplier": cformat.c_int_array(layer.multiplier, per_line=8),
        "shift": cformat.c_int_array(layer.shift, per_line=16),
        "input_shift": layer.input_shift,
        "portable_only": layer.portable_only,
        **({} if layer.portable_only else _kernel_context(layer)),
    }


def _weight_format(bits: int) -> dict[str, Any]:
    """int16-weight layers always run on the reference kernel (int64 row sums)."""
    return {"weight_bits": bits, "weight_type": f"int{bits}_t", "weight_suffix": f"s{bits}"}


def _kernel_context(layer: QLSTMLayer) -> dict[str, Any]:
    """Offline layouts of the optimized kernels (templates/kernels/); see ``layouts``."""
    return layouts.kernel_context(layer)


def _c_int32_array(values: Any, per_line: int = 8) -> str:
    """Like cformat.c_int_array, for values that may be INT32_MIN (which has no literal)."""
    items = [cformat.c_int32(v) for v in values.ravel()]
    return ",\n".join(", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line))


def _table_pairs_context(table: fp.ActivationTable) -> dict[str, Any]:
    pairs = layouts.table_pairs(table, odd=table.name == "tanh")
    return {
        "pairs": cformat.c_int_array(pairs, per_line=8),
        "pairs_count": pairs.size,
        "count": len(table.entries) - 1,
        "limit": table.limit,
        "saturate_bits": layouts.saturate_bits(table),
        "shift": table.index_shift,
        "mask": (1 << table.index_shift) - 1,
    }


def _dense_context(layer: QDenseLayer, index: int) -> dict[str, Any]:
    output_format = "Q0.15" if layer.uses_table else f"int16, scale {layer.output_scale:.6g}"
    return {
        "index": index,
        "name": layer.name,
        "input_size": layer.input_size,
        "units": layer.units,
        "activation": layer.activation,
        "output_format": output_format,
        "weights": cformat.c_int_array(layer.weights, per_line=min(layer.input_size, 32)),
        "weights_count": layer.weights.size,
        **_weight_format(layer.weight_bits),
        "bias": cformat.c_int_array(layer.bias_s32, per_line=8),
        "multiplier": cformat.c_int_array(layer.multiplier, per_line=8),
        "shift": cformat.c_int_array(layer.shift, per_line=16),
    }


def scratch_size(model: QModel) -> int:
    """Largest LSTM layer (its new h) or intermediate Dense output."""
    widths = [la.units for la in model.lstm_layers] + [d.units for d in model.dense_layers[:-1]]
    return max(widths)


def model_context(model: QModel, name: str) -> dict[str, Any]:
    name = cformat.c_identifier(name)
    lstm = [_lstm_context(la, i) for i, la in enumerate(model.layers) if isinstance(la, QLSTMLayer)]
    dense = [
        _dense_context(la, i) for i, la in enumerate(model.layers) if isinstance(la, QDenseLayer)
    ]
    activations = [d.activation for d in model.dense_layers]
    recurrent = {la.recurrent_activation for la in model.lstm_layers}
    softmax = [d.units for d in model.dense_layers if d.activation == "softmax"]
    return {
        "tool_version": __version__,
        "source": model.source,
        "name": name,
        "NAME": name.upper(),
        "input_size": model.input_size,
        "output_size": model.output_size,
        "timesteps": model.timesteps or 0,
        "return_sequences": model.return_sequences,
        "output_scale": cformat.c_float(model.output_scale),
        "input_inv_scale": cformat.c_float_array(model.input_inv_scale),
        "z_frac_bits": fp.Z_FRAC_BITS,
        "lstm_layers": lstm,
        "dense_layers": dense,
        "dense_activations": sorted(set(activations)),
        "scratch_size": scratch_size(model),
        "softmax_size": max(softmax, default=0),
        "softmax_logit_max": fp.SOFTMAX_LOGIT_MAX,
        "tables": [_table_context(t) for t in model.tables.values()],
        "table_by_name": {t.name: _table_context(t) for t in model.tables.values()},
        "table_pairs": {
            t.name: _table_pairs_context(t) for t in model.tables.values() if t.name != "exp"
        },
        "hard_sigmoid": {
            "multiplier": fp.HARD_SIGMOID_SLOPE.multiplier,
            "shift": fp.HARD_SIGMOID_SLOPE.shift,
        },
        "uses": {
            "sigmoid": "sigmoid" in model.tables,
            "hard_sigmoid": "hard_sigmoid" in recurrent,
            "softmax": bool(softmax),
            "wide_lstm": any(la.weight_bits == 16 for la in model.lstm_layers),
            "portable_lstm": any(la.portable_only for la in model.lstm_layers),
            "optimized_lstm": any(not la.portable_only for la in model.lstm_layers),
            "wide_dense": any(la.weight_bits == 16 for la in model.dense_layers),
        },
        "wide_acc_shift": fp.WIDE_ACC_SHIFT,
    }


def emit_model(model: QModel, out_dir: Path, name: str) -> list[Path]:
    """Render <name>.h and <name>.c into out_dir; returns the files written."""
    context = model_context(model, name)
    written = []
    for template, suffix in (("model.h.j2", ".h"), ("model.c.j2", ".c")):
        path = out_dir / f"{context['name']}{suffix}"
        path.write_text(render(template, **context))
        written.append(path)
    return written
