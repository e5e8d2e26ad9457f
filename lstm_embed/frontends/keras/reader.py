"""Keras model files as plain data, with no ML framework imported.

    spec = read_model("model.keras")   # or .h5; Keras 2 (tf_keras) or Keras 3

Reads Keras 3 ``.keras`` and ``.h5`` and Keras 2 (tf.keras up to TF 2.15, tf_keras) ``.h5`` and
``.keras`` files with zipfile, json and h5py only: nothing from the file is executed or
unpickled. Every problem is a ReaderError whose one-line message starts with the path.
"""

from __future__ import annotations

from pathlib import Path

from lstm_embed.frontends.keras import normalize
from lstm_embed.frontends.keras.chain import Chain, Leaf, read_chain
from lstm_embed.frontends.keras.errors import Problem, one_line, q
from lstm_embed.frontends.keras.files import (
    MAX_JSON_BYTES,
    MAX_MEMBER_BYTES,
    keras_major,
    open_model,
)
from lstm_embed.frontends.keras.spec import LayerSpec, ModelSpec, ReaderError
from lstm_embed.frontends.keras.weights import MAX_WEIGHT_ELEMENTS, load

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_MEMBER_BYTES",
    "MAX_WEIGHT_ELEMENTS",
    "LayerSpec",
    "ModelSpec",
    "ReaderError",
    "read_model",
]

ERROR_TEXT = 300  # characters kept of an unexpected library error's message


def read_model(path: str | Path) -> ModelSpec:
    """The model in a Keras file as a ModelSpec; any problem is a one-line ReaderError."""
    source = str(path)
    try:
        return _read(Path(path), source)
    except Problem as exc:
        raise ReaderError(one_line(f"{source}: {exc}")) from None
    except Exception as exc:  # h5py, zipfile, OS errors on hostile input: never a traceback
        detail = one_line(str(exc))[:ERROR_TEXT]
        message = f"{source}: cannot read the file; is it damaged? ({type(exc).__name__}: {detail})"
        raise ReaderError(one_line(message)) from exc


def _read(path: Path, source: str) -> ModelSpec:
    with open_model(path) as opened:
        major = keras_major(opened.keras_version, opened.config_text, opened.container)
        chain = read_chain(opened.config, keras2=major == 2)
        input_shape, batch_size = _input_shape(chain)
        # all datasets are located (and their sizes summed) before any is read
        arrays = load([opened.datasets(leaf) for leaf in chain.leaves])
        layers = tuple(
            _layer(leaf, w, major == 2) for leaf, w in zip(chain.leaves, arrays, strict=True)
        )
        return ModelSpec(
            name=chain.name,
            source=source,
            input_shape=input_shape,
            layers=layers,
            keras_version=opened.keras_version,
            file_format=f"keras{major} {opened.container}",
            batch_size=batch_size,
            meta=opened.meta,
        )


def _input_shape(chain: Chain) -> tuple[tuple[int | None, ...], int | None]:
    shape = chain.batch_shape
    if shape is None:
        raise Problem(
            "the model declares no input shape (a Sequential model saved before it was built?);"
            " give it an Input layer and save it again"
        )
    if not shape or not all(_is_dim(d) for d in shape):
        raise Problem(f"the model's input shape {q(shape)} is not a list of sizes")
    batch = shape[0]
    return tuple(shape[1:]), batch


def _is_dim(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def _layer(leaf: Leaf, arrays: tuple, keras2: bool) -> LayerSpec:
    class_name, module, registered = normalize.split_class_name(leaf.entry)
    return LayerSpec(
        name=leaf.name,
        class_name=class_name,
        config=normalize.layer_config(class_name, leaf.entry.get("config", {}), keras2),
        weights=arrays,
        module=module,
        registered_name=registered,
    )
