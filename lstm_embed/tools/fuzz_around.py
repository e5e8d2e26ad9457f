"""The fuzzer's layers around the recurrent core (``fuzz.ModelSpec.around``).

A draw is a tuple of "<place>:<kind>" strings: place "front" (before the first recurrent
layer), "after<k>" (after recurrent layer k, which returns sequences), "head" (after the last
recurrent layer, before the Dense layers). Their weights come from their own random stream
(the spec's seed with AROUND_STREAM), so a spec without them builds the same model as before.
Every kind keeps the feature count, except Flatten, whose Dense after it gets new weights of
the flattened width. The rules below keep every draw convertible: T-changing kinds only where
the output is one vector, Masking only first and only in streaming models without stateful
layers, windows no longer than the sequence, Flatten no wider than an int8 row allows.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from lstm_embed.kinds.activation import ActivationLayer
from lstm_embed.kinds.batch_norm import BatchNormLayer
from lstm_embed.kinds.conv1d import Conv1DLayer
from lstm_embed.kinds.dense import DenseLayer
from lstm_embed.kinds.feature_affine import FeatureAffineLayer
from lstm_embed.kinds.layer_norm import LayerNormLayer
from lstm_embed.kinds.masking import MaskingLayer
from lstm_embed.kinds.permute import PermuteLayer
from lstm_embed.kinds.pooling import PoolingLayer
from lstm_embed.kinds.reshape import ReshapeLayer
from lstm_embed.kinds.time_axis import TimeAxisLayer
from lstm_embed.tools import fuzz_front
from lstm_embed.tools.fuzz_layers import LSTMSpec, recurrent_layer

AROUND_STREAM = 0xA40
# per-timestep kinds (streaming), drawn anywhere
PER_STEP = ("relu", "leaky_relu", "sigmoid", "tanh", "batch_norm", "layer_norm", "conv_causal",
            "affine")  # fmt: skip
# kinds that need the whole window but keep the timesteps (pad_crop: ZeroPadding1D then
# Cropping1D; upsample_pool: UpSampling1D then a pooling back to T)
WINDOW_SAME = ("conv_same", "avgpool_same", "pad_crop", "upsample_pool")
# kinds that change the timesteps (front, when the output is one vector)
WINDOW_CHANGING = ("conv_valid", "conv_strided", "maxpool", "avgpool")
# heads after a last recurrent layer that returns sequences, giving one vector
SEQUENCE_HEADS = ("global_average", "global_max", "flatten")
# the kinds of issue 20 drawn from a stream of their own (NEW_KINDS_STREAM), so that the
# seeds drawn before them keep their models: DepthwiseConv1D and SeparableConv1D (read by the
# Keras frontend's reader from Keras-shaped weights; causal ones stream, "same" ones need the
# window), Permute((2, 1)) (a Dense over the timesteps between two Permutes, so the shapes
# around it stay (T, m))
NEW_KINDS_STREAM = 0xA41
NEW_PER_STEP = ("depthwise_causal", "separable_causal")
NEW_HEAD = ("depthwise_wide",)  # m * depth_multiplier channels: only Dense layers follow
NEW_WINDOW_SAME = ("depthwise_same", "separable_same", "permute")
# frame runs (emit/window_plan.py): a valid Conv1D + pooling pair, then a per-step Dense,
# at the front of a model whose first recurrent layer reads forwards, drawn from a stream of
# its own (FRAME_RUN_STREAM) in about one eligible model in two (other draws put such a
# head before a forward recurrent layer in about 2% of seeds)
FRAME_RUN_STREAM = 0xA42
MIN_CHANGING_TIMESTEPS = 6  # the longest valid window drawn spans 5 timesteps
MAX_FLAT_WIDTH = 512  # Flatten's width: int8 rows of the Dense after it (516 at most)
WHOLE_WINDOW = (*WINDOW_SAME, *NEW_WINDOW_SAME, *WINDOW_CHANGING, *SEQUENCE_HEADS, "repeat",
                "frame_run")  # fmt: skip


def draw(seed: int, recurrent: tuple, return_sequences: bool, timesteps: int) -> tuple:
    """A random tuple of around layers for a spec's recurrent layers (``fuzz.LSTMSpec``)."""
    rng = np.random.default_rng([seed, AROUND_STREAM])
    if rng.random() < 0.5:
        return draw_frame_run(seed, recurrent, return_sequences, timesteps, [])
    flags = [(la.go_backwards, la.stateful, la.bidirectional) for la in recurrent]
    run_only = any(back or bool(bidir) for back, _, bidir in flags)
    stateful = any(state for _, state, _ in flags)
    out: list[str] = []
    vector_out = not return_sequences
    if rng.random() < 0.2 and not run_only and not stateful:
        out.append("front:masking")
    masking = bool(out)
    front = list(PER_STEP)
    if not masking:
        front += list(WINDOW_SAME)
        if vector_out and timesteps >= MIN_CHANGING_TIMESTEPS:
            front += list(WINDOW_CHANGING)
    if rng.random() < 0.5:
        out.append(f"front:{rng.choice(front)}")
    for k in range(len(recurrent) - 1):
        if rng.random() < 0.3:
            out.append(f"after{k}:{rng.choice(PER_STEP)}")
    head = list(PER_STEP) if return_sequences else [k for k in PER_STEP if k != "conv_causal"]
    if not masking:
        if return_sequences:
            head += ["global_average", "global_max"]
            if timesteps * recurrent[-1].units <= MAX_FLAT_WIDTH:
                head.append("flatten")
        elif not any(k.split(":")[1] in WINDOW_CHANGING for k in out):
            head.append("repeat")
    if rng.random() < 0.5:
        out.append(f"head:{rng.choice(head)}")
    out += draw_new_kinds(seed, recurrent, return_sequences, out)
    return tuple(out) + draw_frame_run(seed, recurrent, return_sequences, timesteps, out)


