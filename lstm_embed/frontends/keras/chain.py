"""A model config as a chain of leaf layers: InputLayer dropped, nested models flattened.

Sequential models are chains by construction. Functional models are read from their
``inbound_nodes`` (Keras 2: ``[[["lstm", 0, 0, {}]]]``; Keras 3: ``[{"args": [tensor],
"kwargs": {}}]`` with ``keras_history: ["lstm", 0, 0]``) and must be single chains.

Each leaf records where its weights sit in either weights layout: the names from the top
level down (``.h5`` groups and weight names) and the zip tree keys (``layers/<key>/...``, where
Keras names each layer by its snake_case class name and a counter, not by the layer's name).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from lstm_embed.frontends.keras import normalize
from lstm_embed.frontends.keras.errors import Problem, q

MODEL_CLASSES = ("Sequential", "Functional", "Model")  # "Model": Keras 2 before TF 2.4
MAX_DEPTH = 16  # nested models deeper than this are refused (a recursion bomb otherwise)
CHAIN_ONLY = "only single-chain models are supported"


@dataclass(frozen=True)
class Level:
    """One step of a leaf's path: its name, its zip key and its container's layer names."""

    name: str
    zip_key: str
    siblings: frozenset[str]


@dataclass(frozen=True)
class Leaf:
    """A layer of the chain as the file serializes it, and where its weights are."""

    entry: dict[str, Any]
    path: tuple[Level, ...]  # outermost model's layer first, the leaf itself last

    @property
    def name(self) -> str:
        return self.path[-1].name


@dataclass(frozen=True)
class Chain:
    name: str
    batch_shape: list[Any] | None  # with the batch axis, as the file writes it
    leaves: tuple[Leaf, ...]


def read_chain(model: Any, keras2: bool) -> Chain:
    """The top-level model entry (config.json / model_config) as a chain of leaves."""
    if not isinstance(model, dict) or not isinstance(model.get("class_name"), str):
        raise Problem("the model config is not a serialized Keras model (no class_name)")
    if not is_model(model):
        raise Problem(
            f"the model is a {q(model['class_name'])}, not a Sequential or Functional model;"
            " subclassed models cannot be read from their config"
        )
    leaves: list[Leaf] = []
    shape = _container(model, (), keras2, leaves)
    return Chain(_model_name(model), shape, tuple(leaves))


def is_model(entry: dict[str, Any]) -> bool:
    config = entry.get("config")
    layers = config.get("layers") if isinstance(config, dict) else config
    return entry.get("class_name") in MODEL_CLASSES and isinstance(layers, list)


def _container(model: dict, outer: tuple[Level, ...], keras2: bool, out: list[Leaf]) -> Any:
    """Append the model's leaves to ``out``; return the batch input shape it declares."""
    if len(outer) > MAX_DEPTH:
        raise Problem(f"models nested more than {MAX_DEPTH} deep are not supported")
    layers = _layers(model)
    names = [_name(layer) for layer in layers]
    _check_unique(names)
    siblings = frozenset(names)
    keys = _zip_keys(layers, keras2)
    levels = {n: Level(n, k, siblings) for n, k in zip(names, keys, strict=True)}
    by_name = dict(zip(names, layers, strict=True))
    order = names if model["class_name"] == "Sequential" else _functional_order(model, names)
    for name in order:
        layer = by_name[name]
        if layer["class_name"] == "InputLayer":
            continue
        path = (*outer, levels[name])
        if is_model(layer):
            _container(layer, path, keras2, out)
        else:
            out.append(Leaf(layer, path))
    return _declared_shape(model, layers)


def _layers(model: dict) -> list[dict]:
    config = model.get("config")
    # Keras 2 before 2.2.3 wrote a Sequential config as the bare list of layers
    layers = config if isinstance(config, list) else config.get("layers")
    for layer in layers:
        if not (isinstance(layer, dict) and isinstance(layer.get("class_name"), str)):
            raise Problem(f"model {q(_model_name(model))} has a layer entry without a class_name")
        if not isinstance(layer.get("config", {}), dict):
            raise Problem(f"layer of class {q(layer['class_name'])} has a config that is no dict")
    return layers


def _name(entry: dict) -> str:
    config = entry.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    name = name if name is not None else entry.get("name")
    if not isinstance(name, str) or not name:
        raise Problem(f"a layer of class {q(entry.get('class_name'))} has no name")
    return name


def _model_name(model: dict) -> str:
    """A model's name; Keras 2's oldest Sequential configs (a bare list) have none."""
    config = model.get("config")
    name = config.get("name") if isinstance(config, dict) else None
    return name if isinstance(name, str) and name else str(model["class_name"]).lower()


