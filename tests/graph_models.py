"""Trained Functional models for tests/test_graph.py: the graphs issue 19 names, trained with
fixed seeds on synthetic data (a smooth function of the inputs), small enough to train in
seconds. Each builder returns (keras model, inputs by name)."""

from __future__ import annotations

import numpy as np

TIMESTEPS = 16
FEATURES = 4
STATIC = 6
SAMPLES = 384
EPOCHS = 4


def noisy_sines(rng: np.random.Generator) -> np.ndarray:
    """(SAMPLES, TIMESTEPS, FEATURES) sines of random phase and frequency plus noise: every
    graph model's sequence input (graph_mask_models pads it with zeros)."""
    t = np.arange(TIMESTEPS) / TIMESTEPS
    phase = rng.uniform(0, 2 * np.pi, (SAMPLES, 1, FEATURES))
    freq = rng.uniform(1, 3, (SAMPLES, 1, FEATURES))
    return np.sin(2 * np.pi * freq * t[None, :, None] + phase) + 0.1 * rng.normal(
        size=(SAMPLES, TIMESTEPS, FEATURES)
    )


def seeded_keras(keras, seed: int):
    """``keras`` (Keras 3 if None; tf_keras writes Keras 2 files) seeded with ``seed``, so a
    builder trains the same model on every run."""
    if keras is None:
        import keras
    keras.utils.set_random_seed(seed)
    return keras


def fit_mse(model, inputs, y) -> None:
    """Adam on the mean squared error, EPOCHS epochs of batches of 32: the regression models'
    training."""
    model.compile(optimizer="adam", loss="mse")
    model.fit(inputs, y, epochs=EPOCHS, batch_size=32, verbose=0)


def _data(seed: int):
    rng = np.random.default_rng(seed)
    seq = noisy_sines(rng)
    static = rng.normal(size=(SAMPLES, STATIC))
    target = np.stack(
        [seq[:, -4:, 0].mean(1) + 0.3 * static[:, 0], seq[:, :, 1].std(1), np.tanh(static[:, 1])],
        axis=1,
    )
    return seq.astype(np.float32), static.astype(np.float32), target.astype(np.float32)


def _train(model, inputs, target, outputs: int | tuple[int, ...]) -> None:
    """``fit_mse`` on the first ``outputs`` targets (a tuple: one output per count)."""
    if isinstance(outputs, tuple):
        fit_mse(model, inputs, [target[:, :k] for k in outputs])
    else:
        fit_mse(model, inputs, target[:, :outputs])


def build(which: str, seed: int = 0, keras=None):
    """The model ``which`` trained with ``keras`` (Keras 3 by default; tf_keras writes Keras 2
    files)."""
    keras = seeded_keras(keras, seed)
    layers = keras.layers
    seq, static, target = _data(seed)
    inp = keras.Input((TIMESTEPS, FEATURES), name="sequence")
    if which == "residual":
        a = layers.LSTM(32, return_sequences=True)(inp)
        b = layers.Dense(32)(inp)
        y = layers.LSTM(16)(layers.Add()([a, b]))
        model = keras.Model(inp, layers.Dense(1)(y))
        _train(model, seq, target, 1)
        return model, {"sequence": seq}
    if which == "conv_branches":
        c3 = layers.Conv1D(8, 3, padding="same", activation="relu")(inp)
        c7 = layers.Conv1D(8, 7, padding="same", activation="relu")(inp)
        y = layers.LSTM(16)(layers.Concatenate()([c3, c7]))
        model = keras.Model(inp, layers.Dense(1)(y))
        _train(model, seq, target, 1)
        return model, {"sequence": seq}
    if which == "seq_static":
        side = keras.Input((STATIC,), name="static")
        h = layers.LSTM(16)(inp)
        d = layers.Dense(8, activation="relu")(side)
        model = keras.Model([inp, side], layers.Dense(3)(layers.Concatenate()([h, d])))
        _train(model, [seq, static], target, 3)
        return model, {"sequence": seq, "static": static}
    if which == "encoder_h":
        _, h, _c = layers.LSTM(16, return_state=True)(inp)
        model = keras.Model(inp, layers.Dense(2)(h))
        _train(model, seq, target, 2)
        return model, {"sequence": seq}
    if which == "attention":
        return build_attention(seed, keras)
    if which == "attention_causal":
        return build_attention(seed, keras, causal=True, use_scale=True)
    if which == "attention_additive":
        return build_attention(seed, keras, score="additive")
    if which == "attention_concat":
        return build_attention(seed, keras, causal=True, use_scale=True, score="concat")
    if which == "encoder_hc":
        _, h, c = layers.LSTM(16, return_state=True)(inp)
        head = keras.Model(inp, layers.Dense(1)(layers.Add()([h, c])))
        _train(head, seq, target, 1)  # trains the encoder; the model under test returns [h, c]
        model = keras.Model(inp, [h, c])
        return model, {"sequence": seq}
    raise ValueError(which)


def build_attention(
    seed: int = 0, keras=None, causal: bool = False, use_scale: bool = False, score: str = "dot"
):
    """LSTM(16, return_sequences) -> Attention()([h, h]) (self-attention) ->
    GlobalAveragePooling1D -> Dense(3, softmax): a classifier of which target is largest.
    score "concat": Attention(score_mode="concat"); "additive": AdditiveAttention (use_scale,
    its default) with a per-timestep Dense(16) of h as the query."""
    keras = seeded_keras(keras, seed)
    layers = keras.layers
    seq, _static, target = _data(seed)
    labels = np.argmax(target, axis=1)
    inp = keras.Input((TIMESTEPS, FEATURES), name="sequence")
    h = layers.LSTM(16, return_sequences=True)(inp)
    if score == "additive":
        query = layers.Dense(16, activation="tanh")(h)
        a = layers.AdditiveAttention()([query, h], use_causal_mask=causal)
    else:
        attention = layers.Attention(use_scale=use_scale, score_mode="dot" if score == "dot"
                                     else score)  # fmt: skip
        a = attention([h, h], use_causal_mask=causal)
    out = layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling1D()(a))
    model = keras.Model(inp, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(seq, labels, epochs=EPOCHS, batch_size=32, verbose=0)
    return model, {"sequence": seq}
