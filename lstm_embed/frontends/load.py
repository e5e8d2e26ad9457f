"""A model file of any supported format -> the float IR: the one place that picks the frontend
by the file's suffix (.onnx: frontends/onnx; .keras/.h5: frontends/keras)."""

from __future__ import annotations

from pathlib import Path

from lstm_embed.frontends import onnx
from lstm_embed.frontends.errors import FrontendError
from lstm_embed.frontends.keras import frontend as keras_frontend
from lstm_embed.ir.model import Model


def load_model(path: str | Path) -> Model:
    """A .keras or .h5 file (Keras 2 or 3), or an .onnx file -> IR; FrontendError otherwise."""
    if onnx.is_onnx(path):
        try:
            return onnx.load_model(path)
        except onnx.OnnxError as error:
            raise FrontendError(str(error)) from None
    return keras_frontend.load_model(path)
