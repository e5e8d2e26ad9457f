"""Every generated entry point (reset, step, run, step_f32, run_f32, quantize_input) executed on
the host (ASan/UBSan build) and in QEMU on every emulated core, equal to the numpy reference
bit for bit; and one input contract (``lstm_embed.targets.inputs``) for every
way of running a model.

Oracles: ``reference.run`` / ``reference.step`` / ``fixedpoint.quantize_input`` (through
``fuzz.expected_output``, which calls nothing but them), the documented NaN/infinity values, and
Keras 3 itself for the timesteps policy.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import lstm_embed
from lstm_embed import cli
from lstm_embed.ir.model import DenseLayer, Model
from lstm_embed.kinds.bidirectional import BidirectionalLayer
from lstm_embed.kinds.common import RecurrentOptions
from lstm_embed.kinds.simple_rnn import SimpleRNNLayer
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.qir import QModel
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.targets import firmware
from lstm_embed.targets.boards import EMULATED_BOARDS
from lstm_embed.targets.hostbuild import (
    SANITIZE_FLAGS,
    STRICT_FLAGS,
    compiler,
    run_entry_point,
    run_host,
)
from lstm_embed.targets.inputs import ENTRY_POINTS, InputError, InputRule, check_input
from lstm_embed.tools.fuzz import compare_output, expected_output

from .helpers import random_inputs, random_lstm, random_model

os.environ.setdefault("KERAS_BACKEND", "jax")

ENTRIES = tuple(ENTRY_POINTS)


@dataclass(frozen=True)
class Case:
    out_dir: Path
    qmodel: QModel
    x: np.ndarray  # float32 (4, T, m): calibration-like, 3x beyond it, row 0 again, non-finite
    x_q: np.ndarray  # int16 (4, T, m): the same quantized, the last row at the int16 extremes

    def input_for(self, entry: str) -> np.ndarray:
        return self.x if ENTRY_POINTS[entry].float_input else self.x_q

    @property
    def entries(self) -> tuple[str, ...]:
        """The entry points its C has (run-only models: no step, step_f32)."""
        return tuple(e for e in ENTRIES if self.qmodel.streaming or not ENTRY_POINTS[e].steps)


def _rnn(rng: np.random.Generator, name: str, m: int, n: int, activation: str, sequences: bool):
    kernel, recurrent = rng.uniform(-1, 1, (m, n)), rng.uniform(-0.6, 0.6, (n, n)) / np.sqrt(n)
    return SimpleRNNLayer(name, m, n, kernel, recurrent, rng.uniform(-0.2, 0.2, n), activation,
                          sequences)  # fmt: skip


def _run_only() -> Model:
    """Bidirectional(LSTM) returning sequences under a Dense head: no step()."""
    rng = np.random.default_rng(24)
    forward = random_lstm(rng, "forward_lstm", 3, 4, return_sequences=True)
    backward = RecurrentOptions(random_lstm(rng, "backward_lstm", 3, 4, return_sequences=True),
                                go_backwards=True)  # fmt: skip
    head = DenseLayer("dense", 8, 2, rng.uniform(-1, 1, (8, 2)), None, "tanh")
    bidirectional = BidirectionalLayer("bidirectional", 3, forward, backward, "concat")
    return Model("net", 3, 6, (bidirectional, head), source="random run-only model")


def _backwards_rnn() -> Model:
    """A relu SimpleRNN that reads the window backwards, then an LSTM: no step()."""
    rng = np.random.default_rng(25)
    rnn = RecurrentOptions(_rnn(rng, "rnn", 2, 5, "relu", True), go_backwards=True)
    return Model("net", 2, 7, (rnn, random_lstm(rng, "lstm", 5, 3)), source="random model")


def _stateful() -> Model:
    """Stateful LSTM and SimpleRNN (any length): the sequences of an input are one stream."""
    rng = np.random.default_rng(26)
    lstm = RecurrentOptions(random_lstm(rng, "lstm", 2, 4, return_sequences=True), stateful=True)
    rnn = RecurrentOptions(_rnn(rng, "rnn", 4, 3, "tanh", True), stateful=True)
    return Model("net", 2, None, (lstm, rnn), source="random stateful model")


# label -> (model, steps of the test input, quantize options)
MODELS = {
    # causal: step() must give run()'s outputs at every timestep
    "sequences": (
        lambda: random_model(21, 3, [6, 5], None, return_sequences=True, dense=[(2, "tanh")]),
        7,
        None,
    ),
    "last_softmax": (lambda: random_model(22, 2, [7], 6, dense=[(3, "softmax")]), 6, None),
    "int16_int8": (
        lambda: random_model(23, 4, [5, 3], 5, recurrent="hard_sigmoid"),
        5,
        QuantizeOptions(weight_bits=(16, 8)),
    ),
    # run-only: no step() (a layer needs the whole window); stateful: one stream per input
    "run_only": (_run_only, 6, None),
    "backwards_rnn": (_backwards_rnn, 7, QuantizeOptions(weight_bits=(16, 8))),
    "stateful": (_stateful, 5, None),
}
STREAMING = [label for label in MODELS if label not in ("run_only", "backwards_rnn", "stateful")]


def _inputs(seed: int, steps: int, width: int, qmodel: QModel) -> tuple[np.ndarray, np.ndarray]:
    base = random_inputs(seed, 2, steps, width)
    weird = np.resize(np.array([np.nan, np.inf, -np.inf, 1e30, -0.0], np.float32), (steps, width))
    x = np.stack([base[0], 3 * base[1], base[0], weird]).astype(np.float32)
    with np.errstate(over="ignore"):  # 1e30 and infinity saturate
        x_q = fp.quantize_input(np.nan_to_num(x, nan=0.0), qmodel.input_inv_scale)
    x_q[3] = np.where(np.arange(steps * width).reshape(steps, width) % 2, 32767, -32768)
    return x, x_q


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    result = {}
    for seed, (label, (make, steps, options)) in enumerate(MODELS.items()):
        model = make()
        calibration = random_inputs(seed, 16, steps, model.input_size)
        out_dir = tmp_path_factory.mktemp(label) / "out"
        qmodel = convert_ir(model, calibration, out_dir, name="net", options=options).qmodel
        x, x_q = _inputs(seed, steps, model.input_size, qmodel)
        result[label] = Case(out_dir, qmodel, x, x_q)
    return result


def assert_equal_bits(entry: str, want: np.ndarray, got: np.ndarray, where: str) -> None:
    difference = compare_output(entry, want, got)
    assert difference is None, f"{where}: {difference}"


# ---------------------------------------------------------------- every entry point


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("label", MODELS)
def test_host_entry_point_equals_reference(cases: dict[str, Case], label: str, entry: str) -> None:
    """Sanitized host build; NaN and infinity reach the C float entry points (not refused).
    A run-only model has no step entry points: the runner says so and why."""
    case = cases[label]
    x = case.input_for(entry)
    if entry not in case.entries:
        with pytest.raises(InputError, match=r"has no step.*needs the whole window"):
            run_entry_point(case.out_dir, entry, x, sanitize=True, check_finite=False)
        return
    got = run_entry_point(case.out_dir, entry, x, sanitize=True, check_finite=False)
    assert_equal_bits(entry, expected_output(case.qmodel, entry, x), got, f"{label} on host")


@pytest.mark.firmware
@pytest.mark.parametrize("board", EMULATED_BOARDS)
@pytest.mark.parametrize("label", MODELS)
def test_qemu_entry_points_equal_reference(
    toolchain: None, cases: dict[str, Case], label: str, board: str
) -> None:
    """One image per core calls every entry point the model has (all five, or run, run_f32 and
    quantize_input for run-only models); each output equals the reference."""
    case = cases[label]
    got = firmware.run_entry_points(
        case.out_dir, board, case.entries, case.x_q, case.x, check_finite=False
    )
    for entry in case.entries:
        want = expected_output(case.qmodel, entry, case.input_for(entry))
        assert_equal_bits(entry, want, got[entry], f"{label} on {board}")


def test_step_equals_run_and_reset_restarts(cases: dict[str, Case]) -> None:
    """step() per timestep gives run()'s outputs (causal model: at every timestep; last-output
    model: at the last); the runner keeps one state for all sequences, so sequence 2 (= 0)
    repeating sequence 0 exactly shows reset() cleared what sequence 1 left."""
    for label in STREAMING:
        case = cases[label]
        stepped = run_entry_point(case.out_dir, "step", case.x_q)
        ran = run_entry_point(case.out_dir, "run", case.x_q)
        assert np.array_equal(stepped if ran.ndim == 3 else stepped[:, -1], ran), label
        stepped_f = run_entry_point(case.out_dir, "step_f32", case.x[:3])
        ran_f = run_entry_point(case.out_dir, "run_f32", case.x[:3])
        last = stepped_f if ran_f.ndim == 3 else stepped_f[:, -1]
        assert np.array_equal(last.view(np.int32), ran_f.view(np.int32)), label
        for y in (stepped, ran, stepped_f):
            assert np.array_equal(y[2], y[0]) and not np.array_equal(y[1], y[0]), label


# ---------------------------------------------------------------- the NaN / infinity policy

# Documented (docs/cli.md "Inputs", inputs.py): the C float entry points map NaN to 0 and
# +/-infinity to the int16 limits; the Python and command-line entry points refuse them.
NONFINITE_Q = {np.nan: 0, np.inf: 32767, -np.inf: -32768}


@pytest.mark.parametrize("where", ["host", "qemu-m4"])
def test_c_quantizes_nan_and_infinity_as_documented(
    request: pytest.FixtureRequest, cases: dict[str, Case], where: str
) -> None:
    case = cases["last_softmax"]
    values = np.array(list(NONFINITE_Q), np.float32)
    x = np.resize(values, (1, 6, 2)).astype(np.float32)
    if where == "host":
        got = run_entry_point(case.out_dir, "quantize_input", x, check_finite=False)
    else:
        request.getfixturevalue("toolchain")
        out = firmware.run_entry_points(
            case.out_dir, where, ["quantize_input"], x=x, check_finite=False
        )
        got = out["quantize_input"]
    want = np.resize(np.array(list(NONFINITE_Q.values()), np.int16), x.shape)
    assert np.array_equal(got, want)


# ---------------------------------------------------------------- one input contract


def _bad_inputs(m: int, steps: int) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (input, words its message must contain)."""
    rng = np.random.default_rng(0)
    good = rng.normal(size=(3, steps, m)).astype(np.float32)
    nan, inf = good.copy(), good.copy()
    nan[1, 2, 0] = np.nan
    nan[2, 0, 1] = np.nan
    inf[0, 1, 1] = -np.inf
    return {
        "nan": (nan, "nan at (sequence, timestep, feature) = (1, 2, 0)"),
        "infinity": (inf, "-inf at (sequence, timestep, feature) = (0, 1, 1)"),
        "features": (good[:, :, :1], "expected (sequences, timesteps, 2)"),
        "rank_2": (good[0], "expected (sequences, timesteps, 2)"),
        "no_sequences": (good[:0], "at least one sequence"),
        "no_timesteps": (good[:, :0], "at least one sequence and one timestep"),
        "bool": (good > 0, "dtype bool"),
    }


