"""The recurrent family's trained models: SimpleRNN, stateful, go_backwards and Bidirectional.

Shared by tests/test_recurrent_family.py (which holds their C to Keras and to the integer
reference) and ``scripts/accuracy.py --family`` (which writes docs/accuracy.md's table of
them). Data needs no download: noisy sines (numpy, fixed seeds) and scikit-learn's 8x8 digits.

- ``simple_rnn``: the next sample of a noisy sine, 12x1 -> SimpleRNN(16) -> Dense(1).
- ``stateful_stream``: an LSTM(16) -> Dense(1) trained on windows of noisy sines, its weights in
  a stateful copy that takes one timestep a row (batch size 1), run over STREAM_ROWS rows of a
  sine of another frequency.
- ``go_backwards``: LSTM(12, go_backwards, return_sequences) -> Dense(1); output j (Keras'
  order: after reading x[T-1], ..., x[T-1-j]) regresses the mean of x0 - x1/2 over those steps.
- ``bi_lstm_concat``, ``bi_lstm_sum``, ``bi_gru_concat``, ``bi_gru_ave``: the digits (8 rows of
  8 pixels) -> Bidirectional(LSTM(16) or GRU(16), merge mode) -> Dense(10, softmax).

Trained weights are cached beside lstm_embed.tools.samples' (``$LSTM_EMBED_CACHE/samples``, default
``~/.cache/lstm-embed/samples``), keyed by a hash of this file, the Keras version and its
backend; the data is regenerated (it is cheap). On TensorFlow, training runs with op
determinism. Keras is imported only when a model is built.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.quantize.quantizer import QuantizeOptions

STREAM_ROWS = 240  # consecutive single-step rows of one stream (the issue asks >= 200)


@dataclass(frozen=True)
class Data:
    calibration: np.ndarray  # float32 (N, T, m): the first training sequences
    x: np.ndarray  # the test split, float32 (N, T, m)
    labels: np.ndarray | None  # class ids (classifiers), targets (regressor) or None


@dataclass(frozen=True)
class Recipe:
    title: str  # the table's name of the task ("" for none)
    kind: str  # "classifier" (softmax probabilities), "regressor"; no labels: "stream", "sequence"
    seed: int  # keras.utils.set_random_seed before the model is built and trained
    data: Callable[[], Data]
    build: Callable[[], Any]  # the Keras model converted (untrained)
    train: Callable[[], list[np.ndarray]]  # trained weights for ``build``'s model
    options: QuantizeOptions | None = None


@dataclass(frozen=True)
class Case:
    label: str
    recipe: Recipe
    model: Any  # keras.Model, trained
    calibration: np.ndarray
    x: np.ndarray
    labels: np.ndarray | None

    @property
    def classifier(self) -> bool:
        return self.recipe.kind == "classifier"

    @property
    def stateful(self) -> bool:
        return any(getattr(layer, "stateful", False) for layer in self.model.layers)

    @property
    def options(self) -> QuantizeOptions | None:
        return self.recipe.options

    def predict(self) -> np.ndarray:
        """Keras' predict on x: the stateful model's rows as one stream from a reset state."""
        return keras_predict(self.model, self.x)


# ---------------------------------------------------------------------------------------------
# Data


def sines(seed: int, n: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sines of random phase and frequency; target: the next sample."""
    rng = np.random.default_rng(seed)
    phase, freq = rng.uniform(0, 2 * np.pi, (n, 1)), rng.uniform(0.2, 0.6, (n, 1))
    wave = np.sin(phase + freq * np.arange(steps + 1)) + 0.05 * rng.normal(size=(n, steps + 1))
    return wave[:, :steps, None].astype(np.float32), wave[:, steps:].astype(np.float32)


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()  # bundled with scikit-learn: rows of the 8x8 image as timesteps
    return (data.images / 16.0).astype(np.float32), data.target


def _sines_data() -> Data:
    x, _ = sines(1, 1024, 12)
    x_test, y_test = sines(2, 300, 12)
    return Data(x[:256], x_test, y_test)


def _digits_data() -> Data:
    x, y = digits()
    return Data(x[:256], x[1200:], y[1200:])


def _backward_means(x: np.ndarray) -> np.ndarray:
    seen = x[:, ::-1, 0] - 0.5 * x[:, ::-1, 1]
    return (np.cumsum(seen, axis=1) / np.arange(1, x.shape[1] + 1))[..., None]


def _backward_xs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1024, 10, 2)).astype(np.float32)
    x_test = rng.normal(size=(200, 10, 2)).astype(np.float32)
    return x, x_test


def _backward_data() -> Data:
    x, x_test = _backward_xs()
    return Data(x[:256], x_test, None)


def _stream() -> np.ndarray:
    rng = np.random.default_rng(5)
    t = np.arange(STREAM_ROWS)
    stream = np.sin(0.3 * t + 1.0) + 0.05 * rng.normal(size=STREAM_ROWS)
    return stream.astype(np.float32).reshape(STREAM_ROWS, 1, 1)


def _stream_data() -> Data:
    rows = _stream()
    return Data(rows, rows, None)


# ---------------------------------------------------------------------------------------------
# Models and training


def _fit(model, x, y, epochs: int, loss: str) -> list[np.ndarray]:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model.get_weights()


def _simple_rnn_model():
    import keras

    layers = keras.layers
    return keras.Sequential([keras.Input((12, 1)), layers.SimpleRNN(16), layers.Dense(1)])


def _simple_rnn_train() -> list[np.ndarray]:
    x, y = sines(1, 1024, 12)
    return _fit(_simple_rnn_model(), x, y, 6, "mse")


