"""Layers around the recurrent core, in trained models: Conv1D, activation layers,
BatchNormalization, LayerNormalization, Dense per timestep.

Each model trains with fixed seeds on a synthetic task (a few seconds), converts once per
session, and is held to: its float IR equal to ``model.predict``; the int8 C within a named
tolerance of Keras; the host C (strict warnings, and ASan/UBSan) equal to the numpy reference
bit for bit on every entry point; the firmware of Cortex-M0, M4 and M55 in QEMU equal to the
reference on every entry point.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import keras
import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.frontends.keras.frontend import read_keras_model
from lstm_embed.ir.float_model import forward
from lstm_embed.ir.model import Model
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.qir import QModel
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.reference import interpreter as reference
from lstm_embed.targets.hostbuild import run_entry_point
from lstm_embed.targets.inputs import ENTRY_POINTS
from lstm_embed.tools.fuzz import compare_output, expected_output, model_entries

from .helpers import edge_inputs, host_difference, qemu_difference

pytestmark = pytest.mark.slow

L = keras.layers
T, FEATURES = 24, 2
MIN_LENGTH = 8  # padded recipes: true lengths 8..T
# Float IR (float64) vs predict (float32): rounding only.
FLOAT_FORWARD_TOLERANCE = 1e-5
# The bound for int8 weights: max abs error vs Keras <= 5% of the output range.
INT8_MAX_PCT_OF_RANGE = 5.0
# Integer LayerNormalization against the float formula on the same int16 inputs, in output
# LSBs: the output rounding (0.5) plus the Z16 normalized value's rounding (2**-17) times
# gamma / output scale; measured 1.04 LSB on the trained model.
LAYER_NORM_MAX_LSB = 1.5
QEMU_BOARDS = ("qemu-m0", "qemu-m4", "qemu-m55")
# The models learned their task (so the tolerances are measured on trained weights): held-out
# accuracy of the classifiers, RMSE of the regressor as a fraction of the target's spread.
MIN_ACCURACY = 0.9
# (reconstruction: the inputs' noise, 0.1 = 14% of their spread, is not learnable)
MAX_RELATIVE_RMSE = {"sequence": 0.2, "reconstruct": 0.3}
# The C's held-out accuracy against Keras', in points (one of 256 sequences is 0.4 points)
ACCURACY_POINTS = 1.0


# ---------------------------------------------------------------------------------- data


def sine_classes(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy two-channel sines of one of three frequencies: (x (n, T, 2), class (n,))."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    t = np.arange(T)
    freq = (0.15 + 0.12 * label)[:, None]
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    a = np.sin(freq * t + phase)
    b = np.cos(0.5 * freq * t + phase) * rng.uniform(0.5, 1.5, (n, 1))
    x = np.stack([a, b], -1) + 0.1 * rng.normal(size=(n, T, 2))
    return x.astype(np.float32), label


def pad(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each sequence zero after its true length (Masking's mask_value)."""
    return np.where(np.arange(T)[None, :, None] < lengths[:, None, None], x, 0.0).astype(x.dtype)


def smoothing_target(x: np.ndarray) -> np.ndarray:
    """Per timestep: the mean of channel 0 over the last 5 steps minus channel 1 two steps ago
    (a causal target, so a streaming model can learn it)."""
    padded = np.concatenate([np.zeros_like(x[:, :4]), x], axis=1)
    mean = np.mean([padded[:, k : k + T, 0] for k in range(5)], axis=0)
    return (mean - padded[:, 2 : 2 + T, 1])[..., None].astype(np.float32)


# ---------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Recipe:
    layers: Callable[[], list]
    task: str  # "classes" (softmax over 3), "sequence" (per-step regression), "reconstruct"
    epochs: int = 8
    padded: bool = False  # sequences of 8 to T true timesteps, zero-padded after them


