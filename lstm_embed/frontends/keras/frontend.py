"""Frontend: a Keras model file -> float IR, through the reader and the layer registry.

The reader (``lstm_embed.frontends.keras.reader``) turns the file into plain data; each layer
kind's ``read`` (``lstm_embed.kinds``) turns its LayerSpec into an IR layer or says why it
cannot. No ML framework is imported here; an in-memory Keras model is saved to a temporary
.keras file first.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.frontends.errors import FrontendError
from lstm_embed.frontends.keras.layers import check_class, frame_after, read_layer
from lstm_embed.frontends.keras.reader import ReaderError, read_model
from lstm_embed.frontends.keras.spec import LayerSpec, ModelSpec
from lstm_embed.ir.model import Model, sequence_out
from lstm_embed.kinds import FloatLayer, IRError, Unsupported, fold_chain


@dataclass
class LayerReading:
    """One layer of the file: its IR layer, or why it is not supported."""

    spec: LayerSpec
    layer: FloatLayer | None = None
    problems: list[str] = field(default_factory=list)
    input_size: int | None = None
    # after an unsupported layer: only its type was checked (its shapes depend on what the
    # unsupported layer would output, so complaints about them would be follow-on noise)
    unchecked: bool = False


def read_layers(spec: ModelSpec) -> list[LayerReading]:
    """Every layer of the chain, read as far as possible: an unsupported layer does not stop
    the rest (inspect shows them all), but after it only each layer's type is checked (a
    layer lstm-embed does not read is named; nothing about shapes it cannot know)."""
    size = _feature_size(spec)
    steps = spec.input_shape[0] if len(spec.input_shape) in (1, 2, 3) else None
    frame = _input_frame(spec)
    readings = []
    blocked = size is None  # an input shape that is not (batch, timesteps, features)
    for layer_spec in spec.layers:
        reading = LayerReading(layer_spec, input_size=None if blocked else size)
        if blocked:
            try:
                check_class(layer_spec)
                reading.unchecked = True
            except Unsupported as error:
                reading.problems = error.reasons
            readings.append(reading)
            continue
        try:
            reading.layer = read_layer(layer_spec, size, steps, frame)
        except Unsupported as error:
            reading.problems = error.reasons
        except IRError as error:  # its message names the layer already: keep only the rest
            reading.problems = [str(error).removeprefix(f"layer '{layer_spec.name}': ")]
        readings.append(reading)
        if reading.layer is not None:
            size = reading.layer.output_size
            steps = _steps_after(reading.layer, steps)
            frame = reading.layer.output_frame or (frame if reading.layer.keeps_frame else None)
        elif reading.problems:
            blocked = True
        else:  # an identity at inference, the size carries through (a Reshape: a new frame)
            frame = frame_after(layer_spec, size, steps, frame)
    return readings


def _steps_after(layer: FloatLayer, steps: int | None) -> int | None:
    """The timesteps after a layer that changes them (``output_timesteps``)."""
    return layer.output_timesteps(steps) if layer.output_timesteps is not None else steps


def _feature_size(spec: ModelSpec) -> int | None:
    """Features per timestep: m of (T, m); F * C of (T, F, C) (frames, carried row-major)."""
    shape = spec.input_shape
    if takes_ids(spec):
        return 1  # one id per timestep (kinds/embedding.py)
    if len(shape) not in (2, 3) or any(d is None for d in shape[1:]):
        return None
    return int(np.prod(shape[1:]))


def _input_frame(spec: ModelSpec) -> tuple[int, int] | None:
    """(F, C) of a (T, F, C) input (for Conv2D and the 2D pooling), else None."""
    shape = spec.input_shape
    return (int(shape[1]), int(shape[2])) if _feature_size(spec) and len(shape) == 3 else None


def takes_ids(spec: ModelSpec) -> bool:
    """An input of integer ids (batch, T) into an Embedding: read as T timesteps of one
    feature, the id."""
    first = spec.layers[0].class_name if spec.layers else None
    return len(spec.input_shape) == 1 and first == "Embedding"


def model_name(spec: ModelSpec) -> str:
    return spec.name if spec.name.isidentifier() else "model"


def build_ir(spec: ModelSpec) -> Model:
    """ModelSpec -> IR; every unsupported layer and option in one error."""
    shape = (*spec.input_shape, 1) if takes_ids(spec) else spec.input_shape
    size = _feature_size(spec)
    if size is None:
        raise FrontendError(
            f"{spec.source}: input shape (batch, {', '.join(map(str, shape))}) is not supported;"
            " expected (batch, timesteps, features) or (batch, timesteps, rows, channels)"
        )
    readings = read_layers(spec)
    problems = [
        f"layer '{r.spec.name}' ({r.spec.class_name}): {p}" for r in readings for p in r.problems
    ]
    if problems:
        raise FrontendError(f"{spec.source}: " + "; ".join(problems))
    layers, folding = fold_chain([r.layer for r in readings if r.layer is not None])
    if folding:
        raise FrontendError(f"{spec.source}: " + "; ".join(folding))
    meta = {"keras_version": spec.keras_version, "file_format": spec.file_format}
    meta["batch_size"] = str(spec.batch_size)  # a stateful model must run one stream
    try:
        return Model(model_name(spec), size, shape[0], tuple(layers), spec.source, meta)
    except IRError as error:
        raise FrontendError(f"{spec.source}: {error}") from error


def read_spec(path: str | Path) -> ModelSpec:
    try:
        return read_model(path)
    except ReaderError as error:
        raise FrontendError(str(error)) from error


def load_model(path: str | Path) -> Model:
    """A .keras or .h5 file (Keras 2 or 3) -> IR (any format: ``frontends.load``)."""
    return build_ir(read_spec(path))


def read_keras_model(model: Any, source: str = "<in-memory model>") -> Model:
    """An in-memory Keras model -> IR, by way of the same file reader as everything else."""
    with tempfile.TemporaryDirectory(prefix="lstm-embed-") as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        spec = read_spec(path)
    return build_ir(replace(spec, source=source))


def inspect_rows(spec: ModelSpec, weight_bits: tuple[int, ...] = (8,)) -> list[dict[str, Any]]:
    """One row per layer of the file, supported or not (``unsupported`` gives the reasons)."""
    steps: Any = spec.input_shape[0] if spec.input_shape else None
    batch = spec.batch_size  # None, or the fixed batch of a stateful model
    shape: Any = [batch, *spec.input_shape, *([1] if takes_ids(spec) else [])]
    rows = []
    for index, reading in enumerate(read_layers(spec)):
        config, layer = reading.spec.config, reading.layer
        activation = config.get("activation")
        row: dict[str, Any] = {
            "name": reading.spec.name,
            "type": reading.spec.class_name,
            "activation": activation if isinstance(activation, str) else None,
            "units": config.get("units"),
            "input_size": reading.input_size,
            "params": reading.spec.param_count,
            "flash_bytes": None,
            "unsupported": "; ".join(reading.problems),
            "unchecked": reading.unchecked,
        }
        if layer is not None:
            row.update({k: v for k, v in layer.summary().items() if k != "type"})  # file's class
            row["flash_bytes"] = layer.flash_bytes(weight_bits[min(index, len(weight_bits) - 1)])
            sequence = isinstance(shape, list) and len(shape) >= 3
            steps = _steps_after(layer, steps)
            timesteps = isinstance(shape, list) and sequence_out(layer, sequence)
            kept = shape[2:] if layer.keeps_frame and timesteps and len(shape) == 4 else None
            per_step = list(layer.output_frame or kept or (layer.output_size,))
            shape = [batch, steps, *per_step] if timesteps else [batch, *per_step]
        elif reading.problems:
            shape = "?"  # what an unsupported layer outputs is not worked out here
        elif reading.spec.class_name == "Reshape" and isinstance(shape, list):  # read as nothing
            target = list(config.get("target_shape") or [])
            total = int(np.prod([d for d in shape[1:] if d is not None]))
            known = int(np.prod([d for d in target if d != -1]))
            shape = [batch, *(total // known if d == -1 else d for d in target)]
        row["output_shape"] = shape
        rows.append(row)
    return rows
