"""The optimized kernels of the Dense rows (Dense layers, Conv1D's window rows, Conv2D's patch
rows with their straight-line gather and the plain kernel's unrolled Conv2D rows) and of depthwise
Conv1D: equal to the numpy integer reference bit for bit on the host (ASan/UBSan; the DSP
kernel with its instructions in C, --core m4; the plain build's depthwise loop, --core m0) and
in QEMU on M0 (plain), M4 and M33 (DSP) and M55 (MVE), on random-weight models whose odd sizes
hit every path: odd column counts (the DSP kernel's single last column, the MVE kernel's
predicated chunk), unit counts that leave a quad part empty, rows long enough for the looped
sums, kernel_size 1, dilation 2, "same" padding with stride 2 (run-only), depth_multiplier 2,
a depthwise tanh (the MVE kernel's scalar path) and channel counts that leave a partial vector;
Conv2D with one channel, same padding, strides 2, dilation (2, 1), a 70-tap window (the gather's
loops) and a per-frame (streaming) one.
Needs arm-none-eabi-gcc and qemu-system-arm for the QEMU part (skips without them unless
LSTM_EMBED_REQUIRE_FIRMWARE is set).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest

from lstm_embed.emit.layouts import dense as dense_layouts
from lstm_embed.emit.layouts import depthwise as depthwise_layouts
from lstm_embed.ir.model import DenseLayer, Model
from lstm_embed.kinds.conv1d import Conv1DLayer, QConv1DLayer
from lstm_embed.kinds.conv2d import UNROLLED_GATHER_TAPS, Conv2DLayer, QConv2DLayer
from lstm_embed.kinds.dense import QDenseLayer
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize.calibration import CalibrationWarning

from .helpers import edge_inputs, host_difference, qemu_difference, random_inputs, random_lstm

TIMESTEPS = 12  # the run-only models' window


def _conv(rng, name, m, filters, k, activation="relu", dilation=1, padding="causal", strides=1):
    kernel = rng.uniform(-1, 1, (k, m, filters)) * np.sqrt(3 / (k * m))
    bias = rng.uniform(-0.2, 0.2, filters)
    return Conv1DLayer(name, m, filters, k, dilation, kernel, bias, activation, padding, strides)


def _depthwise(rng, name, m, dm, k, activation="relu", dilation=1, padding="causal", strides=1):
    """As the Keras reader builds a DepthwiseConv1D: a Conv1D zero off the block diagonal."""
    taps = rng.uniform(-1, 1, (k, m, dm)) * np.sqrt(3 / k)
    kernel = np.zeros((k, m, m * dm))
    for c in range(m):
        kernel[:, c, c * dm : (c + 1) * dm] = taps[:, c, :]
    bias = rng.uniform(-0.2, 0.2, m * dm)
    return Conv1DLayer(name, m, m * dm, k, dilation, kernel, bias, activation, padding, strides)


def _conv2d(rng, name, frame, filters, k, activation, padding, strides=(1, 1), dilation=(1, 1)):
    """A Conv2D on frames of ``frame`` = (rows, channels), kernel ``k`` = (along T, along F)."""
    kernel = rng.uniform(-1, 1, (*k, frame[1], filters)) * np.sqrt(3 / (k[0] * k[1] * frame[1]))
    bias = rng.uniform(-0.2, 0.2, filters)
    return Conv2DLayer(
        name, frame[0] * frame[1], frame, filters, k, kernel, bias, activation, padding,
        strides, dilation,
    )  # fmt: skip


def _conv2d_pair(rng) -> list:
    """1 channel, 3x3 same, strides 2 (9 columns: 4 pairs and a single; 6 filters, a quad and
    a half-empty one) on 13 rows -> 7 x 6; then (2, 3) valid, dilation (2, 1), tanh (36
    columns: the DSP loop and its rest, 4 MVE chunks and a predicated one; 7 filters) -> 5 x 7;
    then (2, 5) same, 4 filters: 70 taps, more than the straight-line gather takes."""
    first = _conv2d(rng, "c2a", (13, 1), 6, (3, 3), "relu", "same", strides=(2, 2))
    second = _conv2d(rng, "c2b", first.output_frame, 7, (2, 3), "tanh", "valid", dilation=(2, 1))
    third = _conv2d(rng, "c2c", second.output_frame, 4, (2, 5), "relu", "same")
    assert third.window_size > UNROLLED_GATHER_TAPS >= second.window_size
    return [first, second, third]


def _dense(rng, name, m, n, activation):
    kernel = rng.uniform(-1, 1, (m, n)) * np.sqrt(3 / m)
    return DenseLayer(name, m, n, kernel, rng.uniform(-0.2, 0.2, n), activation)


def _model(front: Callable, inputs: int, timesteps: int | None, head=()) -> Callable:
    """A model builder: the layers of ``front(rng)``, an LSTM (every model needs a recurrent
    layer), then the Dense head ``head`` ((units, activation), ...)."""

    def build(seed: int) -> Model:
        rng = np.random.default_rng(seed)
        layers = list(front(rng))
        width = layers[-1].output_size
        sequences = not head and timesteps is None  # a run-only window gives one vector
        layers.append(random_lstm(rng, "lstm", width, 5, return_sequences=sequences))
        width = 5
        for k, (units, activation) in enumerate(head):
            layers.append(_dense(rng, f"head{k}", width, units, activation))
            width = units
        return Model("net", inputs, timesteps, tuple(layers), source=f"random seed {seed}")

    return build


# name -> (builder, inputs); every Dense or Conv1D below runs the optimized kernels
CASES = {
    # Dense rows: 1 input (only the single column), 3 (a pair and a single), 7 rows (a quad with
    # one padded row), 1 row (three); the head: softmax over 3 rows and a linear row
    "dense odd": (
        _model(
            lambda r: [_dense(r, "d0", 1, 7, "tanh"), _dense(r, "d1", 7, 3, "relu")],
            1,
            None,
            head=((3, "softmax"), (1, "linear")),
        ),
        1,
    ),
    # 64 inputs: the DSP kernel's looped pairs (32 = 8 passes of 4) and 8 MVE chunks; 9 rows
    "dense 64": (_model(lambda r: [_dense(r, "d0", 64, 9, "sigmoid")], 64, None), 64),
    # causal conv: 3 channels, kernel 3, dilation 2 (9 columns: 4 pairs and a single), then a
    # kernel_size 1 conv (a Dense per step, no history) of 11 filters
    "conv causal dilated": (
        _model(
            lambda r: [
                _conv(r, "c0", 3, 5, 3, "relu", dilation=2),
                _conv(r, "c1", 5, 11, 1, "linear"),
            ],
            3,
            None,
        ),
        3,
    ),
    # run-only: "same" padding, stride 2, 7 channels x 4 taps = 28 columns (14 pairs: the DSP
    # loop and its rest; 3 MVE chunks and a predicated one), then "valid" kernel 5 of 6 filters
    "conv same stride 2": (
        _model(
            lambda r: [
                _conv(r, "c0", 7, 6, 4, "tanh", padding="same", strides=2),
                _conv(r, "c1", 6, 6, 5, "relu", padding="valid"),
            ],
            7,
            TIMESTEPS,
        ),
        7,
    ),
    # depthwise, depth_multiplier 1: 7 channels (3 DSP channel pairs and a single; an MVE group
    # of 4 and a predicated 3), relu and linear; then tanh (the MVE kernel's C loop)
    "depthwise causal": (
        _model(
            lambda r: [
                _depthwise(r, "dw0", 7, 1, 5, "relu"),
                _depthwise(r, "dw1", 7, 1, 3, "linear", dilation=2),
                _depthwise(r, "dw2", 7, 1, 2, "tanh"),
            ],
            7,
            None,
        ),
        7,
    ),
    # depthwise, depth_multiplier 2 over 5 channels; run-only "same" with stride 2 and kernel 1
    "depthwise dm2 same": (
        _model(
            lambda r: [
                _depthwise(r, "dw0", 5, 2, 3, "relu", padding="same", strides=2),
                _depthwise(r, "dw1", 10, 1, 1, "linear", padding="valid"),
            ],
            5,
            TIMESTEPS,
        ),
        5,
    ),
    # Conv2D rows (each output position a Dense over its taps), run-only: see _conv2d_pair
    "conv2d same stride 2 dilated": (_model(_conv2d_pair, 13, TIMESTEPS), 13),
    # Conv2D as the keyword spotter's (1 channel, stride 1: MVE's contiguous lane loads), 3x3
    # same, dilation (1, 2), on 11 rows: rows 2 .. 8 in the lanes (a vector and a predicated
    # one), the 4 edge rows through the quads; then (2, 2) valid linear on its 11 x 5
    "conv2d one channel": (
        _model(
            lambda r: [
                _conv2d(r, "c2a", (11, 1), 5, (3, 3), "relu", "same", dilation=(1, 2)),
                _conv2d(r, "c2b", (11, 5), 4, (2, 2), "linear", "valid"),
            ],
            11,
            TIMESTEPS,
        ),
        11,
    ),
    # Conv2D per frame (kernel 1 along T: streaming), (1, 3) same, dilation (1, 2), linear, on
    # 9 rows x 3 channels (9 columns), 5 filters
    "conv2d per frame": (
        _model(
            lambda r: [_conv2d(r, "c2", (9, 3), 5, (1, 3), "linear", "same", dilation=(1, 2))],
            27,
            None,
        ),
        27,
    ),
}
HOST_CORES = ("all", "m0", "m4")  # reference; the plain build (depthwise C loop); DSP in C
BOARDS = ("qemu-m0", "qemu-m4", "qemu-m33", "qemu-m55")


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """(case, core) -> (folder, QModel, x_q, x), each case converted once per core."""
    result = {}
    for seed, (label, (build, inputs)) in enumerate(CASES.items()):
        ir = build(seed)
        steps = ir.timesteps or 6
        calibration = random_inputs(seed, 64, steps, inputs)
        for core in HOST_CORES:
            out = tmp_path_factory.mktemp(f"case{seed}-{core}") / "model"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CalibrationWarning)
                conversion = convert_ir(ir, calibration, out, force=True, core=core)
            x_q, x = edge_inputs(conversion.qmodel, random_inputs(seed + 1, 32, steps, inputs))
            result[label, core] = (out, conversion.qmodel, x_q[-6:], x[-6:])
    return result


def test_every_dense_and_conv_layer_takes_an_optimized_kernel(converted: dict) -> None:
    """The cases run what they claim: every int8 Dense row set has the quad layouts, the
    depthwise layers are detected (with their multiplier), the others are not depthwise."""
    expected_dm = {"dw0": None, "dw1": None, "dw2": None}
    for label, core in converted:
        if core != "all":
            continue
        _, qmodel, _, _ = converted[label, core]
        for layer in qmodel.layers:
            if isinstance(layer, QConv1DLayer):
                dm = depthwise_layouts.depth_multiplier(layer)
                assert (dm > 0) == layer.name.startswith("dw"), (label, layer.name)
                if label == "depthwise dm2 same" and layer.name in expected_dm:
                    expected_dm[layer.name] = dm
                if not dm:
                    assert dense_layouts.optimized(layer.dense), (label, layer.name)
            elif isinstance(layer, QConv2DLayer):
                assert dense_layouts.optimized(layer.dense), (label, layer.name)
            elif isinstance(layer, QDenseLayer):
                assert dense_layouts.optimized(layer), (label, layer.name)
    assert expected_dm["dw0"] == 2 and expected_dm["dw1"] == 1


@pytest.mark.parametrize("core", HOST_CORES)
@pytest.mark.parametrize("label", CASES)
def test_host_equals_reference(converted: dict, label: str, core: str) -> None:
    out, qmodel, x_q, x = converted[label, core]
    difference = host_difference(out, qmodel, x_q, x, sanitize=True)
    assert difference is None, f"{label}, --core {core}: {difference}"


@pytest.mark.firmware
@pytest.mark.parametrize("board", BOARDS)
@pytest.mark.parametrize("label", CASES)
def test_qemu_equals_reference(toolchain: None, converted: dict, label: str, board: str) -> None:
    out, qmodel, x_q, x = converted[label, "all"]
    difference = qemu_difference(out, qmodel, board, x_q, x)
    assert difference is None, f"{label} on {board}: {difference}"


def _smlald_emulated(words: np.ndarray, a: np.ndarray) -> np.ndarray:
    """sum over the words of (low halfword * a_low + high halfword * a_high), exact."""
    low = ((words & 0xFFFF) ^ 0x8000) - 0x8000
    high = (((words >> 16) & 0xFFFF) ^ 0x8000) - 0x8000
    return (low * a[0::2] + high * a[1::2]).sum(axis=-1)


@pytest.mark.parametrize("units, inputs", [(1, 1), (7, 3), (9, 64), (4, 8)])
def test_dsp_quads_give_every_row_its_exact_sum(units: int, inputs: int) -> None:
    """Decoding layouts.dense.dsp_quads as the DSP kernel reads it (S from the words, T from
    their low bytes, row B = (S - T) >> 8) gives bias + w . x for every row, extreme weights
    (+-127) and activations (-32768, 32767) included."""
    rng = np.random.default_rng(units * 100 + inputs)
    weights = rng.integers(-127, 128, (units, inputs)).astype(np.int8)
    weights[0, 0] = -127
    bias = rng.integers(-(2**20), 2**20, units)

    class Rows:
        pass

    rows = Rows()
    rows.units, rows.input_size, rows.weights, rows.bias_s32 = units, inputs, weights, bias
    rows.weight_bits, rows.blocked = 8, False
    x = rng.integers(-32768, 32768, inputs)
    x[:2] = [-32768, 32767][: min(2, inputs)]
    a = np.zeros(inputs + inputs % 2, np.int64)
    a[:inputs] = x
    record = dense_layouts.dsp_quads(rows).astype(np.int64) & 0xFFFFFFFF
    words_per_quad = dense_layouts.DSP_HEADER_WORDS + len(a)
    sums = []
    for quad in record.reshape(-1, words_per_quad):
        s01 = int(np.int64(quad[0] | (quad[1] << 32)))
        s23 = int(np.int64(quad[2] | (quad[3] << 32)))
        t0, t2 = (int(np.int32(np.uint32(v))) for v in quad[4:6])
        body = quad[6:].reshape(-1, 2)  # [column pair][row pair]
        lows = body & 0x00FF00FF  # SXTB16: the low byte of each halfword, sign-extended
        lows = (((lows & 0xFF) ^ 0x80) - 0x80) & 0xFFFF | (
            (((lows >> 16) & 0xFF) ^ 0x80) - 0x80
        ) << 16
        s = [s01 + _smlald_emulated(body[:, 0], a), s23 + _smlald_emulated(body[:, 1], a)]
        t = [t0 + _smlald_emulated(lows[:, 0], a), t2 + _smlald_emulated(lows[:, 1], a)]
        sums += [t[0], (s[0] - t[0]) >> 8, t[1], (s[1] - t[1]) >> 8]
    expected = bias + weights.astype(np.int64) @ x
    np.testing.assert_array_equal(np.array(sums[:units]), expected)
    assert all(v == 0 for v in sums[units:]), "padded rows sum to zero"


def test_mve_weights_are_the_rows_in_chunks() -> None:
    """layouts.dense.mve_weights: [quad][chunk of 8][row][8], zero beyond the rows."""
    rng = np.random.default_rng(3)

    class Rows:
        pass

    rows = Rows()
    rows.units, rows.input_size = 5, 11
    rows.weights = rng.integers(-127, 128, (5, 11)).astype(np.int8)
    rows.bias_s32 = np.arange(5)
    rows.weight_bits, rows.blocked = 8, False
    w = dense_layouts.mve_weights(rows).reshape(2, 2, 4, 8)  # quads, chunks, rows, lanes
    back = w.transpose(0, 2, 1, 3).reshape(8, 16)
    np.testing.assert_array_equal(back[:5, :11], rows.weights)
    assert not back[5:].any() and not back[:, 11:].any()
    np.testing.assert_array_equal(dense_layouts.quad_bias(rows), [0, 1, 2, 3, 4, 0, 0, 0])


def test_depthwise_taps_are_each_filters_own_channel(converted: dict) -> None:
    """layouts.depthwise.tap_weights holds, for each filter, its block-diagonal row's nonzero
    weights; a regular conv whose rows mix channels is not taken for a depthwise one."""
    _, qmodel, _, _ = converted["depthwise dm2 same", "all"]
    layer = qmodel.layers[0]
    m, k, filters = layer.input_size, layer.kernel_size, layer.dense.units
    rows = layer.dense.weights.reshape(filters, k, m)
    taps = depthwise_layouts.tap_weights(layer)
    for f in range(filters):
        np.testing.assert_array_equal(rows[f, :, f // 2], taps[:, f])
    _, qmodel, _, _ = converted["conv causal dilated", "all"]
    assert depthwise_layouts.depth_multiplier(qmodel.layers[0]) == 0


def test_generated_c_holds_the_kernels(converted: dict) -> None:
    """The DSP folder holds a per-layer quad_sums and depthwise function; MVE's are in --core
    all; the reference kernel's block-diagonal rows stay in --core all only."""
    text = {
        core: "".join(p.read_text() for p in converted["depthwise causal", core][0].glob("net*"))
        for core in ("all", "m4")
    }
    assert "net_conv0_depthwise(" in text["m4"] and "NET_SMLABB" in text["m4"]
    assert "net_conv0_weights_s8" not in text["m4"]  # no block-diagonal rows without reference
    assert "net_conv0_weights_s8" in text["all"] and "vmulhq_s32" in text["all"]
    dense_text = "".join(p.read_text() for p in converted["dense 64", "m4"][0].glob("net*"))
    assert "net_dense0_quad_sums(" in dense_text
