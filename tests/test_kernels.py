"""Optimized LSTM kernels: every core's kernel in QEMU equals the portable reference kernel
and the numpy integer reference bit for bit, on shapes whose odd sizes exercise loop tails
(column padding to even / multiples of 8, unrolled-loop remainders, single units).

One firmware per (shape, core, kernel); cores: M0 and M3 (plain C), M4/M7/M33 (DSP), M55
(MVE). Needs arm-none-eabi-gcc and qemu-system-arm; skips without them unless
LSTM_EMBED_REQUIRE_FIRMWARE is set. Long sweeps belong in `lstm-embed bench`.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lstm_embed.emit import render as emit
from lstm_embed.emit.layouts import lstm as layouts
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.qir import QModel
from lstm_embed.reference import interpreter as reference
from lstm_embed.targets.hostbuild import STRICT_FLAGS
from lstm_embed.tools import bench

TIMESTEPS = 4
# (inputs, LSTM units..., Dense head): units 1, 3, 5 and inputs 1, 7 hit every tail; 9x44 runs
# the looped row sums (DSP: 27 column pairs = 3 x 7 + 6, MVE: 7 chunks, M0: 52 + 2 columns,
# 11 groups of 4 units); "wide" inputs make the input rows' shifts < 33 (the generic
# requantization); "hard" layers use hard_sigmoid (fast and generic requantization).
# "shift k" layers scale the input columns' sums by 2^k (odd inputs 1, 7, 49 pad the input part
# on its own; 49 inputs loop over the DSP's input words, 44 units over the MVE's recurrent
# chunks). "saturating cell": biases of +5 on i, f, g grow the cell by about 1 a step, so that
# cell_frac < 12 and |c| passes tanh's range (the clamping branch of the cell update).
SATURATING = "4x6 saturating cell"
SATURATING_TIMESTEPS = 24
SHIFT_SHAPES = (
    bench.Shape("1x5 shift 1", 1, (5,), input_shift=1),
    bench.Shape("7x13,5 shift 2", 7, (13, 5), input_shift=2),
    bench.Shape("49x6 shift 1", 49, (6,), input_shift=1),
    bench.Shape("9x44 shift 3 wide", 9, (44,), input_scale=4.0, input_shift=3),
    bench.Shape(
        "3x7,2 hard shift 2 wide", 3, (7, 2), (), "hard_sigmoid", input_scale=1e2, input_shift=2
    ),
)
# GRU layers (Shape(layer="gru")): the same tails and paths, plus the DSP kernel's looped
# recurrent pairs (50 units: 25 pairs = 3 x 8 + 1; M55: 7 chunks), the reset_after=False form
# ("gru_b": z and r first, then the candidate over [x; r*h]) and odd inputs with a shift, whose
# input and recurrent columns every GRU layout pads apart.
GRU_SHAPES = (
    bench.Shape("gru 1x1", 1, (1,), layer="gru"),
    bench.Shape("gru 7x3+dense", 7, (3,), ((2, "linear"),), layer="gru"),
    bench.Shape("gru 7x13,5", 7, (13, 5), layer="gru"),
    bench.Shape("gru 3x50", 3, (50,), layer="gru"),
    bench.Shape("gru 9x6 wide", 9, (6,), input_scale=100.0, layer="gru"),
    bench.Shape("gru 3x7,2 hard wide", 3, (7, 2), (), "hard_sigmoid", 1e2, layer="gru"),
    bench.Shape("gru 1x5 shift 1", 1, (5,), input_shift=1, layer="gru"),
    bench.Shape("gru 9x44 shift 3 wide", 9, (44,), input_scale=4.0, input_shift=3, layer="gru"),
    bench.Shape("gru_b 7x13,5", 7, (13, 5), layer="gru", reset_after=False),
    bench.Shape("gru_b 3x50", 3, (50,), layer="gru", reset_after=False),
    bench.Shape("gru_b 9x6 wide", 9, (6,), input_scale=100.0, layer="gru", reset_after=False),
    bench.Shape(
        "gru_b 3x7,2 hard shift 2",
        3,
        (7, 2),
        (),
        "hard_sigmoid",
        input_shift=2,
        layer="gru",
        reset_after=False,
    ),
)
SHAPES = (
    bench.Shape("1x1", 1, (1,)),
    bench.Shape("7x3", 7, (3,)),
    bench.Shape("1x5+dense", 1, (5,), ((2, "linear"),)),
    bench.Shape("7x13,5", 7, (13, 5)),
    bench.Shape("9x44", 9, (44,)),
    bench.Shape("9x6 wide", 9, (6,), input_scale=100.0),
    bench.Shape("3x7,2 hard wide", 3, (7, 2), recurrent_activation="hard_sigmoid", input_scale=1e2),
    *SHIFT_SHAPES,
    bench.Shape(SATURATING, 4, (6,), gate_bias=(5.0, 5.0, 5.0, 0.0)),
    *GRU_SHAPES,
)
CORES = ("qemu-m0", "qemu-m3", "qemu-m4", "qemu-m55")  # M7/M33 share the M4's DSP kernel


def timesteps(shape: bench.Shape) -> int:
    return SATURATING_TIMESTEPS if shape.label == SATURATING else TIMESTEPS


@pytest.fixture(scope="module")
def converted(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, np.ndarray, QModel]]:
    """Each shape converted once: (folder, numpy reference outputs per step, QModel)."""
    result = {}
    for k, shape in enumerate(SHAPES):
        out = tmp_path_factory.mktemp(f"shape{k}") / "model"
        conversion = bench.convert_shape(shape, out, seed=k)
        x = bench.bench_input(shape.input_size, timesteps(shape), seed=k)
        states = reference.initial_state(conversion.qmodel, 1)
        y = [reference.step(conversion.qmodel, states, x[None, t])[0] for t in range(len(x))]
        result[shape.label] = (out, np.array(y, dtype=np.int16), conversion.qmodel)
    return result


def _assert_equal(y: np.ndarray, expected: np.ndarray, label: str) -> None:
    assert y.shape == expected.shape, label
    if not np.array_equal(y, expected):
        step, unit = (int(i) for i in np.argwhere(y != expected)[0])
        pytest.fail(
            f"{label}: first difference at timestep {step}, output {unit}: "
            f"{y[step, unit]} != reference {expected[step, unit]}"
        )


@pytest.mark.firmware
@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.label)
def test_optimized_equals_reference(
    toolchain: None, converted: dict, tmp_path: Path, shape: bench.Shape, core: str
) -> None:
    out, expected, _ = converted[shape.label]
    x = bench.bench_input(shape.input_size, timesteps(shape), seed=SHAPES.index(shape))
    for kernel in bench.KERNELS:
        y, _ = bench.run_outputs(out, core, x, kernel, tmp_path / kernel)
        _assert_equal(y, expected, f"{shape.label} on {core}, {kernel} kernel")


def test_shapes_exercise_every_kernel_path(converted: dict) -> None:
    """The shapes above keep covering both requantizations, hard_sigmoid and looped sums."""
    layers = {
        label: [(layouts.fast_requant(la), la.recurrent_activation) for la in conv.lstm_layers]
        for label, (_, _, conv) in converted.items()
    }
    assert layers["9x6 wide"] == [(False, "sigmoid")]
    assert layers["3x7,2 hard wide"] == [(False, "hard_sigmoid"), (True, "hard_sigmoid")]
    assert layers["9x44"] == [(True, "sigmoid")]
    assert layers["3x7,2 hard shift 2 wide"] == [(False, "hard_sigmoid"), (True, "hard_sigmoid")]


def test_gru_shapes_exercise_every_kernel_path(converted: dict) -> None:
    """Both requantizations and both GRU forms, hard_sigmoid, input shifts, and recurrent parts
    long enough for the DSP kernel's pair loop (> 16 pairs) and the MVE kernel's chunk loop
    (> 4 chunks) keep being covered, all on the optimized kernels."""
    layers = {
        label: [
            (layouts.fast_requant(la), la.reset_after, la.recurrent_activation, la.input_shift)
            for la in conv.recurrent_layers
        ]
        for label, (_, _, conv) in converted.items()
        if label.startswith("gru")
    }
    assert layers["gru 9x6 wide"] == [(False, True, "sigmoid", 0)]
    assert layers["gru_b 9x6 wide"] == [(False, False, "sigmoid", 0)]
    assert layers["gru 3x7,2 hard wide"] == [
        (False, True, "hard_sigmoid", 0),
        (True,) * 2 + ("hard_sigmoid", 0),
    ]
    assert layers["gru_b 3x7,2 hard shift 2"][0][1:] == (False, "hard_sigmoid", 2)
    assert layers["gru 9x44 shift 3 wide"] == [(True, True, "sigmoid", 3)]
    assert all(la.units > 48 for la in converted["gru 3x50"][2].recurrent_layers)
    for label, (_, _, conv) in converted.items():
        if label.startswith("gru"):
            assert all(la.kind == "gru" and not la.portable_only for la in conv.recurrent_layers)


def test_shift_shapes_run_the_optimized_kernels(converted: dict) -> None:
    for shape in SHIFT_SHAPES:
        for layer in converted[shape.label][2].lstm_layers:
            assert layer.input_shift == shape.input_shift, shape.label
            assert not layer.portable_only, shape.label


def _halfwords(words: np.ndarray) -> np.ndarray:
    """int32 words -> their int16 halves, low half first."""
    return words.astype("<i4").view("<i2").astype(np.int64)


def test_scaled_input_weights_are_the_input_columns_times_2_to_the_k(converted: dict) -> None:
    """The DSP and MVE layouts' int16 input weights (layouts.dsp_input_weights,
    mve_input_weights) hold exactly w * 2^k of the input columns, zero in the padding."""
    for shape in SHIFT_SHAPES:
        for layer in converted[shape.label][2].lstm_layers:
            m, k, units = layer.input_size, layer.input_shift, layer.units
            for multiple, values in (
                (2, _halfwords(layouts.dsp_input_weights(layer))),  # [u][pair][gate][2]
                (layouts.MVE_LANES, layouts.mve_input_weights(layer)),  # [u][chunk][gate][8]
            ):
                x_columns, _ = layouts.layer_groups(layer, multiple)
                w = values.reshape(units, x_columns // multiple, 4, multiple)
                w = w.transpose(0, 2, 1, 3).reshape(units, 4, x_columns)
                expected = np.zeros_like(w)
                expected[..., :m] = layer.weights_s8[..., :m].astype(np.int64) << k
                np.testing.assert_array_equal(w, expected, err_msg=f"{shape.label}, {multiple}")


def test_saturating_cell_clamps_tanh_input(converted: dict) -> None:
    """cell_frac < 12 selects the cell update's saturating tanh (kernels/common.c.j2), and the
    cell really leaves tanh's table range within the test's timesteps."""
    _, _, qmodel = converted[SATURATING]
    layer, tanh = qmodel.lstm_layers[0], qmodel.tables["tanh"]
    assert layer.cell_frac < 32 - tanh.limit.bit_length()
    seed = [shape.label for shape in SHAPES].index(SATURATING)
    trace = reference.Trace()
    reference.run(qmodel, bench.bench_input(4, SATURATING_TIMESTEPS, seed)[None], trace)
    peak = max(int(np.abs(step[0].c).max()) for step in trace.steps)
    assert peak << (fp.Z_FRAC_BITS - layer.cell_frac) >= tanh.limit


@pytest.mark.parametrize("label", ["7x13,5", "7x13,5 shift 2"])
def test_plain_kernel_builds_strict_on_host(converted: dict, tmp_path: Path, label: str) -> None:
    """The plain-C kernel is portable C99: forced on the host it compiles warning-free."""
    out, _, _ = converted[label]
    cmd = ["cc", *STRICT_FLAGS, "-DBENCH_USE_PLAIN_KERNEL", "-c", str(out / "bench.c")]
    proc = subprocess.run([*cmd, "-o", str(tmp_path / "m.o")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("log2_entries", [6, 8, 11])
def test_signed_lookups_are_the_interpolated_table_rounded(log2_entries: int) -> None:
    """tanh = round(L(z)) and sigmoid = (1 + L(z / 2)) / 2 rounded (halves down), L the
    piecewise-linear interpolant (numpy's) through the knots +/-e[k] of tanh's stored table,
    z clamped to the table's range: what every kernel's integer formula must compute."""
    table = fp.build_table("tanh", log2_entries)
    e, shift, limit = table.entries.astype(np.float64), table.index_shift, table.limit
    knots = np.arange(-(len(e) - 1), len(e)) * 2.0**shift
    values = np.concatenate([-e[:0:-1], e])
    z = np.concatenate([np.arange(-2 * limit - 3000, 2 * limit + 3000, 7), [2**31 - 1, -(2**31)]])
    tanh = np.floor(np.interp(np.clip(z, -limit, limit - 1), knots, values) + 0.5)
    np.testing.assert_array_equal(fp.tanh_q15(z, table), tanh)
    half_z = np.clip(z, -2 * limit, 2 * limit - 1) / 2.0
    sigmoid = np.ceil((fp.Q15_ONE + np.interp(half_z, knots, values)) / 2 + 0.5) - 1
    np.testing.assert_array_equal(fp.sigmoid_q15(z, table), sigmoid)
    assert fp.sigmoid_q15(np.array([0]), table)[0] == fp.Q15_ONE // 2
    assert fp.sigmoid_q15(np.array([2**31 - 1]), table)[0] == fp.INT16_MAX  # fits int16


def test_fast_requantize_equals_reference() -> None:
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**31) + 1, 2**31, 200_000)
    multiplier = rng.integers(2**30, 2**31, acc.size)
    shift = rng.integers(layouts.FAST_REQUANT_MIN_SHIFT, fp.MAX_SHIFT + 1, acc.size)
    high = (acc * multiplier) >> 32
    fast = ((high >> (shift - layouts.FAST_REQUANT_MIN_SHIFT)) + 1) >> 1
    np.testing.assert_array_equal(fast, fp.requantize(acc, multiplier, shift))


def _sensitive_model(qmodel: QModel) -> QModel:
    """The first layer with small biases, no recurrent weights and z = acc * 2^5: an error of
    one accumulator unit in a gate changes the outputs (normal models round it away)."""
    layer = qmodel.lstm_layers[0]
    rng = np.random.default_rng(5)
    weights = layer.weights.copy()
    weights[..., layer.input_size :] = 0
    rows = layer.bias_s32.shape
    sensitive = dataclasses.replace(
        layer,
        weights=weights,
        bias_s32=rng.integers(-50, 51, rows).astype(np.int32),
        multiplier=np.full(rows, 2**30, dtype=np.int64),
        shift=np.full(rows, 25, dtype=np.int64),
    )
    return dataclasses.replace(qmodel, layers=(sensitive, *qmodel.layers[1:]))


@pytest.mark.firmware
@pytest.mark.parametrize("core", CORES)
def test_input_shift_is_exact_to_one_accumulator_unit(
    toolchain: None, converted: dict, tmp_path: Path, core: str
) -> None:
    """Bias remainders and the scaled input part are off by no unit: tiny inputs and biases
    with z = acc * 32 (7 inputs, shift 2), optimized kernel vs numpy."""
    qmodel = _sensitive_model(converted["7x13,5 shift 2"][2])
    emit.emit_model(qmodel, tmp_path, bench.NAME)
    x = np.random.default_rng(6).integers(-4, 5, (TIMESTEPS, 7)).astype(np.int16)
    states = reference.initial_state(qmodel, 1)
    expected = np.array([reference.step(qmodel, states, x[None, t])[0] for t in range(len(x))])
    y, _ = bench.run_outputs(tmp_path, core, x, "optimized", tmp_path / "build")
    _assert_equal(y, expected.astype(np.int16), f"sensitive shift 2 model on {core}")
