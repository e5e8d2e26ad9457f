"""Trained sample models (lstm_embed.tools.samples): generated C vs the reference and vs Keras.

Each model trains once (cached on disk by samples.py) and converts once per test session.
Errors are measured on the held-out test inputs through the real pipeline: convert, compile the
generated C on the host, run it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest

import lstm_embed
from lstm_embed import cli
from lstm_embed.ir.float_model import forward
from lstm_embed.ir.model import LSTMLayer
from lstm_embed.pipeline import Conversion
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.quantizer import INPUT_HEADROOM, QuantizeOptions
from lstm_embed.reference import interpreter as reference
from lstm_embed.targets.hostbuild import run_host
from lstm_embed.tools.compare import QMODEL_FILE, compare, dequantized_ir, load_qmodel, save_qmodel
from lstm_embed.tools.samples import Sample, oscillator_series, pattern_signals, sample

pytestmark = pytest.mark.slow

SAMPLES = ("digits", "stacked", "logits")

# Issue 2 (converter), "Done when": digits keeps accuracy within 0.5 points of Keras, mean abs
# error of the probabilities under 1e-3 and max under 0.06; the stacked regressor keeps max abs
# error under 3% of the target's range.
DIGITS_ACCURACY_POINTS = 0.5
DIGITS_MEAN_ABS = 1e-3
DIGITS_MAX_ABS = 0.06
REGRESSOR_MAX_PCT = 3.0

# Issue 6 (fidelity), int8 weights: digits mean <= 5e-4 and max <= 0.05; regressor max <= 1% of
# the target's range; logits max <= 2% of the logit range. (Several times closer than TFLite's
# int8 LSTM on such models; the naive int8 rounding floor is 0.044 / 0.4% / 0.7%.)
INT8_DIGITS_MEAN_ABS = 5e-4
INT8_DIGITS_MAX_ABS = 0.05
INT8_REGRESSOR_MAX_PCT = 1.0
INT8_LOGITS_MAX_PCT = 2.0

# Issue 6, int16 weights (int32 cell): digits max <= 2e-3; regressor max <= 0.05% of the
# target's range; logits max <= 0.1% of the logit range.
INT16_DIGITS_MAX_ABS = 2e-3
INT16_REGRESSOR_MAX_PCT = 0.05
INT16_LOGITS_MAX_PCT = 0.1
SETTINGS = {
    "int8": QuantizeOptions(),  # the default: --rounding auto
    "int8-nearest": QuantizeOptions(rounding="nearest"),
    "int16": QuantizeOptions(weight_bits=(16,)),
}

# Issue "Below the rounding floor": with the default rounding (auto: error feedback against the
# calibration data where it does no worse than nearest on a held-out part), int8 weights, on
# the held-out test inputs: mean abs error <= 0.6x and max abs error <= 1.1x nearest
# rounding's; the digits model's max abs error <= 0.03.
ROUNDING_MEAN_RATIO_MAX = 0.6
ROUNDING_MAX_RATIO_MAX = 1.1
ROUNDING_DIGITS_MAX_ABS = 0.03
# digits keeps nearest rounding under auto's rule as decided on the model zoo (issue 22,
# docs/accuracy-zoo.md): its held-out sequences are training images classified to within
# 0.0008, where gptq won 37% of the bootstrap resamples by the max (95% needed)
ROUNDING_SAMPLES = ("stacked", "logits", "gru_digits", "gru_stacked")

# Issue 6 targets not met yet, with the measured numbers; strict, so a fix shows as XPASS.
# (logits int8 met since the automatic input shift: 5.8% -> 1.1% of the logit range.)
ISSUE6_GAPS: dict[str, str] = {}

# Streaming (issue 6: "error stays bounded over 1000 streaming steps"). The integer arithmetic
# (input, activation tables, cell, h, output rounding) against a float model with the same int8
# weights: typically <= 0.33% of the output range over 1000 steps (logits), 0.024% (stacked);
# 0.5% leaves room while still catching a one-sided table or a saturating cell, which grow
# linearly with time in every stream (the sensitive logits streams: STREAM_ARITHMETIC_OUTLIERS).
STREAM_STEPS = 1000
STREAM_SEQUENCES = 16
STREAM_ARITHMETIC_MAX_PCT = 0.5
# Against Keras the whole model (int8 weights included) must stay within the regressor tolerance
# of issue 2 over the whole stream.
STREAM_GAPS: dict[str, str] = {
    "logits": "int8 weight rounding alone (float model with the same int8 weights) drifts"
    " from Keras on a 1000-step stream of a model trained on 50-step windows: max logit error"
    " 0.04 over steps 0-50, 10.0 over steps 750-1000; the integer arithmetic adds < 0.08",
}


@dataclass(frozen=True)
class Converted:
    sample: Sample
    conversion: Conversion
    keras_y: np.ndarray  # Keras on x_test (float64)
    c_y: np.ndarray  # generated C, float entry point, on x_test (float64)

    @property
    def out_dir(self) -> Path:
        return self.conversion.out_dir


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Converted]:
    """(name, setting) -> the sample trained, converted with SETTINGS[setting] and run in C on
    its test inputs (once a session)."""
    cache: dict[tuple[str, str], Converted] = {}

    def get(name: str, setting: str = "int8") -> Converted:
        if (name, setting) not in cache:
            s = sample(name)
            out = tmp_path_factory.mktemp(f"{name}-{setting}") / "out"
            conversion = lstm_embed.convert(
                s.model, calibration=s.x_train, out_dir=out, name=name, options=SETTINGS[setting]
            )
            keras_y = np.asarray(s.model.predict(s.x_test, verbose=0), np.float64)
            c_y = run_host(out, s.x_test.astype(np.float32)).astype(np.float64)
            cache[name, setting] = Converted(s, conversion, keras_y, c_y)
        return cache[name, setting]

    return get


def first_difference(expected: np.ndarray, actual: np.ndarray) -> str:
    index = tuple(int(i) for i in np.argwhere(expected != actual)[0])
    return f"first difference at {index}: reference {expected[index]}, C {actual[index]}"


def max_pct_of_range(expected: np.ndarray, actual: np.ndarray, span: float) -> float:
    return 100.0 * float(np.max(np.abs(actual - expected))) / span


def gap_marks(name: str, gaps: dict[str, str]) -> list[pytest.MarkDecorator]:
    return [pytest.mark.xfail(strict=True, reason=gaps[name])] if name in gaps else []


# ---------------------------------------------------------------------------------------------
# Bit-exact: generated C == numpy integer reference


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("name", SAMPLES)
def test_c_equals_reference_bit_for_bit(converted, name: str, setting: str) -> None:
    case = converted(name, setting)
    qmodel = case.conversion.qmodel
    x_q = fp.quantize_input(case.sample.x_test, qmodel.input_inv_scale)
    expected = reference.run(qmodel, x_q)
    actual = run_host(case.out_dir, x_q)
    assert actual.dtype == np.int16
    assert np.array_equal(actual, expected), first_difference(expected, actual)
    # float entry points: the C quantizes and dequantizes exactly as the reference does
    expected_f = reference.run_float(qmodel, case.sample.x_test)
    assert np.array_equal(case.c_y, expected_f.astype(np.float64))


# ---------------------------------------------------------------------------------------------
# Against Keras: issue 2 tolerances


def test_digits_issue2_tolerances(converted) -> None:
    case = converted("digits")
    labels = case.sample.y_test
    keras_acc = 100.0 * np.mean(np.argmax(case.keras_y, -1) == labels)
    c_acc = 100.0 * np.mean(np.argmax(case.c_y, -1) == labels)
    error = np.abs(case.c_y - case.keras_y)
    assert abs(c_acc - keras_acc) <= DIGITS_ACCURACY_POINTS
    assert error.mean() < DIGITS_MEAN_ABS
    assert error.max() < DIGITS_MAX_ABS


def test_stacked_regressor_issue2_tolerance(converted) -> None:
    case = converted("stacked")
    span = float(np.ptp(case.sample.y_test))
    assert max_pct_of_range(case.keras_y, case.c_y, span) < REGRESSOR_MAX_PCT


# ---------------------------------------------------------------------------------------------
# Against Keras: issue 6 int8 targets


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=gap_marks(n, ISSUE6_GAPS)) for n in SAMPLES]
)
def test_issue6_int8_targets(converted, name: str) -> None:
    case = converted(name)
    if name == "digits":
        error = np.abs(case.c_y - case.keras_y)
        keras_acc = 100.0 * np.mean(np.argmax(case.keras_y, -1) == case.sample.y_test)
        c_acc = 100.0 * np.mean(np.argmax(case.c_y, -1) == case.sample.y_test)
        assert error.mean() <= INT8_DIGITS_MEAN_ABS
        assert error.max() <= INT8_DIGITS_MAX_ABS
        assert abs(c_acc - keras_acc) <= DIGITS_ACCURACY_POINTS
    elif name == "stacked":
        span = float(np.ptp(case.sample.y_test))
        assert max_pct_of_range(case.keras_y, case.c_y, span) <= INT8_REGRESSOR_MAX_PCT
    else:
        span = float(np.ptp(case.keras_y))
        assert max_pct_of_range(case.keras_y, case.c_y, span) <= INT8_LOGITS_MAX_PCT


@pytest.mark.parametrize("name", SAMPLES)
def test_issue6_int16_targets(converted, name: str) -> None:
    case = converted(name, "int16")
    if name == "digits":
        assert np.max(np.abs(case.c_y - case.keras_y)) <= INT16_DIGITS_MAX_ABS
    elif name == "stacked":
        span = float(np.ptp(case.sample.y_test))
        assert max_pct_of_range(case.keras_y, case.c_y, span) <= INT16_REGRESSOR_MAX_PCT
    else:
        span = float(np.ptp(case.keras_y))
        assert max_pct_of_range(case.keras_y, case.c_y, span) <= INT16_LOGITS_MAX_PCT


# ---------------------------------------------------------------------------------------------
# Weight rounding against the calibration data (issue "Below the rounding floor")


@pytest.mark.parametrize("name", ROUNDING_SAMPLES)
def test_default_rounding_beats_nearest(converted, name: str) -> None:
    case, nearest = converted(name), converted(name, "int8-nearest")
    error = np.abs(case.c_y - case.keras_y)
    nearest_error = np.abs(nearest.c_y - nearest.keras_y)
    assert error.mean() <= ROUNDING_MEAN_RATIO_MAX * nearest_error.mean()
    assert error.max() <= ROUNDING_MAX_RATIO_MAX * nearest_error.max()
    if name.endswith("digits"):
        assert error.max() <= ROUNDING_DIGITS_MAX_ABS
    rounding = case.conversion.report["rounding"]
    assert rounding["option"] == "auto" and rounding["kept"] == "gptq"
    held = rounding["held_out"]  # what auto decided on: no worse than nearest there
    for key in ("mean_abs_error", "max_abs_error"):
        assert held["gptq"][key] <= held["nearest"][key]


def test_one_sequence_calibration_warns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The digits model calibrated on one sequence converts, but says it is not to be trusted;
    --validation on the test inputs shows the clipping and the error it causes (training
    sequence 4: its pixels leave the other features' range in most test digits)."""
    s = sample("digits")
    model = tmp_path / "digits.keras"
    s.model.save(model)
    np.save(tmp_path / "one.npy", s.x_train[4:5])
    np.save(tmp_path / "test.npy", s.x_test)
    out = tmp_path / "out"
    args = ["convert", model, "-c", tmp_path / "one.npy", "-o", out, "--validation"]
    assert cli.main([str(a) for a in [*args, tmp_path / "test.npy"]]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning" in line]
    assert any("1 sequence" in line and "--validation" in line for line in lines), err
    report = json.loads((out / "report.json").read_text())
    validation = report["validation"]
    clipped = validation["ranges"]["inputs_clipped"]
    assert clipped > 0 and f"{clipped} of {validation['ranges']['input_values']}" in err
    # the two calibration warnings, and the validation error they cause, with what to try
    assert len(report["warnings"]) == len(lines) == 3
    assert any("--weights int16" in line for line in lines), err
    keras_y = s.model.predict(s.x_test, verbose=0)
    c_y = run_host(out, s.x_test)
    assert np.isclose(validation["error"]["max_abs_error"], np.max(np.abs(c_y - keras_y)), 1e-4)


# ---------------------------------------------------------------------------------------------
# Streaming: 1000 steps of reference.step() (== the C's step, tested above) stay bounded.
# digits is not streamed: its float cell state grows without bound on a stream of digit rows
# (|c| > 100 after 1000 steps; the model saw 8-step windows), so no int16 cell can follow it.


def stream_inputs(name: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    if name == "stacked":
        return oscillator_series(STREAM_SEQUENCES, STREAM_STEPS, rng)[0]
    return pattern_signals(STREAM_SEQUENCES, STREAM_STEPS, rng)[0]


def every_step_keras(model: keras.Model) -> keras.Model:
    """The same weights with every LSTM returning sequences and any length: one output a step."""
    inputs = keras.Input((None, model.input_shape[-1]))
    y = inputs
    for layer in model.layers:
        config = layer.get_config()
        if isinstance(layer, keras.layers.LSTM):
            config["return_sequences"] = True
        clone = type(layer).from_config(config)
        y = clone(y)
        clone.set_weights(layer.get_weights())
    return keras.Model(inputs, y)


@dataclass(frozen=True)
class Stream:
    x: np.ndarray
    keras_y: np.ndarray  # (N, T, k)
    y: np.ndarray  # reference step() outputs, dequantized (N, T, k)
    arithmetic_free_y: np.ndarray  # float model with the int8 weights, on the quantized inputs
    cell_saturated: int
    last_q: np.ndarray  # int16 output after the last step


@pytest.fixture(scope="session")
def streamed(converted) -> Callable[..., Stream]:
    cache: dict[tuple[str, str], Stream] = {}

    def get(name: str, setting: str = "int8") -> Stream:
        if (name, setting) not in cache:
            case = converted(name, setting)
            qmodel = case.conversion.qmodel
            x = stream_inputs(name)
            x_q = fp.quantize_input(x, qmodel.input_inv_scale)
            states = reference.initial_state(qmodel, len(x))
            trace = reference.Trace()
            y_q = np.stack(
                [reference.step(qmodel, states, x_q[:, t], trace) for t in range(len(x[0]))], 1
            )
            recurrent = range(len(qmodel.recurrent_layers))
            cells = [np.abs(np.stack([s[k].c for s in trace.steps])) for k in recurrent]
            every_step = dataclasses.replace(
                case.conversion.ir,
                layers=tuple(
                    dataclasses.replace(la, return_sequences=True)
                    if isinstance(la, LSTMLayer)
                    else la
                    for la in case.conversion.ir.layers
                ),
            )
            x_deq = fp.dequantize(x_q, 1.0) * qmodel.input_scale
            cache[name, setting] = Stream(
                x=x,
                keras_y=np.asarray(every_step_keras(case.sample.model).predict(x, verbose=0)),
                y=fp.dequantize(y_q, qmodel.output_scale).astype(np.float64),
                arithmetic_free_y=forward(dequantized_ir(every_step, qmodel), x_deq)[0],
                cell_saturated=int(sum(np.sum(c >= fp.INT16_MAX) for c in cells)),
                last_q=y_q[:, -1].astype(np.int16),
            )
        return cache[name, setting]

    return get


STREAMED = ("stacked", "logits")
# A systematic arithmetic error (a one-sided table, a saturating cell) grows with time in every
# stream, so the typical (median) stream is held to STREAM_ARITHMETIC_MAX_PCT. A few logits
# streams enter a sensitive state after step 500 (the float model with the same weights itself
# leaves Keras by over a logit there) that amplifies any difference in the arithmetic; how many
# depends on the trained weights: 1 of 16 (6.5%) on one training, 2-3 of 16 (1.3-11.4%, the
# third at 0.56% with nearest rounding) on another, the rest within 0.33%; median 0.19-0.21%
# (stacked: all within 0.024%).
STREAM_ARITHMETIC_OUTLIERS = 3


@pytest.mark.parametrize(
    "name, setting",
    [(n, s) for n in STREAMED for s in ("int8", "int8-nearest")],
)
def test_streaming_arithmetic_does_not_drift(streamed, name: str, setting: str) -> None:
    stream = streamed(name, setting)
    assert stream.cell_saturated == 0
    span = float(np.ptp(stream.keras_y))
    error = np.abs(stream.arithmetic_free_y - stream.y)
    per_stream_pct = np.max(error, axis=(1, 2)) / span * 100
    outliers = int(np.sum(per_stream_pct > STREAM_ARITHMETIC_MAX_PCT))
    assert np.median(per_stream_pct) <= STREAM_ARITHMETIC_MAX_PCT, per_stream_pct.tolist()
    assert outliers <= STREAM_ARITHMETIC_OUTLIERS, np.round(per_stream_pct, 3).tolist()


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=gap_marks(n, STREAM_GAPS)) for n in STREAMED]
)
def test_streaming_stays_close_to_keras(streamed, name: str) -> None:
    stream = streamed(name)
    span = float(np.ptp(stream.keras_y))
    assert max_pct_of_range(stream.keras_y, stream.y, span) < REGRESSOR_MAX_PCT


