"""A Functional Keras model that is not a single chain, as a graph IR.

The model config lists each layer with its ``inbound_nodes``: Keras 2 writes
``[[["lstm", 0, 0, {}], ["dense", 0, 0, {}]]]`` (one list per call, one entry per tensor),
Keras 3 ``[{"args": [[tensor, tensor]], "kwargs": {}}]`` with each tensor a
``__keras_tensor__`` whose ``keras_history`` is ``[layer, node, index]`` (``chain`` reads
both). A tensor is named by its layer; output k > 0 of a recurrent layer with
return_state=True is ``<layer>_h`` / ``<layer>_c``. Refused: layers called more than once
(shared layers), nested models inside a graph, tensors passed as keyword arguments
(``initial_state``, ``mask``), stateful layers in a graph (their state follows one path
today). Masks follow Keras' propagation (``graph_masks``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.frontends.keras import chain as chains
from lstm_embed.frontends.keras import graph_masks, normalize
from lstm_embed.frontends.keras.errors import Problem, one_line, q
from lstm_embed.frontends.keras.files import keras_major, open_model
from lstm_embed.frontends.keras.frontend import FrontendError
from lstm_embed.frontends.keras.layers import read_layer
from lstm_embed.frontends.keras.reader import ReaderError, _input_shape, _layer
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.frontends.keras.weights import load
from lstm_embed.ir.graph import Graph, Node, TensorSpec, layer_output_shapes, output_names
from lstm_embed.kinds import IRError, Unsupported
from lstm_embed.kinds.attention import AttentionLayer
from lstm_embed.kinds.merge import OPS, TIME_CONCAT, MergeLayer, time_concat_problem

# tensors a layer returns besides its output with return_state=True, by Keras class
RETURN_STATE = {"LSTM": ("h", "c"), "GRU": ("h",), "SimpleRNN": ("h",)}
ATTENTION = ("Attention", "AdditiveAttention")


def load_graph(path: str | Path) -> Graph:
    """A .keras or .h5 Functional model (Keras 2 or 3) -> graph IR; any problem is one
    FrontendError naming the file and every layer that cannot be read."""
    source = str(path)
    try:
        with open_model(Path(path)) as opened:
            keras2 = keras_major(opened.keras_version, opened.config_text, opened.container) == 2
            entries, inputs, outputs, name, mask_ops = _structure(opened.config, keras2)
            leaves = [_leaf(e, k, s) for e, k, s in entries]
            arrays = load([opened.datasets(leaf) for leaf in leaves])
            specs = [_layer(leaf, w, keras2) for leaf, w in zip(leaves, arrays, strict=True)]
            meta = {
                "keras_version": opened.keras_version,
                "file_format": f"keras{2 if keras2 else 3} {opened.container}",
            }
    except Problem as error:
        raise FrontendError(one_line(f"{source}: {error}")) from None
    except ReaderError as error:
        raise FrontendError(str(error)) from None
    inbound = {e[0]["config"]["name"]: _inbound(e[0]) for e in entries}
    calls = {k: v[0] for k, v in inbound.items()}
    options = {e[0]["config"]["name"]: _call_kwargs(e[0]) for e in entries}
    mask_refs = {k: v[1] for k, v in inbound.items() if v[1] is not None}
    return build_graph(
        name, source, inputs, specs, calls, outputs, meta, options, (mask_ops, mask_refs)
    )


def _structure(model: Any, keras2: bool):
    """(layer entries with zip keys, inputs, outputs, model name) of a Functional config."""
    if not chains.is_model(model) or model["class_name"] == "Sequential":
        raise Problem("only Functional models can be graphs")
    layers = chains._layers(model)
    names = [chains._name(layer) for layer in layers]
    chains._check_unique(names)
    keys = chains._zip_keys(layers, keras2)
    siblings = frozenset(names)
    config = model["config"]
    inputs = []
    for ref in chains._endpoints(config.get("input_layers")):
        entry = next((la for la in layers if chains._name(la) == ref[0]), None)
        if entry is None or entry["class_name"] != "InputLayer":
            raise Problem(f"model input {q(ref[0])} is not an InputLayer")
        shape, _batch = _input_shape(chains.Chain(ref[0], _batch_shape(entry), ()))
        inputs.append(TensorSpec(ref[0], tuple(shape)))
    outputs = chains._endpoints(config.get("output_layers"))
    entries, mask_ops = [], []
    for layer, key in zip(layers, keys, strict=True):
        if layer["class_name"] == "InputLayer":
            continue
        if layer["class_name"] in graph_masks.MASK_OPS and not keras2:
            mask_ops.append(layer)  # a mask written as op layers (Keras 3), no weights
            continue
        if str(layer.get("module", "")).startswith("keras.src.ops"):
            raise Problem(
                f"layer {q(chains._name(layer))} is a Keras op ({layer['class_name']}); op"
                " layers are not supported in a graph (supported: the mask ops Keras writes"
                f" for a Masking layer, {', '.join(graph_masks.MASK_OPS)})"
            )
        if chains.is_model(layer):
            raise Problem(
                f"layer {q(chains._name(layer))} is a nested model; nested models inside a graph"
                " are not supported (a Sequential or single-chain model may nest them)"
            )
        entries.append((layer, key, siblings))
    ops = graph_masks.KerasMaskOps(mask_ops)
    return entries, inputs, outputs, chains._model_name(model), ops


def _batch_shape(entry: dict) -> Any:
    return normalize.batch_shape(entry.get("config"))


def _leaf(entry: dict, key: str, siblings: frozenset[str]) -> chains.Leaf:
    return chains.Leaf(entry, (chains.Level(chains._name(entry), key, siblings),))


def _inbound(entry: dict) -> tuple[list[tuple[str, int, int]], list | None]:
    """The tensors a layer's call takes, and the tensor passed as ``mask=`` (Keras 3)."""
    name = chains._name(entry)
    nodes = entry.get("inbound_nodes") or []
    if not isinstance(nodes, list) or len(nodes) != 1:
        count = len(nodes) if isinstance(nodes, list) else "?"
        raise FrontendError(
            f"layer {q(name)} is called {count} times; shared layers are not supported"
        )
    node = nodes[0]
    mask = None
    if isinstance(node, dict):
        kwargs = dict(node.get("kwargs") or {})
        found: list = []
        chains._keras3_tensors(kwargs.pop("mask", None), found, 0)
        if _has_tensor(kwargs):
            raise FrontendError(
                f"layer {q(name)} takes tensors as keyword arguments (initial_state=);"
                " not supported"
            )
        mask = found or None  # one mask, or one per input (Attention)
        node = {**node, "kwargs": kwargs}
    return chains._node_tensors(node), mask