RECIPES: dict[str, Recipe] = {
    # causal Conv1D + LSTM, returning sequences: streamed with step(), equal to run()
    "causal_conv_lstm": Recipe(
        lambda: [
            L.Conv1D(8, 3, padding="causal", dilation_rate=2, activation="relu"),
            L.LSTM(16, return_sequences=True),
            L.Dense(1),
        ],
        "sequence",
    ),
    "dense_relu_lstm": Recipe(
        lambda: [L.Dense(8, activation="relu"), L.LSTM(12), L.Dense(3, activation="softmax")],
        "classes",
    ),
    # BatchNormalization folds into the Dense after it
    "lstm_batchnorm_dense": Recipe(
        lambda: [L.LSTM(12), L.BatchNormalization(), L.Dense(3, activation="softmax")],
        "classes",
    ),
    # ... and between two LSTMs it is an integer affine
    "lstm_batchnorm_lstm": Recipe(
        lambda: [
            L.LSTM(12, return_sequences=True),
            L.BatchNormalization(),
            L.LSTM(8),
            L.Dense(3, activation="softmax"),
        ],
        "classes",
        epochs=16,
    ),
    "lstm_layernorm_lstm": Recipe(
        lambda: [
            L.LSTM(12, return_sequences=True),
            L.LayerNormalization(),
            L.LSTM(8),
            L.Dense(3, activation="softmax"),
        ],
        "classes",
    ),
    # whole-window kinds (run() only)
    "conv_maxpool_lstm": Recipe(
        lambda: [
            L.Conv1D(8, 3, activation="relu"),
            L.MaxPooling1D(2),
            L.LSTM(12),
            L.Dense(3, activation="softmax"),
        ],
        "classes",
    ),
    # the usual 1-D CNN block: a linear Conv1D, BatchNormalization and ReLU, folded into the
    # Conv1D (test_conv_batch_norm_relu_is_one_conv1d)
    "conv_bn_relu_lstm": Recipe(
        lambda: [
            L.Conv1D(8, 3),
            L.BatchNormalization(),
            L.ReLU(),
            L.MaxPooling1D(2),
            L.LSTM(12),
            L.Dense(3, activation="softmax"),
        ],
        "classes",
    ),
    "lstm_autoencoder": Recipe(
        lambda: [
            L.LSTM(16),
            L.RepeatVector(T),
            L.LSTM(16, return_sequences=True),
            L.TimeDistributed(L.Dense(FEATURES)),
        ],
        "reconstruct",
        epochs=16,
    ),
    "lstm_global_average_dense": Recipe(
        lambda: [
            L.LSTM(12, return_sequences=True),
            L.GlobalAveragePooling1D(),
            L.Dense(3, activation="softmax"),
        ],
        "classes",
    ),
    "lstm_flatten_dense": Recipe(
        lambda: [L.LSTM(8, return_sequences=True), L.Flatten(), L.Dense(3, activation="softmax")],
        "classes",
    ),
    # activation layers: on their own (LeakyReLU, ReLU with options, tanh) and folded (Softmax)
    # padded sequences of different true lengths: the recurrent layers skip the padding
    "masking_gru_lstm": Recipe(
        lambda: [
            L.Masking(0.0),
            L.Dense(6, activation="tanh"),
            L.GRU(12, return_sequences=True),
            L.LSTM(8),
            L.Dense(3, activation="softmax"),
        ],
        "classes",
        epochs=16,
        padded=True,
    ),
    "activation_layers": Recipe(
        lambda: [
            L.LSTM(12, return_sequences=True),
            L.LeakyReLU(0.2),
            L.LSTM(8, return_sequences=True),
            L.Activation("tanh"),
            L.ReLU(max_value=0.6, negative_slope=0.05),
            L.Conv1D(6, 2, padding="causal"),
            L.Activation("sigmoid"),
            L.LSTM(6),
            L.Dense(3),
            L.Softmax(),
        ],
        "classes",
    ),
}


