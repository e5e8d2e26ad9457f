"""Embedding over integer token ids in trained command classifiers (issue 20).

Synthetic commands: sequences of T ids from a vocabulary of V; the class is which of three
keyword groups (ids 1..30) appears in the sequence, among background ids (31..V-1). The
mask_zero models train on zero-padded sequences of 8..T ids (padded at the end or at the
start, as Keras' pad_sequences does). Each model trains with fixed seeds (a few seconds),
converts once per session, and is held to: its float IR equal to ``model.predict``; the C
within 5% of Keras' output range (int8 and int16 tables); the host C (strict warnings, and
ASan/UBSan) equal to the numpy reference bit for bit on every entry point, on held-out ids
and on ids the C must clamp; the firmware of Cortex-M0, M4 and M55 in QEMU equal to it too;
out-of-range ids refused by ``lstm-embed run`` in one line with exit status 2; the four
Keras file kinds (Keras 3 and tf_keras, .keras and .h5) read alike.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.frontends.keras.frontend import read_keras_model
from lstm_embed.ir.float_model import forward
from lstm_embed.ir.model import Model
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize.qir import QModel
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.targets.hostbuild import run_entry_point
from lstm_embed.targets.inputs import ENTRY_POINTS
from lstm_embed.tools.fuzz import compare_output, expected_output, model_entries

from .helpers import (
    TrainedCase,
    assert_float_ir_equals_predict,
    assert_within_range_pct,
    c_error_pct_of_range,
    fit_sequential,
    inspect_text,
    layer_rows,
)

pytestmark = pytest.mark.slow

L = keras.layers
V, T, D = 500, 20, 16  # vocabulary, timesteps, embedding width
KEYWORDS = np.arange(1, 31).reshape(3, 10)  # the keyword ids of each class
# Float IR (float64) vs predict (float32): rounding only
FLOAT_FORWARD_TOLERANCE = 1e-5
# The bound: max abs error vs Keras <= 5% of the output range
MAX_PCT_OF_RANGE = 5.0
QEMU_BOARDS = ("qemu-m0", "qemu-m4", "qemu-m55")
# The models learned their task (so the tolerances are measured on trained weights)
MIN_ACCURACY = 0.9


def commands(seed: int, n: int, padded: bool) -> tuple[np.ndarray, np.ndarray]:
    """(ids (n, T) int32, class (n,)): three keywords of the class among background ids;
    ``padded``: 8..T ids, zeros after them (odd rows: before them)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(31, V, (n, T))
    y = rng.integers(0, 3, n)
    lengths = rng.integers(8, T + 1, n) if padded else np.full(n, T)
    for i in range(n):
        x[i, rng.choice(lengths[i], 3, replace=False)] = rng.choice(KEYWORDS[y[i]], 3)
        x[i, lengths[i] :] = 0
        if padded and i % 2:
            x[i] = np.roll(x[i], T - lengths[i])
    return x.astype(np.int32), y


@dataclass(frozen=True)
class Recipe:
    layers: Callable[[], list]
    mask_zero: bool
    dtype: str = "int32"  # the Input's dtype: "float32" takes floats holding the ids


RECIPES: dict[str, Recipe] = {
    "embedding_lstm": Recipe(
        lambda: [L.Embedding(V, D), L.LSTM(16), L.Dense(3, activation="softmax")], False
    ),
    "embedding_mask_zero_gru": Recipe(
        lambda: [L.Embedding(V, D, mask_zero=True), L.GRU(16), L.Dense(3, activation="softmax")],
        True,
    ),
    "embedding_mask_zero_lstm_float_input": Recipe(
        lambda: [
            L.Embedding(V, D, mask_zero=True),
            L.LSTM(12, return_sequences=True),
            L.LSTM(12),
            L.Dense(3, activation="softmax"),
        ],
        True,
        "float32",
    ),
}


@dataclass(frozen=True)
class Trained(TrainedCase):  # x_test: int32 ids (N, T), held out
    x_train: np.ndarray  # int32 ids (N, T)
    y_test: np.ndarray


def train(name: str) -> tuple[keras.Model, np.ndarray, np.ndarray, np.ndarray]:
    recipe = RECIPES[name]
    x, y = commands(1, 768, recipe.mask_zero)
    model = fit_sequential(
        name, recipe.layers, x.astype(recipe.dtype), y, epochs=8,
        loss="sparse_categorical_crossentropy", input_dtype=recipe.dtype, seed=7,
    )  # fmt: skip
    return model, x[:512], x[512:], y[512:]


def convert_case(model, x_train, out: Path, bits: int = 8) -> tuple[Model, QModel]:
    ir = read_keras_model(model, source="test_embedding")
    options = QuantizeOptions(weight_bits=(bits,))
    return ir, convert_ir(ir, x_train[:256], out, options=options).qmodel


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Trained]:
    @functools.cache
    def get(name: str) -> Trained:
        model, x_train, x_test, y_test = train(name)
        out = tmp_path_factory.mktemp(name) / "out"
        ir, qmodel = convert_case(model, x_train, out)
        keras_y = model.predict(x_test.astype(RECIPES[name].dtype), verbose=0)
        return Trained(model, ir, qmodel, out, x_test, keras_y, x_train, y_test)

    return get


