"""A zoo of small trained models on which the quantizer's defaults are decided.

Each entry is a Keras model trained here on synthetic data (numpy, fixed seeds) or
scikit-learn's bundled 8x8 digits, no download, in seconds on a laptop core: multi-axis sensor
classifiers with offsets (gravity on one axis), MFCC-like keyword spotters, long-window
forecasters in raw units (degrees, hPa, kW), anomaly autoencoders, sharp softmax heads with near
ties, sigmoid and linear heads, stacked, bidirectional, Conv1D fronts, pooling, normalization
and masking, calibrated on 32 to 256 training sequences. Every entry has a test split that
convert never sees (generated from another seed, or other digits).

``scripts/zoo_accuracy.py`` (``make zoo``) converts each with the default options, with
``--rounding nearest`` and with ``--weights int16`` and writes docs/accuracy-zoo.md;
tests/test_defaults.py holds the activity classifier of issue 22 to the default's promise.

Trained weights are cached beside lstm_embed.samples' (``samples.cached_file``), keyed by a hash
of this file, the Keras version and its backend; the data is regenerated (it is cheap). On
TensorFlow, training runs with op determinism. Keras is imported only when a model is built.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# Data: (x_train, y_train, x_test, y_test); y: class ids, targets, or x itself (autoencoders)


@dataclass(frozen=True)
class Data:
    x_train: np.ndarray  # float32 (N, T, m)
    y_train: np.ndarray
    x_test: np.ndarray  # float32 (N, T, m), never given to convert
    y_test: np.ndarray


GRAVITY = 9.81  # m/s^2 on the vertical axis of every accelerometer window
ACTIVITY_RATE_HZ = 50.0
# (frequency Hz, amplitude m/s^2) of the six activities: still, tilted still, walking, stairs,
# running, cycling; the accelerometer axes see the motion with fixed gains
ACTIVITIES = ((0.0, 0.05), (0.0, 0.15), (1.8, 2.5), (2.0, 3.5), (2.8, 7.0), (1.6, 4.5))
AXIS_GAIN = np.array([1.0, 0.6, 0.8])


def activity_windows(seed: int, count: int, steps: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Accelerometer windows (count, steps, 3) in m/s^2 at 50 Hz, gravity on the third axis,
    and their activity (6 classes): a sine of the class' frequency and amplitude (each +-10 to
    20% per window) at a random phase per axis, noise 0.3 m/s^2, the tilted class 1 to 3 m/s^2
    on the first axis."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None] / ACTIVITY_RATE_HZ
    labels = rng.integers(0, len(ACTIVITIES), count)
    x = np.empty((count, steps, 3))
    for i, label in enumerate(labels):
        freq, amplitude = ACTIVITIES[label]
        freq *= rng.uniform(0.9, 1.1)
        gain = AXIS_GAIN * amplitude * rng.uniform(0.8, 1.2)
        phase = rng.uniform(0, 2 * np.pi, 3)
        x[i] = gain * np.sin(2 * np.pi * freq * t + phase) + rng.normal(0, 0.3, (steps, 3))
        if label == 1:
            x[i, :, 0] += rng.uniform(1, 3)
        x[i, :, 2] += GRAVITY
    return x.astype(np.float32), labels


def _activity(train: int, test: int = 64, steps: int = 128) -> Callable[[], Data]:
    def make() -> Data:
        x, y = activity_windows(1, train, steps)
        x_test, y_test = activity_windows(2, test, steps)
        return Data(x, y, x_test, y_test)

    return make


def imu_windows(seed: int, count: int, steps: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """6-axis IMU windows (accelerometer m/s^2 with gravity, gyroscope deg/s with a bias of a few
    deg/s) of 4 gestures: circles, shakes, taps and rest, each on its own axes."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None] / 50.0
    labels = rng.integers(0, 4, count)
    x = rng.normal(0, 0.2, (count, steps, 6))
    x[..., 2] += GRAVITY
    x[..., 3:] += np.array([2.0, -1.5, 0.8])  # gyroscope bias, deg/s
    for i, label in enumerate(labels):
        phase = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.7, 1.3)
        if label == 0:  # circle: quadrature on x/y, rotation about z
            x[i, :, 0] += 3 * amp * np.sin(2 * np.pi * 1.2 * t[:, 0] + phase)
            x[i, :, 1] += 3 * amp * np.cos(2 * np.pi * 1.2 * t[:, 0] + phase)
            x[i, :, 5] += 90 * amp
        elif label == 1:  # shake: fast on x, rotation about y
            x[i, :, 0] += 6 * amp * np.sin(2 * np.pi * 4.0 * t[:, 0] + phase)
            x[i, :, 4] += 120 * amp * np.sin(2 * np.pi * 4.0 * t[:, 0] + phase)
        elif label == 2:  # taps: short pulses on z
            start = rng.integers(0, steps - 8)
            x[i, start : start + 4, 2] += 15 * amp
            x[i, start : start + 4, 3] += 40 * amp
    return x.astype(np.float32), labels


