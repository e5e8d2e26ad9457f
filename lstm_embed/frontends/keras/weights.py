"""Weights of each chain layer, found by the file's own structure and read only after a size check.

Two layouts:
- ``.h5`` (both versions): ``model_weights/<top-level layer>`` has a ``weight_names`` attribute
  listing its datasets in the layer's weight order, e.g. ``lstm/lstm_cell/kernel:0`` (Keras 2) or
  ``lstm_dense/lstm/lstm_cell/kernel`` (Keras 3). A nested model is one top-level layer; its
  weights are split among its layers by the layer name inside each weight name.
- ``.keras`` (both versions): ``layers/<key>/vars/0..k`` holds a layer's own variables, and its
  sub-objects sit in named subgroups (``cell``, ``forward_layer``, ``backward_layer``, ``layer``,
  ``layers/<key>`` for nested models). get_weights() order is own variables, then sub-objects.

Nothing follows links or external storage out of the file.
"""

from __future__ import annotations

import re
from typing import Any

import h5py
import numpy as np

from lstm_embed.frontends.keras.chain import Leaf, Level, snake_case
from lstm_embed.frontends.keras.errors import Problem, q

MAX_WEIGHT_ELEMENTS = 2**24  # numbers in all weights together; larger files are refused unread
MAX_DEPTH = 32  # sub-object groups deeper than this are refused
MAX_ATTR_ITEMS = 2**20  # strings in one list attribute (layer_names, weight_names)

# get_weights() order of a layer's sub-objects: an RNN's cell, Bidirectional's forward then
# backward layer, a wrapper's layer; anything else after these, in name order.
CHILD_ORDER = {"cell": 0, "forward_layer": 1, "backward_layer": 2, "layer": 3}
# tf_keras 2.13 wrote a model's layers under this key instead of "layers"
CONTAINER_KEYS = ("layers", "_layer_checkpoint_dependencies")

Named = list[tuple[str, h5py.Dataset]]
# Layers holding an integer scalar beside their float weights: adapt()'s sample count
# (Normalization), read as a float like the others (it counts in Keras' count_params()); the
# layer's reader ignores it, as inference does.
COUNTER_LAYERS = ("Normalization",)


def _counter_ok(leaf: Leaf) -> bool:
    return leaf.entry.get("class_name") in COUNTER_LAYERS


def load(per_leaf: list[Named]) -> list[tuple[np.ndarray, ...]]:
    """Read every dataset as float32, after checking that all of them together are small."""
    total = sum(_elements(ds) for named in per_leaf for _, ds in named)
    if total > MAX_WEIGHT_ELEMENTS:
        raise Problem(
            f"the weights hold {total} numbers, more than the {MAX_WEIGHT_ELEMENTS}"
            " (MAX_WEIGHT_ELEMENTS) this reader accepts; a model for a microcontroller is smaller"
        )
    return [tuple(np.asarray(ds[()], dtype=np.float32) for _, ds in named) for named in per_leaf]


def _elements(ds: h5py.Dataset) -> int:
    count = 1
    for n in ds.shape or ():
        count *= int(n)
    return count


# --- .h5 layout -----------------------------------------------------------------------------


def h5_datasets(weights: h5py.Group, leaf: Leaf) -> Named:
    """The datasets of one chain layer in a legacy ``.h5`` file's ``model_weights`` group."""
    top = leaf.path[0]
    group = walk(weights, top.name)
    if not isinstance(group, h5py.Group):
        raise Problem(f"layer {q(leaf.name)} has no weights in the file (no group {q(top.name)})")
    names = attr_strings(group, "weight_names")
    if names is None:
        raise Problem(f"layer {q(top.name)} in the weights has no weight_names attribute")
    if len(leaf.path) > 1:
        names = [n for n in names if _belongs(n, leaf.path[1:], top.name)]
    return [(n, dataset(group, n, leaf.name, _counter_ok(leaf))) for n in names]


