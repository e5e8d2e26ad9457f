"""Small trained sample models, made from data that needs no download (fixed seeds).

- ``digits``: scikit-learn's 8x8 digits read as 8 timesteps of 8 pixels,
  LSTM(32) -> Dense(10, softmax).
- ``stacked``: a driven damped oscillator (2 features: drive and noisy position, T=50),
  LSTM(16, return_sequences) -> LSTM(16) -> Dense(1) predicting the next clean position.
- ``logits``: which of 4 frequency patterns a noisy 6-channel signal carries (T=50),
  LSTM(64) -> Dense(4) linear logits.
- ``gru_digits``: the digits as above, GRU(32) -> Dense(10, softmax).
- ``gru_stacked``: the oscillator as above, GRU(16, return_sequences) -> LSTM(16) -> Dense(1).

Trained models are cached under ``$LSTM_EMBED_CACHE/samples`` (default
``~/.cache/lstm-embed/samples``) keyed by a hash of this file, the Keras version and its
backend, so a change to the data or the training here retrains; the data itself is regenerated
(it is cheap). On TensorFlow, training runs with op determinism: the same weights everywhere.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.tools.quiet import ml_import

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
keras = ml_import("keras")  # without TensorFlow's start-up log lines

SEED = 1234


@dataclass(frozen=True)
class Sample:
    name: str
    kind: str  # "classifier" (softmax probabilities), "regressor" or "logits"
    model: Any  # keras.Model
    x_train: np.ndarray  # float32 (N, T, m)
    y_train: np.ndarray  # class ids (N,) or targets (N, 1)
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# ---------------------------------------------------------------------------------------------
# Data


def digits_data() -> Data:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8): 8 rows of 8 pixels
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y
    )
    return Data(x_train, y_train, x_test, y_test)


def oscillator_series(
    count: int, steps: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Driven damped oscillator y'' + 2*zeta*w*y' + w^2*y = w^2*u, one random system per
    sequence. Inputs (count, steps, 2): drive u and noisy position; target: next clean y."""
    dt = 0.1
    omega = rng.uniform(0.8, 2.0, count)
    zeta = rng.uniform(0.05, 0.3, count)
    t = np.arange(steps + 1) * dt
    freqs = rng.uniform(0.1, 0.6, (count, 2))
    phases = rng.uniform(0, 2 * np.pi, (count, 2))
    u = np.sin(2 * np.pi * freqs[:, :1] * t + phases[:, :1])
    u += 0.5 * np.sin(2 * np.pi * freqs[:, 1:] * t + phases[:, 1:])
    y = np.zeros((count, steps + 1))
    pos, vel = rng.normal(0, 0.5, count), rng.normal(0, 0.5, count)
    for k in range(steps + 1):
        y[:, k] = pos
        acc = omega**2 * (u[:, k] - pos) - 2 * zeta * omega * vel
        vel = vel + dt * acc  # semi-implicit Euler: stable for these w*dt
        pos = pos + dt * vel
    noisy = y[:, :steps] + rng.normal(0, 0.05, (count, steps))
    x = np.stack([u[:, :steps], noisy], axis=-1).astype(np.float32)
    return x, y[:, steps : steps + 1].astype(np.float32)


def stacked_data() -> Data:
    rng = np.random.default_rng(SEED)
    x, y = oscillator_series(2400, 50, rng)
    return Data(x[:2000], y[:2000], x[2000:], y[2000:])


LOGIT_CLASSES = 4