def draw_frame_run(
    seed: int, recurrent: tuple, return_sequences: bool, timesteps: int, out: list
) -> tuple:
    """A "frame_run" front (FRAME_RUN_STREAM) where the run can form: one output vector,
    enough timesteps, a forward first recurrent layer, no Masking or other front that changes
    the timesteps or needs the whole window."""
    rng = np.random.default_rng([seed, FRAME_RUN_STREAM])
    first = recurrent[0]
    fronts = {item.split(":")[1] for item in out if item.startswith("front:")}
    eligible = (
        not return_sequences
        and timesteps >= MIN_CHANGING_TIMESTEPS
        and not first.go_backwards
        and not first.bidirectional
        and not fronts & {"masking", *WINDOW_SAME, *NEW_WINDOW_SAME, *WINDOW_CHANGING}
    )
    if not eligible or rng.random() < 1 / 2:
        return ()
    return ("front:frame_run",)


def draw_new_kinds(seed: int, recurrent: tuple, return_sequences: bool, out: list) -> tuple:
    """Issue 20's kinds (NEW_PER_STEP, NEW_WINDOW_SAME, NEW_HEAD) in about one model in
    three, after the kinds ``out`` already holds."""
    rng = np.random.default_rng([seed, NEW_KINDS_STREAM])
    if rng.random() < 2 / 3:
        return ()
    place = str(rng.choice(["front", "head", *(f"after{k}" for k in range(len(recurrent) - 1))]))
    kinds = list(NEW_PER_STEP)
    fronts = {item.split(":")[1] for item in out if item.startswith("front:")}
    if place == "front" and not fronts & {"masking", *WINDOW_CHANGING}:  # Permute: T as drawn
        kinds += list(NEW_WINDOW_SAME)
    if place == "head":
        heads = {item.split(":")[1] for item in out if item.startswith("head:")}
        if not return_sequences or heads & {*SEQUENCE_HEADS, "repeat"}:
            return ()  # the head is one vector: no convolution over it
        kinds += list(NEW_HEAD)
    return (f"{place}:{rng.choice(kinds)}",)


def needs_fixed_length(around: tuple) -> bool:
    return any(item.split(":")[1] in (*WHOLE_WINDOW, *fuzz_front.WHOLE_WINDOW) for item in around)


def insert(seed: int, around: tuple, layers: list, timesteps: int) -> list:
    """The chain with the around layers in their places (new Dense weights after Flatten)."""
    if not around:
        return layers
    rng = np.random.default_rng([seed, AROUND_STREAM, 1])
    recurrent = [i for i, la in enumerate(layers) if la.recurrent]
    places = {"input": 0, "front": recurrent[0], "head": recurrent[-1] + 1}
    places |= {f"after{k}": i + 1 for k, i in enumerate(recurrent)}
    chain = list(layers)
    # from the back (the later of two in one place first), so that the places of the earlier
    # ones stay where they are; an input kind last, before every front kind
    order = sorted(
        enumerate(around),
        key=lambda e: (-places[e[1].split(":")[0]], e[1].startswith("input:"), -e[0]),
    )
    for _, item in order:
        place, kind = item.split(":")
        at = places[place]
        size = chain[at - 1].output_size if at > 0 else layers[0].input_size
        new = around_layers(rng, kind, f"{kind}_{place}", size, timesteps)
        chain[at:at] = new
        after = at + len(new)
        width = new[-1].output_size
        if after < len(chain) and chain[after].input_size != width:
            chain[after] = _resized(rng, chain[after], width)
    return chain