def _call_kwargs(entry: dict) -> dict[str, Any]:
    """The call's keyword arguments that are not tensors (use_causal_mask=, training=):
    Keras 3 writes them in the node's "kwargs", Keras 2 in the first tensor's dict."""
    node = (entry.get("inbound_nodes") or [None])[0]
    if isinstance(node, dict):
        kwargs = node.get("kwargs")
    elif isinstance(node, list) and node and isinstance(node[0], list) and len(node[0]) > 3:
        kwargs = node[0][3]
    else:
        kwargs = None
    return {k: v for k, v in (kwargs or {}).items() if not _has_tensor({k: v})}


def _has_tensor(value: Any) -> bool:
    found: list = []
    chains._keras3_tensors(value or {}, found, 0)
    return bool(found)


def build_graph(
    name: str,
    source: str,
    inputs: list[TensorSpec],
    specs: list[LayerSpec],
    calls: dict[str, list[tuple[str, int, int]]],
    outputs: list[tuple[str, int, int]],
    meta: dict[str, str],
    options: dict[str, dict[str, Any]] | None = None,
    keras3_masks: tuple[graph_masks.KerasMaskOps, dict] | None = None,
) -> Graph:
    """Read every layer in an order where its inputs are known; every problem in one error."""
    tensors: dict[tuple[str, int], str] = {(t.name, 0): t.name for t in inputs}
    shapes = {t.name: t.shape for t in inputs}
    masks: dict[str, str | None] = {}  # tensor -> the mask tensor it carries (Keras')
    keras2 = meta.get("file_format", "").startswith("keras2")
    masking: dict[str, tuple[str, float]] = {}  # Masking's mask -> (its input, mask_value)
    mask_ops, mask_refs = keras3_masks or (graph_masks.KerasMaskOps([]), {})
    nodes, problems = [], []
    pending = list(specs)
    while pending:
        ready = [s for s in pending if all((r[0], r[2]) in tensors for r in calls[s.name])]
        if not ready:
            blocked = ", ".join(q(s.name) for s in pending)
            problems.append(f"layers {blocked} take inputs from layers that cannot be read")
            break
        for spec in ready:
            pending.remove(spec)
            srcs = [tensors[(r[0], r[2])] for r in calls[spec.name]]
            try:
                kwargs = (options or {}).get(spec.name, {})
                node = _node(spec, srcs, [shapes[s] for s in srcs], kwargs)
                if node is not None:
                    masks_in = [masks.get(s) for s in srcs]
                    node, masks_out = graph_masks.flow(spec, node, masks_in, keras2)
                    masks.update(zip(node.outputs, masks_out, strict=True))
                    if node.mask_output:
                        masking[node.mask_output] = (srcs[0], node.layer.mask_value)
                    for ref in mask_refs.get(spec.name, ()):
                        written = mask_ops.resolve(ref, spec.name)
                        tensor = tensors.get(written.tensor, "?")
                        graph_masks.check_keras3_mask(node, written, tensor, masking)
            except (Unsupported, IRError, FrontendError) as error:
                reasons = error.reasons if isinstance(error, Unsupported) else [str(error)]
                problems += [f"layer '{spec.name}' ({spec.class_name}): {r}" for r in reasons]
                continue
            if node is None:  # an identity at inference (Dropout): its output is its input
                tensors[(spec.name, 0)] = srcs[0]
                continue
            nodes.append(node)
            try:
                out_shapes = layer_output_shapes(node, [shapes[s] for s in srcs])
            except IRError as error:
                problems.append(str(error))
                continue
            for index, (out, shape) in enumerate(zip(node.outputs, out_shapes, strict=True)):
                tensors[(spec.name, index)] = out
                shapes[out] = tuple(shape)
    out_names = []
    for ref in outputs:
        if (ref[0], ref[2]) in tensors:
            out_names.append(tensors[(ref[0], ref[2])])
    if problems:
        raise FrontendError(f"{source}: " + "; ".join(problems))
    try:
        return Graph.build(model_name_of(name), inputs, nodes, out_names, source, meta)
    except IRError as error:
        raise FrontendError(str(error)) from error