BAD = sorted(_bad_inputs(2, 6))


def _message(call) -> str:
    with pytest.raises(InputError) as info:
        call()
    return str(info.value)


RUNNERS = ["host", "host_step_f32", "qemu-m4", "qemu-m4_step_f32", "load_predict", "load_step"]


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("bad", BAD)
def test_bad_input_gets_one_message_everywhere(
    request: pytest.FixtureRequest, cases: dict[str, Case], bad: str, runner: str
) -> None:
    """The same bad input gets the same message from the host and QEMU runs and the Python API
    (``lstm_embed.load(OUT)``'s predict, and its step on T timesteps of N streams: the float
    step), before anything is built or run."""
    case = cases["last_softmax"]
    x, words = _bad_inputs(2, 6)[bad]
    rule = InputRule.from_report({"name": "net", "input_size": 2, "timesteps": 6})
    want = _message(lambda: check_input(x, rule))
    assert words in want
    if runner == "host":
        got = _message(lambda: run_host(case.out_dir, x))
    elif runner == "host_step_f32":
        got = _message(lambda: run_entry_point(case.out_dir, "step_f32", x))
    elif runner.startswith("load_"):
        model = lstm_embed.load(case.out_dir)
        call = model.predict if runner == "load_predict" else model.step
        if runner == "load_step" and bad == "rank_2":  # (N, m): one timestep of N streams
            assert call(x).shape == (len(x), 3)
            return
        got = _message(lambda: call(x))
        # nothing ran: the stream state is as loaded, a step may still choose the stream count
        assert model._fresh and model._stream is None
    else:
        request.getfixturevalue("toolchain")
        build = case.out_dir / "build" / "qemu-m4"
        before = sorted(build.iterdir()) if build.exists() else []
        if runner == "qemu-m4":
            got = _message(lambda: firmware.run_qemu_f32(case.out_dir, "qemu-m4", x))
        else:
            entries = ["step_f32"]
            got = _message(lambda: firmware.run_entry_points(case.out_dir, "qemu-m4", entries, x=x))
        assert (sorted(build.iterdir()) if build.exists() else []) == before
    assert got == want


