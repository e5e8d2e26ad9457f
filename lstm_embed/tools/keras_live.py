"""The one place that imports an ML framework: a live Keras model for `compare` and tests.

Keras 3 files load with Keras 3 (its configured backend); Keras 2 files (tf.keras up to TF 2.15,
tf_keras) with tf_keras, since Keras 3 refuses their recurrent layer configs. Returns None when
the needed package (or its backend) is not installed, so callers can fall back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lstm_embed.tools.quiet import ml_import


def _keras3() -> tuple[Any, str] | None:
    try:
        keras = ml_import("keras")
    except Exception:  # no keras, or its backend (jax, torch, tensorflow) is missing
        return None
    return keras, f"Keras {keras.__version__} ({keras.backend.backend()} backend)"


def _tf_keras() -> tuple[Any, str] | None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        tf_keras = ml_import("tf_keras")
    except Exception:
        return None
    return tf_keras, f"tf_keras {tf_keras.__version__} (Keras 2)"


def load(path: str | Path, keras2: bool | None = None) -> tuple[Any, str] | None:
    """(model, description of what loaded it), or None when no suitable Keras is installed.
    ``keras2``: whether a Keras 2 writer made the file (read from the file when None)."""
    if keras2 is None:
        from lstm_embed.frontends.keras.reader import read_model

        keras2 = read_model(path).file_format.startswith("keras2")
    found = _tf_keras() if keras2 else _keras3()
    if found is None:
        return None
    module, description = found
    return module.models.load_model(str(path), compile=False), description