def _belongs(weight_name: str, levels: tuple[Level, ...], model: str) -> bool:
    """Whether a nested model's weight is the leaf's: each level's name appears in its path."""
    parts = weight_name.split("/")
    start = 0
    for level in levels:
        hit = next((i for i in range(start, len(parts)) if parts[i] in level.siblings), None)
        if hit is None:
            raise Problem(
                f"weight {q(weight_name)} of nested model {q(model)} names none of its layers;"
                " cannot tell which layer it belongs to"
            )
        if parts[hit] != level.name:
            return False
        start = hit + 1
    return True


def attr_strings(obj: h5py.HLObject, name: str) -> list[str] | None:
    """A list-of-strings attribute; Keras splits a long one into name0, name1, ..."""
    if name in obj.attrs:
        keys = [name]
    elif f"{name}0" in obj.attrs:
        keys = []
        while f"{name}{len(keys)}" in obj.attrs:
            keys.append(f"{name}{len(keys)}")
    else:
        return None
    out: list[str] = []
    for key in keys:
        value = np.asarray(read_attr(obj, key))
        out.extend(text(v) for v in value.reshape(-1))
    return out


def read_attr(obj: h5py.HLObject, name: str) -> Any:
    """An attribute that must be text (or an empty list), checked before libhdf5 reads it.

    A corrupted type or shape makes libhdf5 read out of bounds; Keras writes only strings.
    """
    attr = h5py.h5a.open(obj.id, name.encode())
    space = attr.get_space()
    kind = space.get_simple_extent_type()
    count = space.get_simple_extent_npoints() if kind == h5py.h5s.SIMPLE else 1
    if kind == h5py.h5s.NULL or count == 0:
        return np.array([], dtype=object)  # Keras 3 writes an empty weight_names as float64
    if attr.get_type().get_class() != h5py.h5t.STRING:
        raise Problem(f"the {name} attribute of {q(obj.name)} is not text")
    if count > MAX_ATTR_ITEMS or space.get_simple_extent_ndims() > 1:
        raise Problem(f"the {name} attribute of {q(obj.name)} has an absurd shape")
    return obj.attrs[name]