@dataclass(frozen=True)
class Trained:
    model: keras.Model
    ir: Model
    qmodel: QModel
    out: Path
    x_test: np.ndarray  # float32, held out
    keras_y: np.ndarray
    target: np.ndarray  # the held-out classes or regression targets


def train(name: str) -> tuple[keras.Model, np.ndarray, np.ndarray, np.ndarray]:
    """The trained model, its training inputs, the held-out inputs and their targets."""
    recipe = RECIPES[name]
    keras.utils.set_random_seed(zlib.crc32(name.encode()) % 1000)  # stable as recipes are added
    x, label = sine_classes(0, 768)
    if recipe.padded:
        x = pad(x, np.random.default_rng(1).integers(MIN_LENGTH, T + 1, len(x)))
    model = keras.Sequential([keras.Input((T, FEATURES)), *recipe.layers()])
    if recipe.task == "classes":
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        y = label
    else:
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        y = x if recipe.task == "reconstruct" else smoothing_target(x)
    model.fit(x[:512], y[:512], epochs=recipe.epochs, batch_size=32, verbose=0)
    return model, x[:512], x[512:], y[512:]


def options_for(name: str) -> QuantizeOptions:
    """Nearest weight rounding for Masking models where the quantizer offers others: the
    data-driven roundings run each layer on the calibration data without the mask (measured:
    the padded model's C 87% of the output range off with them, 1.7% with nearest)."""
    if RECIPES[name].padded and "rounding" in {f.name for f in fields(QuantizeOptions)}:
        return QuantizeOptions(rounding="nearest")  # type: ignore[call-arg]
    return QuantizeOptions()


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Trained]:
    cache: dict[str, Trained] = {}

    def get(name: str) -> Trained:
        if name not in cache:
            model, x_train, x_test, target = train(name)
            ir = read_keras_model(model, source=f"test_around_core {name}")
            out = tmp_path_factory.mktemp(name) / "out"
            conversion = convert_ir(ir, x_train[:256], out, options=options_for(name))
            keras_y = model.predict(x_test, verbose=0)
            cache[name] = Trained(model, ir, conversion.qmodel, out, x_test, keras_y, target)
        return cache[name]

    return get


def inputs_of(case: Trained) -> tuple[np.ndarray, np.ndarray]:
    return edge_inputs(case.qmodel, case.x_test)


# ---------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", RECIPES)
def test_float_ir_equals_predict(trained, name):
    case = trained(name)
    y, _ = forward(case.ir, case.x_test)
    np.testing.assert_allclose(y, case.keras_y, atol=FLOAT_FORWARD_TOLERANCE)


@pytest.mark.parametrize("name", RECIPES)
def test_int8_c_within_tolerance_of_keras(trained, name):
    case = trained(name)
    y = run_entry_point(case.out, "run_f32", case.x_test)
    error = float(np.max(np.abs(y - case.keras_y)))
    pct = 100 * error / float(np.ptp(case.keras_y))
    print(f"{name}: max abs error {error:.4g} = {pct:.2f}% of the output range")
    assert pct <= INT8_MAX_PCT_OF_RANGE, f"{name}: {pct:.2f}% of the output range"
    if RECIPES[name].task == "classes":
        keras_accuracy = float(np.mean(np.argmax(case.keras_y, -1) == case.target))
        c_accuracy = float(np.mean(np.argmax(y, -1) == case.target))
        print(f"{name}: accuracy Keras {keras_accuracy:.4f}, C {c_accuracy:.4f}")
        assert keras_accuracy >= MIN_ACCURACY
        assert abs(c_accuracy - keras_accuracy) * 100 <= ACCURACY_POINTS
    else:
        rmse = float(np.sqrt(np.mean((case.keras_y - case.target) ** 2)))
        assert rmse <= MAX_RELATIVE_RMSE[RECIPES[name].task] * float(np.std(case.target))