def edge_ids(case: Trained) -> tuple[np.ndarray, np.ndarray]:
    """(int16, float32) ids (N, T, 1): held-out sequences, then ones the C must clamp or round:
    negative ids, ids >= V, int16's extremes; the float ones also non-integers, huge values
    and NaN (quantized as every float input: NaN -> 0, beyond int16 saturates)."""
    x = case.x_test[:24].astype(np.int16)
    wild = np.resize(np.array([-1, V, V - 1, 32767, -32768, 0, 5, V + 7], np.int16), (2, T))
    x_q = np.concatenate([x, wild])[..., None]
    floats = np.resize(np.array([2.5, -0.4, 1e6, -1e6, np.nan, 0.0, 3.49, -2.5]), (2, T))
    x_f = np.concatenate([x_q[:-2, :, 0].astype(np.float32), wild, floats]).astype(np.float32)
    return x_q, x_f[..., None]


def difference(case: Trained, run: Callable[[str, np.ndarray], np.ndarray]) -> str | None:
    x_q, x = edge_ids(case)
    for entry in model_entries(case.qmodel):
        inputs = x if ENTRY_POINTS[entry].float_input else x_q
        want = expected_output(case.qmodel, entry, inputs)
        found = compare_output(entry, want, run(entry, inputs))
        if found is not None:
            return f"{entry}: {found}"
    return None


# ---------------------------------------------------------------------------------- tests


def test_models_learned_their_task(trained):
    for name in RECIPES:
        case = trained(name)
        accuracy = float(np.mean(np.argmax(case.keras_y, axis=-1) == case.y_test))
        assert accuracy >= MIN_ACCURACY, (name, accuracy)


@pytest.mark.parametrize("name", RECIPES)
def test_float_ir_equals_predict(trained, name):
    case = trained(name)
    x = case.x_test[..., None].astype(np.float64)
    assert_float_ir_equals_predict(case.ir, x, case.keras_y, FLOAT_FORWARD_TOLERANCE)


@pytest.mark.parametrize("name", RECIPES)
def test_c_within_tolerance_of_keras(trained, name, tmp_path):
    """int8 and int16 tables (and the layers after them: --weights applies to every layer);
    the table's flash is V * D bytes per byte of weight width."""
    case = trained(name)
    ids = case.x_test.astype(np.float32)  # (N, T): the runners take ids without a feature axis
    for bits in (8, 16):
        out = case.out
        if bits == 16:
            out = tmp_path / "int16"
            convert_case(case.model, case.x_train, out, 16)
        _, pct = c_error_pct_of_range(out, ids, case.keras_y)
        table = json.loads((out / "report.json").read_text())["layers"][0]
        print(f"{name} int{bits}: max abs error {pct:.2f}% of the output range;"
              f" table {table['flash_bytes']} B")  # fmt: skip
        assert_within_range_pct(f"{name} int{bits}", pct, MAX_PCT_OF_RANGE)
        assert table["flash_bytes"] == V * D * bits // 8


@pytest.mark.parametrize("sanitize", [False, True], ids=["strict", "asan-ubsan"])
@pytest.mark.parametrize("name", RECIPES)
def test_host_c_equals_reference_on_every_entry_point(trained, name, sanitize):
    case = trained(name)

    def run(entry: str, inputs: np.ndarray) -> np.ndarray:
        return run_entry_point(case.out, entry, inputs, sanitize=sanitize, check_finite=False)

    assert difference(case, run) is None


@pytest.mark.firmware
@pytest.mark.parametrize("board", QEMU_BOARDS)
@pytest.mark.parametrize("name", ["embedding_lstm", "embedding_mask_zero_gru"])
def test_qemu_equals_reference_on_every_entry_point(toolchain, trained, name, board):
    from lstm_embed.targets import firmware

    case = trained(name)
    x_q, x = edge_ids(case)
    x_q, x = x_q[-6:], x[-6:]  # two held-out sequences, the clamped and the rounded ones
    entries = list(model_entries(case.qmodel))
    got = firmware.run_entry_points(case.out, board, entries, x_q, x, check_finite=False)
    for entry in entries:
        inputs = x if ENTRY_POINTS[entry].float_input else x_q
        found = compare_output(entry, expected_output(case.qmodel, entry, inputs), got[entry])
        assert found is None, f"{name} on {board}, {entry}: {found}"


def test_mask_zero_padding_changes_nothing(trained):
    """mask_zero: zeros after a command leave the C's output as the command alone gives it,
    and zeros before it too (the recurrent layers keep their state over masked steps)."""
    case = trained("embedding_mask_zero_gru")
    command = case.x_test[:8, :12].copy()
    command[command == 0] = 31  # a background id: the command has no padding of its own
    padded_after = np.concatenate([command, np.zeros((8, T - 12), np.int32)], axis=1)
    padded_before = np.concatenate([np.zeros((8, T - 12), np.int32), command], axis=1)
    alone = run_entry_point(case.out, "run", command.astype(np.int16))
    for padded in (padded_after, padded_before):
        np.testing.assert_array_equal(run_entry_point(case.out, "run", padded), alone)


