"""Keras' generic RNN layer around a built-in cell: RNN(LSTMCell(n)), RNN(GRUCell(n)),
RNN(SimpleRNNCell(n)) read as the LSTM, GRU or SimpleRNN layer they compute, and
RNN(StackedRNNCells([...])) as those layers in a row (``kinds.stack``).

The RNN's options go to the layer it becomes: return_sequences (a stack: every cell but the
last returns sequences, as the stack hands each timestep's output up), go_backwards (a stack:
the first cell reads the window backwards, the others its outputs in that order, as Keras runs
the whole stack on the reversed input), stateful (every cell); return_state is refused as for
the layers themselves. Weights: each cell's kernel, recurrent kernel and bias, in cell order.
"""

from __future__ import annotations

from typing import Any

from lstm_embed.frontends.keras.layers import gru, lstm, simple_rnn
from lstm_embed.frontends.keras.layers.options import require_options
from lstm_embed.frontends.keras.spec import LayerSpec
from lstm_embed.kinds.base import FloatLayer, IRError, Unsupported
from lstm_embed.kinds.stack import StackedLayers

CELL_LAYERS = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}
# the reader of each cell's layer
LAYER_READERS = {"LSTM": lstm.read, "GRU": gru.read, "SimpleRNN": simple_rnn.read}
# RNN options a cell's layer takes as its own
PASSED_ON = ("return_sequences", "return_state", "go_backwards", "stateful",
             "zero_output_for_mask", "time_major")  # fmt: skip


def _cell(entry: Any, where: str) -> tuple[str, dict[str, Any]]:
    """(class name, config) of a serialized built-in cell; Unsupported for anything else."""
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise Unsupported([f"{where} is not a serialized Keras cell"])
    name = str(entry.get("class_name"))
    module = str(entry.get("module") or "keras.layers")
    if entry.get("registered_name") or not module.startswith("keras"):
        raise Unsupported([f"{where}: custom cell class '{name}' is not supported (supported:"
                           f" {', '.join(CELL_LAYERS)}, StackedRNNCells of them)"])  # fmt: skip
    if name not in CELL_LAYERS:
        raise Unsupported([f"{where}: cell {name} is not supported (supported:"
                           f" {', '.join(CELL_LAYERS)}, StackedRNNCells of them)"])  # fmt: skip
    return name, entry["config"]


def _cell_weight_count(config: dict[str, Any]) -> int:
    return 2 + bool(config.get("use_bias", True))


def read(spec: LayerSpec, input_size: int) -> FloatLayer:
    config = spec.config
    reasons = require_options(config, {"return_state": ((False,), False)})
    cell = config.get("cell")
    stacked = isinstance(cell, dict) and cell.get("class_name") == "StackedRNNCells"
    if stacked:
        entries = (cell.get("config") or {}).get("cells")
        if not isinstance(entries, list) or not entries:
            raise Unsupported(["StackedRNNCells without cells"])
    else:
        entries = [cell]
    cells = []
    for k, entry in enumerate(entries):
        try:
            cells.append(_cell(entry, f"cell {k}" if stacked else "cell"))
        except Unsupported as error:
            reasons += error.reasons
    if reasons:
        raise Unsupported(reasons)
    counts = [_cell_weight_count(c) for _, c in cells]
    if sum(counts) != len(spec.weights):
        raise IRError(
            f"layer '{spec.name}': {len(spec.weights)} weight arrays in the file; its cells"
            f" have {sum(counts)}"
        )
    layers, size, start = [], input_size, 0
    for k, ((class_name, cell_config), count) in enumerate(zip(cells, counts, strict=True)):
        options = {key: config[key] for key in PASSED_ON if key in config}
        last = k == len(cells) - 1
        if not last:
            options["return_sequences"] = True
        if k > 0:
            options["go_backwards"] = False
        name = spec.name if not stacked else f"{spec.name}_{k}"
        layer_spec = LayerSpec(
            name=name,
            class_name=CELL_LAYERS[class_name],
            config={**cell_config, **options, "name": name},
            weights=spec.weights[start : start + count],
        )
        layer = LAYER_READERS[CELL_LAYERS[class_name]](layer_spec, size)
        layers.append(layer)
        size, start = layer.output_size, start + count
    if not stacked:
        return layers[0]
    kinds = ", ".join(c for c, _ in cells)
    return StackedLayers(spec.name, input_size, tuple(layers), f"RNN(StackedRNNCells({kinds}))")