@pytest.mark.parametrize("sanitize", [False, True], ids=["strict", "asan-ubsan"])
@pytest.mark.parametrize("name", RECIPES)
def test_host_c_equals_reference_on_every_entry_point(trained, name, sanitize):
    case = trained(name)
    x_q, x = inputs_of(case)
    difference = host_difference(case.out, case.qmodel, x_q, x, sanitize)
    assert difference is None, f"{name}: {difference}"


def test_causal_conv_streams_step_equal_to_run(trained):
    """The causal Conv1D holds its last inputs in the state: step() one timestep at a time
    gives run()'s outputs at every timestep (host C), and both equal Keras per timestep."""
    case = trained("causal_conv_lstm")
    assert case.qmodel.head_start == 2  # the Conv1D and the LSTM advance every step
    x_q, _ = inputs_of(case)
    stepped = run_entry_point(case.out, "step", x_q)
    assert np.array_equal(stepped, run_entry_point(case.out, "run", x_q))
    states = reference.initial_state(case.qmodel, len(x_q))
    streamed = np.stack([reference.step(case.qmodel, states, x_q[:, t]) for t in range(T)], axis=1)
    assert np.array_equal(stepped, streamed)


def test_batch_norm_folds_next_to_dense_and_is_an_affine_elsewhere(trained):
    assert [la.kind for la in trained("lstm_batchnorm_dense").qmodel.layers] == ["lstm", "dense"]
    kinds = [la.kind for la in trained("lstm_batchnorm_lstm").qmodel.layers]
    assert kinds == ["lstm", "batch_norm", "lstm", "dense"]


def test_softmax_folds_into_a_linear_dense(trained):
    layers = trained("activation_layers").qmodel.layers
    kinds = [la.kind for la in layers]
    assert kinds[-1] == "dense" and layers[-1].activation == "softmax"
    # the sigmoid after the linear causal Conv1D folds into it; LeakyReLU, tanh and the
    # ReLU with options after LSTMs stay activation layers
    assert kinds.count("activation") == 3
    assert next(la for la in layers if la.kind == "conv1d").dense.activation == "sigmoid"


def test_conv_batch_norm_relu_is_one_conv1d(trained):
    """Conv1D -> BatchNormalization -> ReLU is one Conv1D with a relu in the IR (exact in
    float: test_float_ir_equals_predict holds it to Keras)."""
    case = trained("conv_bn_relu_lstm")
    assert [la.kind for la in case.ir.layers] == ["conv1d", "pooling", "lstm", "dense"]
    assert case.ir.layers[0].activation == "relu"


def test_layer_norm_integer_error(trained):
    """The integer LayerNormalization alone, on the int16 outputs of the LSTM before it,
    against the float formula on the same values (the quantized LSTM's error left out)."""
    case = trained("lstm_layernorm_lstm")
    lstm, norm = case.qmodel.layers[:2]
    x_q = fp.quantize_input(case.x_test, case.qmodel.input_inv_scale)
    state = lstm.initial_state(len(x_q))
    h_q = np.stack([lstm.step(x_q[:, t], state, case.qmodel.tables)[0] for t in range(T)], 1)
    y_q = np.stack([norm.step(h_q[:, t], None, {})[0] for t in range(T)], axis=1)
    y = case.ir.layers[1].forward(h_q * 2.0**-15).output
    lsb = float(np.max(np.abs(y_q * norm.output_scale - y)) / norm.output_scale)
    print(f"integer LayerNormalization: max error {lsb:.2f} output LSBs")
    assert lsb <= LAYER_NORM_MAX_LSB


def test_inspect_counts_keras_params(trained, tmp_path, capsys):
    for name in RECIPES:
        model = trained(name).model
        path = tmp_path / f"{name}.keras"
        model.save(path)
        assert cli.main(["inspect", str(path)]) == 0, name
        table = capsys.readouterr().out
        for layer in model.layers:
            row = next(line for line in table.splitlines() if line.startswith(layer.name + " "))
            assert str(layer.count_params()) in row.split(), (name, layer.name, row)