@pytest.mark.parametrize("board", ["host", "qemu-m4"])
@pytest.mark.parametrize("bad", ["nan", "infinity", "features", "no_sequences"])
def test_cli_run_gives_the_same_message(
    request: pytest.FixtureRequest,
    cases: dict[str, Case],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    bad: str,
    board: str,
) -> None:
    if board != "host":
        request.getfixturevalue("toolchain")
    case = cases["last_softmax"]
    x, _ = _bad_inputs(2, 6)[bad]
    rule = InputRule.from_report({"name": "net", "input_size": 2, "timesteps": 6})
    want = _message(lambda: check_input(x, rule))
    path = tmp_path / "x.npy"
    np.save(path, x)
    args = ["run", str(case.out_dir), "-i", str(path), "-o", str(tmp_path / "y.npy")]
    status = cli.main([*args, "--board", board])
    err = capsys.readouterr().err
    assert status == cli.EXIT_ERROR
    assert err == f"lstm-embed run: error: --input {path}: {want}\n"
    assert not (tmp_path / "y.npy").exists()


def test_integer_input_must_be_int16(cases: dict[str, Case]) -> None:
    case = cases["last_softmax"]
    wide = np.zeros((2, 6, 2), np.int32)
    wide[1, 3, 1] = 40000
    message = _message(lambda: run_host(case.out_dir, wide))
    assert "40000 at (sequence, timestep, feature) = (1, 3, 1), outside int16" in message
    as_int16 = run_host(case.out_dir, wide.clip(-32768, 32767))
    assert np.array_equal(as_int16, expected_output(case.qmodel, "run", wide.clip(-32768, 32767)))
    message = _message(lambda: run_entry_point(case.out_dir, "step", case.x[:1]))
    assert "integer entry points take int16" in message
    model = lstm_embed.load(case.out_dir)  # the Python API: the same check, the same message
    want = _message(lambda: run_host(case.out_dir, wide))
    assert _message(lambda: model.predict(wide)) == want
    assert _message(lambda: model.step(wide)) == want
    assert np.array_equal(model.predict(wide.clip(-32768, 32767)), as_int16)