def around_layers(rng: np.random.Generator, kind: str, name: str, m: int, timesteps: int) -> list:
    """The layers of one around kind on m features (Flatten: after timesteps of them)."""
    if kind in fuzz_front.KINDS:
        return fuzz_front.front_layers(rng, kind, name, m, timesteps)
    if kind == "masking":
        return [MaskingLayer(name, m, float(rng.choice([0.0, 0.0, -1.0])))]
    if kind in ("relu", "leaky_relu"):
        slope = 0.0 if kind == "relu" else float(rng.uniform(0.01, 0.5))
        top = None if rng.random() < 0.5 else float(rng.uniform(0.1, 5))
        threshold = 0.0 if rng.random() < 0.7 else float(rng.uniform(-0.5, 0.5))
        return [ActivationLayer(name, m, "relu", slope, top, threshold)]
    if kind in ("sigmoid", "tanh"):
        return [ActivationLayer(name, m, kind)]
    if kind == "batch_norm":
        gamma, beta = rng.uniform(-2, 2, m), rng.normal(size=m)
        mean, variance = rng.normal(size=m), rng.uniform(0, 3, m)
        return [BatchNormLayer(name, m, gamma, beta, mean, variance, 1e-3)]
    if kind == "layer_norm":
        gamma, beta = rng.uniform(-2, 2, m), rng.normal(size=m) * 0.5
        return [LayerNormLayer(name, m, gamma, beta, float(rng.choice([1e-3, 1e-5, 0.5])))]
    if kind.startswith("conv"):
        k = int(rng.integers(1, 4))
        padding, strides, dilation = {
            "conv_causal": ("causal", 1, int(rng.integers(1, 3))),
            "conv_same": ("same", 1, 1),
            "conv_valid": ("valid", 1, int(rng.integers(1, 3))),
            "conv_strided": (str(rng.choice(["same", "causal"])), 2, 1),
        }[kind]
        kernel = rng.uniform(-1, 1, (k, m, m)) * np.sqrt(3 / (k * m))
        bias = rng.uniform(-0.2, 0.2, m) if rng.random() < 0.75 else None
        activation = str(rng.choice(["linear", "relu", "tanh", "sigmoid"]))
        return [Conv1DLayer(name, m, m, k, dilation, kernel, bias, activation, padding, strides)]
    if kind in ("maxpool", "avgpool", "avgpool_same"):
        mode = "max" if kind == "maxpool" else "average"
        padding = "same" if kind == "avgpool_same" else str(rng.choice(["valid", "same"]))
        pool = int(rng.integers(1, 4))
        strides = 1 if kind == "avgpool_same" else int(rng.integers(1, pool + 1))
        type_name = "MaxPooling1D" if mode == "max" else "AveragePooling1D"
        return [PoolingLayer(name, m, mode, type_name, pool, strides, padding)]
    if kind.startswith(("depthwise", "separable")):
        return [_keras_conv(rng, kind, name, m)]
    if kind == "permute":  # channels-first: a Dense over the timesteps, then back
        mix = DenseLayer(
            f"{name}_time",
            timesteps,
            timesteps,
            rng.uniform(-1, 1, (timesteps, timesteps)) * np.sqrt(3 / timesteps),
            rng.uniform(-0.2, 0.2, timesteps),
            str(rng.choice(["linear", "tanh"])),
        )
        return [PermuteLayer(f"{name}_in", m, timesteps), mix,
                PermuteLayer(f"{name}_out", timesteps, m)]  # fmt: skip
    if kind == "frame_run":  # valid Conv1D + pooling (a fused pair), a per-step Dense
        k = int(rng.integers(2, 4))
        kernel = rng.uniform(-1, 1, (k, m, m)) * np.sqrt(3 / (k * m))
        conv_bias = rng.uniform(-0.2, 0.2, m)
        activation = str(rng.choice(["linear", "relu"]))
        pool = int(rng.integers(1, 3))
        mode = str(rng.choice(["max", "average"]))
        pool_type = "MaxPooling1D" if mode == "max" else "AveragePooling1D"
        weights = rng.uniform(-1, 1, (m, m)) * np.sqrt(3 / m)
        bias = rng.uniform(-0.2, 0.2, m)
        dense_activation = str(rng.choice(["linear", "tanh"]))
        return [
            Conv1DLayer(f"{name}_conv", m, m, k, 1, kernel, conv_bias, activation, "valid", 1),
            PoolingLayer(f"{name}_pool", m, mode, pool_type, pool, pool, "valid"),
            DenseLayer(f"{name}_dense", m, m, weights, bias, dense_activation),
        ]
    if kind == "affine":  # Normalization / Rescaling where it does not fold
        return [FeatureAffineLayer(name, m, rng.uniform(-3, 3, m), rng.normal(size=m))]
    if kind == "pad_crop":  # as many timesteps padded as cropped: T kept, the window shifted
        total = int(rng.integers(0, 3))
        pad, crop = (int(v) for v in rng.integers(0, total + 1, 2))
        return [
            TimeAxisLayer(f"{name}_pad", m, "pad", "ZeroPadding1D", before=pad, after=total - pad),
            TimeAxisLayer(f"{name}_crop", m, "crop", "Cropping1D", before=crop,
                          after=total - crop),
        ]  # fmt: skip
    if kind == "upsample_pool":
        size = int(rng.integers(1, 4))
        mode = str(rng.choice(["max", "average"]))
        type_name = "MaxPooling1D" if mode == "max" else "AveragePooling1D"
        return [
            TimeAxisLayer(f"{name}_up", m, "upsample", "UpSampling1D", size=size),
            PoolingLayer(f"{name}_pool", m, mode, type_name, size, size, "valid"),
        ]
    if kind == "flatten":
        return [ReshapeLayer(name, m, "flatten", 1, timesteps * m, "Flatten", timesteps)]
    if kind in ("global_average", "global_max"):
        mode = "average" if kind == "global_average" else "max"
        type_name = "GlobalAveragePooling1D" if mode == "average" else "GlobalMaxPooling1D"
        return [PoolingLayer(name, m, mode, type_name, whole=True)]
    if kind == "repeat":  # RepeatVector(T), an LSTM returning sequences: an autoencoder
        lstm = recurrent_layer(rng, LSTMSpec(m), f"{name}_lstm", m, True)
        return [ReshapeLayer(name, m, "repeat", timesteps, m, "RepeatVector"), lstm]
    raise ValueError(f"unknown around kind {kind!r}")