def test_trace_and_compare_report(trained, tmp_path):
    case = trained("activation_layers")
    np.save(tmp_path / "x.npy", case.x_test[:16])
    path = tmp_path / "m.keras"
    case.model.save(path)
    assert cli.main(["trace", str(case.out), "-i", str(tmp_path / "x.npy"),
                     "-o", str(tmp_path / "t.npz")]) == 0  # fmt: skip
    argv = ["compare", str(path), str(case.out), "-i", str(tmp_path / "x.npy"),
            "--report", str(tmp_path / "report")]  # fmt: skip
    assert cli.main(argv) == 0
    assert (tmp_path / "report" / "report.md").is_file()


@pytest.mark.firmware
@pytest.mark.parametrize("board", QEMU_BOARDS)
@pytest.mark.parametrize("name", RECIPES)
def test_qemu_equals_reference_on_every_entry_point(toolchain, trained, name, board):
    case = trained(name)
    x_q, x = inputs_of(case)
    x_q, x = x_q[-6:], x[-6:]  # the beyond-range and saturating sequences among them
    difference = qemu_difference(case.out, case.qmodel, board, x_q, x)
    assert difference is None, f"{name} on {board}: {difference}"


def pre_padded(x: np.ndarray) -> np.ndarray:
    """The post-padded sequences of x with their padding moved before them."""
    lengths = T - np.argmax(np.all(x[:, ::-1] != 0, axis=-1), axis=1)
    lengths = np.where(np.all(x[:, -1] != 0, axis=-1), T, lengths)
    return np.stack([np.roll(s, T - n, axis=0) for s, n in zip(x, lengths, strict=True)])


def test_masking_skips_padding_before_and_after(trained):
    """Padding after the true timesteps or before them gives the same outputs, bit for bit in
    the C (both entry points) as the state stays unchanged (or zero) through it; Keras agrees
    within float rounding and the C stays within the tolerance of it."""
    case = trained("masking_gru_lstm")
    post = case.x_test[:32]
    pre = pre_padded(post)
    assert not np.array_equal(pre, post)
    keras_post, keras_pre = (case.model.predict(x, verbose=0) for x in (post, pre))
    np.testing.assert_allclose(keras_pre, keras_post, atol=FLOAT_FORWARD_TOLERANCE)
    y_post, y_pre = (run_entry_point(case.out, "run_f32", x) for x in (post, pre))
    assert np.array_equal(y_post, y_pre)
    q_post, q_pre = (fp.quantize_input(x, case.qmodel.input_inv_scale) for x in (post, pre))
    assert np.array_equal(*(run_entry_point(case.out, "run", x) for x in (q_post, q_pre)))
    limit = INT8_MAX_PCT_OF_RANGE / 100 * float(np.ptp(keras_post))
    assert float(np.max(np.abs(y_pre - keras_pre))) <= limit


MASK_CASES = [(rnn, sequences) for rnn in ("LSTM", "GRU") for sequences in (True, False)]


def masked_input() -> np.ndarray:
    """Steps masked at the start, in the middle and at the end (and one sequence all masked)."""
    x = np.random.default_rng(4).normal(size=(6, 9, 3)).astype(np.float32)
    x[:, [0, 3, 4, 8]] = 0.0
    x[1, :] = 0.0
    x[2, 5] = [0.0, 0.0, 1e-6]  # not masked: one feature differs
    return x