def pattern_signals(
    count: int, steps: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Class k: each of 6 channels is a sine of a class-specific frequency and phase offset,
    with a random common phase, random amplitude and noise (std 0.6)."""
    patterns = np.random.default_rng(SEED + 1)
    freqs = patterns.uniform(0.03, 0.2, (LOGIT_CLASSES, 6))
    offsets = patterns.uniform(0, 2 * np.pi, (LOGIT_CLASSES, 6))
    labels = rng.integers(0, LOGIT_CLASSES, count)
    t = np.arange(steps)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, (count, 1, 1))
    amplitude = rng.uniform(0.5, 1.5, (count, 1, 1))
    wave = np.sin(2 * np.pi * freqs[labels][:, None, :] * t + offsets[labels][:, None, :] + phase)
    x = amplitude * wave + rng.normal(0, 0.6, (count, steps, 6))
    return x.astype(np.float32), labels.astype(np.int64)


def logits_data() -> Data:
    rng = np.random.default_rng(SEED + 2)
    x, y = pattern_signals(2000, 50, rng)
    return Data(x[:1500], y[:1500], x[1500:], y[1500:])


# ---------------------------------------------------------------------------------------------
# Models and training


def _digits_model() -> keras.Model:
    return keras.Sequential(
        [keras.Input((8, 8)), keras.layers.LSTM(32), keras.layers.Dense(10, "softmax")],
        name="digits",
    )


def _stacked_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((50, 2)),
            keras.layers.LSTM(16, return_sequences=True),
            keras.layers.LSTM(16),
            keras.layers.Dense(1),
        ],
        name="stacked",
    )


def _logits_model() -> keras.Model:
    return keras.Sequential(
        [keras.Input((50, 6)), keras.layers.LSTM(64), keras.layers.Dense(LOGIT_CLASSES)],
        name="logits",
    )


def _gru_digits_model() -> keras.Model:
    return keras.Sequential(
        [keras.Input((8, 8)), keras.layers.GRU(32), keras.layers.Dense(10, "softmax")],
        name="gru_digits",
    )


def _gru_stacked_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((50, 2)),
            keras.layers.GRU(16, return_sequences=True),
            keras.layers.LSTM(16),
            keras.layers.Dense(1),
        ],
        name="gru_stacked",
    )


@dataclass(frozen=True)
class Recipe:
    kind: str
    data: Callable[[], Data]
    build: Callable[[], keras.Model]
    loss: Any
    epochs: int
    batch_size: int
    learning_rate: float


RECIPES: dict[str, Recipe] = {
    "digits": Recipe(
        "classifier", digits_data, _digits_model, "sparse_categorical_crossentropy", 40, 32, 1e-2
    ),
    "stacked": Recipe("regressor", stacked_data, _stacked_model, "mse", 25, 32, 5e-3),
    "logits": Recipe(
        "logits",
        logits_data,
        _logits_model,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        12,
        32,
        5e-3,
    ),
    "gru_digits": Recipe(
        "classifier",
        digits_data,
        _gru_digits_model,
        "sparse_categorical_crossentropy",
        40,
        32,
        1e-2,
    ),
    "gru_stacked": Recipe("regressor", stacked_data, _gru_stacked_model, "mse", 25, 32, 5e-3),
}


def train(name: str, data: Data) -> keras.Model:
    recipe = RECIPES[name]
    keras.utils.set_random_seed(SEED)
    if keras.backend.backend() == "tensorflow":  # same weights on every machine and run
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    model = recipe.build()
    model.compile(optimizer=keras.optimizers.Adam(recipe.learning_rate), loss=recipe.loss)
    model.fit(
        data.x_train,
        data.y_train,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        shuffle=True,
        verbose=0,
    )
    return model


def cache_dir() -> Path:
    base = os.environ.get("LSTM_EMBED_CACHE") or Path.home() / ".cache" / "lstm-embed"
    return Path(base) / "samples"


def cache_key() -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(f"{keras.__version__} {keras.backend.backend()}".encode())
    return digest.hexdigest()[:16]


def cached_file(name: str, key: str, suffix: str, write: Callable[[Path], None]) -> Path:
    """cache_dir()/name-key.suffix, made once by ``write(path)`` (one process at a time; the
    file appears whole, so an interrupted training leaves nothing to load)."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{key}{suffix}"
    with open(folder / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test workers train each model once
        if not path.is_file():
            tmp = path.with_name(f".{path.stem}.{os.getpid()}{suffix}")
            write(tmp)
            os.replace(tmp, path)
    return path


def cached_model(name: str, data: Data) -> keras.Model:
    """Load the trained model from the cache, training it once."""
    path = cached_file(name, cache_key(), ".keras", lambda tmp: train(name, data).save(tmp))
    return keras.saving.load_model(path)


def sample(name: str) -> Sample:
    """A trained sample model with its data; ``name`` is one of ``RECIPES``."""
    if name not in RECIPES:
        raise ValueError(f"unknown sample '{name}' (available: {', '.join(RECIPES)})")
    recipe = RECIPES[name]
    data = recipe.data()
    model = cached_model(name, data)
    return Sample(name, recipe.kind, model, data.x_train, data.y_train, data.x_test, data.y_test)


__all__ = ["RECIPES", "Sample", "sample"]
