"""Integer IR: the quantized chain that the reference executes and the emitter renders, and its
file form (``qmodel.npz`` in every output folder; ``save_qmodel`` / ``load_qmodel``).

Formats are values: activations are int16 with a float scale (real = q * scale); each layer
kind documents its own (``lstm_embed.kinds``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.ir.model import LayerStack
from lstm_embed.kinds import QLAYER_TYPES, QDenseLayer, QLayer, QLSTMLayer
from lstm_embed.kinds.base import Q15_SCALE
from lstm_embed.quantize.fixedpoint import ActivationTable

__all__ = ["Q15_SCALE", "QDenseLayer", "QLSTMLayer", "QLayer", "QModel"]

QMODEL_FILE = "qmodel.npz"
# bump when a field or its meaning changes; older folders are refused with "convert again"
# (3: sigmoid reads the tanh table; 4: exp without a table; 5: type_name, not keras_name;
# 6: LSTM and GRU carry their activation and h's format)
QMODEL_FORMAT = 6


class QModelFileError(ValueError):
    """An integer model file that this version cannot read."""


@dataclass(frozen=True)
class QModel(LayerStack):
    name: str
    source: str
    input_size: int
    timesteps: int | None
    input_scale: np.ndarray  # (input_size,) float32: x_q = round(x / scale)
    output_scale: float
    layers: tuple[QLayer, ...]
    tables: dict[str, ActivationTable] = field(default_factory=dict)
    params: int = 0

    @property
    def macs_per_step(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def input_inv_scale(self) -> np.ndarray:
        return (1.0 / self.input_scale.astype(np.float64)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# On disk: arrays in an .npz, the structure as JSON beside them


def _split(obj: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"__array__": prefix}
    if is_dataclass(obj):
        body = {
            f.name: _split(getattr(obj, f.name), f"{prefix}.{f.name}", arrays) for f in fields(obj)
        }
        return {"__type__": type(obj).__name__, **body}
    if isinstance(obj, dict):
        return {k: _split(v, f"{prefix}.{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [_split(v, f"{prefix}.{i}", arrays) for i, v in enumerate(obj)]
    return obj


def save_qmodel(qmodel: QModel, path: Path, tool: str | None = None) -> None:
    """QModel -> one .npz (arrays + a JSON description with the format version and writer)."""
    from lstm_embed.version import __version__

    tool = tool or f"lstm-embed {__version__}"
    arrays: dict[str, np.ndarray] = {}
    description = {"format": QMODEL_FORMAT, "tool": tool, "model": _split(qmodel, "m", arrays)}
    np.savez(path, __description__=np.array(json.dumps(description)), **arrays)


def _join(obj: Any, arrays: Any, types: dict[str, type]) -> Any:
    if isinstance(obj, list):
        return tuple(_join(v, arrays, types) for v in obj)
    if not isinstance(obj, dict):
        return obj
    if "__array__" in obj:
        return arrays[obj["__array__"]]
    body = {k: _join(v, arrays, types) for k, v in obj.items() if k != "__type__"}
    return types[obj["__type__"]](**body) if "__type__" in obj else body


def load_qmodel(path: Path) -> QModel:
    """Read back what ``save_qmodel`` wrote; a file of another format version is refused."""
    types = {"QModel": QModel, "ActivationTable": ActivationTable, **QLAYER_TYPES}
    try:
        with np.load(path, allow_pickle=False) as data:
            description = json.loads(str(data["__description__"]))
            arrays = {k: data[k] for k in data.files}
    except (OSError, KeyError, ValueError) as error:
        raise QModelFileError(f"{path}: not an lstm-embed integer model ({error})") from error
    info = description if isinstance(description, dict) else {}
    version = info.get("format", 1)  # format 1 (lstm-embed 0.1) had no version field
    if version != QMODEL_FORMAT:
        writer = info.get("tool", "lstm-embed 0.1")
        raise QModelFileError(
            f"{path.parent}: written by {writer} (integer model format {version}; this version"
            f" reads {QMODEL_FORMAT}); convert again"
        )
    try:
        return _join(description["model"], arrays, types)
    except (KeyError, TypeError) as error:
        raise QModelFileError(f"{path}: damaged integer model ({error}); convert again") from error