@pytest.mark.parametrize("rnn, sequences", MASK_CASES, ids=[f"{r}-seq{s}" for r, s in MASK_CASES])
def test_masked_recurrent_layers_follow_keras(tmp_path, rnn, sequences):
    """Keras 3: masked steps keep the state, the outputs repeat (zeros before the first
    unmasked step), return_sequences=False returns the last unmasked step's output; the float
    IR equals predict and the C equals the reference."""
    keras.utils.set_random_seed(3)
    layer = getattr(L, rnn)(4, return_sequences=sequences)
    model = keras.Sequential([keras.Input((9, 3)), L.Masking(0.0), layer, L.Dense(2)])
    x = masked_input()
    ir = read_keras_model(model)
    np.testing.assert_allclose(
        forward(ir, x)[0], model.predict(x, verbose=0), atol=FLOAT_FORWARD_TOLERANCE
    )
    conversion = convert_ir(ir, np.concatenate([x] * 4), tmp_path / "out")
    x_q = fp.quantize_input(x, conversion.qmodel.input_inv_scale)
    for entry, e in ENTRY_POINTS.items():
        inputs = x if e.float_input else x_q
        got = run_entry_point(tmp_path / "out", entry, inputs, sanitize=True)
        assert compare_output(entry, expected_output(conversion.qmodel, entry, inputs), got) is None


TF_KERAS_MASKING = """
import json, sys
import numpy as np
import tf_keras as keras
L = keras.layers
x = np.load(sys.argv[1])
for rnn in ("LSTM", "GRU"):
    for sequences in (True, False):
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((9, 3)), L.Masking(0.0),
                                  getattr(L, rnn)(4, return_sequences=sequences), L.Dense(2)])
        path = f"{sys.argv[2]}/{rnn}-{sequences}.h5"
        model.save(path)
        np.save(path + ".npy", model.predict(x, verbose=0))
"""


def test_masked_recurrent_layers_follow_tf_keras(tmp_path):
    """The same semantics in Keras 2 (tf_keras), read from its .h5 files."""
    import subprocess
    import sys

    from lstm_embed.frontends.keras.frontend import load_model

    np.save(tmp_path / "x.npy", masked_input())
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    subprocess.run(
        [sys.executable, "-c", TF_KERAS_MASKING, str(tmp_path / "x.npy"), str(tmp_path)],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    for rnn, sequences in MASK_CASES:
        path = tmp_path / f"{rnn}-{sequences}.h5"
        y = np.load(f"{path}.npy")
        np.testing.assert_allclose(
            forward(load_model(path), masked_input())[0], y, atol=FLOAT_FORWARD_TOLERANCE
        )


# Every option of the whole-window kinds (untrained, fixed seeds): float IR == predict, C ==
# reference on every entry point under the sanitizers, and the header naming the layer
WINDOW_CASES: dict[str, Callable[[], list]] = {
    "conv-valid-dilated": lambda: [
        L.Conv1D(4, 2, padding="valid", dilation_rate=3, activation="tanh"),
        L.LSTM(4),
    ],
    "conv-same-strided-nobias": lambda: [
        L.Conv1D(4, 3, padding="same", strides=2, use_bias=False, activation="sigmoid"),
        L.LSTM(4),
    ],
    "conv-causal-strided": lambda: [L.Conv1D(3, 3, padding="causal", strides=2), L.LSTM(3)],
    "maxpool-same-strided": lambda: [
        L.Conv1D(4, 3),
        L.MaxPooling1D(3, strides=2, padding="same"),
        L.LSTM(4),
    ],
    "avgpool-valid": lambda: [L.AveragePooling1D(2), L.LSTM(4), L.Dense(2)],
    "avgpool-same-stride1": lambda: [
        L.LSTM(5, return_sequences=True),
        L.AveragePooling1D(4, strides=1, padding="same"),
        L.Dense(2),
    ],
    "global-max": lambda: [L.LSTM(5, return_sequences=True), L.GlobalMaxPooling1D()],
    "global-average-after-conv": lambda: [
        L.LSTM(5, return_sequences=True),
        L.Conv1D(3, 2),
        L.GlobalAveragePooling1D(),
    ],
    "reshape-regroup": lambda: [L.LSTM(4, return_sequences=True), L.Reshape((18, 2)), L.LSTM(3)],
    "reshape-vector": lambda: [L.LSTM(4, return_sequences=True), L.Reshape((-1,)), L.Dense(2)],
    "repeat-autoencoder": lambda: [
        L.LSTM(4),
        L.RepeatVector(9),
        L.LSTM(3, return_sequences=True),
        L.Dense(3),
    ],
}


@pytest.mark.parametrize("case", WINDOW_CASES)
def test_whole_window_kinds_follow_keras(tmp_path, case):
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((9, 3)), *WINDOW_CASES[case]()])
    x = np.random.default_rng(6).normal(size=(32, 9, 3)).astype(np.float32)
    ir = read_keras_model(model)
    keras_y = model.predict(x, verbose=0)
    np.testing.assert_allclose(forward(ir, x)[0], keras_y, atol=FLOAT_FORWARD_TOLERANCE)
    conversion = convert_ir(ir, x, tmp_path / "out")
    q = conversion.qmodel
    assert not q.streaming
    header = (tmp_path / "out" / f"{conversion.report['name']}.h").read_text()
    assert f"Run-only: layer '{q.whole_window_layer.name}' needs the whole window" in header
    x_q = fp.quantize_input(x, q.input_inv_scale)
    x_q[-1] = np.where(np.arange(9)[:, None] % 2 == 0, -32768, 32767)
    for entry in model_entries(q):
        inputs = x if ENTRY_POINTS[entry].float_input else x_q
        got = run_entry_point(tmp_path / "out", entry, inputs, sanitize=True)
        assert compare_output(entry, expected_output(q, entry, inputs), got) is None, entry
    error = float(np.max(np.abs(run_entry_point(tmp_path / "out", "run_f32", x) - keras_y)))
    assert error <= INT8_MAX_PCT_OF_RANGE / 100 * float(np.ptp(keras_y))


