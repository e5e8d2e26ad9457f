"""Conv1DTranspose (issue 20): read as zeros between and around the timesteps and a valid Conv1D
with the kernel reversed in time (frontends/keras/layers/conv1d_transpose.py), run-only.

Held to: the float IR equal to Keras over every geometry (kernel sizes, strides, valid and same
padding, including kernels shorter than the stride); two trained Conv1D autoencoders (strided
Conv1D down, Conv1DTranspose back up, an LSTM over the result) within 5% of Keras' output range
with int8 weights, the host C (strict, ASan/UBSan) equal to the numpy reference bit for bit on
every entry point, and the Cortex-M0, M4 and M55 firmware in QEMU equal to it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras
import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.frontends.keras.frontend import read_keras_model
from lstm_embed.ir.float_model import forward

from .helpers import (
    TrainedCase,
    assert_c_within_range_pct,
    assert_float_ir_equals_predict,
    assert_host_equals_reference,
    assert_qemu_equals_reference,
    convert_trained,
    fit_sequential,
    inspect_text,
    layer_rows,
)

pytestmark = pytest.mark.slow

L = keras.layers
T = 24
# Float IR (float64) vs predict (float32): rounding only
FLOAT_FORWARD_TOLERANCE = 1e-5
# The bound for int8 weights: max abs error vs Keras <= 5% of the output range.
INT8_MAX_PCT_OF_RANGE = 5.0
# (reconstruction: the inputs' noise, 0.1 = 14% of their spread, is not learnable)
MAX_RECONSTRUCTION_RMSE = 0.3


def noisy_sines(seed: int, n: int) -> np.ndarray:
    """Two-channel sines of random frequency and phase plus noise, (n, T, 2)."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    freq = rng.uniform(0.15, 0.45, (n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 2))
    x = np.sin(freq * t[None, :, None] * np.array([1.0, 1.5]) + phase)
    return (x + 0.1 * rng.normal(size=x.shape)).astype(np.float32)


AUTOENCODERS: dict[str, Callable[[], list]] = {
    "same": lambda: [
        L.Conv1D(8, 3, strides=2, padding="same", activation="relu"),
        L.Conv1DTranspose(8, 3, strides=2, padding="same", activation="relu"),
        L.LSTM(16, return_sequences=True),
        L.Dense(2),
    ],
    "valid": lambda: [
        L.Conv1D(8, 4, strides=2, activation="relu"),  # 24 -> 11 timesteps
        L.Conv1DTranspose(8, 4, strides=2, activation="relu"),  # 11 -> 24
        L.LSTM(16, return_sequences=True),
        L.Dense(2),
    ],
}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], TrainedCase]:
    @functools.cache
    def get(name: str) -> TrainedCase:
        x = noisy_sines(0, 768)
        model = fit_sequential(name, AUTOENCODERS[name], x, x, epochs=16)
        out = tmp_path_factory.mktemp(name) / "out"
        source = f"test_conv1d_transpose {name}"
        ir, qmodel, keras_y = convert_trained(model, x, x[512:], out, source)
        return TrainedCase(model, ir, qmodel, out, x[512:], keras_y)

    return get


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_float_ir_equals_keras_over_geometries(padding):
    """Every kernel size and stride, including kernels shorter than the stride (whose last
    steps are bias only): the layer's float output equals Keras' (the LSTM after it makes the
    model convertible)."""
    x = np.random.default_rng(0).normal(size=(4, 7, 3)).astype(np.float32)
    keras.utils.set_random_seed(1)
    for kernel_size in (1, 3, 5):  # shorter than, as long as, longer than strides 3
        for strides in (1, 3):
            layer = L.Conv1DTranspose(
                4, kernel_size, strides=strides, padding=padding, activation="relu",
                bias_initializer="random_normal",
            )  # fmt: skip
            model = keras.Sequential([keras.Input((7, 3)), layer, L.LSTM(3)])
            want = keras.Model(model.inputs, layer.output).predict(x, verbose=0)
            ir = read_keras_model(model)
            y = x.astype(np.float64)
            for la in ir.layers[:-1]:
                y = la.chain_output(la.forward(y))
            where = (kernel_size, strides, padding)
            assert y.shape == want.shape, where
            np.testing.assert_allclose(y, want, atol=FLOAT_FORWARD_TOLERANCE, err_msg=str(where))
            np.testing.assert_allclose(
                forward(ir, x)[0], model.predict(x, verbose=0), atol=FLOAT_FORWARD_TOLERANCE
            )


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_autoencoder_learned_and_float_ir_equals_predict(trained, name):
    case = trained(name)
    rmse = float(np.sqrt(np.mean((case.keras_y - case.x_test) ** 2)))
    assert rmse < MAX_RECONSTRUCTION_RMSE, rmse
    assert_float_ir_equals_predict(case.ir, case.x_test, case.keras_y, FLOAT_FORWARD_TOLERANCE)
    assert [la.kind for la in case.qmodel.layers] == [
        "conv1d", "time_axis", "conv1d", "lstm", "dense",
    ]  # fmt: skip
    assert not case.qmodel.streaming


@pytest.mark.parametrize("name", AUTOENCODERS)
def test_int8_c_within_tolerance_of_keras(trained, name):
    case = trained(name)
    assert_c_within_range_pct(name, case.out, case.x_test, case.keras_y, INT8_MAX_PCT_OF_RANGE)


@pytest.mark.parametrize("sanitize", [False, True], ids=["strict", "asan-ubsan"])
@pytest.mark.parametrize("name", AUTOENCODERS)
def test_host_c_equals_reference_on_every_entry_point(trained, name, sanitize):
    case = trained(name)
    assert_host_equals_reference(name, case.out, case.qmodel, case.x_test, sanitize)


@pytest.mark.firmware
@pytest.mark.parametrize("board", ["qemu-m0", "qemu-m4", "qemu-m55"])
@pytest.mark.parametrize("name", AUTOENCODERS)
def test_qemu_equals_reference_on_every_entry_point(toolchain, trained, name, board):
    case = trained(name)
    assert_qemu_equals_reference(name, case.out, case.qmodel, case.x_test, board, last=6)


def test_inspect_shows_one_row_with_keras_params(trained, tmp_path, capsys):
    model = trained("same").model
    table = inspect_text(model, tmp_path / "m.keras", capsys)
    layer = next(la for la in model.layers if isinstance(la, L.Conv1DTranspose))
    rows = layer_rows(table, layer.name)
    assert len(rows) == 1 and "Conv1DTranspose" in rows[0], table
    assert str(layer.count_params()) in rows[0].split(), rows[0]


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"strides": 1, "dilation_rate": 2}, "dilation_rate=2"),
        ({"output_padding": 1}, "output_padding="),
    ],
    ids=["dilation", "output_padding"],
)
def test_unsupported_options_refused(tmp_path, capsys, options, reason):
    layer = L.Conv1DTranspose(4, 3, **{"strides": 2, **options})
    model = keras.Sequential([keras.Input((T, 2)), layer, L.LSTM(3)])
    path = tmp_path / "m.keras"
    model.save(path)
    assert cli.main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert reason in err and "is not supported" in err, err
