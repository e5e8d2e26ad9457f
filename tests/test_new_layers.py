"""Issue 20's layers around the recurrent core, in trained models: Normalization (adapted, in
raw units) and Rescaling, folded or as integer affines; RNN(cell) and StackedRNNCells; LSTM and
GRU with relu or linear activations; the cheap 1-D convolutions and the time-axis reshaping
layers.

Each model trains with fixed seeds on a synthetic task (a few seconds), converts once per
session, and is held to: its float IR equal to ``model.predict``; the int8 C within a named
tolerance of Keras; the host C (strict warnings, and ASan/UBSan) equal to the numpy reference
bit for bit on every entry point; for each, the firmware of Cortex-M0, M4 and M55 in QEMU
equal to the reference on every entry point.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.frontends.keras.frontend import read_keras_model
from lstm_embed.ir.float_model import forward
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.targets.hostbuild import run_entry_point
from lstm_embed.tools.fuzz import compare_output, expected_output

from .helpers import (
    TrainedCase,
    assert_c_within_range_pct,
    assert_float_ir_equals_predict,
    assert_host_equals_reference,
    assert_qemu_equals_reference,
    assert_within_range_pct,
    c_error_pct_of_range,
    convert_trained,
    fit_sequential,
    host_difference,
    inspect_text,
    layer_rows,
)

pytestmark = pytest.mark.slow

L = keras.layers
T = 24
# Float IR (float64) vs predict (float32): rounding only, relative to the output's range (the
# raw-unit forecaster's outputs are in the tens)
FLOAT_FORWARD_TOLERANCE = 1e-5
# The bound for int8 weights: max abs error vs Keras <= 5% of the output range.
INT8_MAX_PCT_OF_RANGE = 5.0
QEMU_BOARDS = ("qemu-m0", "qemu-m4", "qemu-m55")
# The models learned their task (so the tolerances are measured on trained weights)
MIN_ACCURACY = 0.85
# (reconstruction: the inputs' noise, 0.1 = 14% of their spread, is not learnable)
MAX_RECONSTRUCTION_RMSE = 0.3


# ---------------------------------------------------------------------------------- data


def sine_classes(seed: int, n: int, features: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sines of one of three frequencies per channel: (x (n, T, features), class)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    t = np.arange(T)
    freq = (0.15 + 0.12 * label)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, (n, 1, features))
    x = np.sin(freq * t[None, :, None] * (1 + 0.5 * np.arange(features)) + phase)
    x = x + 0.1 * rng.normal(size=(n, T, features))
    return x.astype(np.float32), label


def weather(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw-unit 'weather' windows: temperature around 20 (deg C), pressure around 1013 (hPa),
    humidity around 60 (%); the target is the next temperature, in deg C."""
    rng = np.random.default_rng(seed)
    t = np.arange(T + 1)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    temp = 20 + 5 * np.sin(0.3 * t + phase) + rng.normal(0, 0.3, (n, T + 1))
    pressure = 1013 + 8 * np.cos(0.3 * t + phase) + rng.normal(0, 1, (n, T + 1))
    humidity = 60 - 10 * np.sin(0.3 * t + phase) + rng.normal(0, 2, (n, T + 1))
    x = np.stack([temp, pressure, humidity], -1)[:, :T]
    return x.astype(np.float32), temp[:, T:].astype(np.float32)