def test_output_timesteps_other_than_the_input_are_refused():
    keras.utils.set_random_seed(5)
    chain = [L.LSTM(4, return_sequences=True), L.MaxPooling1D(2)]
    model = keras.Sequential([keras.Input((9, 3)), *chain])
    with pytest.raises(Exception, match=r"output has 4 timesteps, the input 9"):
        read_keras_model(model)


def test_fuzzer_draws_every_kind_and_they_convert():
    """The fuzzer's specs mix every around kind with the recurrent ones (fuzz_around); a batch
    of them converts and its sanitized host C equals the reference on every entry point."""
    from lstm_embed.tools import fuzz_around, fuzz_front
    from lstm_embed.tools.fuzz import check_specs, random_spec

    specs = [random_spec(seed) for seed in range(1500)]
    drawn = {item.split(":")[1] for spec in specs for item in spec.around}
    kinds = {*fuzz_around.PER_STEP, *fuzz_around.WHOLE_WINDOW, "masking"}
    kinds |= {*fuzz_around.NEW_PER_STEP, *fuzz_around.NEW_HEAD, *fuzz_front.KINDS}
    assert drawn == kinds
    mixed = [spec for spec in specs if len(spec.around) >= 2][:16]
    outcomes = check_specs(mixed, jobs=2, batch_size=8)
    assert [o.status for o in outcomes] == ["ok"] * len(mixed), [o.detail for o in outcomes]


def _front_features(spec) -> set[str]:
    """The kinds of fuzz_front a chain spec holds: its input and front kinds, and the relu or
    linear states of its LSTM and GRU layers ("lstm relu", ...)."""
    from lstm_embed.tools import fuzz_front

    kinds = {item.split(":")[1] for item in spec.around} & set(fuzz_front.KINDS)
    states = {f"{la.kind} {la.activation}" for la in spec.lstm if la.kind in ("lstm", "gru")}
    return kinds | (states - {"lstm tanh", "gru tanh"})