def test_python_step_takes_one_timestep_with_the_same_check(cases: dict[str, Case]) -> None:
    """step() of lstm_embed.load: (m,) and (N, m) are one timestep, checked as (N, 1, m) by the
    same check_input (the index names (stream, 0, feature)); (N, T, m) steps T timesteps and
    equals the host runner's step; a wrong width or no streams names the shape given."""
    case = cases["last_softmax"]
    model = lstm_embed.load(case.out_dir)
    x = case.x[:3]
    want = run_entry_point(case.out_dir, "step_f32", x)
    assert np.array_equal(model.step(x), want)
    model.reset()
    assert np.array_equal(np.concatenate([model.step(x[:, :2]), model.step(x[:, 2:])], 1), want)
    model.reset()
    assert np.array_equal(np.stack([model.step(x[:, t]) for t in range(6)], axis=1), want)
    model.reset()
    assert np.array_equal(np.stack([model.step(x[1, t]) for t in range(6)]), want[1])
    model.reset()
    nan = x[:, 2].copy()
    nan[1, 0] = np.nan
    rule = InputRule.from_report({"name": "net", "input_size": 2, "timesteps": 6})
    assert _message(lambda: model.step(nan)) == _message(lambda: check_input(nan[:, None], rule))
    assert "(sequence, timestep, feature) = (1, 0, 0)" in _message(lambda: model.step(nan))
    assert _message(lambda: model.step(nan[1])) == _message(
        lambda: check_input(nan[1][None, None], rule)
    )
    assert "input shape (3,): expected (2,) for one stream" in _message(
        lambda: model.step(np.zeros(3, np.float32))
    )
    assert _message(lambda: model.step(x[:0, 0])) == "input shape (0, 2): needs at least one stream"
    model.step(x[:2, 0])
    message = _message(lambda: model.step(x[:3, 0]))
    assert message == "input shape (3, 2): 3 stream(s) but the state holds 2; call reset() to" \
        " start other streams"  # fmt: skip
    model.reset()
    assert model.step(x[:3, 0]).shape == (3, 3)