def _bidirectional_model(cell: str, mode: str) -> Callable[[], Any]:
    def build():
        import keras

        layers = keras.layers
        return keras.Sequential(
            [
                keras.Input((8, 8)),
                layers.Bidirectional(getattr(layers, cell)(16), merge_mode=mode),
                layers.Dense(10, activation="softmax"),
            ]
        )

    return build


def _bidirectional_train(cell: str, mode: str) -> Callable[[], list[np.ndarray]]:
    def train() -> list[np.ndarray]:
        x, y = digits()
        model = _bidirectional_model(cell, mode)()
        return _fit(model, x[:1200], y[:1200], 8, "sparse_categorical_crossentropy")

    return train


def _go_backwards_model():
    import keras

    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((10, 2)),
            layers.LSTM(12, go_backwards=True, return_sequences=True),
            layers.Dense(1),
        ]
    )


def _go_backwards_train() -> list[np.ndarray]:
    x, _ = _backward_xs()
    return _fit(_go_backwards_model(), x, _backward_means(x), 6, "mse")


def _stateful_model():
    import keras

    layers = keras.layers
    return keras.Sequential(
        [keras.Input(batch_shape=(1, 1, 1)), layers.LSTM(16, stateful=True), layers.Dense(1)]
    )


def _stateful_train() -> list[np.ndarray]:
    """Trained on windows of noisy sines (the same weights serve the stateful copy)."""
    import keras

    x, _ = sines(4, 1024, 20)
    layers = keras.layers
    windows = keras.Sequential(
        [keras.Input((None, 1)), layers.LSTM(16, return_sequences=True), layers.Dense(1)]
    )
    return _fit(windows, x[:, :-1], x[:, 1:], 5, "mse")


# pixels lie in [0, 1]: declared, since some are 0 in every calibration image
PIXELS = QuantizeOptions(input_range=(np.zeros(8), np.ones(8)))


def _bidirectional(cell: str, mode: str) -> Recipe:
    build, train = _bidirectional_model(cell, mode), _bidirectional_train(cell, mode)
    return Recipe("digits", "classifier", 2, _digits_data, build, train, PIXELS)


RECIPES: dict[str, Recipe] = {
    "simple_rnn": Recipe(
        "sines", "regressor", 1, _sines_data, _simple_rnn_model, _simple_rnn_train
    ),
    "stateful_stream": Recipe(
        "stateful stream", "stream", 4, _stream_data, _stateful_model, _stateful_train
    ),
    "go_backwards": Recipe(
        "backward means", "sequence", 3, _backward_data, _go_backwards_model, _go_backwards_train
    ),
    "bi_lstm_concat": _bidirectional("LSTM", "concat"),
    "bi_lstm_sum": _bidirectional("LSTM", "sum"),
    "bi_gru_concat": _bidirectional("GRU", "concat"),
    "bi_gru_ave": _bidirectional("GRU", "ave"),
}


def _train(recipe: Recipe) -> list[np.ndarray]:
    import keras

    keras.utils.set_random_seed(recipe.seed)
    if keras.backend.backend() == "tensorflow":  # same weights on every machine and run
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    return recipe.train()


def cache_key() -> str:
    import keras

    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(f"{keras.__version__} {keras.backend.backend()}".encode())
    return digest.hexdigest()[:16]


def cached_weights(label: str) -> list[np.ndarray]:
    """The trained weights from the cache, training once (samples.cached_file)."""
    from lstm_embed.tools.samples import cached_file

    path = cached_file(
        f"family-{label}", cache_key(), ".npz", lambda tmp: np.savez(tmp, *_train(RECIPES[label]))
    )
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def case(label: str) -> Case:
    """A trained model of ``RECIPES`` with its calibration inputs, test split and labels."""
    if label not in RECIPES:
        raise ValueError(f"unknown model '{label}' (available: {', '.join(RECIPES)})")
    recipe = RECIPES[label]
    weights = cached_weights(label)
    model = recipe.build()
    model.set_weights(weights)
    data = recipe.data()
    return Case(label, recipe, model, data.calibration, data.x, data.labels)


def reset(model) -> None:
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()


def keras_predict(model, x: np.ndarray) -> np.ndarray:
    """Keras' predict; a stateful model's rows one at a time from a reset state, as one stream
    (the state reset again after)."""
    stateful = any(getattr(layer, "stateful", False) for layer in model.layers)
    reset(model)
    y = np.asarray(model.predict(x, verbose=0, batch_size=1 if stateful else 32))
    reset(model)
    return y


def describe(c: Case) -> str:
    """The table's name of a model: its task, input shape and layers."""
    import keras

    def cell(layer) -> str:
        flags = [
            flag
            for flag in ("go_backwards", "return_sequences", "stateful")
            if getattr(layer, flag, False)
        ]
        return f"{type(layer).__name__}({', '.join([str(layer.units), *flags])})"

    parts = []
    for layer in c.model.layers:
        if isinstance(layer, keras.layers.Bidirectional):
            parts.append(f"Bidirectional({cell(layer.forward_layer)}, {layer.merge_mode})")
        elif hasattr(layer, "units"):
            parts.append(cell(layer))
    steps, features = c.model.input_shape[1:]
    shape = f"{len(c.x)} rows of {steps}x{features}" if c.stateful else f"{steps}x{features}"
    title = f"{c.recipe.title}: " if c.recipe.title else ""
    return title + " -> ".join([shape, *parts])


__all__ = ["RECIPES", "STREAM_ROWS", "Case", "case", "describe", "keras_predict"]