def test_fuzzer_draws_the_input_kinds_and_states_and_they_equal_the_reference():
    """Embedding (and mask_zero), Conv2D with 2D poolings over frames, Conv1DTranspose and
    relu/linear LSTM and GRU states are drawn (fuzz_front), and every such draw of 2000 seeds
    builds (a pooling that halved T in a model returning sequences did not: seed 2264); the
    first seed of each converts and its sanitized host C equals the reference on every entry
    point."""
    from lstm_embed.tools import fuzz_front
    from lstm_embed.tools.fuzz import build_model, check_specs, random_spec

    wanted = {*fuzz_front.KINDS, *(f"{k} {a}" for k in ("lstm", "gru")
                                   for a in fuzz_front.STATE_ACTIVATIONS)}  # fmt: skip
    picked: dict[str, object] = {}
    for seed in range(2000):
        spec = random_spec(seed)
        features = _front_features(spec)
        if features:
            build_model(spec)  # an IRError names what does not fit
        for feature in features - set(picked):
            picked[feature] = spec
    assert set(picked) == wanted, wanted - set(picked)
    specs = list({spec.seed: spec for spec in picked.values()}.values())
    outcomes = check_specs(specs, jobs=2, batch_size=8)
    assert [o.status for o in outcomes] == ["ok"] * len(specs), [
        (o.spec.seed, o.detail) for o in outcomes if o.status != "ok"
    ]


@pytest.mark.parametrize("first", ["masking", "embedding_mask"])
def test_a_mask_no_recurrent_layer_reads_compiles(tmp_path, first):
    """Regression (fuzzer seed 541): the mask of an Embedding(mask_zero=True) that a Conv1D
    drops before the recurrent layer (Keras: Conv1D does not pass a mask on) left advance()'s
    ``masked`` parameter unused (a Masking layer uses it itself), which the strict host build
    (-Werror) refused; the C now equals the reference there, with either layer."""
    from lstm_embed.tools.fuzz import Case, ModelSpec, build_inputs, check_batch
    from lstm_embed.tools.fuzz_around import around_layers
    from lstm_embed.tools.fuzz_layers import LSTMSpec, recurrent_layer

    rng = np.random.default_rng(5)
    spec = ModelSpec(seed=5, inputs=3, timesteps=7, lstm=(LSTMSpec(4),))
    layers = [
        *around_layers(rng, first, first, 3, 7),
        *around_layers(rng, "conv_causal", "conv", 3, 7),
        recurrent_layer(rng, LSTMSpec(4), "lstm", 3, False),
    ]
    model = Model("net", layers[0].input_size, None, tuple(layers), source="mask test")
    ids = layers[0].input_dim if layers[0].takes_ids else 0
    calibration, x, x_q = build_inputs(spec, model.input_size, ids)
    calibration[:, :2] = 0.0 if first == "embedding_mask" else layers[0].mask_value  # masked
    outcomes = check_batch([Case(spec, model, calibration, x, x_q)], tmp_path)
    assert [(o.status, o.detail) for o in outcomes] == [("ok", "")]


def test_fuzzer_draws_frame_runs_and_they_equal_the_reference():
    """The "frame_run" front (a valid Conv1D + pooling pair, a per-step Dense) before a forward
    recurrent layer: drawn in some 1 in 10 seeds, the run in the plan (emit.window_plan) of
    the first four such models, whose sanitized host C equals the reference."""
    from lstm_embed.emit.window_plan import frame_runs, fused_pairs
    from lstm_embed.quantize.quantizer import QuantizeOptions, quantize
    from lstm_embed.tools.fuzz import build_case, check_specs, random_spec

    specs = [random_spec(seed) for seed in range(400)]
    drawn = [spec for spec in specs if "front:frame_run" in spec.around]
    assert len(drawn) >= 20, len(drawn)
    first = drawn[:4]
    for spec in first:
        case = build_case(spec)
        qmodel = quantize(case.model, case.calibration, QuantizeOptions())
        heads = list(frame_runs(qmodel))
        assert heads and heads[0] - 1 in fused_pairs(qmodel), spec.seed
    outcomes = check_specs(first, jobs=2, batch_size=4)
    assert [o.status for o in outcomes] == ["ok"] * len(first), [o.detail for o in outcomes]