def model_name_of(name: str) -> str:
    """The model's name as the C prefix, as a chain's (``frontend.model_name``)."""
    return name if name.isidentifier() else "model"


def _node(spec: LayerSpec, srcs: list[str], shapes: list[tuple], kwargs: dict) -> Node | None:
    if spec.class_name in OPS:
        return Node(_merge(spec, shapes), tuple(srcs), (spec.name,))
    if spec.class_name in ATTENTION:
        return Node(_attention(spec, shapes, kwargs), tuple(srcs), (spec.name,))
    if len(srcs) != 1:
        several = ", ".join([*OPS, *ATTENTION])
        raise Unsupported(
            [
                f"{spec.class_name} with {len(srcs)} inputs is not supported (layers that take"
                f" several inputs: {several})"
            ]
        )
    shape = shapes[0]
    returns_state = bool(spec.config.get("return_state", False))
    if returns_state:
        if spec.class_name not in RETURN_STATE:
            raise Unsupported([f"return_state=True on {spec.class_name} is not supported"])
        spec = replace(spec, config={**spec.config, "return_state": False})
    layer = read_layer(spec, int(shape[-1]), shape[0] if len(shape) == 2 else None)
    if layer is None:
        return None
    if layer.stateful:
        raise Unsupported(["stateful=True inside a graph is not supported yet"])
    if returns_state and layer.go_backwards:
        raise Unsupported(["return_state=True with go_backwards=True is not supported"])
    return Node(layer, (srcs[0],), output_names(layer, returns_state))


def _merge(spec: LayerSpec, shapes: list[tuple]) -> MergeLayer:
    op = OPS[spec.class_name]
    sizes = tuple(int(s[-1]) for s in shapes)
    if op == "concatenate":
        rank = len(shapes[0])
        axis = spec.config.get("axis", -1)
        if rank == 2 and axis in (1, -2):  # sequences joined on the time axis
            steps = tuple(s[0] for s in shapes)
            problem = time_concat_problem(sizes, steps)
            if problem:
                raise Unsupported([f"axis={axis}: {problem}"])
            return MergeLayer(spec.name, TIME_CONCAT, sizes, spec.class_name, steps)
        if axis not in (-1, rank):
            raise Unsupported(
                [f"axis={axis} is not supported (supported: the feature axis, -1 or {rank};"
                 " the time axis, 1, of sequences)"]
            )  # fmt: skip
    return MergeLayer(spec.name, op, sizes, type_name=spec.class_name)


def _attention(spec: LayerSpec, shapes: list[tuple], kwargs: dict) -> AttentionLayer:
    """Keras' Attention (score_mode "dot" or "concat"; use_scale; use_causal_mask, a call
    argument, or Keras 2's ``causal`` config) and AdditiveAttention (use_scale: a weight per
    feature); the attention scores are not returned."""
    config = spec.config
    reasons = []
    mode = "additive" if spec.class_name == "AdditiveAttention" else config.get("score_mode", "dot")
    if mode not in ("dot", "concat", "additive"):
        reasons.append(f"score_mode={mode!r} is not supported (supported: 'dot', 'concat')")
    if kwargs.get("return_attention_scores"):
        reasons.append("return_attention_scores=True is not supported")
    if any(len(s) != 2 for s in shapes):
        reasons.append("its inputs must be sequences (timesteps, features)")
    if reasons:
        raise Unsupported(reasons)
    use_scale = bool(config.get("use_scale", mode == "additive"))
    weights = [np.asarray(w, np.float64).reshape(-1) for w in spec.weights]
    causal = bool(kwargs.get("use_causal_mask", False) or config.get("causal", False))
    sizes = tuple(int(s[-1]) for s in shapes)
    count = sum(w.size for w in weights)
    if mode == "dot":
        scale = float(weights[0][0]) if use_scale else 1.0
        return AttentionLayer(spec.name, sizes, scale, use_scale, causal, weight_count=count)
    if mode == "concat":  # weights in the order Keras builds them: scale, concat_score_weight
        scale = float(weights[0][0]) if use_scale else 1.0
        w = (float(weights[-1][0]),) * sizes[0]
        title = "Attention (concat)"
    else:
        scale, title = 1.0, "AdditiveAttention"
        w = tuple(float(v) for v in weights[0]) if use_scale else (1.0,) * sizes[0]
    return AttentionLayer(spec.name, sizes, scale, use_scale, causal, additive=True,
                          score_weights=w, title=title, weight_count=count)  # fmt: skip