def test_run_refuses_ids_out_of_range(trained, tmp_path, capsys):
    case = trained("embedding_lstm")
    for bad, shown in ((V, f"{V}"), (-1, "-1"), (2.5, "2.5")):
        x = case.x_test[:3].astype(np.float64 if isinstance(bad, float) else np.int32)
        x[1, 4] = bad
        np.save(tmp_path / "x.npy", x)
        status = cli.main(["run", str(case.out), "-i", str(tmp_path / "x.npy"),
                           "-o", str(tmp_path / "y.npy")])  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert status == 2
        assert len(err.splitlines()) == 1, err
        assert f"holds {shown}" in err and "(1, 4)" in err and f"0 to {V - 1}" in err, err
        assert not (tmp_path / "y.npy").exists()


def test_python_api_takes_ids(trained):
    import lstm_embed

    case = trained("embedding_mask_zero_gru")
    runtime = lstm_embed.load(case.out)
    ids = case.x_test[:4]
    y = runtime.predict(ids.astype(np.float32))
    np.testing.assert_array_equal(y, run_entry_point(case.out, "run_f32", ids.astype(np.float32)))
    runtime.reset()
    steps = [runtime.step(np.float32(i)) for i in ids[0]]  # one id at a time
    np.testing.assert_array_equal(steps[-1], y[0])


def test_inspect_states_the_keras_input_and_the_embedding_row(trained, tmp_path, capsys):
    case = trained("embedding_mask_zero_gru")
    text = inspect_text(case.model, tmp_path / "m.keras", capsys)
    assert f"input shape (None, {T})" in text
    row = layer_rows(text, case.model.layers[0].name)[0]
    assert row.split()[1] == "Embedding"
    assert str(V * D) in row.split() and f"(None, {T}, {D})" in row


def test_trace_takes_ids_and_the_header_states_them(trained, tmp_path, capsys):
    case = trained("embedding_lstm")
    ids = case.x_test[:3]
    np.save(tmp_path / "x.npy", ids)
    trace = tmp_path / "t.npz"
    assert cli.main(["trace", str(case.out), "-i", str(tmp_path / "x.npy"), "-o", str(trace)]) == 0
    arrays = np.load(trace)
    np.testing.assert_array_equal(arrays["x_q"][..., 0], ids)
    np.testing.assert_array_equal(arrays["y_q"], run_entry_point(case.out, "run", ids))
    name = json.loads((case.out / "report.json").read_text())["name"]
    header = (case.out / f"{name}.h").read_text()
    assert f"_INPUT_IDS {V}\n" in header and "_INPUT_SIZE 1\n" in header


TF_KERAS_EMBEDDING = """
import sys
import numpy as np
import tf_keras as keras
L = keras.layers
x = np.load(sys.argv[1])
keras.utils.set_random_seed(3)
model = keras.Sequential([keras.Input(x.shape[1:], dtype="int32"),
                          L.Embedding(40, 4, mask_zero=True), L.LSTM(5), L.Dense(2)])
model.save(sys.argv[2] + "/m2.h5")
model.save(sys.argv[2] + "/m2.keras")
np.save(sys.argv[2] + "/y2.npy", model.predict(x, verbose=0))
"""


def test_every_file_kind_reads_the_same_embedding(tmp_path):
    """Keras 3 (.keras, .h5) and Keras 2 (tf_keras .h5, .keras) files of an Embedding model:
    each reads, and its float IR equals that Keras' predict (padded ids: the mask too)."""
    import os
    import subprocess
    import sys

    from lstm_embed.frontends.keras.frontend import load_model

    x = np.random.default_rng(5).integers(0, 40, (16, 9)).astype(np.int32)
    x[:8, 6:] = 0  # padding after, and in the middle of some
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    subprocess.run(
        [sys.executable, "-c", TF_KERAS_EMBEDDING, str(tmp_path / "x.npy"), str(tmp_path)],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    keras.utils.set_random_seed(3)
    layers = [L.Embedding(40, 4, mask_zero=True), L.LSTM(5), L.Dense(2)]
    model = keras.Sequential([keras.Input((9,), dtype="int32"), *layers])
    model.save(tmp_path / "m3.keras")
    model.save(tmp_path / "m3.h5")
    y3 = model.predict(x, verbose=0)
    y2 = np.load(tmp_path / "y2.npy")
    for path, y in [(tmp_path / f"m2.{s}", y2) for s in ("h5", "keras")] + [
        (tmp_path / f"m3.{s}", y3) for s in ("h5", "keras")
    ]:
        ir = load_model(path)
        assert ir.layers[0].type_name == "Embedding" and ir.timesteps == 9, path.name
        y_ir, _ = forward(ir, x[..., None].astype(np.float64))
        np.testing.assert_allclose(y_ir, y, atol=FLOAT_FORWARD_TOLERANCE, err_msg=path.name)