def four_channels(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    return sine_classes(seed, n, 4)


def channels_first(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Four-channel windows stored channels first, (n, 4, T), with per-channel gains."""
    x, label = sine_classes(seed, n, 4)
    x = x * np.array([1.0, 0.5, 2.0, 3.0], np.float32)
    return np.ascontiguousarray(np.swapaxes(x, 1, 2)), label


def reconstruct(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    x, _ = sine_classes(seed, n)
    return x, x


def percent_classes(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """sine_classes in 0..100 units (a sensor's percent reading)."""
    x, label = sine_classes(seed, n)
    return (50 + 40 * x).astype(np.float32), label


# ---------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Recipe:
    layers: Callable[[], list]
    data: Callable[[int, int], tuple[np.ndarray, np.ndarray]]
    task: str = "classes"  # "classes" (softmax over 3), "regression", "reconstruct" (y = x)
    epochs: int = 8
    adapt: bool = False  # adapt() the first layer (a Normalization) on the training inputs


RECIPES: dict[str, Recipe] = {
    # the Keras time-series tutorial's shape: adapt() on the raw training data, the output
    # scaled back to deg C by a Rescaling (folded into the Dense before it)
    "normalized_forecaster": Recipe(
        lambda: [L.Normalization(), L.LSTM(16), L.Dense(1), L.Rescaling(5.0, offset=20.0)],
        weather,
        "regression",
        epochs=12,
        adapt=True,
    ),
    "rescaling_gru": Recipe(
        lambda: [L.Rescaling(1 / 100, offset=-0.5), L.GRU(12), L.Dense(3, activation="softmax")],
        percent_classes,
        epochs=16,
    ),
    # before a causal Conv1D (zero padding) the affine cannot fold: an integer affine
    "normalization_causal_conv": Recipe(
        lambda: [
            L.Normalization(),
            L.Conv1D(8, 3, padding="causal", activation="relu"),
            L.LSTM(12),
            L.Dense(3, activation="softmax"),
        ],
        percent_classes,
        adapt=True,
    ),
    # RNN(cell) read as the layers they are
    "rnn_lstm_cell": Recipe(
        lambda: [L.RNN(L.LSTMCell(16)), L.Dense(3, activation="softmax")], sine_classes
    ),
    "stacked_lstm_cells": Recipe(
        lambda: [
            L.RNN(L.StackedRNNCells([L.LSTMCell(12), L.LSTMCell(12)])),
            L.Dense(3, activation="softmax"),
        ],
        sine_classes,
    ),
    # the cheap convolutions of small-MCU models, read as the Conv1D they compute
    "separable_conv_gru": Recipe(
        lambda: [
            L.SeparableConv1D(8, 5, padding="same", depth_multiplier=2, activation="relu"),
            L.GRU(12),
            L.Dense(3, activation="softmax"),
        ],
        four_channels,
    ),
    "depthwise_conv_gru": Recipe(
        lambda: [
            L.DepthwiseConv1D(5, depth_multiplier=2, activation="relu"),
            L.GRU(12),
            L.Dense(3, activation="softmax"),
        ],
        four_channels,
    ),
    "channels_first_permute": Recipe(
        lambda: [L.Permute((2, 1)), L.LSTM(12), L.Dense(3, activation="softmax")],
        channels_first,
    ),
    "conv_autoencoder": Recipe(
        lambda: [
            L.Conv1D(8, 3, padding="same", activation="relu"),
            L.MaxPooling1D(2),
            L.Conv1D(4, 3, padding="same", activation="relu"),
            L.UpSampling1D(2),
            L.ZeroPadding1D(2),
            L.Conv1D(8, 3, activation="relu"),
            L.Cropping1D(1),
            L.LSTM(16, return_sequences=True),
            L.Dense(2),
        ],
        reconstruct,
        "reconstruct",
        epochs=16,
    ),
}
# QEMU runs every one on three cores
FIRMWARE_RECIPES = tuple(RECIPES)


@dataclass(frozen=True)
class Trained(TrainedCase):
    target: np.ndarray


def train(name: str) -> tuple[keras.Model, np.ndarray, np.ndarray, np.ndarray]:
    recipe = RECIPES[name]
    x, y = recipe.data(0, 768)
    loss = "sparse_categorical_crossentropy" if recipe.task == "classes" else "mse"
    model = fit_sequential(
        name, recipe.layers, x, y, epochs=recipe.epochs, loss=loss, adapt=recipe.adapt
    )
    return model, x[:512], x[512:], y[512:]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Trained]:
    @functools.cache
    def get(name: str) -> Trained:
        model, x_train, x_test, target = train(name)
        out = tmp_path_factory.mktemp(name) / "out"
        source = f"test_new_layers {name}"
        ir, qmodel, keras_y = convert_trained(model, x_train, x_test, out, source)
        return Trained(model, ir, qmodel, out, x_test, keras_y, target)

    return get


# ---------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", RECIPES)
def test_float_ir_equals_predict(trained, name):
    case = trained(name)
    scale = max(1.0, float(np.max(np.abs(case.keras_y))))
    atol = FLOAT_FORWARD_TOLERANCE * scale
    assert_float_ir_equals_predict(case.ir, case.x_test, case.keras_y, atol)


@pytest.mark.parametrize("name", RECIPES)
def test_int8_c_within_tolerance_of_keras(trained, name):
    case = trained(name)
    assert_c_within_range_pct(name, case.out, case.x_test, case.keras_y, INT8_MAX_PCT_OF_RANGE)


@pytest.mark.parametrize("sanitize", [False, True], ids=["strict", "asan-ubsan"])
@pytest.mark.parametrize("name", RECIPES)
def test_host_c_equals_reference_on_every_entry_point(trained, name, sanitize):
    case = trained(name)
    assert_host_equals_reference(name, case.out, case.qmodel, case.x_test, sanitize)


@pytest.mark.firmware
@pytest.mark.parametrize("board", QEMU_BOARDS)
@pytest.mark.parametrize("name", FIRMWARE_RECIPES)
def test_qemu_equals_reference_on_every_entry_point(toolchain, trained, name, board):
    case = trained(name)
    assert_qemu_equals_reference(name, case.out, case.qmodel, case.x_test, board, last=6)


def test_inspect_counts_keras_params(trained, tmp_path, capsys):
    for name in RECIPES:
        model = trained(name).model
        table = inspect_text(model, tmp_path / f"{name}.keras", capsys)
        for layer in model.layers:
            row = layer_rows(table, layer.name)[0]
            assert str(layer.count_params()) in row.split(), (name, layer.name, row)


# ------------------------------------------------------------------ Normalization, Rescaling


def test_normalization_and_rescaling_fold_where_exact(trained):
    """The forecaster's Normalization folds into the LSTM and its Rescaling into the Dense
    before it; Rescaling folds into the GRU; before a causal Conv1D it is an integer affine."""
    assert [la.kind for la in trained("normalized_forecaster").qmodel.layers] == ["lstm", "dense"]
    assert [la.kind for la in trained("rescaling_gru").qmodel.layers] == ["gru", "dense"]
    kinds = [la.kind for la in trained("normalization_causal_conv").qmodel.layers]
    assert kinds == ["batch_norm", "conv1d", "lstm", "dense"]


def test_forecaster_predicts_in_raw_units(trained):
    """The C takes raw units and forecasts deg C: its error against the true next temperature
    is close to Keras' own (the model learned the task)."""
    case = trained("normalized_forecaster")
    y = run_entry_point(case.out, "run_f32", case.x_test)
    keras_rmse = float(np.sqrt(np.mean((case.keras_y - case.target) ** 2)))
    c_rmse = float(np.sqrt(np.mean((y - case.target) ** 2)))
    print(f"forecaster RMSE: Keras {keras_rmse:.3f} deg C, C {c_rmse:.3f} deg C")
    assert keras_rmse < 0.5 * float(np.std(case.target))
    assert c_rmse < 1.1 * keras_rmse + 0.05


TF_KERAS_NORMALIZATION = """
import sys
import numpy as np
import tf_keras as keras
L = keras.layers
x = np.load(sys.argv[1])
keras.utils.set_random_seed(3)
norm = L.Normalization()
norm.adapt(x)
model = keras.Sequential([keras.Input(x.shape[1:]), norm, L.LSTM(4),
                          L.Dense(2), L.Rescaling(2.0, offset=1.0)])
model.save(sys.argv[2] + "/m.h5")
model.save(sys.argv[2] + "/m.keras")
np.save(sys.argv[2] + "/y.npy", model.predict(x, verbose=0))
"""


def test_normalization_from_tf_keras_files(tmp_path):
    """Keras 2 (tf_keras) writes the adapted count as int64 too: both its files read, and the
    float IR equals its predict."""
    import os
    import subprocess
    import sys

    from lstm_embed.frontends.keras.frontend import load_model

    x, _ = weather(3, 16)
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    subprocess.run(
        [sys.executable, "-c", TF_KERAS_NORMALIZATION, str(tmp_path / "x.npy"), str(tmp_path)],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    y = np.load(tmp_path / "y.npy")
    for path in (tmp_path / "m.h5", tmp_path / "m.keras"):
        np.testing.assert_allclose(forward(load_model(path), x)[0], y, atol=1e-5)


@pytest.mark.parametrize(
    "layer, reason",
    [
        (lambda: L.Normalization(mean=[1.0, 2.0], variance=[1.0, 4.0], invert=True), "invert"),
        (lambda: L.Normalization(axis=1, mean=0.0, variance=1.0), "axis"),
    ],
    ids=["invert", "axis"],
)
def test_normalization_options_refused(tmp_path, capsys, layer, reason):
    model = keras.Sequential([keras.Input((T, 2)), layer(), L.LSTM(3)])
    path = tmp_path / "m.keras"
    model.save(path)
    assert cli.main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{reason}=" in err and "is not supported" in err


def test_given_mean_variance_and_per_feature_rescaling(tmp_path):
    """Normalization from the config's mean and variance, per-feature Rescaling lists: folded
    into the LSTMs after them, and last (an integer affine); float IR == predict, C ==
    reference."""
    keras.utils.set_random_seed(7)
    model = keras.Sequential([
        keras.Input((9, 3)),
        L.Normalization(mean=[1.0, -2.0, 0.5], variance=[4.0, 0.25, 1.0]),
        L.LSTM(4, return_sequences=True),
        L.Rescaling([2.0, -1.0, 0.5, 3.0], offset=[0.1, 0.0, -0.2, 0.3]),
        L.LSTM(3, return_sequences=True),
        L.Normalization(mean=0.2, variance=0.09),
    ])  # fmt: skip
    x = np.random.default_rng(6).normal(size=(32, 9, 3)).astype(np.float32)
    ir = read_keras_model(model)
    keras_y = model.predict(x, verbose=0)
    assert_float_ir_equals_predict(ir, x, keras_y, FLOAT_FORWARD_TOLERANCE)
    conversion = convert_ir(ir, x, tmp_path / "out")
    q = conversion.qmodel
    assert [la.kind for la in q.layers] == ["lstm", "lstm", "batch_norm"]
    x_q = fp.quantize_input(x, q.input_inv_scale)
    difference = host_difference(tmp_path / "out", q, x_q, x, sanitize=True)
    assert difference is None, difference


# --------------------------------------------------------------------------- RNN(cell)


def test_rnn_cells_read_as_their_layers(trained):
    assert [la.kind for la in trained("rnn_lstm_cell").qmodel.layers] == ["lstm", "dense"]
    kinds = [la.kind for la in trained("stacked_lstm_cells").qmodel.layers]
    assert kinds == ["lstm", "lstm", "dense"]


# RNN options on every cell kind (untrained, fixed seeds): float IR == predict, C == reference
RNN_CASES: dict[str, Callable[[], list]] = {
    "gru-cell-backwards-sequences": lambda: [
        L.RNN(L.GRUCell(4), go_backwards=True, return_sequences=True),
        L.Dense(2),
    ],
    "simple-rnn-cell-relu": lambda: [L.RNN(L.SimpleRNNCell(5, activation="relu")), L.Dense(2)],
    "stacked-mixed-backwards": lambda: [
        L.RNN(
            L.StackedRNNCells([L.SimpleRNNCell(4), L.GRUCell(3), L.LSTMCell(5)]),
            go_backwards=True,
        ),
    ],
    "stacked-gru-sequences-nobias": lambda: [
        L.RNN(
            L.StackedRNNCells([L.GRUCell(4, use_bias=False), L.GRUCell(3, reset_after=False)]),
            return_sequences=True,
        ),
        L.GlobalAveragePooling1D(),
    ],
}


@pytest.mark.parametrize("case", RNN_CASES)
def test_rnn_options_follow_keras(tmp_path, case):
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((9, 3)), *RNN_CASES[case]()])
    x = np.random.default_rng(6).normal(size=(128, 9, 3)).astype(np.float32)
    ir = read_keras_model(model)
    keras_y = model.predict(x, verbose=0)
    assert_float_ir_equals_predict(ir, x, keras_y, FLOAT_FORWARD_TOLERANCE)
    model.save(tmp_path / "m.h5")  # the legacy file names every cell's weights
    from lstm_embed.frontends.keras.frontend import load_model

    np.testing.assert_allclose(
        forward(load_model(tmp_path / "m.h5"), x)[0], keras_y, atol=FLOAT_FORWARD_TOLERANCE
    )
    conversion = convert_ir(ir, x, tmp_path / "out")
    q = conversion.qmodel
    x_q = fp.quantize_input(x[:16], q.input_inv_scale)
    difference = host_difference(tmp_path / "out", q, x_q, x[:16], sanitize=True)
    assert difference is None, difference
    _, pct = c_error_pct_of_range(tmp_path / "out", x, keras_y)
    assert_within_range_pct(case, pct, INT8_MAX_PCT_OF_RANGE)


def test_an_unsupported_layer_has_no_follow_on_lines(tmp_path, capsys):
    """A layer lstm-embed does not read is named by its type; the layers after it are only
    checked for their type (a second unsupported type is named too), with no complaint about
    shapes that depend on the unsupported layer's output."""
    model = keras.Sequential([
        keras.Input((T, 1)), L.EinsumDense("btf,fk->btk", (T, 5)), L.LSTM(4),
        L.UnitNormalization(),
        L.Dense(2),
    ])  # fmt: skip
    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", np.zeros((4, T, 1), np.float32))
    for argv in (
        ["inspect", str(path)],
        ["convert", str(path), "-c", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o")],
    ):
        assert cli.main(argv) == 2
        captured = capsys.readouterr()
        err = captured.err
        assert "(EinsumDense): type EinsumDense is not supported" in err
        assert "(UnitNormalization): type UnitNormalization is not supported" in err
        assert "layer 'lstm'" not in err and "layer 'dense'" not in err
        assert "kernel shape" not in err and "input size" not in err
        if argv[0] == "inspect":
            assert "input shape (None, 24, 1)" in captured.out


# ------------------------------------------------- convolutions and time-axis layers


def test_models_learned_their_task(trained):
    """The tolerances are measured on trained weights: held-out accuracy of the classifiers,
    reconstruction error of the autoencoder (relative to the inputs' spread)."""
    for name, recipe in RECIPES.items():
        case = trained(name)
        if recipe.task == "classes":
            accuracy = float(np.mean(np.argmax(case.keras_y, -1) == case.target))
            assert accuracy >= MIN_ACCURACY, (name, accuracy)
        elif recipe.task == "reconstruct":
            rmse = float(np.sqrt(np.mean((case.keras_y - case.target) ** 2)))
            assert rmse <= MAX_RECONSTRUCTION_RMSE * float(np.std(case.target)), (name, rmse)


def test_convolutions_and_time_axis_layers_become_their_kinds(trained):
    kinds = [la.kind for la in trained("separable_conv_gru").qmodel.layers]
    assert kinds == ["conv1d", "gru", "dense"]
    kinds = [la.kind for la in trained("depthwise_conv_gru").qmodel.layers]
    assert kinds == ["conv1d", "gru", "dense"]
    assert trained("channels_first_permute").qmodel.layers[0].kind == "permute"
    kinds = [la.kind for la in trained("conv_autoencoder").qmodel.layers]
    assert kinds.count("time_axis") == 3 and not trained("conv_autoencoder").qmodel.streaming


def test_stateful_rnn_cell_carries_state_from_row_to_row(tmp_path):
    """RNN(LSTMCell, stateful=True) with batch size 1: the rows are one stream, as Keras'
    predict(x, batch_size=1) takes them; float IR == predict, C == reference."""
    keras.utils.set_random_seed(8)
    model = keras.Sequential(
        [keras.Input((9, 3), batch_size=1), L.RNN(L.LSTMCell(4), stateful=True), L.Dense(2)]
    )
    x = np.random.default_rng(9).normal(size=(6, 9, 3)).astype(np.float32)
    ir = read_keras_model(model)
    assert ir.stateful
    keras_y = model.predict(x, batch_size=1, verbose=0)
    assert_float_ir_equals_predict(ir, x, keras_y, FLOAT_FORWARD_TOLERANCE)
    conversion = convert_ir(ir, np.concatenate([x] * 20), tmp_path / "out")
    q = conversion.qmodel
    x_q = fp.quantize_input(x, q.input_inv_scale)
    got = run_entry_point(tmp_path / "out", "run", x_q, sanitize=True)
    assert compare_output("run", expected_output(q, "run", x_q), got) is None
