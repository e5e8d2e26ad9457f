"""A quantized graph on disk: ``qgraph.npz`` in a graph's output folder, as ``qmodel.npz`` is
in a chain's (the same encoding: arrays in an .npz, the structure as JSON beside them; the
same format version). ``trace`` and ``compare --report`` read it back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lstm_embed.ir.graph import Graph, Node, TensorSpec
from lstm_embed.kinds import QLAYER_TYPES
from lstm_embed.quantize.fixedpoint import ActivationTable
from lstm_embed.quantize.graph_quantizer import QGraph
from lstm_embed.quantize.qir import QMODEL_FORMAT, QModelFileError, _join, _split

QGRAPH_FILE = "qgraph.npz"
NEAREST_QGRAPH = "qgraph_nearest.npz"  # beside it when the rounding kept is not nearest

# the graph's own types beside every kind's
TYPES: dict[str, type] = {
    t.__name__: t for t in (QGraph, Graph, Node, TensorSpec, ActivationTable)
} | QLAYER_TYPES


def save_qgraph(qgraph: QGraph, path: Path) -> None:
    from lstm_embed.version import __version__

    arrays: dict[str, np.ndarray] = {}
    description = {
        "format": QMODEL_FORMAT,
        "tool": f"lstm-embed {__version__}",
        "graph": _split(qgraph, "g", arrays),
    }
    np.savez(path, __description__=np.array(json.dumps(description)), **arrays)


def load_qgraph(path: Path) -> QGraph:
    """Read back what ``save_qgraph`` wrote; another format version is refused."""
    path = Path(path)
    if not path.is_file():
        raise QModelFileError(f"{path.parent}: no {QGRAPH_FILE}; convert again with this version")
    try:
        with np.load(path, allow_pickle=False) as data:
            description = json.loads(str(data["__description__"]))
            arrays = {k: data[k] for k in data.files}
    except (OSError, KeyError, ValueError) as error:
        raise QModelFileError(f"{path}: not an lstm-embed quantized graph ({error})") from error
    version = description.get("format") if isinstance(description, dict) else None
    if version != QMODEL_FORMAT:
        writer = description.get("tool", "?") if isinstance(description, dict) else "?"
        raise QModelFileError(
            f"{path.parent}: written by {writer} (integer model format {version}; this version"
            f" reads {QMODEL_FORMAT}); convert again"
        )
    try:
        qgraph = _join(description["graph"], arrays, TYPES)
    except (KeyError, TypeError) as error:
        message = f"{path}: damaged quantized graph ({error}); convert again"
        raise QModelFileError(message) from error
    return qgraph
