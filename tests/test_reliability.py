"""Reliability: random models in C (sanitized) equal the reference bit for bit; every integer
operation saturates at its edges instead of overflowing; conversion is deterministic.

Expected values at the edges come from Python integers (no overflow possible) and float math,
not from ``fixedpoint``; the generated C and ``fixedpoint`` are both held to them.
"""

from __future__ import annotations

import math
import os
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lstm_embed.ir.model import (
    DENSE_ACTIVATIONS,
    RECURRENT_ACTIVATIONS,
    DenseLayer,
    LSTMLayer,
    Model,
)
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.qir import load_qmodel
from lstm_embed.targets.hostbuild import SANITIZE_FLAGS, compiler
from lstm_embed.tools import fuzz

INT32_MAX = 2**31 - 1
FAST_EXAMPLES = int(os.environ.get("LSTM_EMBED_FUZZ_EXAMPLES", "15"))
EDGES_C = Path(__file__).parent / "c" / "ops_edges.c"

# ------------------------------------------------------------------ random models (hypothesis)


def lstm_specs() -> st.SearchStrategy[fuzz.LSTMSpec]:
    return st.builds(
        fuzz.LSTMSpec,
        units=st.integers(*fuzz.UNITS),
        recurrent_activation=st.sampled_from(RECURRENT_ACTIVATIONS),
        weights=st.sampled_from(fuzz.WEIGHT_KINDS),
        bias=st.none() | st.sampled_from(fuzz.WEIGHT_KINDS),
        # the recurrent family: GRU (both forms), SimpleRNN, go_backwards, stateful, Bidirectional
        kind=st.sampled_from(["lstm", "lstm", "gru", "simple_rnn"]),
        reset_after=st.booleans(),
        activation=st.sampled_from(fuzz.RNN_ACTIVATIONS),
        go_backwards=st.booleans(),
        stateful=st.booleans(),
        bidirectional=st.none() | st.sampled_from(fuzz.MERGE_MODES),
    ).map(_tanh_state)


def _tanh_state(la: fuzz.LSTMSpec) -> fuzz.LSTMSpec:
    """The drawn activation is SimpleRNN's: an LSTM or GRU keeps tanh, as before the fuzzer
    built relu/linear ones (those draw bounded weights only, ``fuzz_front.state_activations``;
    a relu state under 1e4 weights is refused by design)."""
    return la if la.kind == "simple_rnn" else replace(la, activation="tanh")


def dense_specs() -> st.SearchStrategy[fuzz.DenseSpec]:
    return st.builds(
        fuzz.DenseSpec,
        units=st.integers(*fuzz.UNITS),
        activation=st.sampled_from(DENSE_ACTIVATIONS),
        weights=st.sampled_from(fuzz.WEIGHT_KINDS),
        bias=st.none() | st.sampled_from(fuzz.WEIGHT_KINDS),
    )


model_specs = st.builds(
    fuzz.ModelSpec,
    seed=st.integers(0, 2**32 - 1),
    inputs=st.integers(*fuzz.INPUTS),
    timesteps=st.integers(*fuzz.TIMESTEPS),
    lstm=st.lists(lstm_specs(), min_size=1, max_size=fuzz.MAX_LSTM_LAYERS).map(tuple),
    dense=st.lists(dense_specs(), max_size=fuzz.MAX_DENSE_LAYERS).map(tuple),
    return_sequences=st.booleans(),
    fixed_length=st.booleans(),
    calibration_scale=st.sampled_from([0.0, 1e-3, 1e3]) | st.floats(1e-3, 1e3),
    weight_bits=st.sampled_from([(8,), (16,)]),  # int16: int64 row sums, int32 cell
)


def assert_ok(outcomes: list[fuzz.Outcome]) -> None:
    # "diverges": the float model overflows float32, refused by design (tests/test_converter.py)
    bad = [o for o in outcomes if o.status not in ("ok", "diverges")]
    assert not bad, "\n".join(f"{o.status}: {o.detail}\n  spec {o.spec.to_json()}" for o in bad)


