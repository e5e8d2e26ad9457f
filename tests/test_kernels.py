"""Optimized LSTM kernels: every core's kernel in QEMU equals the portable reference kernel
and the numpy integer reference bit for bit, on shapes whose odd sizes exercise loop tails
(column padding to even / multiples of 8, unrolled-loop remainders, single units).

One firmware per (shape, core, kernel); cores: M0 and M3 (plain C), M4/M7/M33 (DSP), M55
(MVE). Needs arm-none-eabi-gcc and qemu-system-arm; skips without them unless
LSTM_EMBED_REQUIRE_FIRMWARE is set. Long sweeps belong in `lstm-embed bench`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lstm_embed import bench, firmware, layouts, reference
from lstm_embed import fixedpoint as fp
from lstm_embed.hostbuild import STRICT_FLAGS
from lstm_embed.qir import QModel

TIMESTEPS = 4
# (inputs, LSTM units..., Dense head): units 1, 3, 5 and inputs 1, 7 hit every tail; 9x44 runs
# the looped row sums (DSP: 27 column pairs = 3 x 7 + 6, MVE: 7 chunks, M0: 52 + 2 columns,
# 11 groups of 4 units); "wide" inputs make the input rows' shifts < 33 (the generic
# requantization); "hard" layers use hard_sigmoid (fast and generic requantization).
SHAPES = (
    bench.Shape("1x1", 1, (1,)),
    bench.Shape("7x3", 7, (3,)),
    bench.Shape("1x5+dense", 1, (5,), ((2, "linear"),)),
    bench.Shape("7x13,5", 7, (13, 5)),
    bench.Shape("9x44", 9, (44,)),
    bench.Shape("9x6 wide", 9, (6,), input_scale=100.0),
    bench.Shape("3x7,2 hard wide", 3, (7, 2), recurrent_activation="hard_sigmoid", input_scale=1e2),
)
CORES = ("qemu-m0", "qemu-m3", "qemu-m4", "qemu-m55")  # M7/M33 share the M4's DSP kernel


@pytest.fixture(scope="module")
def toolchain() -> None:
    if firmware.toolchain_available():
        return
    if os.environ.get("LSTM_EMBED_REQUIRE_FIRMWARE"):
        pytest.fail("LSTM_EMBED_REQUIRE_FIRMWARE is set but arm-none-eabi-gcc/qemu is missing")
    pytest.skip("arm-none-eabi-gcc or qemu-system-arm not installed")


@pytest.fixture(scope="module")
def converted(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[Path, np.ndarray, QModel]]:
    """Each shape converted once: (folder, numpy reference outputs per step, QModel)."""
    result = {}
    for k, shape in enumerate(SHAPES):
        out = tmp_path_factory.mktemp(f"shape{k}") / "model"
        conversion = bench.convert_shape(shape, out, seed=k)
        x = bench.bench_input(shape.input_size, TIMESTEPS, seed=k)
        states = reference.initial_state(conversion.qmodel, 1)
        y = [reference.step(conversion.qmodel, states, x[None, t])[0] for t in range(TIMESTEPS)]
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
    x = bench.bench_input(shape.input_size, TIMESTEPS, seed=SHAPES.index(shape))
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


def test_plain_kernel_builds_strict_on_host(converted: dict, tmp_path: Path) -> None:
    """The plain-C kernel is portable C99: forced on the host it compiles warning-free."""
    out, _, _ = converted["7x13,5"]
    cmd = ["cc", *STRICT_FLAGS, "-DBENCH_USE_PLAIN_KERNEL", "-c", str(out / "bench.c")]
    proc = subprocess.run([*cmd, "-o", str(tmp_path / "m.o")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_signed_table_pairs_equal_reference_lookup(name: str) -> None:
    table = fp.build_table(name)
    pairs = layouts.table_pairs(table, odd=name == "tanh").reshape(2, -1).T
    shift, limit, count = table.index_shift, table.limit, len(table.entries) - 1
    z = np.concatenate([np.arange(-limit - 5000, limit + 5000), [2**31 - 1, -(2**31) + 1]])
    clamped = np.clip(z, -limit, limit - 1)
    e = pairs[(clamped >> shift) + count]
    y = (e[:, 0] + e[:, 1] * (clamped & ((1 << shift) - 1))) >> shift
    function = fp.tanh_q15 if name == "tanh" else fp.sigmoid_q15
    np.testing.assert_array_equal(y, function(z, table))


def test_fast_requantize_equals_reference() -> None:
    rng = np.random.default_rng(0)
    acc = rng.integers(-(2**31) + 1, 2**31, 200_000)
    multiplier = rng.integers(2**30, 2**31, acc.size)
    shift = rng.integers(layouts.FAST_REQUANT_MIN_SHIFT, fp.MAX_SHIFT + 1, acc.size)
    high = (acc * multiplier) >> 32
    fast = ((high >> (shift - layouts.FAST_REQUANT_MIN_SHIFT)) + 1) >> 1
    np.testing.assert_array_equal(fast, fp.requantize(acc, multiplier, shift))
