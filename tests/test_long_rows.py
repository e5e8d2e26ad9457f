"""int8 weights at any row length (issue 22, part 3): rows longer than one int32 sum allows
(516 inputs + units) are summed per block of columns in int32, the blocks added in int64 and
rounded once into the accumulator; the reference (numpy) and the C (host under ASan/UBSan,
Cortex-M0/M4/M55 under QEMU) agree bit for bit. The oracle of the arithmetic is Python's exact
integers; the models are random (the contract tested is integer equality, not accuracy).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from lstm_embed.ir.model import DenseLayer, Model
from lstm_embed.kinds.conv1d import Conv1DLayer
from lstm_embed.kinds.gru import GRULayer
from lstm_embed.kinds.simple_rnn import SimpleRNNLayer
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.reference import interpreter as reference
from lstm_embed.targets.hostbuild import run_host
from tests.helpers import generated_c, random_inputs, random_lstm

TIMESTEPS = 3  # few steps: the row sums, not the recurrence, are under test
SEQUENCES = 4


# ---------------------------------------------------------------------------------------------
# The arithmetic (fixedpoint.py), against Python integers


def test_single_sum_bound_is_516_columns() -> None:
    """516 columns of |127 * -32768| fit int32, 517 do not: the single-sum path ends at 516."""
    assert 516 * 127 * 2**15 <= 2**31 - 1 < 517 * 127 * 2**15
    assert fp.INT8_ROW_MAX == 516
    assert fp.accumulator_shift(8, 516) == 0 and fp.accumulator_shift(8, 517) > 0
    assert fp.INT8_BLOCK_COLUMNS * 127 * 2**15 <= 2**31 - 1


@pytest.mark.parametrize("length", [517, 525, 608, 1032, 1033, 5000, 70000])
def test_accumulator_shift_is_the_least_that_leaves_room_for_the_bias(length: int) -> None:
    s = fp.accumulator_shift(8, length)
    peak = length * 127 * 2**15
    assert peak <= 2 ** (30 + s) and (s == 1 or peak > 2 ** (29 + s))
    assert fp.accumulator_headroom(length, 8) == 2**30  # |dot / 2^s| + |bias| <= 2^31


@pytest.mark.parametrize("length", [517, 600, 1024, 1500])
def test_blocked_sum_is_exact_at_the_extremes(length: int) -> None:
    """Every weight +-127 against -32768 (the largest products), and random rows: the blocked
    sum equals Python's exact dot product, and the accumulator equals Python's rounding."""
    rng = np.random.default_rng(length)
    w = np.stack([np.full(length, 127), np.full(length, -127), rng.integers(-127, 128, length)])
    s = fp.accumulator_shift(8, length)
    bias = np.array([2**30, -(2**30), 12345])
    for a in (np.full(length, -32768), rng.integers(-32768, 32768, length)):
        dot = fp.blocked_dot_s8(w.astype(np.int8), a.astype(np.int16))
        exact = [sum(int(p) * int(q) for p, q in zip(row, a, strict=True)) for row in w]
        assert dot.tolist() == exact
        acc = fp.accumulate(dot, bias, 8, length)
        expected = [max(-(2**31 - 1), min(2**31 - 1, (d + 2 ** (s - 1)) // 2**s + b))
                    for d, b in zip(exact, bias.tolist(), strict=True)]  # fmt: skip
        assert acc.tolist() == expected
    assert length * 127 * 2**15 > 2**31  # the extreme row: one int32 sum would have wrapped


# ---------------------------------------------------------------------------------------------
# Converted models: reference == host C under the sanitizers


def _convert(model: Model, x: np.ndarray, out_dir: Path, **options):
    with warnings.catch_warnings():  # few calibration sequences, on purpose (speed)
        warnings.simplefilter("ignore")
        conversion = convert_ir(model, x, out_dir, name="net", options=QuantizeOptions(**options))
    x_q = fp.quantize_input(x, conversion.qmodel.input_inv_scale)
    return conversion.qmodel, x_q


def _assert_host_equals_reference(out_dir: Path, qmodel, x_q: np.ndarray) -> None:
    y_host = run_host(out_dir, x_q, sanitize=True)  # ASan + UBSan, -Wall -Wextra -Wconversion
    np.testing.assert_array_equal(y_host, reference.run(qmodel, x_q))


def _lstm_model(m: int, n: int, seed: int) -> Model:
    rng = np.random.default_rng(seed)
    layers = (random_lstm(rng, "lstm", m, n, return_sequences=True),)
    return Model("net", m, TIMESTEPS, layers, source=f"LSTM({n}) on {m} inputs")


def _long_models() -> dict[str, tuple[Model, int]]:
    """Models whose int8 rows exceed 516 columns, per kind (model, input size)."""
    rng = np.random.default_rng(7)

    def gru(m: int, n: int, reset_after: bool) -> GRULayer:
        shape = (2, 3 * n) if reset_after else (3 * n,)
        return GRULayer(
            name="gru", input_size=m, units=n, kernel=rng.uniform(-0.1, 0.1, (m, 3 * n)),
            recurrent_kernel=rng.uniform(-0.2, 0.2, (n, 3 * n)),
            bias=rng.uniform(-0.1, 0.1, shape), reset_after=reset_after,
            recurrent_activation="sigmoid", return_sequences=True,
        )  # fmt: skip

    rnn = SimpleRNNLayer(
        "rnn", 560, 24, rng.uniform(-0.08, 0.08, (560, 24)), rng.uniform(-0.3, 0.3, (24, 24)),
        rng.uniform(-0.1, 0.1, 24), "tanh", True,
    )  # fmt: skip
    conv = Conv1DLayer(
        "conv", 200, 5, 3, 1, rng.uniform(-0.1, 0.1, (3, 200, 5)), rng.uniform(-0.1, 0.1, 5),
        "linear",
    )  # fmt: skip
    spread_kernel = rng.normal(size=(4, 600)) * 0.1
    spread = DenseLayer("spread", 4, 600, spread_kernel, np.full(600, 3.0), "tanh")  # ~ +1
    wide = DenseLayer("wide", 600, 3, np.full((600, 3), 0.01), np.array([0.1, 0, -0.1]), "linear")
    return {
        "gru reset_after": (Model("net", 530, TIMESTEPS, (gru(530, 8, True),)), 530),
        "gru reset_before": (Model("net", 12, TIMESTEPS, (gru(12, 520, False),)), 12),
        "simple_rnn": (Model("net", 560, TIMESTEPS, (rnn,)), 560),
        "conv1d window 600": (
            Model("net", 200, TIMESTEPS, (conv, random_lstm(rng, "lstm", 5, 4, True))),
            200,
        ),
        "dense 600": (
            Model("net", 2, TIMESTEPS, (random_lstm(rng, "lstm", 2, 4), spread, wide)),
            2,
        ),
    }


@pytest.mark.parametrize(("m", "n"), [(13, 512), (8, 600)])
def test_large_lstm_converts_with_int8_and_equals_the_reference(tmp_path, m, n) -> None:
    """LSTM(512) on 13 inputs (rows of 525) and LSTM(600) on 8 (608): int8, blocked sums."""
    qmodel, x_q = _convert(_lstm_model(m, n, seed=n), random_inputs(n, SEQUENCES, TIMESTEPS, m),
                           tmp_path)  # fmt: skip
    layer = qmodel.layers[0]
    assert layer.weight_bits == 8 and layer.blocked and layer.acc_shift == 2
    assert f"int8_t net_lstm0_weights_s8[{4 * n * (m + n)}]" in generated_c(tmp_path)
    assert np.ptp(reference.run(qmodel, x_q)) > 10000  # h moves: the comparison means something
    _assert_host_equals_reference(tmp_path, qmodel, x_q)


@pytest.mark.parametrize("label", list(_long_models()))
def test_every_kind_with_long_rows_equals_the_reference(tmp_path, label) -> None:
    model, m = _long_models()[label]
    x = random_inputs(3, SEQUENCES, TIMESTEPS, m, scale=2.0)
    qmodel, x_q = _convert(model, x, tmp_path)
    assert any("blocked_rows" in q.uses() for q in qmodel.layers)
    _assert_host_equals_reference(tmp_path, qmodel, x_q)


def test_dense_row_whose_single_sum_would_overflow(tmp_path) -> None:
    """600 inputs near +1 (saturated tanh) times int8 weights of 127: the true row sum is beyond
    2^31 (a single int32 sum would wrap); blocked, the C equals the reference."""
    model, m = _long_models()["dense 600"]
    x = random_inputs(3, SEQUENCES, TIMESTEPS, m, scale=2.0)
    qmodel, x_q = _convert(model, x, tmp_path)
    wide = qmodel.layers[-1]
    assert wide.blocked and np.all(np.abs(wide.weights) == 127)
    from lstm_embed.ir.float_model import forward

    _, trace = forward(Model("net", m, TIMESTEPS, model.layers[:2]), x.astype(np.float64))
    assert np.min(np.abs(trace[-1].output)) > 0.95  # so |x_q| > 0.95 * 2^15 for every input
    assert 600 * 127 * 0.95 * 2**15 > 2**31
    _assert_host_equals_reference(tmp_path, qmodel, x_q)


def test_input_shift_with_long_rows(tmp_path) -> None:
    """An explicit --input-shift counts the input columns 2^k times: 100 inputs + 200 units at
    shift 2 is a row of 600 (blocked), the same model at shift 0 is 300 (one int32 sum)."""
    model = _lstm_model(100, 200, seed=3)
    x = random_inputs(4, SEQUENCES, TIMESTEPS, 100)
    qmodel, x_q = _convert(model, x, tmp_path / "shift2", input_shift=2)
    assert qmodel.layers[0].blocked and qmodel.layers[0].effective_row_length == 600
    np.testing.assert_array_equal(
        run_host(tmp_path / "shift2", x_q, sanitize=True), reference.run(qmodel, x_q)
    )
    plain, _ = _convert(model, x, tmp_path / "shift0", input_shift=0)
    assert not plain.layers[0].blocked


def test_rows_that_fit_keep_the_single_sum(tmp_path) -> None:
    """516 columns: no blocked code in the C (the optimized kernels as before)."""
    qmodel, _ = _convert(_lstm_model(16, 500, seed=1), random_inputs(1, 4, TIMESTEPS, 16), tmp_path,
                         input_shift=0)  # fmt: skip
    assert not qmodel.layers[0].blocked and not qmodel.layers[0].portable_only
    assert "blocked" not in generated_c(tmp_path)


# ---------------------------------------------------------------------------------------------
# Cortex-M under QEMU. LSTM(512)/13 (1.07 MB of int8 weights) and LSTM(600)/8 (1.46 MB) fit
# qemu-m4's 4 MB flash; qemu-m0 (256 KB) and qemu-m55 (512 KB ITCM) run rows as long with
# fewer units.

QEMU_CASES = {
    "qemu-m4": [(13, 512), (8, 600)],
    "qemu-m0": [(600, 12)],
    "qemu-m55": [(600, 40)],
}


@pytest.mark.parametrize(
    ("board", "m", "n"), [(b, m, n) for b, shapes in QEMU_CASES.items() for m, n in shapes]
)
def test_long_rows_on_cortex_m_equal_the_reference(toolchain, tmp_path, board, m, n) -> None:
    from lstm_embed.targets import firmware

    x = random_inputs(m + n, 2, TIMESTEPS, m)
    qmodel, x_q = _convert(_lstm_model(m, n, seed=m + n), x, tmp_path)
    assert qmodel.layers[0].blocked
    y_board = firmware.run_qemu(tmp_path, board, x_q)
    np.testing.assert_array_equal(y_board, reference.run(qmodel, x_q))


# the other kinds' blocked rows (GRU reference kernel, SimpleRNN, Dense/Conv1D rows) once each
QEMU_KINDS = {
    "qemu-m0": ["gru reset_after", "dense 600"],
    "qemu-m4": ["gru reset_before", "conv1d window 600"],
    "qemu-m55": ["simple_rnn"],
}


@pytest.mark.parametrize(
    ("board", "label"), [(b, label) for b, labels in QEMU_KINDS.items() for label in labels]
)
def test_other_kinds_on_cortex_m_equal_the_reference(toolchain, tmp_path, board, label) -> None:
    from lstm_embed.targets import firmware

    model, m = _long_models()[label]
    x = random_inputs(5, 2, TIMESTEPS, m, scale=2.0)
    qmodel, x_q = _convert(model, x, tmp_path)
    assert any("blocked_rows" in q.uses() for q in qmodel.layers)
    y_board = firmware.run_qemu(tmp_path, board, x_q)
    np.testing.assert_array_equal(y_board, reference.run(qmodel, x_q))


# ---------------------------------------------------------------------------------------------
# A Keras-built LSTM(512) on 13 MFCC-like features, against Keras itself

# Max abs error of the int8 C against Keras, in percent of Keras' output range: the default of
# --max-error (what --weights auto accepts). Measured: 0.55% with nearest rounding (0.22% with
# the default auto rounding, which takes 5x longer to convert).
KERAS_MAX_ERROR_PCT = 1.0


def test_keras_lstm512_inspects_clean_and_converts_with_int8(tmp_path, capsys) -> None:
    """inspect flags nothing for rows of 525; convert (the file, nothing given about widths)
    writes int8 weights, and the C follows Keras within KERAS_MAX_ERROR_PCT."""
    import keras

    from lstm_embed import cli

    keras.utils.set_random_seed(3)  # Keras' default initializers: Glorot, orthogonal
    layers = [keras.Input((8, 13)), keras.layers.LSTM(512), keras.layers.Dense(8)]
    model = keras.Sequential(layers, name="kws")
    model.save(tmp_path / "kws.keras")
    assert cli.main(["inspect", str(tmp_path / "kws.keras")]) == 0
    assert capsys.readouterr().err == ""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(64, 8, 13)).astype(np.float32))
    out = tmp_path / "out"
    args = ["convert", tmp_path / "kws.keras", "-c", tmp_path / "x.npy", "-o", out,
            "--rounding", "nearest"]  # fmt: skip
    assert cli.main([str(a) for a in args]) == 0
    assert "int8_t kws_lstm0_weights_s8[1075200]" in generated_c(out, "kws")
    test = rng.normal(size=(32, 8, 13)).astype(np.float32)
    keras_y = model.predict(test, verbose=0)
    error = np.max(np.abs(run_host(out, test) - keras_y))
    assert 100 * error / np.ptp(keras_y) < KERAS_MAX_ERROR_PCT
