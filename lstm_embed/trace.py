"""--trace: every gate of every step of the integer reference, as arrays (equal to the C)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import fixedpoint as fp
from . import reference
from .qir import QMODEL_FILE, load_qmodel


def trace_to_arrays(out_dir: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per LSTM layer k: ``k.z`` (N, T, units, 4) gate pre-activations (Z16), ``k.gates_q15``
    (i, f, g, o), ``k.c`` and ``k.h_q15`` (N, T, units); plus the quantized input and output."""
    path = Path(out_dir) / QMODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir}: no {QMODEL_FILE}; convert again with this version")
    qmodel = load_qmodel(path)
    x_q = fp.quantize_input(x, qmodel.input_inv_scale)
    trace = reference.Trace()
    y_q = reference.run(qmodel, x_q, trace)
    arrays: dict[str, np.ndarray] = {"x_q": x_q, "y_q": y_q}
    for index, layer in enumerate(qmodel.lstm_layers):
        steps = [step[index] for step in trace.steps]
        prefix = f"{index}_{layer.name}"
        for field in ("z", "gates_q15", "c", "h_q15"):
            values = np.stack([getattr(s, field) for s in steps], axis=1)
            arrays[f"{prefix}.{field}"] = values.astype(np.int32)
    return arrays