def _check_unique(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise Problem(f"two layers are named {q(name)}; Keras requires unique names")
        seen.add(name)


def _declared_shape(model: dict, layers: list[dict]) -> Any:
    """Batch input shape: InputLayer, else the first layer (Keras 2), else the build shape."""
    for layer in layers[:1] + [x for x in layers if x["class_name"] == "InputLayer"]:
        shape = normalize.batch_shape(layer.get("config"))
        if shape is not None:
            return shape
    config = model.get("config")
    build = model.get("build_config")
    candidates = [
        config.get("build_input_shape") if isinstance(config, dict) else None,  # Sequential
        build.get("input_shape") if isinstance(build, dict) else None,
    ]
    return next((c for c in candidates if isinstance(c, list)), None)


def snake_case(class_name: str, keras2: bool) -> str:
    """The zip key Keras derives from a class: "BatchNormalization" -> "batch_normalization"."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()
    # tf_keras prefixes "private" to a name that starts with "_"; Keras 3 does not
    return "private" + name if keras2 and name.startswith("_") else name


def _zip_keys(layers: list[dict], keras2: bool) -> list[str]:
    """Zip keys in container order: "lstm", "lstm_1", "dense", ... (per class, from 0)."""
    used: dict[str, int] = {}
    keys = []
    for layer in layers:
        base = snake_case(layer["class_name"].rsplit(">", 1)[-1], keras2)
        count = used.get(base, -1) + 1
        used[base] = count
        keys.append(base if count == 0 else f"{base}_{count}")
    return keys


def _functional_order(model: dict, names: list[str]) -> list[str]:
    """Layer names from the single input to the single output; anything else is refused."""
    config = model["config"]
    inputs = _endpoints(config.get("input_layers"))
    outputs = _endpoints(config.get("output_layers"))
    mname = q(_model_name(model))
    for what, ends in (("inputs", inputs), ("outputs", outputs)):
        if len(ends) != 1:
            raise Problem(f"model {mname} has {len(ends)} {what}; {CHAIN_ONLY}")
    source = _sources(config["layers"], names)
    consumers: dict[str, list[str]] = defaultdict(list)
    for name, src in source.items():
        consumers[src].append(name)
    order, current = [inputs[0][0]], inputs[0][0]
    if current not in names or outputs[0][0] not in names:
        raise Problem(f"model {mname} names an input or output layer it does not have")
    if outputs[0][2] != 0:
        index = outputs[0][2]
        raise Problem(f"model {mname} outputs output {index} of its last layer; {CHAIN_ONLY}")
    while current != outputs[0][0]:
        nxt = consumers[current]
        if len(nxt) != 1:
            fed = "no layer" if not nxt else f"{len(nxt)} layers ({', '.join(map(q, nxt))})"
            raise Problem(f"layer {q(current)} feeds {fed}; {CHAIN_ONLY}")
        current = nxt[0]
        order.append(current)
    for name in names:
        if name not in order:
            raise Problem(f"layer {q(name)} is not on the chain from input to output; {CHAIN_ONLY}")
    return order


def _sources(layers: list[dict], names: list[str]) -> dict[str, str]:
    """For every non-input layer, the one layer it takes its input from."""
    known = set(names)
    source = {}
    for layer, name in zip(layers, names, strict=True):
        if layer["class_name"] == "InputLayer":
            continue
        nodes = layer.get("inbound_nodes") or []
        if not isinstance(nodes, list) or len(nodes) != 1:
            count = len(nodes) if isinstance(nodes, list) else "?"
            raise Problem(f"layer {q(name)} is called {count} times; {CHAIN_ONLY}")
        tensors = _node_tensors(nodes[0])
        if len(tensors) != 1:
            kind = layer["class_name"]
            raise Problem(
                f"layer {q(name)} takes {len(tensors)} inputs; {CHAIN_ONLY} ({kind} with several"
                " inputs is not supported)"
            )
        src, _node, index = tensors[0]
        if src not in known:
            raise Problem(f"layer {q(name)} takes its input from an unknown layer {q(src)}")
        if index != 0:
            raise Problem(f"layer {q(name)} takes output {index} of layer {q(src)}; {CHAIN_ONLY}")
        source[name] = src
    return source


def _endpoints(value: Any) -> list[tuple[str, int, int]]:
    """input_layers/output_layers: Keras 3 may write one flat ["name", 0, 0]; Keras 2 a list."""
    if isinstance(value, dict):
        value = list(value.values())
    if _is_history(value):
        return [tuple(value[:3])]
    if isinstance(value, list) and all(_is_history(v) for v in value):
        return [tuple(v[:3]) for v in value]
    raise Problem("the model's input_layers/output_layers are not a list of layer references")


def _is_history(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) >= 3
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and isinstance(value[2], int)
    )


def _node_tensors(node: Any) -> list[tuple[str, int, int]]:
    """Every tensor a call node takes, in either version's format."""
    found: list[tuple[str, int, int]] = []
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        _keras3_tensors(node, found, 0)
    elif isinstance(node, list):  # Keras 2: [["lstm", 0, 0, {kwargs}], ...]
        for item in node:
            if _is_history(item):
                found.append(tuple(item[:3]))
                if len(item) > 3:
                    _keras2_kwarg_tensors(item[3], found, 0)
    else:
        raise Problem("an inbound node is neither a list (Keras 2) nor a dict (Keras 3)")
    return found


def _keras3_tensors(value: Any, found: list, depth: int) -> None:
    if depth > 64:
        raise Problem("an inbound node is nested too deeply")
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            history = (value.get("config") or {}).get("keras_history")
            if not _is_history(history):
                raise Problem("a Keras tensor in an inbound node has no keras_history")
            found.append(tuple(history[:3]))
            return
        for item in value.values():
            _keras3_tensors(item, found, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _keras3_tensors(item, found, depth + 1)


def _keras2_kwarg_tensors(value: Any, found: list, depth: int) -> None:
    """Keras 2 writes tensors passed as keyword arguments (mask=, initial_state=) as lists."""
    if depth > 64:
        raise Problem("an inbound node is nested too deeply")
    if _is_history(value) and len(value) == 3:
        found.append(tuple(value))
    elif isinstance(value, dict):
        for item in value.values():
            _keras2_kwarg_tensors(item, found, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _keras2_kwarg_tensors(item, found, depth + 1)