def _imu(train: int = 384) -> Data:
    x, y = imu_windows(11, train)
    x_test, y_test = imu_windows(12, 128)
    return Data(x, y, x_test, y_test)


KEYWORDS = 8
MFCC = 13


def mfcc_frames(seed: int, count: int, frames: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """MFCC-like features (count, frames, 13): coefficient 0 a log energy around -20 to 5 dB
    with a silence - word - silence envelope, the others a keyword's formant trajectory (a
    fixed pattern per class, smoothly warped in time and level) plus noise; 8 keywords."""
    patterns = np.random.default_rng(99).normal(0, 6, (KEYWORDS, 4, MFCC))  # 4 anchor frames
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, KEYWORDS, count)
    x = np.empty((count, frames, MFCC))
    for i, label in enumerate(labels):
        start = rng.integers(2, 8)
        length = rng.integers(frames // 2, frames - start)
        anchors = np.linspace(start, start + length, 4)
        k = np.arange(frames)
        trajectory = np.stack(
            [np.interp(k, anchors, patterns[label, :, j]) for j in range(MFCC)], axis=1
        )
        inside = (k >= start) & (k <= start + length)
        x[i] = trajectory * inside[:, None] * rng.uniform(0.8, 1.2)
        x[i, :, 0] = np.where(inside, rng.uniform(-2, 5), -20.0) + rng.normal(0, 0.5, frames)
        x[i, :, 1:] += rng.normal(0, 1.0, (frames, MFCC - 1))
    return x.astype(np.float32), labels


def _kws(train: int = 512) -> Data:
    x, y = mfcc_frames(21, train)
    x_test, y_test = mfcc_frames(22, 128)
    return Data(x, y, x_test, y_test)


def temperature_series(seed: int, count: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Hourly room temperature in degrees C (a daily cycle of 2 to 6 degrees around 15 to 25,
    a drift and noise) and outdoor temperature; target: the room temperature 6 hours on."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps + 6)[None, :]
    base = rng.uniform(15, 25, (count, 1))
    swing = rng.uniform(1, 3, (count, 1))
    phase = rng.uniform(0, 2 * np.pi, (count, 1))
    outdoor = base - 8 + 3 * swing * np.sin(2 * np.pi * t / 24 + phase)
    drift = np.cumsum(rng.normal(0, 0.05, (count, steps + 6)), axis=1)
    room = base + swing * np.sin(2 * np.pi * (t - 3) / 24 + phase) + drift
    x = np.stack([room + rng.normal(0, 0.1, room.shape), outdoor], axis=-1)[:, :steps]
    return x.astype(np.float32), room[:, steps + 5 : steps + 6].astype(np.float32)


def _temperature(steps: int) -> Callable[[], Data]:
    def make() -> Data:
        x, y = temperature_series(31, 384, steps)
        x_test, y_test = temperature_series(32, 128, steps)
        return Data(x, y, x_test, y_test)

    return make


def pressure_series(seed: int, count: int, steps: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Barometric pressure in hPa (1013 +- 15, slow weather systems, 0.1 hPa noise); target:
    the change over the next 12 steps, hPa."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps + 12)[None, :]
    level = rng.uniform(995, 1030, (count, 1))
    slope = rng.normal(0, 0.04, (count, 1))
    wave = rng.uniform(1, 5, (count, 1)) * np.sin(
        2 * np.pi * t / rng.uniform(80, 200, (count, 1)) + rng.uniform(0, 6, (count, 1))
    )
    p = level + slope * t + wave
    x = (p + rng.normal(0, 0.1, p.shape))[:, :steps, None]
    y = p[:, steps + 11] - p[:, steps - 1]
    return x.astype(np.float32), y[:, None].astype(np.float32)


def _pressure() -> Data:
    x, y = pressure_series(41, 384)
    x_test, y_test = pressure_series(42, 128)
    return Data(x, y, x_test, y_test)


def load_series(seed: int, count: int, steps: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Electric load in kW (300 to 700 with a daily shape at 15-minute steps) and temperature in
    degrees C; target: the next 4 loads (kW)."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps + 4)[None, :] / 96.0
    base = rng.uniform(300, 700, (count, 1))
    temp = rng.uniform(0, 30, (count, 1)) + 5 * np.sin(2 * np.pi * (t - 0.3))
    shape = 0.25 * np.sin(2 * np.pi * (t - 0.25) + rng.uniform(-0.3, 0.3, (count, 1)))
    load = base * (1 + shape) + 4 * np.abs(temp - 18) + rng.normal(0, 8, (count, steps + 4))
    x = np.stack([load, temp + rng.normal(0, 0.3, temp.shape)], axis=-1)[:, :steps]
    return x.astype(np.float32), load[:, steps:].astype(np.float32)


def _load() -> Data:
    x, y = load_series(51, 384)
    x_test, y_test = load_series(52, 128)
    return Data(x, y, x_test, y_test)


def vibration(seed: int, count: int, steps: int = 48, anomalies: float = 0.0) -> np.ndarray:
    """3-axis vibration (g) of a machine: a 2-harmonic rotation at a random speed with an
    offset on each axis; ``anomalies``: the share of windows with an added bearing fault
    (a burst at 5x the rotation)."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[None, :, None]
    speed = rng.uniform(0.05, 0.12, (count, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (count, 1, 3))
    x = np.sin(2 * np.pi * speed * t + phase) + 0.3 * np.sin(4 * np.pi * speed * t + 2 * phase)
    x = x * np.array([1.0, 0.7, 0.4]) + np.array([0.0, 0.2, 1.0])
    x += rng.normal(0, 0.05, x.shape)
    faulty = rng.random(count) < anomalies
    x[faulty] += 0.5 * np.sin(2 * np.pi * 5 * speed[faulty] * t) * (rng.random((1, steps, 1)) < 0.3)
    return x.astype(np.float32)


def _vibration(steps: int = 48) -> Callable[[], Data]:
    def make() -> Data:
        x = vibration(61, 384, steps)
        x_test = vibration(62, 128, steps, anomalies=0.25)
        return Data(x, x, x_test, x_test)

    return make


def digits(calibration_first: bool = False) -> Data:
    from sklearn.datasets import load_digits

    data = load_digits()  # bundled with scikit-learn: 8 rows of 8 pixels as timesteps
    x = (data.images / 16.0).astype(np.float32)
    return Data(x[:1200], data.target[:1200], x[1200:], data.target[1200:])


def near_tie_sequences(seed: int, count: int, steps: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """4 classes of noisy chirps, classes 2 and 3 almost the same (their frequency 3% apart):
    a softmax that is sharp on 0 and 1 and near a tie between 2 and 3."""
    rng = np.random.default_rng(seed)
    freqs = np.array([0.05, 0.12, 0.2, 0.206])
    labels = rng.integers(0, 4, count)
    t = np.arange(steps)[None, :]
    phase = rng.uniform(0, 2 * np.pi, (count, 1))
    f = freqs[labels][:, None] * rng.uniform(0.98, 1.02, (count, 1))
    wave = np.sin(2 * np.pi * f * t + phase)
    x = np.stack([wave, np.cos(2 * np.pi * f * t + phase)], axis=-1)
    x += rng.normal(0, 0.3, x.shape)
    return x.astype(np.float32), labels


def _ties() -> Data:
    x, y = near_tie_sequences(71, 512)
    x_test, y_test = near_tie_sequences(72, 256)
    return Data(x, y, x_test, y_test)


def events(seed: int, count: int, steps: int = 80, labels: int = 1):
    """2-channel sensor streams with up to ``labels`` kinds of events (a pulse of a kind's
    shape on a drifting 0.5 to 2.5 baseline); target: which kinds occur (multi-label 0/1)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 2.5, (count, 1, 2)) + rng.normal(0, 0.15, (count, steps, 2))
    y = (rng.random((count, labels)) < 0.4).astype(np.float32)
    widths = (3, 8, 15)
    for i in range(count):
        for k in np.flatnonzero(y[i]):
            start = rng.integers(0, steps - widths[k])
            x[i, start : start + widths[k], k % 2] += rng.uniform(0.8, 1.5) * (1 - 2 * (k == 2))
    return x.astype(np.float32), y


def _events(kinds: int) -> Callable[[], Data]:
    def make() -> Data:
        x, y = events(81 + kinds, 512, labels=kinds)
        x_test, y_test = events(91 + kinds, 192, labels=kinds)
        return Data(x, y, x_test, y_test)

    return make


def padded_sines(seed: int, count: int, steps: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """3 classes of 2-channel sine patterns, each sequence 10 to 30 steps long and zero after:
    for Masking(0.0)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    t = np.arange(steps)[None, :]
    freq = np.array([0.08, 0.16, 0.3])[labels][:, None]
    phase = rng.uniform(0, 2 * np.pi, (count, 1))
    x = np.stack([np.sin(2 * np.pi * freq * t + phase), np.cos(np.pi * freq * t)], axis=-1)
    x = x + 0.5 + rng.normal(0, 0.1, x.shape)  # never exactly 0 inside the sequence
    lengths = rng.integers(10, steps + 1, count)
    x[t[0][None, :] >= lengths[:, None]] = 0.0
    return x.astype(np.float32), labels


def _padded() -> Data:
    x, y = padded_sines(101, 512)
    x_test, y_test = padded_sines(102, 192)
    return Data(x, y, x_test, y_test)


def next_sine(seed: int, count: int, steps: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sines of random frequency and amplitude in volts around 1.65 V; target: the next
    value."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps + 1)[None, :]
    wave = 1.65 + rng.uniform(0.3, 1.2, (count, 1)) * np.sin(
        rng.uniform(0.1, 0.5, (count, 1)) * t + rng.uniform(0, 6.3, (count, 1))
    )
    wave += rng.normal(0, 0.02, wave.shape)
    return wave[:, :steps, None].astype(np.float32), wave[:, steps:].astype(np.float32)


def _next_sine() -> Data:
    x, y = next_sine(111, 512)
    x_test, y_test = next_sine(112, 128)
    return Data(x, y, x_test, y_test)


# ---------------------------------------------------------------------------------------------
# Entries


@dataclass(frozen=True)
class Entry:
    name: str
    title: str  # what it models, for the table
    kind: str  # "classifier" (softmax), "logits", "sigmoid", "regressor", "autoencoder"
    data: Callable[[], Data]
    layers: Callable[[], list]  # Keras layers after the Input
    epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 1e-2
    calibration: int = 128  # the first training sequences convert calibrates on
    seed: int = 0
    input_range: tuple[float, float] | None = None  # declared (--input-range) when given
    note: str = ""

    @property
    def loss(self) -> Any:
        import keras

        return {
            "classifier": "sparse_categorical_crossentropy",
            "logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "sigmoid": "binary_crossentropy",
        }.get(self.kind, "mse")

    @property
    def classifier(self) -> bool:
        """Its predictions are classes (argmax of the outputs; sigmoid: each output > 0.5)."""
        return self.kind in ("classifier", "logits", "sigmoid")


def _l():
    import keras

    return keras.layers


def _stack(*make: Callable[[Any], Any]) -> Callable[[], list]:
    return lambda: [m(_l()) for m in make]


ENTRIES: tuple[Entry, ...] = (
    # -- multi-axis sensor classifiers with offsets --
    Entry(
        "activity_lstm48",
        "activity, 128x3 m/s^2 at 50 Hz (issue 22)",
        "classifier",
        _activity(384),
        _stack(lambda L: L.LSTM(48), lambda L: L.Dense(6, activation="softmax")),
        epochs=3,
        batch_size=8,
        seed=7,
    ),
    Entry(
        "activity_lstm48_s3",
        "activity, another seed",
        "classifier",
        _activity(384),
        _stack(lambda L: L.LSTM(48), lambda L: L.Dense(6, activation="softmax")),
        epochs=3,
        batch_size=8,
        seed=3,
    ),
    Entry(
        "activity_gru32",
        "activity, GRU",
        "classifier",
        _activity(384),
        _stack(lambda L: L.GRU(32), lambda L: L.Dense(6, activation="softmax")),
        batch_size=16,
        seed=1,
    ),
    Entry(
        "activity_stacked",
        "activity, stacked LSTMs",
        "classifier",
        _activity(384, steps=64),
        _stack(
            lambda L: L.LSTM(24, return_sequences=True),
            lambda L: L.LSTM(16),
            lambda L: L.Dense(6, activation="softmax"),
        ),
        epochs=4,
        batch_size=16,
        seed=2,
    ),
    Entry(
        "activity_conv_pool",
        "activity, Conv1D + max pooling front",
        "classifier",
        _activity(384),
        _stack(
            lambda L: L.Conv1D(12, 5, activation="relu"),
            lambda L: L.MaxPooling1D(4),
            lambda L: L.LSTM(24),
            lambda L: L.Dense(6, activation="softmax"),
        ),
        epochs=4,
        batch_size=16,
        seed=4,
    ),
    Entry(
        "activity_batchnorm",
        "activity, BatchNormalization front",
        "classifier",
        _activity(384, steps=64),
        _stack(
            lambda L: L.BatchNormalization(),
            lambda L: L.LSTM(24),
            lambda L: L.Dense(6, activation="softmax"),
        ),
        epochs=4,
        batch_size=16,
        seed=5,
    ),
    Entry(
        "activity_simplernn",
        "activity, SimpleRNN, 32 calibration windows",
        "classifier",
        _activity(384, steps=48),
        _stack(lambda L: L.SimpleRNN(32), lambda L: L.Dense(6, activation="softmax")),
        epochs=6,
        batch_size=16,
        calibration=32,
        seed=6,
    ),
    Entry(
        "imu_gestures",
        "gestures, 64x6 IMU (m/s^2, deg/s, gyro bias)",
        "classifier",
        _imu,
        _stack(lambda L: L.LSTM(32), lambda L: L.Dense(4, activation="softmax")),
        epochs=4,
        batch_size=16,
        calibration=64,
        seed=8,
    ),
    Entry(
        "imu_bi_lstm",
        "gestures, Bidirectional LSTM",
        "classifier",
        _imu,
        _stack(lambda L: L.Bidirectional(L.LSTM(12)), lambda L: L.Dense(4, activation="softmax")),
        epochs=4,
        batch_size=16,
        seed=9,
    ),
    # -- MFCC-like keyword spotters --
    Entry(
        "kws_lstm64",
        "keywords, 32x13 MFCC",
        "classifier",
        _kws,
        _stack(lambda L: L.LSTM(64), lambda L: L.Dense(KEYWORDS, activation="softmax")),
        epochs=5,
        seed=10,
    ),
    Entry(
        "kws_gru48",
        "keywords, GRU",
        "classifier",
        _kws,
        _stack(lambda L: L.GRU(48), lambda L: L.Dense(KEYWORDS, activation="softmax")),
        epochs=5,
        seed=11,
    ),
    Entry(
        "kws_conv_gru",
        "keywords, causal Conv1D + GRU, 48 calibration",
        "classifier",
        _kws,
        _stack(
            lambda L: L.Conv1D(16, 3, padding="causal", activation="relu"),
            lambda L: L.GRU(32),
            lambda L: L.Dense(KEYWORDS, activation="softmax"),
        ),
        epochs=5,
        calibration=48,
        seed=12,
    ),
    Entry(
        "kws_bi_gru",
        "keywords, Bidirectional GRU (sum)",
        "classifier",
        _kws,
        _stack(
            lambda L: L.Bidirectional(L.GRU(16), merge_mode="sum"),
            lambda L: L.Dense(KEYWORDS, activation="softmax"),
        ),
        epochs=5,
        seed=13,
    ),
    Entry(
        "kws_layernorm",
        "keywords, LSTM + LayerNormalization + LSTM",
        "classifier",
        _kws,
        _stack(
            lambda L: L.LSTM(24, return_sequences=True),
            lambda L: L.LayerNormalization(),
            lambda L: L.LSTM(16),
            lambda L: L.Dense(KEYWORDS, activation="softmax"),
        ),
        epochs=5,
        seed=14,
    ),
    Entry(
        "kws_avgpool",
        "keywords, LSTM + global average pooling",
        "classifier",
        _kws,
        _stack(
            lambda L: L.LSTM(32, return_sequences=True),
            lambda L: L.GlobalAveragePooling1D(),
            lambda L: L.Dense(KEYWORDS, activation="softmax"),
        ),
        epochs=5,
        seed=15,
    ),
    Entry(
        "kws_relu_head",
        "keywords, Dense relu head, 64 calibration",
        "classifier",
        _kws,
        _stack(
            lambda L: L.LSTM(32),
            lambda L: L.Dense(16, activation="relu"),
            lambda L: L.Dense(KEYWORDS, activation="softmax"),
        ),
        epochs=5,
        calibration=64,
        seed=16,
    ),
    # -- forecasters in raw units --
    Entry(
        "temperature_lstm",
        "room temperature 6 h on, 168x2 degC",
        "regressor",
        _temperature(168),
        _stack(lambda L: L.LSTM(24), lambda L: L.Dense(1)),
        epochs=6,
        seed=20,
    ),
    Entry(
        "temperature_gru_long",
        "room temperature, 256-step window, GRU, 64 calibration",
        "regressor",
        _temperature(256),
        _stack(lambda L: L.GRU(16), lambda L: L.Dense(1)),
        epochs=4,
        calibration=64,
        seed=21,
    ),
    Entry(
        "pressure_gru",
        "pressure change, 150x1 hPa around 1013, BatchNormalization front",
        "regressor",
        _pressure,
        _stack(lambda L: L.BatchNormalization(), lambda L: L.GRU(24), lambda L: L.Dense(1)),
        epochs=6,
        seed=22,
    ),
    Entry(
        "pressure_lstm",
        "pressure change, LSTM, 32 calibration",
        "regressor",
        _pressure,
        _stack(lambda L: L.BatchNormalization(), lambda L: L.LSTM(24), lambda L: L.Dense(1)),
        epochs=6,
        calibration=32,
        seed=23,
    ),
    Entry(
        "load_stacked",
        "electric load, next 4 of 96x2 kW/degC, stacked",
        "regressor",
        _load,
        _stack(
            lambda L: L.LSTM(16, return_sequences=True), lambda L: L.LSTM(16), lambda L: L.Dense(4)
        ),
        epochs=8,
        seed=24,
    ),
    Entry(
        "load_conv_avgpool",
        "electric load, Conv1D + average pooling + LSTM",
        "regressor",
        _load,
        _stack(
            lambda L: L.Conv1D(8, 4, activation="relu"),
            lambda L: L.AveragePooling1D(2),
            lambda L: L.LSTM(16),
            lambda L: L.Dense(4),
        ),
        epochs=8,
        seed=25,
    ),
    Entry(
        "volts_simplernn",
        "next sample, 60x1 volts around 1.65 V, SimpleRNN",
        "regressor",
        _next_sine,
        _stack(lambda L: L.SimpleRNN(24), lambda L: L.Dense(1)),
        epochs=6,
        seed=26,
    ),
    Entry(
        "volts_go_backwards",
        "next sample, LSTM go_backwards, 48 calibration",
        "regressor",
        _next_sine,
        _stack(lambda L: L.LSTM(16, go_backwards=True), lambda L: L.Dense(1)),
        epochs=6,
        calibration=48,
        seed=27,
    ),
    # -- anomaly autoencoders (reconstruction error flags a fault) --
    Entry(
        "vibration_ae_seq",
        "vibration autoencoder, 48x3 g, LSTM -> Dense per step",
        "autoencoder",
        _vibration(),
        _stack(
            lambda L: L.LSTM(16, return_sequences=True),
            lambda L: L.TimeDistributed(L.Dense(3)),
        ),
        epochs=8,
        seed=30,
    ),
    Entry(
        "vibration_ae_repeat",
        "vibration autoencoder, LSTM -> RepeatVector -> LSTM",
        "autoencoder",
        _vibration(32),
        _stack(
            lambda L: L.LSTM(16),
            lambda L: L.RepeatVector(32),
            lambda L: L.LSTM(16, return_sequences=True),
            lambda L: L.TimeDistributed(L.Dense(3)),
        ),
        epochs=10,
        seed=31,
    ),
    Entry(
        "vibration_ae_gru",
        "vibration autoencoder, stacked GRUs, 32 calibration",
        "autoencoder",
        _vibration(),
        _stack(
            lambda L: L.GRU(12, return_sequences=True),
            lambda L: L.GRU(6, return_sequences=True),
            lambda L: L.Dense(3),
        ),
        epochs=8,
        calibration=32,
        seed=32,
    ),
    # -- sharp softmax heads with near ties, logits --
    Entry(
        "digits_sharp",
        "digits 8x8, trained long (sharp softmax)",
        "classifier",
        digits,
        _stack(lambda L: L.LSTM(32), lambda L: L.Dense(10, activation="softmax")),
        epochs=30,
        input_range=(0.0, 1.0),
        seed=40,
    ),
    Entry(
        "digits_small_cal",
        "digits 8x8, GRU, 32 calibration",
        "classifier",
        digits,
        _stack(lambda L: L.GRU(24), lambda L: L.Dense(10, activation="softmax")),
        epochs=15,
        calibration=32,
        seed=41,
    ),
    Entry(
        "chirps_near_tie",
        "chirps, 2 of 4 classes 3% apart (near ties)",
        "classifier",
        _ties,
        _stack(lambda L: L.LSTM(32), lambda L: L.Dense(4, activation="softmax")),
        epochs=8,
        seed=42,
    ),
    Entry(
        "chirps_logits",
        "chirps, linear logits",
        "logits",
        _ties,
        _stack(lambda L: L.GRU(32), lambda L: L.Dense(4)),
        epochs=8,
        seed=43,
    ),
    Entry(
        "digits_bi_concat",
        "digits, Bidirectional LSTM (concat), 64 calibration",
        "classifier",
        digits,
        _stack(lambda L: L.Bidirectional(L.LSTM(16)), lambda L: L.Dense(10, activation="softmax")),
        epochs=10,
        calibration=64,
        input_range=(0.0, 1.0),
        seed=44,
    ),
    # -- sigmoid heads --
    Entry(
        "event_sigmoid",
        "event detector, 80x2, Dense(1, sigmoid)",
        "sigmoid",
        _events(1),
        _stack(lambda L: L.LSTM(16), lambda L: L.Dense(1, activation="sigmoid")),
        epochs=6,
        seed=50,
    ),
    Entry(
        "events_multilabel",
        "3 event kinds, GRU, Dense(3, sigmoid)",
        "sigmoid",
        _events(3),
        _stack(lambda L: L.GRU(24), lambda L: L.Dense(3, activation="sigmoid")),
        epochs=8,
        seed=51,
    ),
    # -- masking --
    Entry(
        "padded_masking_lstm",
        "padded sequences 10-30 of 30, Masking + LSTM",
        "classifier",
        _padded,
        _stack(lambda L: L.Masking(0.0), lambda L: L.LSTM(16), lambda L: L.Dense(3, "softmax")),
        epochs=6,
        seed=60,
    ),
    Entry(
        "padded_masking_gru",
        "padded sequences, Masking + GRU + LSTM",
        "classifier",
        _padded,
        _stack(
            lambda L: L.Masking(0.0),
            lambda L: L.GRU(12, return_sequences=True),
            lambda L: L.LSTM(8),
            lambda L: L.Dense(3, "softmax"),
        ),
        epochs=6,
        seed=61,
    ),
)

BY_NAME = {e.name: e for e in ENTRIES}
ACTIVITY = "activity_lstm48"  # the model of issue 22


@dataclass(frozen=True)
class Trained:
    entry: Entry
    model: Any  # keras.Model
    data: Data = field(repr=False)

    @property
    def calibration(self) -> np.ndarray:
        return self.data.x_train[: self.entry.calibration]

    @property
    def x_test(self) -> np.ndarray:
        return self.data.x_test

    def options(self, **changes: Any):
        """QuantizeOptions of this entry (its declared input range) with ``changes``."""
        from lstm_embed.quantize.quantizer import QuantizeOptions

        if self.entry.input_range is not None:
            low, high = self.entry.input_range
            m = self.data.x_train.shape[-1]
            changes.setdefault("input_range", (np.full(m, low), np.full(m, high)))
        return QuantizeOptions(**changes)


def build(entry: Entry):
    import keras

    shape = entry.data().x_train.shape[1:]
    return keras.Sequential([keras.Input(shape), *entry.layers()], name=entry.name)


def _train(entry: Entry, data: Data) -> list[np.ndarray]:
    import keras

    keras.utils.set_random_seed(entry.seed)
    if keras.backend.backend() == "tensorflow":  # same weights on every machine and run
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    model = build(entry)
    model.compile(optimizer=keras.optimizers.Adam(entry.learning_rate), loss=entry.loss)
    model.fit(
        data.x_train,
        data.y_train,
        epochs=entry.epochs,
        batch_size=entry.batch_size,
        shuffle=True,
        verbose=0,
    )
    return model.get_weights()


# read once, with the definitions in memory: a key must describe the entries this process
# trains (an edit on disk after import must not file old weights under the new key)
_SOURCE = Path(__file__).read_text()


def cache_key(name: str) -> str:
    """A hash of what makes the entry's weights: the data generators (this file above
    ``ENTRIES``), the entry's own definition in it, the Keras version and backend; editing one
    entry retrains that one."""
    import keras

    data_part, rest = _SOURCE.split("\nENTRIES: ", 1)
    start = rest.index(f'    Entry(\n        "{name}",')
    ends = [rest.find(mark, start + 1) for mark in ("\n    Entry(\n", "\n)\n")]
    end = min(e for e in ends if e > 0)
    digest = hashlib.sha256(data_part.encode())
    digest.update(rest[start:end].encode())
    digest.update(f"{keras.__version__} {keras.backend.backend()}".encode())
    return digest.hexdigest()[:16]


def trained(name: str) -> Trained:
    """A zoo entry trained (once; cached) with its data."""
    from lstm_embed.tools.samples import cached_file

    if name not in BY_NAME:
        raise ValueError(f"unknown zoo model '{name}' (available: {', '.join(BY_NAME)})")
    entry = BY_NAME[name]
    data = entry.data()
    path = cached_file(
        f"zoo-{name}", cache_key(name), ".npz", lambda tmp: np.savez(tmp, *_train(entry, data))
    )
    with np.load(path) as arrays:
        weights = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    model = build(entry)
    model.set_weights(weights)
    return Trained(entry, model, data)


__all__ = ["ACTIVITY", "BY_NAME", "ENTRIES", "Data", "Entry", "Trained", "trained"]
