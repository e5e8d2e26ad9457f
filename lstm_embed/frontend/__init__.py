"""Frontend: a Keras model (file or in-memory) -> float IR (``lstm_embed.ir.Model``)."""

from .keras import FrontendError, load_keras_file, load_keras_model, read_keras_model

__all__ = ["FrontendError", "load_keras_file", "load_keras_model", "read_keras_model"]