def _keras_conv(rng: np.random.Generator, kind: str, name: str, m: int) -> Any:
    """DepthwiseConv1D or SeparableConv1D (depth_multiplier 1 to 3) on m channels, with m
    output channels (the layer after it keeps its weights), as the Keras frontend reads the
    layer from Keras' weight shapes (``frontends.keras.layers.depthwise``)."""
    from lstm_embed.frontends.keras.layers.depthwise import read_depthwise, read_separable
    from lstm_embed.frontends.keras.spec import LayerSpec

    k, dm = int(rng.integers(1, 5)), int(rng.integers(1, 4))
    use_bias = bool(rng.random() < 0.75)
    config = {"kernel_size": k, "depth_multiplier": dm, "use_bias": use_bias,
              "padding": "same" if kind.endswith("same") else "causal",
              "dilation_rate": 1 if kind.endswith("same") else int(rng.integers(1, 3)),
              "activation": str(rng.choice(["linear", "relu", "tanh", "sigmoid"]))}  # fmt: skip
    depthwise = rng.uniform(-1, 1, (k, m, dm)) * np.sqrt(3 / k)
    bias_size = m * dm if kind.startswith("depthwise") else m
    bias = (rng.uniform(-0.2, 0.2, bias_size),) if use_bias else ()
    if kind.startswith("depthwise"):
        if dm > 1 and kind != "depthwise_wide":  # m channels out, as every kind but Flatten
            depthwise = depthwise[:, :, :1]
            config["depth_multiplier"] = 1
            bias = tuple(b[:m] for b in bias)
        spec = LayerSpec(name, "DepthwiseConv1D", config, (depthwise, *bias))
        return read_depthwise(spec, m)
    pointwise = rng.uniform(-1, 1, (1, m * dm, m)) * np.sqrt(3 / (m * dm))
    spec = LayerSpec(name, "SeparableConv1D", {**config, "filters": m},
                     (depthwise, pointwise, *bias))  # fmt: skip
    return read_separable(spec, m)


def with_around(spec: Any) -> Any:
    """``spec`` with its around layers drawn (one weight width for all layers when it has
    them: a per-layer list would not name the new layers)."""
    around = draw(spec.seed, spec.lstm, spec.return_sequences, spec.timesteps)
    around += fuzz_front.draw_front(
        spec.seed, spec.lstm, spec.return_sequences, spec.timesteps, around
    )
    bits = spec.weight_bits[:1] if around else spec.weight_bits
    return replace(spec, around=around, weight_bits=bits)


def _resized(rng: np.random.Generator, layer: Any, width: int) -> Any:
    """A Dense layer with new weights for an input of ``width`` features."""
    if not isinstance(layer, DenseLayer):
        raise ValueError(f"layer '{layer.name}' follows a width change")
    kernel = rng.uniform(-1, 1, (width, layer.units)) * np.sqrt(3 / width)
    return replace(layer, input_size=width, kernel=kernel)