@pytest.mark.parametrize("label", ["run_only", "backwards_rnn"])
def test_python_api_of_a_run_only_model(cases: dict[str, Case], label: str) -> None:
    """No step: the host runner's message; predict takes at most the built length, as run."""
    case = cases[label]
    model = lstm_embed.load(case.out_dir)
    for x, entry in ((case.x, "step_f32"), (case.x_q, "step")):
        want = _message(partial(run_entry_point, case.out_dir, entry, x))
        assert "needs the whole window" in want
        assert _message(partial(model.step, x)) == want
        assert _message(partial(model.step, x[:, 0])) == want
    longer = np.concatenate([case.x_q[:2], case.x_q[:2]], axis=1)
    want = _message(lambda: run_entry_point(case.out_dir, "run", longer))
    assert _message(lambda: model.predict(longer)) == want


# ---------------------------------------------------------------- the timesteps policy


def test_keras_sequential_predicts_other_lengths() -> None:
    """The premise of the policy, measured on the installed Keras: a Sequential LSTM model built
    for 6 timesteps predicts 3 and 9 (a functional one refuses: its input spec check)."""
    import keras

    model = keras.Sequential([keras.Input((6, 2)), keras.layers.LSTM(3)])
    for steps in (3, 9):
        y = model.predict(np.zeros((1, steps, 2), np.float32), verbose=0)
        assert y.shape == (1, 3)
    x = keras.Input((6, 2))
    functional = keras.Model(x, keras.layers.LSTM(3)(x))
    with pytest.raises(ValueError, match="incompatible"):
        functional.predict(np.zeros((1, 3, 2), np.float32), verbose=0)


