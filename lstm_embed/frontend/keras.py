"""Keras 3 reader. One handler per Keras class name, registered with ``@handler``.

Layers are read in model order; a handler returns an IR layer, or None for layers that do
nothing at inference (InputLayer, Dropout). Any other class or option is an error naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..ir import DENSE_ACTIVATIONS, RECURRENT_ACTIVATIONS, DenseLayer, IRError, Layer, LSTMLayer
from ..ir import Model as IRModel

os.environ.setdefault("KERAS_BACKEND", "jax")


class FrontendError(ValueError):
    """The model cannot be read; the message names the file or layer and what is supported."""


Handler = Callable[[Any, int], Layer | None]
HANDLERS: dict[str, Handler] = {}
SUPPORTED = "InputLayer, LSTM, Dense, Dropout"


def handler(class_name: str) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        HANDLERS[class_name] = function
        return function

    return register


def _weights(layer: Any) -> list[np.ndarray]:
    return [np.asarray(w, dtype=np.float64) for w in layer.get_weights()]


def _require(layer: Any, option: str, ok: bool, supported: str) -> None:
    if not ok:
        value = layer.get_config().get(option)
        raise FrontendError(
            f"layer '{layer.name}' ({type(layer).__name__}): {option}={value!r} is not supported"
            f" (supported: {supported})"
        )


@handler("InputLayer")
def _input(layer: Any, input_size: int) -> None:
    return None


@handler("Dropout")
def _dropout(layer: Any, input_size: int) -> None:
    return None  # identity at inference


@handler("LSTM")
def _lstm(layer: Any, input_size: int) -> LSTMLayer:
    config = layer.get_config()
    _require(layer, "activation", config["activation"] == "tanh", "tanh")
    _require(
        layer,
        "recurrent_activation",
        config["recurrent_activation"] in RECURRENT_ACTIVATIONS,
        " or ".join(RECURRENT_ACTIVATIONS),
    )
    for option in ("go_backwards", "stateful", "return_state", "time_major"):
        _require(layer, option, not config.get(option, False), f"{option}=False")
    weights = _weights(layer)
    bias = weights[2] if config["use_bias"] else None
    return LSTMLayer(
        name=layer.name,
        input_size=input_size,
        units=int(config["units"]),
        kernel=weights[0],
        recurrent_kernel=weights[1],
        bias=bias,
        recurrent_activation=config["recurrent_activation"],
        return_sequences=bool(config["return_sequences"]),
    )


@handler("Dense")
def _dense(layer: Any, input_size: int) -> DenseLayer:
    config = layer.get_config()
    activation = config["activation"]
    _require(layer, "activation", activation in DENSE_ACTIVATIONS, ", ".join(DENSE_ACTIVATIONS))
    weights = _weights(layer)
    return DenseLayer(
        name=layer.name,
        input_size=input_size,
        units=int(config["units"]),
        kernel=weights[0],
        bias=weights[1] if config["use_bias"] else None,
        activation=activation,
    )


def _input_shape(model: Any, source: str) -> tuple[int | None, int]:
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else None
    if shape is None or len(shape) != 3 or shape[2] is None:
        raise FrontendError(
            f"{source}: input shape {shape} is not supported; expected (batch, timesteps, features)"
        )
    return shape[1], int(shape[2])


def _check_chain(model: Any, source: str) -> None:
    """Functional models must be a single chain: one input, one output, no branches."""
    if len(getattr(model, "inputs", [])) != 1 or len(getattr(model, "outputs", [])) != 1:
        raise FrontendError(f"{source}: only models with one input and one output are supported")


def read_keras_model(model: Any, source: str = "<in-memory model>") -> IRModel:
    """An in-memory keras.Model -> IR."""
    _check_chain(model, source)
    timesteps, size = _input_shape(model, source)
    layers: list[Layer] = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in HANDLERS:
            raise FrontendError(
                f"{source}: layer '{layer.name}' of type {kind} is not supported"
                f" (supported: {SUPPORTED})"
            )
        ir_layer = HANDLERS[kind](layer, size)
        if ir_layer is not None:
            layers.append(ir_layer)
            size = ir_layer.output_size
    name = model.name if model.name.isidentifier() else "model"
    try:
        return IRModel(name, _input_shape(model, source)[1], timesteps, tuple(layers), source)
    except IRError as error:
        raise FrontendError(f"{source}: {error}") from error


def load_keras_model(path: str | Path) -> Any:
    """A .keras or .h5 file -> keras.Model. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FrontendError(f"{path}: no such file")
    if path.suffix not in (".keras", ".h5"):
        raise FrontendError(f"{path}: not a Keras model file (supported: .keras, .h5)")
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # keras raises many types for corrupt files
        text = str(error).strip()
        detail = text.splitlines()[0] if text else type(error).__name__
        raise FrontendError(f"{path}: cannot be read as a Keras model ({detail})") from error


def load_keras_file(path: str | Path) -> IRModel:
    """A .keras or .h5 file -> IR."""
    return read_keras_model(load_keras_model(path), source=str(path))