def text(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    raise Problem(f"expected text in the file, found {type(value).__name__}")


# --- .keras layout --------------------------------------------------------------------------


def zip_datasets(root: h5py.File, leaf: Leaf) -> Named:
    """The datasets of one chain layer in a ``.keras`` archive's model.weights.h5."""
    group: h5py.Group = root
    for level in leaf.path:
        group = _layer_group(group, level)
    return _cells_in_config_order(_collect(group, 0, leaf.name, _counter_ok(leaf)), leaf)


def _cells_in_config_order(named: Named, leaf: Leaf) -> Named:
    """An RNN(StackedRNNCells([...]))'s weights in the cells' order: Keras keys each cell by
    its class (``cells/gru_cell``, ``cells/lstm_cell_1``), which name order does not follow."""
    cell = (leaf.entry.get("config") or {}).get("cell")
    cells = ((cell or {}).get("config") or {}).get("cells") if isinstance(cell, dict) else None
    if not isinstance(cells, list):
        return named
    used: dict[str, int] = {}
    order: dict[str, int] = {}
    for index, entry in enumerate(cells):
        if not isinstance(entry, dict):
            return named
        base = snake_case(str(entry.get("class_name", "")).rsplit(">", 1)[-1], False)
        count = used.get(base, -1) + 1
        used[base] = count
        order[base if count == 0 else f"{base}_{count}"] = index

    def position(item: tuple[str, h5py.Dataset]) -> int:
        parts = item[0].split("/")
        keys = [parts[i + 1] for i in range(len(parts) - 1) if parts[i] == "cells"]
        return order.get(keys[0], len(order)) if keys else -1

    return sorted(named, key=position)  # stable: each cell's own variables keep their order


def _layer_group(parent: h5py.Group, level: Level) -> h5py.Group:
    container = None
    for key in CONTAINER_KEYS:
        container = walk(parent, key)
        if isinstance(container, h5py.Group):
            break
    if not isinstance(container, h5py.Group):
        raise Problem(f"layer {q(level.name)} has no weights in model.weights.h5 (no layers group)")
    group = walk(container, level.zip_key)
    if isinstance(group, h5py.Group) and _saved_name(group) in (None, level.name):
        return group
    # Keras 3 also writes each layer's name on its vars group: find the layer by it
    for key in container:
        candidate = walk(container, key)
        if isinstance(candidate, h5py.Group) and _saved_name(candidate) == level.name:
            return candidate
    where = f"{container.name}/{level.zip_key}"
    raise Problem(f"layer {q(level.name)} has no weights in model.weights.h5 (no group {q(where)})")


def _saved_name(group: h5py.Group) -> str | None:
    own = walk(group, "vars")
    if not isinstance(own, h5py.Group) or "name" not in own.attrs:
        return None  # tf_keras writes no names
    value = np.asarray(read_attr(own, "name")).reshape(-1)
    return text(value[0]) if value.size == 1 else None


def _collect(group: h5py.Group, depth: int, layer: str, counter_ok: bool = False) -> Named:
    if depth > MAX_DEPTH:
        raise Problem(f"layer {q(layer)} has weights nested more than {MAX_DEPTH} groups deep")
    out: Named = []
    own = walk(group, "vars")
    if isinstance(own, h5py.Group):
        keys = sorted(own, key=lambda k: _index(k, own.name))
        out.extend((f"{own.name}/{k}", dataset(own, k, layer, counter_ok)) for k in keys)
    children = sorted((k for k in group if k != "vars"), key=_child_key)
    for key in children:
        child = walk(group, key)
        if isinstance(child, h5py.Group):
            out.extend(_collect(child, depth + 1, layer))
    return out


def _index(key: str, where: str) -> int:
    if not key.isdigit():
        raise Problem(f"unexpected entry {q(key)} in {q(where)}: variables are numbered 0, 1, ...")
    return int(key)


def _child_key(key: str) -> tuple[int, str, int]:
    """Known sub-objects first; others by name with a numeric suffix ("lstm_cell_10") as number."""
    match = re.fullmatch(r"(.*?)_(\d+)", key)
    stem, number = (match[1], int(match[2])) if match else (key, -1)
    return (CHILD_ORDER.get(key, len(CHILD_ORDER)), stem, number)


# --- safe access ----------------------------------------------------------------------------


def walk(group: h5py.Group, path: str) -> h5py.HLObject | None:
    """``group[path]`` one name at a time, refusing links out of the file; None if absent."""
    obj: Any = group
    for part in path.split("/"):
        if not part:
            continue
        if not isinstance(obj, h5py.Group):
            return None
        link = obj.get(part, getlink=True)
        if link is None:
            return None
        if isinstance(link, h5py.ExternalLink):
            raise Problem(f"{q(obj.name + '/' + part)} links to another file; refused")
        obj = obj.get(part)
        if obj is None:
            return None  # a dangling soft link
    return obj


def dataset(group: h5py.Group, name: str, layer: str, counter_ok: bool = False) -> h5py.Dataset:
    """A weight dataset, checked to be a float array stored in this file (or, where
    ``counter_ok``, an integer scalar: a sample count, COUNTER_LAYERS)."""
    ds = walk(group, name)
    if not isinstance(ds, h5py.Dataset):
        where = name if "/" in name else f"{group.name}/{name}"  # the zip's bare "0", "1", ...
        raise Problem(f"weight {q(where)} of layer {q(layer)} is missing from the weights")
    where = q(ds.name)  # the full path in the file, e.g. '/layers/dense/vars/0'
    if ds.is_virtual or ds.external:
        raise Problem(f"weight {where} of layer {q(layer)} is stored outside the file; refused")
    counter = counter_ok and ds.dtype.kind in "iu" and ds.shape == ()
    if ds.dtype.kind != "f" and not counter:
        raise Problem(
            f"weight {where} of layer {q(layer)} has dtype {ds.dtype}; only float weights"
            " are read (a quantized model? save the float model)"
        )
    return ds