@pytest.mark.parametrize("name", STREAMED)
def test_long_c_run_equals_streamed_reference(converted, streamed, name: str) -> None:
    """The C's run() over all 1000 steps ends where 1000 reference step() calls end."""
    case, stream = converted(name), streamed(name)
    x_q = fp.quantize_input(stream.x, case.conversion.qmodel.input_inv_scale)
    actual = run_host(case.out_dir, x_q)
    assert np.array_equal(actual, stream.last_q), first_difference(stream.last_q, actual)


# ---------------------------------------------------------------------------------------------
# compare's report folder (issue 6)


def test_compare_report_folder(converted, tmp_path: Path) -> None:
    case = converted("stacked")
    qmodel = case.conversion.qmodel
    save_qmodel(qmodel, case.out_dir / QMODEL_FILE)
    x_q = fp.quantize_input(case.sample.x_test, qmodel.input_inv_scale)
    assert np.array_equal(
        reference.run(load_qmodel(case.out_dir / QMODEL_FILE), x_q), reference.run(qmodel, x_q)
    )
    model_path = tmp_path / "stacked.keras"
    case.sample.model.save(model_path)
    # beyond the int16 input range (the calibrated range times INPUT_HEADROOM)
    x = case.sample.x_test[:100] * np.float32(1.5 * INPUT_HEADROOM)
    result = compare(model_path, case.out_dir, x, case.sample.y_test[:100], tmp_path / "report")

    files = {p.name for p in (tmp_path / "report").iterdir()}
    assert {"report.md", "report.json", "error_histogram.png", "stream_error.png"} <= files
    numbers = json.loads((tmp_path / "report" / "report.json").read_text())
    assert numbers == result["json"]
    keras_y = case.sample.model.predict(x, verbose=0)
    c_y = reference.run_float(qmodel, x)
    assert np.isclose(numbers["max_abs_error"], np.max(np.abs(c_y - keras_y)), rtol=1e-5)
    peak = np.max(np.abs(case.sample.x_train), axis=(0, 1)) * INPUT_HEADROOM
    expected_clipped = np.sum(np.abs(x) > peak * (1 + 1e-6), axis=(0, 1))
    assert numbers["input_clipping"]["per_feature"] == expected_clipped.tolist()
    assert [la["layer"] for la in numbers["layers"]] == [la.name for la in qmodel.lstm_layers]
    assert len(numbers["layers"][0]["h_error"]["max"]) == x.shape[1]
    assert len(numbers["stream"]["error"]["max"]) == 1000
    rmse = np.sqrt(np.mean((keras_y - case.sample.y_test[:100]) ** 2))
    assert np.isclose(numbers["keras_rmse"], rmse, rtol=1e-5)
    # nearest against the rounding kept, per layer: the head's output is the model's, and the
    # nearest model convert kept beside qmodel.npz is what --rounding nearest converts
    rounding = numbers["rounding"]
    assert [la["layer"] for la in rounding["layers"]] == [la.name for la in qmodel.layers]
    assert all(la["rounding"] == "gptq" for la in rounding["layers"])
    float_y = forward(case.conversion.ir, x.astype(np.float64))[0]
    nearest_y = reference.run_float(converted("stacked", "int8-nearest").conversion.qmodel, x)
    head = rounding["layers"][-1]
    assert np.isclose(head["kept_max_abs_error"], np.max(np.abs(c_y - float_y)), rtol=1e-4)
    assert np.isclose(head["nearest_max_abs_error"], np.max(np.abs(nearest_y - float_y)), 1e-4)
    assert "## Weight rounding" in (tmp_path / "report" / "report.md").read_text()
