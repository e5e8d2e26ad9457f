"""--trace: every gate of every step of the integer reference, as arrays (equal to the C)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.qir import QMODEL_FILE, load_qmodel
from lstm_embed.reference import interpreter as reference


def layer_steps(trace: reference.Trace, layer: str) -> list[Any]:
    """The step traces of the layer named ``layer``, one per timestep (a layer kind's own
    dataclass: LSTM z, gates_q15, c, h_q15; GRU z, gates_q15, h_q15)."""
    return [s for step in trace.steps for s in step if s.layer == layer]


def trace_to_arrays(out_dir: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per recurrent layer k: every field of its step trace stacked over time as
    ``k_<name>.<field>`` (N, T, ...): LSTM ``z`` (N, T, units, 4) gate pre-activations (Z16),
    ``gates_q15`` (i, f, g, o), ``c`` and ``h_q15`` (N, T, units); GRU ``z`` (N, T, units,
    rows: z, r, hx, hh or z, r, h), ``gates_q15`` (z, r, candidate) and ``h_q15``; plus the
    quantized input and output."""
    path = Path(out_dir) / QMODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir}: no {QMODEL_FILE}; convert again with this version")
    qmodel = load_qmodel(path)
    x = np.asarray(x)
    x = x.reshape(*x.shape[:2], -1) if x.ndim > 3 else x  # (T, F, C) frames, row-major
    x_q = fp.quantize_input(x, qmodel.input_inv_scale)
    trace = reference.Trace()
    y_q = reference.run(qmodel, x_q, trace)
    arrays: dict[str, np.ndarray] = {"x_q": x_q, "y_q": y_q}
    # a Bidirectional's forward and backward layers apart, each in its processing order
    for index, layer in enumerate(la for la in qmodel.leaf_layers if la.recurrent):
        steps = layer_steps(trace, layer.name)
        if not steps:
            continue
        prefix = f"{index}_{layer.name}"
        for field in fields(steps[0]):
            if field.name == "layer":
                continue
            values = np.stack([getattr(s, field.name) for s in steps], axis=1)
            arrays[f"{prefix}.{field.name}"] = values.astype(np.int32)
    return arrays
