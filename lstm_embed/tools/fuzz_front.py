"""The fuzzer's input layers and the kinds of issue "the layers real models put around
recurrent cores" that the chain fuzzer did not draw before: an Embedding over integer ids, a
Conv2D (and MaxPooling2D/AveragePooling2D, or a Global pooling and RepeatVector) over
(T, F, C) frames as the first layers, a Conv1DTranspose before the core, and relu/linear
LSTM and GRU states.

They come from a stream of their own (FRONT_STREAM), drawn after every other kind, so that
the seeds drawn before them keep their models. Each input kind ends with the spec's input width
m, so the layers after it keep their weights: an Embedding's output_dim is m; a Conv2D's
output rows times filters are m (the Reshape((T, F * C)) a Keras model puts between it and the
recurrent layer is nothing in the IR: the chain carries frames as T timesteps of F * C values);
the model's input becomes the ids (one feature) or the frames (F * C features).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from lstm_embed.kinds.conv2d import Conv2DLayer
from lstm_embed.kinds.embedding import EmbeddingLayer
from lstm_embed.kinds.pooling import MAX_POOL
from lstm_embed.kinds.pooling2d import Pooling2DLayer
from lstm_embed.kinds.reshape import ReshapeLayer
from lstm_embed.kinds.window import output_length
from lstm_embed.tools.fuzz_layers import LSTMSpec

FRONT_STREAM = 0xA42
# input kinds (place "input": before every other layer), by what they do to the timesteps
INPUT_STREAMING = ("embedding", "embedding_mask", "conv2d_stream")
INPUT_WINDOW_SAME = ("conv2d_same",)  # a kernel or pool over time, T kept: needs the window
INPUT_CHANGING = ("conv2d_valid",)  # valid or strided along time: T changes
INPUT_GLOBAL = ("conv2d_global",)  # Global*Pooling2D then RepeatVector(T): needs the window
FRONT_CHANGING = ("conv_transpose",)  # Conv1DTranspose: T grows
KINDS = (*INPUT_STREAMING, *INPUT_WINDOW_SAME, *INPUT_CHANGING, *INPUT_GLOBAL, *FRONT_CHANGING)
WHOLE_WINDOW = (*INPUT_WINDOW_SAME, *INPUT_CHANGING, *INPUT_GLOBAL, *FRONT_CHANGING)
STATE_ACTIVATIONS = ("relu", "linear")
STATE_FRACTION = 0.3  # of the eligible LSTM and GRU layers, a relu or linear state
BOUNDED_WEIGHTS = ("normal", "tiny", "zeros", None)  # weight kinds (None: no bias)
MAX_STATE_INPUT_SCALE = 3.0  # the calibration data's scale under a relu/linear first layer
# around kinds that work one timestep at a time, whatever T is (fuzz_around's PER_STEP and
# NEW_PER_STEP): a T-changing kind here is drawn only beside these
T_AGNOSTIC = ("relu", "leaky_relu", "sigmoid", "tanh", "batch_norm", "layer_norm", "conv_causal",
              "affine", "depthwise_causal", "separable_causal")  # fmt: skip
MIN_CHANGING_TIMESTEPS = 6  # as fuzz_around's: the longest valid window spans 5 timesteps
MAX_TRANSPOSE_TIMESTEPS = 40  # Conv1DTranspose grows T up to 3-fold: keep M0 runs in 16 KB
MAX_FRAME_VALUES = 48  # F * C of a drawn frame (fewer channels when F is large)
MAX_IDS = 2000  # vocabulary sizes drawn (log-uniform); int8 tables stay small in flash


def state_activations(
    seed: int, layers: tuple[LSTMSpec, ...], calibration_scale: float
) -> tuple[LSTMSpec, ...]:
    """relu or linear instead of tanh in about STATE_FRACTION of the LSTM and GRU layers.

    Only where the state can stay within an int16 format (the converter refuses a state
    beyond Q14.1 by design): weights and bias of a bounded kind (BOUNDED_WEIGHTS), on the
    model's input only when the calibration data is not far beyond 1, and after another
    recurrent layer only when that one's output is bounded (tanh); not in a Bidirectional
    and not stateful (a state carried over between windows may outgrow the format calibrated
    on one window)."""
    rng = np.random.default_rng([seed, FRONT_STREAM, 3])
    drawn = []
    for k, la in enumerate(layers):
        pick = rng.random() < STATE_FRACTION
        activation = str(rng.choice(STATE_ACTIVATIONS))
        eligible = la.kind in ("lstm", "gru") and not la.stateful and not la.bidirectional
        eligible = eligible and la.weights in BOUNDED_WEIGHTS and la.bias in BOUNDED_WEIGHTS
        eligible = eligible and (k > 0 or calibration_scale <= MAX_STATE_INPUT_SCALE)
        # after a relu or linear layer (a SimpleRNN's too) the input is unbounded: a relu
        # LSTM there outgrew int16 (seed 20250, after two such SimpleRNNs)
        eligible = eligible and (k == 0 or drawn[k - 1].activation == "tanh")
        drawn.append(replace(la, activation=activation) if pick and eligible else la)
    return tuple(drawn)


def draw_front(
    seed: int, recurrent: tuple, return_sequences: bool, timesteps: int, out: tuple
) -> tuple:
    """An input kind or a Conv1DTranspose in about one model in four, given the around kinds
    ``out`` already drawn (T-changing and whole-window kinds only where those allow them)."""
    rng = np.random.default_rng([seed, FRONT_STREAM])
    if rng.random() < 0.75:
        return ()
    kinds_out = {item.split(":")[1] for item in out}
    if "masking" in kinds_out:  # Masking only first: no layer before it
        return ()
    flags = [(la.go_backwards, la.stateful, la.bidirectional) for la in recurrent]
    run_only = any(back or bool(bidir) for back, _, bidir in flags)
    stateful = any(state for _, state, _ in flags)
    t_agnostic = kinds_out <= set(T_AGNOSTIC)
    kinds = ["embedding", "conv2d_stream"]
    # mask_zero masks as Masking does: streaming models only, no layer needing the window
    if not run_only and not stateful and t_agnostic:
        kinds.append("embedding_mask")
    if not stateful:
        kinds += list(INPUT_WINDOW_SAME)
        # a global pooling sums T x F int16 values in int32 (F at most 12 here)
        if t_agnostic and timesteps * 12 <= MAX_POOL:
            kinds += list(INPUT_GLOBAL)
        changing = not return_sequences and t_agnostic
        # twice the odds: the conditions leave them fewer models
        if changing and timesteps >= MIN_CHANGING_TIMESTEPS:
            kinds += [*INPUT_CHANGING, *INPUT_CHANGING]
        if changing and timesteps <= MAX_TRANSPOSE_TIMESTEPS:
            kinds += [*FRONT_CHANGING, *FRONT_CHANGING]
    kind = str(rng.choice(kinds))
    return (f"{'front' if kind in FRONT_CHANGING else 'input'}:{kind}",)


def front_layers(rng: np.random.Generator, kind: str, name: str, m: int, timesteps: int) -> list:
    """The layers of one kind of this module, ending with m features per timestep."""
    if kind.startswith("embedding"):
        input_dim = int(np.exp(rng.uniform(0, np.log(MAX_IDS))))
        table = rng.normal(size=(input_dim, m)) * 10 ** rng.uniform(-2, 0.5)
        return [EmbeddingLayer(name, 1, table, kind == "embedding_mask")]
    if kind.startswith("conv2d"):
        return _conv2d(rng, kind, name, m, timesteps)
    if kind == "conv_transpose":  # its two layers, as the frontend's folds expand it
        return list(_conv_transpose(rng, name, m).layers)
    raise ValueError(f"unknown front kind {kind!r}")


def _input_length(rng: np.random.Generator, out: int, span: int, stride: int, padding: str) -> int:
    """A length whose window output (``window.output_length``) is ``out``."""
    low = (out - 1) * stride + (span if padding == "valid" else 1)
    length = low + int(rng.integers(0, stride))
    assert output_length(length, span, stride, padding) == out
    return length


def _divisor(rng: np.random.Generator, m: int) -> int:
    return int(rng.choice([d for d in range(1, m + 1) if m % d == 0]))


def _conv2d(rng: np.random.Generator, kind: str, name: str, m: int, timesteps: int) -> list:
    """Conv2D (then a 2D pooling in half the draws) over (T, F, C) frames whose output is m
    values a timestep; conv2d_global: Conv2D, Global*Pooling2D and RepeatVector(T)."""
    mode = kind.split("_")[1]  # stream, same, valid, global
    pooled = mode == "global" or rng.random() < 0.5
    filters = m if mode == "global" else _divisor(rng, m)
    rows = int(rng.integers(1, 5)) if mode == "global" else m // filters
    # along time: (kernel, stride, padding) of the conv and (pool, stride) of the pooling
    if mode in ("stream", "global"):
        k_t, s_t, pool_t = 1, 1, 1
    elif mode == "same":
        k_t, s_t, pool_t = int(rng.integers(1, 4)), 1, int(rng.integers(1, 3))
        k_t = 2 if k_t == 1 and pool_t == 1 else k_t  # something over time
    else:
        k_t, s_t, pool_t = int(rng.integers(1, 4)), int(rng.integers(1, 3)), int(rng.integers(1, 3))
        k_t = 2 if k_t == 1 and s_t == 1 and pool_t == 1 else k_t
    padding_t = "same" if mode == "same" else None
    layers: list[Any] = []
    pool_rows = rows
    if pooled and mode != "global":
        pool_f = int(rng.integers(1, 4))
        stride_f = int(rng.integers(1, pool_f + 1))
        padding = padding_t or str(rng.choice(["valid", "same"]))
        rows_in = _input_length(rng, rows, pool_f, stride_f, padding)
        mode_name = str(rng.choice(["max", "average"]))
        type_name = "MaxPooling2D" if mode_name == "max" else "AveragePooling2D"
        stride_t = pool_t if mode == "valid" else 1  # "same": T kept
        pool_layer: Any = (name + "_pool", mode_name, type_name, (pool_t, pool_f),
                           (stride_t, stride_f), padding)  # fmt: skip
        pool_rows = rows_in
    # the conv: kernel, strides and dilation along F (Keras refuses strides and dilation > 1)
    k_f = int(rng.integers(1, 4))
    stride_f = int(rng.integers(1, 3))
    dilation_f = int(rng.integers(1, 3)) if stride_f == 1 == s_t else 1
    padding = padding_t or str(rng.choice(["valid", "same"]))
    span_f = (k_f - 1) * dilation_f + 1
    channels = int(rng.integers(1, 4))
    frame_rows = _input_length(rng, pool_rows, span_f, stride_f, padding)
    channels = min(channels, max(1, MAX_FRAME_VALUES // frame_rows))  # small inputs for M0 RAM
    frame = (frame_rows, channels)
    kernel = rng.uniform(-1, 1, (k_t, k_f, channels, filters)) * np.sqrt(3 / (k_t * k_f * channels))
    bias = rng.uniform(-0.2, 0.2, filters) if rng.random() < 0.75 else None
    activation = str(rng.choice(["linear", "relu", "tanh", "sigmoid"]))
    conv = Conv2DLayer(name, frame_rows * channels, frame, filters, (k_t, k_f), kernel, bias,
                       activation, padding, (s_t, stride_f), (1, dilation_f))  # fmt: skip
    layers.append(conv)
    if mode == "global":
        pool_mode = str(rng.choice(["max", "average"]))
        type_name = "GlobalMaxPooling2D" if pool_mode == "max" else "GlobalAveragePooling2D"
        layers.append(Pooling2DLayer(f"{name}_global", conv.output_size, conv.output_frame,
                                     pool_mode, type_name, whole=True))  # fmt: skip
        layers.append(ReshapeLayer(f"{name}_repeat", m, "repeat", timesteps, m, "RepeatVector"))
    elif pooled:
        pool_name, pool_mode, type_name, pool, strides, pool_padding = pool_layer
        layers.append(Pooling2DLayer(pool_name, conv.output_size, conv.output_frame, pool_mode,
                                     type_name, pool, strides, pool_padding))  # fmt: skip
    assert layers[-1].output_size == m, (kind, [la.output_size for la in layers], m)
    return layers


def _conv_transpose(rng: np.random.Generator, name: str, m: int) -> Any:
    """Conv1DTranspose with m filters, read as the Keras frontend reads it (zeros between and
    around the timesteps, then a valid Conv1D: ``frontends.keras.layers.conv1d_transpose``)."""
    from lstm_embed.frontends.keras.layers.conv1d_transpose import read
    from lstm_embed.frontends.keras.spec import LayerSpec

    k, strides = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    use_bias = bool(rng.random() < 0.75)
    config = {"filters": m, "kernel_size": k, "strides": strides, "use_bias": use_bias,
              "padding": str(rng.choice(["valid", "same"])),
              "activation": str(rng.choice(["linear", "relu", "tanh", "sigmoid"]))}  # fmt: skip
    kernel = rng.uniform(-1, 1, (k, m, m)) * np.sqrt(3 / (k * m))
    bias = (rng.uniform(-0.2, 0.2, m),) if use_bias else ()
    return read(LayerSpec(name, "Conv1DTranspose", config, (kernel, *bias)), m)
