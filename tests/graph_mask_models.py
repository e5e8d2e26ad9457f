"""Trained Functional models with a Masking branch for tests/test_graph_masking.py: sequences
padded with zeros after a random length (4 to TIMESTEPS), targets that depend on the unpadded
part only, fixed seeds. Each builder returns (keras model, inputs by name)."""

from __future__ import annotations

import numpy as np

from tests.graph_models import (
    FEATURES,
    SAMPLES,
    STATIC,
    TIMESTEPS,
    fit_mse,
    noisy_sines,
    seeded_keras,
)

MIN_LENGTH = 4


def padded_data(seed: int):
    """(sequences with zero tails, static features, targets, lengths)."""
    rng = np.random.default_rng(seed)
    seq = noisy_sines(rng)
    lengths = rng.integers(MIN_LENGTH, TIMESTEPS + 1, SAMPLES)
    valid = np.arange(TIMESTEPS)[None, :] < lengths[:, None]
    seq = np.where(valid[..., None], seq, 0.0)
    static = rng.normal(size=(SAMPLES, STATIC))
    last = seq[np.arange(SAMPLES), lengths - 1]
    mean = seq.sum(1) / lengths[:, None]
    target = np.stack(
        [last[:, 0] + 0.3 * static[:, 0], mean[:, 1], np.tanh(static[:, 1]) + 0.2 * last[:, 2]],
        axis=1,
    )
    return seq.astype(np.float32), static.astype(np.float32), target.astype(np.float32), lengths


def build(which: str, seed: int = 0, keras=None):
    if which == "masked_gap":
        return build_masked_gap(seed, keras)
    if which == "masked_attention":
        return build_masked_attention(seed, keras)
    if which == "masked_attention_causal":
        return build_masked_attention(seed, keras, causal=True)
    keras = seeded_keras(keras, seed)
    layers = keras.layers
    seq, static, target, _lengths = padded_data(seed)
    inp = keras.Input((TIMESTEPS, FEATURES), name="sequence")
    masked = layers.Masking(mask_value=0.0)(inp)
    if which == "masked_seq_static":
        # Masking -> LSTM(16, sequences) -> LSTM(8), concatenated with a static Dense branch
        side = keras.Input((STATIC,), name="static")
        h = layers.LSTM(8)(layers.LSTM(16, return_sequences=True)(masked))
        d = layers.Dense(8, activation="relu")(side)
        model = keras.Model([inp, side], layers.Dense(3)(layers.Concatenate()([h, d])))
        inputs: dict = {"sequence": seq, "static": static}
        train = [seq, static]
        outputs = 3
    elif which == "masked_add":
        # two per-timestep branches of one Masking, added, into an LSTM (the mask passes Add)
        a = layers.Dense(8, activation="tanh")(masked)
        b = layers.Dense(8)(masked)
        y = layers.LSTM(16)(layers.Add()([a, b]))
        model = keras.Model(inp, layers.Dense(2)(y))
        inputs = {"sequence": seq}
        train = seq
        outputs = 2
    else:
        raise ValueError(which)
    fit_mse(model, train, target[:, :outputs])
    return model, inputs


TAIL = 8  # the second input's timesteps (the first has TIMESTEPS)


def build_time_concat(which: str, seed: int = 0, keras=None):
    """Concatenate on the time axis feeding an LSTM: ``two_inputs`` joins a (16, 4) and an
    (8, 4) input; ``processed`` joins a sequence and its per-timestep Dense(4, tanh) version."""
    keras = seeded_keras(keras, seed)
    layers = keras.layers
    from tests.graph_models import _data

    seq, _static, target = _data(seed)
    inp = keras.Input((TIMESTEPS, FEATURES), name="sequence")
    if which == "two_inputs":
        tail = keras.Input((TAIL, FEATURES), name="tail")
        joined = layers.Concatenate(axis=1)([inp, tail])
        inputs: dict = {"sequence": seq, "tail": seq[:, -TAIL:] * 0.5 + 0.2}
        model_inputs = [inp, tail]
    elif which == "processed":
        joined = layers.Concatenate(axis=1)([inp, layers.Dense(FEATURES, activation="tanh")(inp)])
        inputs = {"sequence": seq}
        model_inputs = inp
    else:
        raise ValueError(which)
    y = layers.Dense(1)(layers.LSTM(16)(joined))
    model = keras.Model(model_inputs, y)
    train = [inputs[k] for k in inputs] if len(inputs) > 1 else inputs["sequence"]
    fit_mse(model, train, target[:, :1])
    return model, inputs


def build_masked_gap(seed: int = 0, keras=None):
    """Masking -> LSTM(16, sequences) -> GlobalAveragePooling1D (the mean of the unmasked
    steps) -> Dense(2)."""
    return _masked_pooled(seed, keras, lambda layers, h: h)


def build_masked_attention(seed: int = 0, keras=None, causal: bool = False):
    """Masking -> LSTM(16, sequences) -> Attention()([h, h]) (padded keys weigh nothing, padded
    rows 0; the output carries the mask; ``causal``: use_scale and use_causal_mask too) ->
    GlobalAveragePooling1D (the unmasked rows) -> Dense(2)."""

    def attend(layers, h):
        return layers.Attention(use_scale=causal)([h, h], use_causal_mask=causal)

    return _masked_pooled(seed, keras, attend)


def _masked_pooled(seed: int, keras, middle):
    """Masking -> LSTM(16, sequences) -> ``middle(layers, h)`` -> GlobalAveragePooling1D ->
    Dense(2), trained on the padded data's targets 1 and 2 (the two builders above)."""
    keras = seeded_keras(keras, seed)
    layers = keras.layers
    seq, _static, target, _lengths = padded_data(seed)
    inp = keras.Input((TIMESTEPS, FEATURES), name="sequence")
    h = layers.LSTM(16, return_sequences=True)(layers.Masking(mask_value=0.0)(inp))
    y = middle(layers, h)
    model = keras.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling1D()(y)))
    fit_mse(model, seq, target[:, 1:3])
    return model, {"sequence": seq}
