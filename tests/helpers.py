"""Random IR models for tests that don't need Keras (the frontend is tested on its own)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lstm_embed.emit.render import model_file_names
from lstm_embed.ir.model import DenseLayer, LSTMLayer, Model
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.qir import QModel
from lstm_embed.targets.hostbuild import run_entry_point
from lstm_embed.targets.inputs import ENTRY_POINTS
from lstm_embed.tools.fuzz import compare_output, expected_output, model_entries


def random_lstm(rng, name, m, n, bias=True, recurrent="sigmoid", return_sequences=False):
    limit_in, limit_rec = np.sqrt(6 / (m + 4 * n)), np.sqrt(3 / n)
    b = rng.uniform(-0.3, 0.3, 4 * n) if bias else None
    if b is not None:
        b[n : 2 * n] += 1.0  # Keras' unit_forget_bias
    return LSTMLayer(
        name=name,
        input_size=m,
        units=n,
        kernel=rng.uniform(-limit_in, limit_in, (m, 4 * n)) * 2,
        recurrent_kernel=rng.uniform(-limit_rec, limit_rec, (n, 4 * n)),
        bias=b,
        recurrent_activation=recurrent,
        return_sequences=return_sequences,
    )


def random_model(
    seed: int,
    inputs: int,
    units: list[int],
    timesteps: int | None,
    bias: bool = True,
    recurrent: str = "sigmoid",
    return_sequences: bool = False,
    dense: list[tuple[int, str]] = (),
) -> Model:
    rng = np.random.default_rng(seed)
    layers: list = []
    size = inputs
    for k, n in enumerate(units):
        last = k == len(units) - 1
        layers.append(
            random_lstm(rng, f"lstm_{k}", size, n, bias, recurrent, return_sequences or not last)
        )
        size = n
    for k, (n, activation) in enumerate(dense):
        kernel = rng.uniform(-1, 1, (size, n)) * np.sqrt(3 / size)
        b = rng.uniform(-0.2, 0.2, n) if bias else None
        layers.append(DenseLayer(f"dense_{k}", size, n, kernel, b, activation))
        size = n
    return Model("net", inputs, timesteps, tuple(layers), source=f"random model seed {seed}")


def generated_c(out_dir: Path, name: str = "net") -> str:
    """Every C file convert wrote for model ``name`` (NAME.h, NAME.c, NAME_weights.h,
    NAME_kernels.h), as one text."""
    return "".join((Path(out_dir) / f).read_text() for f in model_file_names(name))


def random_inputs(seed: int, n: int, timesteps: int, inputs: int, scale: float = 1.0):
    rng = np.random.default_rng(seed + 1000)
    return (rng.normal(size=(n, timesteps, inputs)) * scale).astype(np.float32)


def edge_inputs(qmodel: QModel, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int16, float32) inputs: held-out data, 3x beyond it, and saturating extremes."""
    x = np.concatenate([x_test[:24], 3 * x_test[24:32]])
    x_q = fp.quantize_input(x, qmodel.input_inv_scale)
    x_q[-1] = np.where(np.arange(x_q.shape[1])[:, None] % 2 == 0, -32768, 32767)
    return x_q, x


def host_difference(
    out: Path, qmodel: QModel, x_q: np.ndarray, x: np.ndarray, sanitize: bool = True
) -> str | None:
    """The first difference between the host C and the numpy reference over every entry point
    the model has (int16 or float input as each takes), or None."""
    for entry in model_entries(qmodel):
        inputs = x if ENTRY_POINTS[entry].float_input else x_q
        got = run_entry_point(out, entry, inputs, sanitize=sanitize)
        difference = compare_output(entry, expected_output(qmodel, entry, inputs), got)
        if difference is not None:
            return difference
    return None


def qemu_difference(
    out: Path, qmodel: QModel, board: str, x_q: np.ndarray, x: np.ndarray
) -> str | None:
    """As ``host_difference``, for the firmware of ``board`` in QEMU (one image, every entry)."""
    from lstm_embed.targets import firmware

    entries = model_entries(qmodel)
    got = firmware.run_entry_points(out, board, list(entries), x_q, x)
    for entry in entries:
        want = expected_output(qmodel, entry, x if ENTRY_POINTS[entry].float_input else x_q)
        difference = compare_output(entry, want, got[entry])
        if difference is not None:
            return difference
    return None