@settings(
    max_examples=FAST_EXAMPLES,
    deadline=None,
    # no shrinking: every step is a compile; the failing spec is printed whole and rebuilds
    # the exact model from its seed
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    # the same draws on every run, so main stays green on what it tested; `make fuzz` (and
    # LSTM_EMBED_FUZZ_EXAMPLES) explore further
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(spec=model_specs, kernel=st.sampled_from(["reference", "plain", "dsp"]))
def test_random_model_c_equals_reference(
    spec: fuzz.ModelSpec, kernel: str, tmp_path_factory
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    with np.errstate(all="ignore"):  # exp overflow in the float model of huge weights
        assert_ok(fuzz.check_batch([fuzz.build_case(spec)], folder, "-O1", kernel))


def test_seeded_random_models_c_equals_reference() -> None:
    """Many models per compile: the seeds are fixed, so a failure here reproduces with
    ``python -m lstm_embed.tools.fuzz --seed 1000000 --models 48``."""
    specs = [fuzz.random_spec(seed) for seed in range(1_000_000, 1_000_048)]
    with np.errstate(all="ignore"):
        assert_ok(fuzz.check_specs(specs, jobs=2, batch_size=12))


@pytest.mark.firmware
def test_seeded_random_models_on_qemu(toolchain: None) -> None:
    """A sample of ``make fuzz-qemu``: random models as Cortex-M0, M4 and M55 firmware, every
    entry point (NaN and infinity in the float input) equal to the reference bit for bit.
    Reproduces with ``python -m lstm_embed.tools.fuzz --qemu --seed 2000000 --models 4``."""
    specs = [fuzz.random_spec(seed) for seed in range(2_000_000, 2_000_004)]
    outcomes = fuzz.check_qemu_specs(specs, jobs=2)
    assert {o.board for o in outcomes} == set(fuzz.QEMU_BOARDS)
    assert_ok(outcomes)


@pytest.mark.firmware
def test_qemu_fuzz_steps_a_model_whose_run_buffers_do_not_fit(toolchain: None, tmp_path) -> None:
    """Seed 266 of ``make fuzz-qemu``: run_f32's 72 x 53 float outputs overflow the M0's 16 KB
    of RAM; step, step_f32 and quantize_input still run there and equal the reference."""
    with np.errstate(all="ignore"):
        case = fuzz.build_case(fuzz.random_spec(266))
        (outcome,) = fuzz.check_qemu(case, tmp_path, ("qemu-m0",))
    assert outcome.status == "stepped_only", outcome.detail
    assert "RAM (16384 bytes) overflowed" in outcome.detail


# ------------------------------------------------------------------ the fuzzer can fail


@pytest.fixture
def converted(tmp_path: Path):
    spec = fuzz.ModelSpec(
        seed=7, inputs=3, timesteps=12, lstm=(fuzz.LSTMSpec(5),), dense=(fuzz.DenseSpec(2),)
    )
    item = fuzz._convert(fuzz.build_case(spec), tmp_path / "m0", "m0")
    assert isinstance(item, fuzz._Converted)
    return item


def test_fuzz_reports_a_changed_weight(converted, tmp_path: Path) -> None:
    source = converted.folder / "m0_weights.h"
    text = source.read_text()
    start = text.index("m0_lstm0_weights_s8[")
    literal_at = text.index("{\n", start) + 2
    line_end = text.index(",", literal_at)
    weight = int(text[literal_at:line_end])
    source.write_text(text[:literal_at] + str(-weight or 1) + text[line_end:])
    runner = fuzz._build([converted], tmp_path, fuzz.case_flags())
    outcome = fuzz._compare(converted, runner, 0)
    assert outcome.status == "mismatch"
    assert "first difference at" in outcome.detail


@pytest.mark.firmware
def test_qemu_fuzz_reports_a_changed_scale(toolchain: None, converted) -> None:
    """The input scale is shared by every kernel: doubling one feature's changes the float
    entry points (and quantize_input) on any core."""
    source = converted.folder / "m0_weights.h"
    assert fuzz.check_on_board(converted, "qemu-m4").status == "ok"
    text = source.read_text()
    start = text.index("m0_input_inv_scale[")
    literal_at = text.index("{\n", start) + 2
    end = text.index(",", literal_at)
    source.write_text(f"{text[:literal_at]}({text[literal_at:end].strip()} * 2.0f){text[end:]}")
    outcome = fuzz.check_on_board(converted, "qemu-m4")
    assert outcome.status == "mismatch" and outcome.board == "qemu-m4"
    assert "first difference at" in outcome.detail


def test_fuzz_reports_undefined_behaviour(converted, tmp_path: Path) -> None:
    source = converted.folder / "m0_kernels.h"
    text = source.read_text()
    product = "acc += (int32_t)w[k] * (int32_t)a[k];"
    assert product in text
    source.write_text(text.replace(product, "acc += (int32_t)w[k] * (int32_t)a[k] * 65536;"))
    runner = fuzz._build([converted], tmp_path, fuzz.case_flags())
    outcome = fuzz._compare(converted, runner, 0)
    assert outcome.status == "crash"
    assert "runtime error" in outcome.detail


# ------------------------------------------------------------------ operations at their edges


@pytest.fixture(scope="module")
def edges(tmp_path_factory) -> callable:
    """Run lines of ops_edges.c against a generated model that has every operation."""
    folder = tmp_path_factory.mktemp("edges")
    rng = np.random.default_rng(0)

    def lstm(name, m, n, recurrent):
        return LSTMLayer(
            name, m, n, rng.normal(size=(m, 4 * n)), rng.normal(size=(n, 4 * n)),
            rng.normal(size=4 * n), recurrent, True,
        )  # fmt: skip

    ir = Model(
        "net",
        2,
        None,
        (
            lstm("a", 2, 3, "sigmoid"),
            lstm("b", 3, 3, "hard_sigmoid"),
            DenseLayer("d", 3, 2, rng.normal(size=(3, 2)), None, "softmax"),
        ),
    )
    convert_ir(ir, rng.normal(size=(2, 4, 2)), folder / "net", name="net")
    exe = _build_edges(EDGES_C.read_text(), folder / "net", folder / "edges")

    def run(lines: list[str]) -> list[str]:
        proc = _run_edges(exe, lines)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    run.net_dir = folder / "net"  # type: ignore[attr-defined]
    run.tanh_table = load_qmodel(folder / "net" / "qmodel.npz").tables["tanh"]  # type: ignore[attr-defined]
    return run


# Beside the sanitizers: uninitialized reads the compiler can see are errors, and automatic
# variables start as 0xFE bytes, so a struct field left unset makes UBSan or ASan fail loudly.
C_TEST_FLAGS = (
    "-std=c99",
    *SANITIZE_FLAGS,
    "-Werror=uninitialized",
    "-Werror=maybe-uninitialized",
    "-ftrivial-auto-var-init=pattern",
)


def _build_edges(source: str, net_dir: Path, exe: Path) -> Path:
    c_file = exe.with_suffix(".c")
    c_file.write_text(source)
    cmd = [compiler(), *C_TEST_FLAGS, f"-I{net_dir}", str(c_file)]
    proc = subprocess.run([*cmd, "-o", str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def _run_edges(exe: Path, lines: list[str]) -> subprocess.CompletedProcess[str]:
    text = "\n".join(lines) + "\n"
    return subprocess.run([str(exe)], input=text, capture_output=True, text=True)


def test_c_test_flags_reject_an_uninitialized_read(tmp_path: Path) -> None:
    """The flag set turns a read of an unset struct field into a compile error (where GCC can
    see the read; through a pointer into another function it cannot, see the next test)."""
    source = tmp_path / "uninit.c"
    source.write_text("struct s { int a, b; };\nint f(void) { struct s v; v.a = 1; return v.b; }\n")
    cmd = [compiler(), *C_TEST_FLAGS, "-c", str(source), "-o", str(tmp_path / "uninit.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode != 0 and "uninitialized" in proc.stderr, proc.stderr


def test_an_unset_params_field_fails_the_edge_driver(edges, tmp_path: Path) -> None:
    """ops_edges.c once left input_shift unset (undefined behaviour in the kernel's shift);
    GCC does not see it through the pointer, so the pattern fill + UBSan must: the driver with
    that line removed fails at run time, the driver as committed passes (the edges fixture)."""
    source = EDGES_C.read_text()
    unset = "            p.input_shift = 0; /* the input columns carry no extra scale */\n"
    assert unset in source
    exe = _build_edges(source.replace(unset, ""), edges.net_dir, tmp_path / "edges_unset")
    proc = _run_edges(exe, ["L 8 0 0 100 100 100 100"])
    assert proc.returncode != 0
    assert "runtime error" in proc.stderr and "shift exponent" in proc.stderr, proc.stderr
    assert edges(["L 8 0 0 100 100 100 100"])  # the committed driver runs the same line


def requantize_exact(acc: int, multiplier: int, shift: int) -> int:
    value = (acc * multiplier + (1 << (shift - 1))) >> shift  # Python ints: floor, no overflow
    return max(-INT32_MAX, min(INT32_MAX, value))


ACCS = [-(2**31), -INT32_MAX, -(2**30), -1, 0, 1, 12345, 2**30, INT32_MAX]
MULTIPLIERS = [0, 1, 2**30, 2**31 - 1]
SHIFTS = [1, 2, 15, 30, 31, 32, 62]


def test_requantize_saturates_at_int32_extremes(edges) -> None:
    cases = [(a, m, s) for a in ACCS for m in MULTIPLIERS for s in SHIFTS]
    expected = [requantize_exact(*case) for case in cases]
    acc, mult, shift = (np.array(column, dtype=np.int64) for column in zip(*cases, strict=True))
    assert fp.requantize(acc, mult, shift).tolist() == expected
    assert [int(v) for v in edges([f"R {a} {m} {s}" for a, m, s in cases])] == expected


def round_half_away_exact(value: float) -> int:
    """Exact (no float addition) round half away from zero of a finite float."""
    magnitude = abs(value)
    floor = math.floor(magnitude)
    rounded = floor + (1 if magnitude - floor >= 0.5 else 0)  # exact: both sides are floats
    return int(math.copysign(rounded, value))


FLOAT_EDGES = [0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, 32766.5, -32767.5, 32767.0, 32767.49,
               32767.5, -32768.0, -32768.49, -32768.5, 1e30, -1e30, 1e-45, 3.4e38]  # fmt: skip
# 0.49999997f + 0.5f rounds (ties to even) to 1.0f in float32, so the C conversion and its
# numpy mirror both give 1 where exact rounding gives 0: at most 1 LSB, only within 2**-24
# below a half. Held to the documented behaviour (C == numpy) and to exact rounding +/- 1.
FLOAT_NEAR_HALF = [0.49999997, -0.49999997, 1.4999999]


def float_bits(value: float) -> str:
    return f"{struct.unpack('<I', struct.pack('<f', value))[0]:x}"


def test_float_to_s16_rounds_and_saturates(edges) -> None:
    specials = [math.nan, math.inf, -math.inf]
    values = FLOAT_EDGES + FLOAT_NEAR_HALF + specials
    c_out = [int(v) for v in edges([f"Q {float_bits(v)}" for v in values])]
    numpy_out = fp.quantize_input(np.array(values, np.float32), np.float32(1)).tolist()
    assert c_out == numpy_out
    exact = [
        max(-32768, min(32767, round_half_away_exact(float(np.float32(v)))))
        for v in FLOAT_EDGES + FLOAT_NEAR_HALF
    ]
    assert c_out[: len(FLOAT_EDGES)] == exact[: len(FLOAT_EDGES)]
    near = c_out[len(FLOAT_EDGES) : len(FLOAT_EDGES) + len(FLOAT_NEAR_HALF)]
    assert all(abs(a - b) <= 1 for a, b in zip(near, exact[len(FLOAT_EDGES) :], strict=True))
    assert c_out[-3:] == [0, 32767, -32768]  # NaN -> 0, +/-Inf saturate


# Table interpolation error of the edge model's table, 128 intervals (the int8 default):
# |f''| <= 0.77 (tanh), h**2/8*|f''| <= 9.4e-4 for h = 1/16 -> 31 LSB of Q0.15 would be loose;
# the centred knots measure 1.95e-4 (6.4 LSB, docs/numerics.md), knot rounding adds 0.5.
TABLE_TOLERANCE_LSB = 7
# Softmax: exp within 0.6 LSB (test_exp_is_within_rounding_of_numpy), then the normalization's
# rounded division (0.5) and the other classes' exp errors through the total (< 0.6).
SOFTMAX_TOLERANCE_LSB = 2
Z_ONE = 2**fp.Z_FRAC_BITS
Z_EDGES = [-INT32_MAX, -(2**30), -(16 * Z_ONE) - 1, -(16 * Z_ONE), -(8 * Z_ONE), -Z_ONE, -1, 0]
Z_EDGES += [1, Z_ONE, 8 * Z_ONE - 1, 8 * Z_ONE, 8 * Z_ONE + 1, 16 * Z_ONE, 2**30, INT32_MAX]


@pytest.mark.parametrize(
    "op,function,low,high",
    [
        ("G", lambda u: 1 / (1 + math.exp(-u)), 0, 32767),
        ("T", math.tanh, -32767, 32767),
        ("H", lambda u: min(1.0, max(0.0, u / 6 + 0.5)), 0, 32767),
    ],
    ids=["sigmoid", "tanh", "hard_sigmoid"],
)
def test_activations_at_limits(edges, op, function, low, high) -> None:
    c_out = [int(v) for v in edges([f"{op} {z}" for z in Z_EDGES])]
    assert len(edges.tanh_table.entries) == 2**fp.LOG2_ENTRIES_INT8 + 1  # TABLE_TOLERANCE_LSB's
    tables = {"G": edges.tanh_table, "T": edges.tanh_table}  # sigmoid reads tanh's
    z = np.array(Z_EDGES, dtype=np.int64)
    if op == "G":
        mirror = fp.sigmoid_q15(z, tables["G"])
    elif op == "T":
        mirror = fp.tanh_q15(z, tables["T"])
    else:
        mirror = fp.hard_sigmoid_q15(z)
    assert c_out == mirror.tolist()
    for value, zq in zip(c_out, Z_EDGES, strict=True):
        real = function(max(-700.0, min(700.0, zq / Z_ONE))) * 32768
        assert low <= value <= high
        assert abs(value - max(low, min(high, real))) <= TABLE_TOLERANCE_LSB, (op, zq, value)
    assert c_out == sorted(c_out)  # monotonic across the edges


# Softmax: logits clamp to +/-(2**30 - 1) (Z16, i.e. +/-16384), so two logits both beyond
# the clamp tie. Expected: float softmax of the clamped logits; exp table error as above and
# the rounded division add up to TABLE_TOLERANCE_LSB.
SOFTMAX_CASES = [
    [INT32_MAX, -INT32_MAX],
    [INT32_MAX] * 8,
    [-INT32_MAX] * 3,
    [0] * 5,
    [INT32_MAX, 2**30, 0, -(2**30)],
    [INT32_MAX, INT32_MAX - 1, INT32_MAX - Z_ONE],
    [Z_ONE, 0],
    [-INT32_MAX, -INT32_MAX + 20 * Z_ONE],
    [0, -1, -(2**10), -Z_ONE, -3 * Z_ONE - 12345, -11 * Z_ONE - 5000, -16 * Z_ONE, -17 * Z_ONE],
]


def test_exp_is_within_rounding_of_numpy() -> None:
    """The table-free exp(-u) (shift + polynomial) against numpy on every Z16 input up to 17
    (exp(-11.09) is half an LSB): within 0.6 LSB (the rounding and 0.06 LSB of polynomial
    error), never increasing, exp(0) = 32767 and 0 from u = 16 on."""
    u = np.arange(0, 17 * Z_ONE, dtype=np.int64)
    e = fp.exp_neg_q15(u)
    exact = np.minimum(np.exp(-u / Z_ONE) * 32768, 32767)
    assert np.abs(e - exact).max() <= 0.6
    assert np.all(np.diff(e) <= 0) and e[0] == 32767 and e[16 * Z_ONE] == 0
    assert fp.exp_neg_q15(np.array([2**31 - 1]))[0] == 0


def test_softmax_with_huge_logits(edges) -> None:
    outputs = edges([f"X {len(z)} {' '.join(map(str, z))}" for z in SOFTMAX_CASES])
    for logits, line in zip(SOFTMAX_CASES, outputs, strict=True):
        y = [int(v) for v in line.split()]
        assert y == fp.softmax_q15(np.array([logits]))[0].tolist()
        clamped = np.clip(np.array(logits, np.float64), -(2**30 - 1), 2**30 - 1) / Z_ONE
        e = np.exp(clamped - clamped.max())
        expected = np.minimum(e / e.sum() * 32768, 32767)
        assert np.all(np.abs(np.array(y) - expected) <= SOFTMAX_TOLERANCE_LSB), (logits, y)
        assert all(0 <= v <= 32767 for v in y)


GATE_Z = [-INT32_MAX, 0, INT32_MAX]


@pytest.mark.parametrize("cell_frac", [1, 8, 15])
def test_cell_update_saturates(edges, cell_frac: int) -> None:
    """Saturated gates and a cell at its int16 limits: c' and h' saturate, never wrap."""
    cases = [
        (c0, zi, zf, zg, zo)
        for c0 in (-32768, -1, 0, 32767)
        for zi in GATE_Z
        for zf in GATE_Z
        for zg in GATE_Z
        for zo in (INT32_MAX, -INT32_MAX)
    ]
    lines = edges([f"L {cell_frac} {c0} 0 {zi} {zf} {zg} {zo}" for c0, zi, zf, zg, zo in cases])
    sigmoid = tanh = edges.tanh_table  # sigmoid reads tanh's table
    one = 2.0**cell_frac
    for (c0, zi, zf, zg, zo), line in zip(cases, lines, strict=True):
        c_new, h_new = (int(v) for v in line.split())
        z = np.array([zi, zf, zg, zo], dtype=np.int64)
        i, f, o = (int(fp.sigmoid_q15(z[k], sigmoid)) for k in (0, 1, 3))
        g = int(fp.tanh_q15(z[2], tanh))
        # exact real arithmetic, then saturate (rounding twice: 1 LSB)
        real_c = (f / 32768) * (c0 / one) + (i / 32768) * (g / 32768)
        expected_c = max(-32768, min(32767, round(real_c * one)))
        assert abs(c_new - expected_c) <= 1, (cell_frac, c0, z.tolist(), c_new, expected_c)
        expected_h = (o / 32768) * math.tanh(c_new / one) * 32768
        assert abs(h_new - expected_h) <= TABLE_TOLERANCE_LSB, (c_new, h_new, expected_h)


# ------------------------------------------------------------------ determinism


def test_same_model_and_calibration_give_identical_files(tmp_path: Path) -> None:
    spec = fuzz.random_spec(3)
    first, second = (fuzz.build_case(spec) for _ in range(2))
    with np.errstate(all="ignore"):
        convert_ir(first.model, first.calibration, tmp_path / "a", name="net")
        convert_ir(second.model, second.calibration, tmp_path / "b", name="net")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert {"net.c", "net.h", "net_weights.h", "net_kernels.h", "report.json"} <= set(files)
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
