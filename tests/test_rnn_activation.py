"""LSTM and GRU with activation relu or linear (issue 20), in trained models.

Their cell and hidden state are unbounded, so they get int16 formats calibrated on the data
(``recurrent.state_frac_bits``) and run the reference kernel on every core. Each model trains
with fixed seeds on a synthetic task and is held to: its float IR equal to ``model.predict``;
the int8 C within 5% of Keras' output range; the host C (strict warnings, and ASan/UBSan) equal
to the numpy reference bit for bit on every entry point, with int8 and int16 weights; the
firmware of Cortex-M0, M4 and M55 in QEMU equal to the reference.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import pytest

from lstm_embed.ir.float_model import forward
from lstm_embed.ir.model import Model
from lstm_embed.kinds.base import QuantizeError
from lstm_embed.kinds.lstm import LSTMLayer
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize.quantizer import QuantizeOptions

from .helpers import (
    TrainedCase,
    assert_c_within_range_pct,
    assert_float_ir_equals_predict,
    assert_host_equals_reference,
    assert_qemu_equals_reference,
    convert_trained,
    fit_sequential,
)

pytestmark = pytest.mark.slow

L = keras.layers
T = 24
# Float IR (float64) vs predict (float32): rounding only
FLOAT_FORWARD_TOLERANCE = 1e-5
# The bound for int8 weights: max abs error vs Keras <= 5% of the output range.
INT8_MAX_PCT_OF_RANGE = 5.0
QEMU_BOARDS = ("qemu-m0", "qemu-m4", "qemu-m55")
# The models learned their task (so the tolerances are measured on trained weights): their
# forecast error is well below the target's spread
MAX_FORECAST_RMSE_OF_STD = 0.5


def forecast(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Three noisy phase-locked channels; the target is the first one's next value."""
    rng = np.random.default_rng(seed)
    t = np.arange(T + 1)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    first = np.sin(0.3 * t + phase) + rng.normal(0, 0.06, (n, T + 1))
    second = np.cos(0.3 * t + phase) + rng.normal(0, 0.1, (n, T + 1))
    third = -np.sin(0.3 * t + phase) + rng.normal(0, 0.2, (n, T + 1))
    x = np.stack([first, second, third], -1)[:, :T]
    return x.astype(np.float32), first[:, T:].astype(np.float32)


@dataclass(frozen=True)
class Recipe:
    layers: Callable[[], list]
    learning_rate: float = 0.003


RECIPES: dict[str, Recipe] = {
    "relu_lstm_forecaster": Recipe(lambda: [L.LSTM(16, activation="relu"), L.Dense(1)]),
    "relu_gru_forecaster": Recipe(lambda: [L.GRU(12, activation="relu"), L.Dense(1)]),
    "linear_lstm_forecaster": Recipe(lambda: [L.LSTM(16, activation="linear"), L.Dense(1)]),
    # both GRU forms and a stacked pair: a relu sequence into a linear reset_before GRU
    "stacked_relu_linear_gru": Recipe(
        lambda: [
            L.GRU(8, activation="relu", return_sequences=True),
            L.GRU(8, activation="linear", reset_after=False),
            L.Dense(1),
        ]
    ),
}
FIRMWARE_RECIPES = ("relu_lstm_forecaster", "relu_gru_forecaster", "linear_lstm_forecaster")


@dataclass(frozen=True)
class Trained(TrainedCase):
    x_train: np.ndarray
    y_test: np.ndarray


def train(name: str) -> tuple[keras.Model, np.ndarray, np.ndarray, np.ndarray]:
    recipe = RECIPES[name]
    x, y = forecast(0, 768)
    model = fit_sequential(name, recipe.layers, x, y, epochs=8, learning_rate=recipe.learning_rate)
    return model, x[:512], x[512:], y[512:]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Trained]:
    @functools.cache
    def get(name: str) -> Trained:
        model, x_train, x_test, y_test = train(name)
        out = tmp_path_factory.mktemp(name) / "out"
        source = f"test_rnn_activation {name}"
        ir, qmodel, keras_y = convert_trained(model, x_train, x_test, out, source)
        return Trained(model, ir, qmodel, out, x_test, keras_y, x_train, y_test)

    return get


