"""Random IR models for tests that don't need Keras (the frontend is tested on its own)."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.emit.render import model_file_names
from lstm_embed.ir.float_model import forward
from lstm_embed.ir.model import DenseLayer, LSTMLayer, Model
from lstm_embed.pipeline import convert_ir
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


# ------------------------------------------------ trained Keras models (Sequential) and their C
# Shared by the trained-model modules (test_conv2d, test_rnn_activation, test_new_layers,
# test_conv1d_transpose, test_embedding): each keeps its recipes, data and named tolerances;
# these are the steps and checks they all take alike. Keras is imported only inside the
# functions that need it, so that the modules above that need no Keras load none.


@dataclass(frozen=True)
class TrainedCase:
    """One trained recipe, converted once per session; a module adds its own fields in a
    subclass."""

    model: Any  # keras.Model
    ir: Model
    qmodel: QModel
    out: Path
    x_test: np.ndarray  # float32, held out, as the C takes it
    keras_y: np.ndarray  # Keras' predict on the held-out inputs


def fit_sequential(
    name: str,
    layers: Callable[[], list],
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    loss: str = "mse",
    learning_rate: float = 0.01,
    input_dtype: str | None = None,
    adapt: bool = False,
    seed: int | None = None,
) -> Any:
    """``Sequential([Input(x.shape[1:]), *layers()])`` trained on the first 512 examples (the
    modules hold out the rest) with Adam, batches of 32. Keras is seeded (from ``name`` unless
    ``seed`` is given) before the layers are made, so each recipe trains the same on every run
    and differently from the others. ``adapt``: the first layer (a Normalization) adapts to the
    training inputs."""
    import keras

    keras.utils.set_random_seed(zlib.crc32(name.encode()) % 1000 if seed is None else seed)
    made = layers()
    if adapt:
        made[0].adapt(x[:512])
    model = keras.Sequential([keras.Input(x.shape[1:], dtype=input_dtype), *made])
    metrics = ["accuracy"] if loss == "sparse_categorical_crossentropy" else None
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)
    model.fit(x[:512], y[:512], epochs=epochs, batch_size=32, verbose=0)
    return model


def convert_trained(
    model: Any, x_train: np.ndarray, x_test: np.ndarray, out: Path, source: str
) -> tuple[Model, QModel, np.ndarray]:
    """(float IR, QModel, Keras' predict on ``x_test``) of a trained Keras model read by the
    frontend and converted into ``out``, calibrated on its first 256 training inputs: the one
    conversion every test of a recipe looks at."""
    from lstm_embed.frontends.keras.frontend import read_keras_model

    ir = read_keras_model(model, source=source)
    qmodel = convert_ir(ir, x_train[:256], out).qmodel
    return ir, qmodel, model.predict(x_test, verbose=0)


def assert_float_ir_equals_predict(
    ir: Model, x: np.ndarray, keras_y: np.ndarray, atol: float
) -> None:
    """The float IR (float64) against ``model.predict`` (float32): the frontend read the model
    right, so what the C is compared with below is Keras' model."""
    y, _ = forward(ir, x)
    np.testing.assert_allclose(y, keras_y, atol=atol)


def c_error_pct_of_range(out: Path, x: np.ndarray, keras_y: np.ndarray) -> tuple[float, float]:
    """(max abs error of the C's run_f32 on ``x`` vs Keras, that error as a percentage of the
    Keras outputs' range): the issues' measure of the quantized C."""
    y = run_entry_point(out, "run_f32", x)
    error = float(np.max(np.abs(y - keras_y)))
    return error, 100 * error / float(np.ptp(keras_y))


def assert_within_range_pct(name: str, pct: float, bound: float) -> None:
    """``pct`` (of the output range) within the module's named ``bound``; the message names the
    case, as pytest shows only the first failing parameter otherwise."""
    assert pct <= bound, f"{name}: {pct:.2f}% of the output range"


def assert_c_within_range_pct(
    name: str, out: Path, x: np.ndarray, keras_y: np.ndarray, bound: float
) -> None:
    """The C in ``out`` within ``bound`` % of Keras' output range on ``x``; prints the figures
    (pytest -s shows each case's margin)."""
    error, pct = c_error_pct_of_range(out, x, keras_y)
    print(f"{name}: max abs error {error:.4g} = {pct:.3f}% of the output range")
    assert_within_range_pct(name, pct, bound)


def assert_host_equals_reference(
    name: str, out: Path, qmodel: QModel, x_test: np.ndarray, sanitize: bool
) -> None:
    """The host C equal to the numpy reference bit for bit on every entry point, on
    ``edge_inputs`` (held-out data, beyond it, and saturating extremes)."""
    x_q, x = edge_inputs(qmodel, x_test)
    difference = host_difference(out, qmodel, x_q, x, sanitize)
    assert difference is None, f"{name}: {difference}"


def inspect_text(model: Any, path: Path, capsys: Any) -> str:
    """What ``lstm-embed inspect`` prints (exit status 0) for ``model`` saved to ``path``: the
    tests find Keras' own shapes and parameter counts in it."""
    from lstm_embed import cli

    model.save(path)
    assert cli.main(["inspect", str(path)]) == 0, path.name
    return capsys.readouterr().out


def layer_rows(text: str, name: str) -> list[str]:
    """The rows of the inspect table ``text`` that belong to layer ``name``."""
    return [line for line in text.splitlines() if line.startswith(name + " ")]


def assert_qemu_equals_reference(
    name: str, out: Path, qmodel: QModel, x_test: np.ndarray, board: str, last: int
) -> None:
    """As ``assert_host_equals_reference``, for ``board``'s firmware in QEMU on the last ``last``
    edge inputs (the beyond-range and saturating sequences among them: QEMU is slow)."""
    x_q, x = edge_inputs(qmodel, x_test)
    difference = qemu_difference(out, qmodel, board, x_q[-last:], x[-last:])
    assert difference is None, f"{name} on {board}: {difference}"