@pytest.mark.parametrize("where", ["host", "qemu-m4"])
@pytest.mark.parametrize("steps", [3, 9])
def test_fixed_length_model_runs_other_lengths(
    request: pytest.FixtureRequest, cases: dict[str, Case], where: str, steps: int
) -> None:
    """Built for 6 timesteps, run on 3 and 9 as Keras' Sequential.predict does, everywhere."""
    case = cases["last_softmax"]
    assert case.qmodel.timesteps == 6
    x = random_inputs(40 + steps, 2, steps, 2)
    x_q = fp.quantize_input(x, case.qmodel.input_inv_scale)
    if where == "host":
        got, got_f = run_host(case.out_dir, x_q), run_host(case.out_dir, x)
    else:
        request.getfixturevalue("toolchain")
        out = firmware.run_entry_points(case.out_dir, where, ["run", "run_f32"], x_q, x)
        got, got_f = out["run"], out["run_f32"]
    assert_equal_bits("run", expected_output(case.qmodel, "run", x_q), got, where)
    assert_equal_bits("run_f32", expected_output(case.qmodel, "run_f32", x), got_f, where)


# ---------------------------------------------------------------- stateful and run-only models


def test_stateful_sequences_are_one_stream(cases: dict[str, Case]) -> None:
    """A stateful model's sequences continue one another (Keras' predict(x, batch_size=1)):
    run() on them equals step() through their timesteps joined, and equals run() on the joined
    stream as one sequence; every call of a runner starts the stream again (reset once)."""
    case = cases["stateful"]
    assert case.qmodel.stateful and case.qmodel.return_sequences
    x_q = case.x_q[:3]
    ran = run_entry_point(case.out_dir, "run", x_q)
    stepped = run_entry_point(case.out_dir, "step", x_q)
    joined = run_entry_point(case.out_dir, "run", x_q.reshape(1, -1, x_q.shape[2]))
    assert np.array_equal(ran, stepped)
    assert np.array_equal(ran.reshape(joined.shape), joined)
    assert np.array_equal(run_entry_point(case.out_dir, "run", x_q), ran)
    alone = run_entry_point(case.out_dir, "run", x_q[1:2])  # row 1 from a reset state differs
    assert not np.array_equal(alone[0], ran[1])


@pytest.mark.parametrize("label", ["run_only", "backwards_rnn"])
def test_run_only_takes_at_most_its_timesteps(cases: dict[str, Case], label: str) -> None:
    """The window buffers hold TIMESTEPS steps: fewer run (as Keras' Sequential takes them),
    more are refused by every runner with the reason, and the C refuses them itself."""
    case = cases[label]
    steps = case.qmodel.timesteps
    shorter = case.x_q[:2, : steps - 2]
    got = run_entry_point(case.out_dir, "run", shorter, sanitize=True)
    assert_equal_bits("run", expected_output(case.qmodel, "run", shorter), got, label)
    longer = np.concatenate([case.x_q[:2], case.x_q[:2]], axis=1)
    with pytest.raises(InputError, match=f"at most {steps} timesteps"):
        run_entry_point(case.out_dir, "run", longer)
    # the C itself: run() and run_f32() return ERROR_ARGUMENT beyond TIMESTEPS, OK at it
    main = case.out_dir / "too_long.c"
    main.write_text(
        '#include "net.h"\n'
        "static net_state_t state;\n"
        "static int16_t x_q[2 * NET_TIMESTEPS * NET_INPUT_SIZE], y_q[2 * NET_TIMESTEPS * 8];\n"
        "static float x[2 * NET_TIMESTEPS * NET_INPUT_SIZE], y[2 * NET_TIMESTEPS * 8];\n"
        "int main(void)\n{\n"
        "    if (net_run(&state, x_q, NET_TIMESTEPS + 1, y_q) != NET_ERROR_ARGUMENT) return 1;\n"
        "    if (net_run_f32(&state, x, NET_TIMESTEPS + 1, y) != NET_ERROR_ARGUMENT) return 2;\n"
        "    return net_run(&state, x_q, NET_TIMESTEPS, y_q) == NET_OK ? 0 : 3;\n}\n"
    )
    exe = case.out_dir / "too_long"
    build = [compiler(), *STRICT_FLAGS, *SANITIZE_FLAGS, f"-I{case.out_dir}",
             str(case.out_dir / "net.c"), str(main), "-o", str(exe)]  # fmt: skip
    subprocess.run(build, check=True)
    assert subprocess.run([str(exe)]).returncode == 0