@pytest.mark.parametrize("name", RECIPES)
def test_model_learned_and_float_ir_equals_predict(trained, name):
    case = trained(name)
    rmse = float(np.sqrt(np.mean((case.keras_y - case.y_test) ** 2)))
    assert rmse <= MAX_FORECAST_RMSE_OF_STD * float(np.std(case.y_test)), rmse
    assert_float_ir_equals_predict(case.ir, case.x_test, case.keras_y, FLOAT_FORWARD_TOLERANCE)


@pytest.mark.parametrize("name", RECIPES)
def test_calibrated_state_formats_and_reference_kernel(trained, name):
    """Every relu/linear layer has a calibrated h format (not Q0.15) and runs the reference
    kernel on every core; its activation is the Keras layer's."""
    case = trained(name)
    recurrent = [la for la in case.qmodel.layers if la.kind in ("lstm", "gru")]
    keras_layers = [la for la in case.model.layers if la.__class__.__name__ in ("LSTM", "GRU")]
    for qlayer, layer in zip(recurrent, keras_layers, strict=True):
        assert qlayer.activation == layer.get_config()["activation"]
        assert qlayer.portable_only
        h_max = float(np.max(np.abs(forward(case.ir, case.x_train[:256])[0])))
        assert qlayer.h_frac < 15 or h_max < 1.0, qlayer.format()
    c_files = "".join(path.read_text() for path in case.out.glob("*.[ch]"))
    assert c_files.count("reference kernel on every core") >= len(recurrent)


@pytest.mark.parametrize("name", RECIPES)
def test_int8_c_within_tolerance_of_keras(trained, name):
    case = trained(name)
    assert_c_within_range_pct(name, case.out, case.x_test, case.keras_y, INT8_MAX_PCT_OF_RANGE)


@pytest.mark.parametrize("sanitize", [False, True], ids=["strict", "asan-ubsan"])
@pytest.mark.parametrize("name", RECIPES)
def test_host_c_equals_reference_on_every_entry_point(trained, name, sanitize):
    case = trained(name)
    assert_host_equals_reference(name, case.out, case.qmodel, case.x_test, sanitize)


@pytest.mark.parametrize("name", ["relu_lstm_forecaster", "stacked_relu_linear_gru"])
def test_int16_weights_host_c_equals_reference(trained, name, tmp_path):
    """int16 weights: the LSTM's int32 cell (its own relu/linear step) and the GRU's int64 row
    sums, under ASan/UBSan, on inputs that saturate."""
    case = trained(name)
    options = QuantizeOptions(weight_bits=(16,))
    conversion = convert_ir(case.ir, case.x_train[:256], tmp_path / "out", options=options)
    assert all(la.weight_bits == 16 for la in conversion.qmodel.layers)
    assert_host_equals_reference(name, tmp_path / "out", conversion.qmodel, case.x_test, True)


@pytest.mark.firmware
@pytest.mark.parametrize("board", QEMU_BOARDS)
@pytest.mark.parametrize("name", FIRMWARE_RECIPES)
def test_qemu_equals_reference_on_every_entry_point(toolchain, trained, name, board):
    case = trained(name)
    assert_qemu_equals_reference(name, case.out, case.qmodel, case.x_test, board, last=6)


def test_diverging_relu_state_is_refused(tmp_path):
    """A relu LSTM whose cell grows without bound on the calibration data has no int16 format:
    one error naming the layer and what is supported, no output written."""
    n, m = 4, 2
    kernel = np.full((m, 4 * n), 0.5)
    kernel[:, n : 3 * n] = 5.0  # forget gate ~1, g = 31: the cell gains ~31 every step
    layer = LSTMLayer(
        "grows", m, n, kernel, np.zeros((n, 4 * n)), np.ones(4 * n), activation="relu"
    )
    model = Model("net", m, 600, (layer,))
    x = np.full((4, 600, m), 3.0, np.float32)
    with pytest.raises(QuantizeError, match=r"layer .grows.*cell state.*activation tanh"):
        convert_ir(model, x, tmp_path / "out")
    assert not (tmp_path / "out").exists()
