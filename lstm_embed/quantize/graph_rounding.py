"""Weight rounding of a graph: the chain's rule (``calibration.LayerRounding``) node by node.

Error feedback (``gptq``) fits each node's weights on the integer values its input tensor has
when every node before it is quantized the same way (the tensors of the integer graph on the
calibration data, as the C computes them). ``auto`` decides as a chain does, on data the
feedback was not fitted on: every calibration sequence held out once, in FOLDS graphs each
fitted on the other folds; error feedback is kept when on those held-out outputs it is no worse
than nearest in the max and the mean abs error of every model output against the float graph
(and changes no more decisions of a one-output softmax head), on CONFIDENCE of the bootstrap
resamples (``calibration.win_share``); otherwise every node keeps nearest rounding. The scales
do not depend on the rounding, so either set of nodes fits the same graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from lstm_embed.ir.graph import Graph, Node
from lstm_embed.kinds.base import QuantContext
from lstm_embed.kinds.common import run_window
from lstm_embed.kinds.masking import masked_window
from lstm_embed.quantize import calibration, rounding


def node_output(
    qlayer: Any,
    node: Node,
    values: dict[str, np.ndarray],
    tables: dict,
    traces: list | None = None,
) -> None:
    """Run one quantized node (``qlayer``, in ``node``'s place) on the integer tensors
    ``values`` and add its outputs there (its mask and returned states too), in the C's
    order; its step traces go to ``traces``. The one integer execution of a graph node: the
    reference (``reference.graph_run``) and the rounding's fits both run it."""
    xs = [values[t] for t in node.inputs]
    if node.mask and not qlayer.recurrent:  # a layer that reads the mask itself
        values[node.outputs[0]] = qlayer.window_masked(xs, values[node.mask], tables)
        return
    if qlayer.arity is None:
        values[node.outputs[0]] = qlayer.apply(xs, tables)
        return
    state = qlayer.initial_state(len(xs[0]))
    if node.mask:
        y = masked_window(qlayer, xs[0], values[node.mask], state, tables, traces)
    else:
        y = run_window(qlayer, xs[0], state, tables, traces)
    values[node.outputs[0]] = y
    if node.mask_output:
        values[node.mask_output] = qlayer.integer_mask(xs[0])
    if node.returns_state:
        for name, value in zip(node.outputs[1:], qlayer.final_state(state), strict=True):
            values[name] = value


@dataclass
class GraphRounding:
    """``quantize(node, ctx)`` for each node in topological order, then ``finish(qlayers)``."""

    option: str
    method: str
    graph: Graph
    tables: dict
    note: str = ""
    values: dict[str, np.ndarray] = field(default_factory=dict)  # the fitted graph's tensors
    nearest_values: dict[str, np.ndarray] = field(default_factory=dict)
    fold_values: list[dict[str, np.ndarray]] = field(default_factory=list)
    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    nearest_layers: list[Any] = field(default_factory=list)
    held_out: dict[str, Any] = field(default_factory=dict)
    kept: str = rounding.NEAREST

    @classmethod
    def start(cls, graph: Graph, x_q: dict[str, np.ndarray], options: Any) -> GraphRounding:
        """``x_q``: the model inputs quantized as the C does, by name."""
        option = getattr(options, "rounding", rounding.NEAREST)
        if option not in rounding.OPTIONS:
            raise ValueError(f"rounding {option!r} is not one of {', '.join(rounding.OPTIONS)}")
        rows = len(next(iter(x_q.values())))
        method, note = (rounding.NEAREST, "") if option == rounding.NEAREST else (
            rounding.ERROR_FEEDBACK, "")  # fmt: skip
        needed = calibration.FOLDS * calibration.MIN_AUTO_SEQUENCES
        if option == rounding.AUTO and rows < needed:
            method = rounding.NEAREST
            note = (f"{rows} calibration sequences: auto needs {needed} ({calibration.FOLDS}"
                    f" folds of {calibration.MIN_AUTO_SEQUENCES}); nearest rounding")  # fmt: skip
        if method == rounding.NEAREST:
            return cls(option, method, graph, {}, note)
        tables = calibration.activation_tables(options.log2_table_entries(len(graph.nodes)))
        ints = {k: np.asarray(v, np.int64) for k, v in x_q.items()}
        result = cls(option, method, graph, tables, note, dict(ints), dict(ints))
        if option == rounding.AUTO:
            result.folds = calibration.folds(rows)
            result.fold_values = [dict(ints) for _ in result.folds]
        return result

    def quantize(self, node: Node, ctx: QuantContext) -> Any:
        nearest = node.layer.quantize(ctx)
        self.nearest_layers.append(nearest)
        if self.method == rounding.NEAREST:
            return nearest
        node_output(nearest, node, self.nearest_values, self.tables)
        feedback = replace(ctx, rounding=rounding.ERROR_FEEDBACK)
        source = node.inputs[0]
        fitted = node.layer.quantize(replace(feedback, quantized_input=self.values[source]))
        node_output(fitted, node, self.values, self.tables)
        for (fit, _), values in zip(self.folds, self.fold_values, strict=True):
            part = node.layer.quantize(replace(feedback, quantized_input=values[source], fit=fit))
            node_output(part, node, values, self.tables)
        return fitted

    def finish(self, qlayers: list[Any], scales: dict, float_values: dict) -> list[Any]:
        """The quantized layers to keep (``qlayers``: what ``quantize`` returned)."""
        if self.method == rounding.NEAREST:
            return qlayers
        if not self.folds:
            self.kept = rounding.ERROR_FEEDBACK
            return qlayers
        outputs = self.graph.outputs
        target = _joined([float_values[t] for t in outputs])
        nearest = _joined([self.nearest_values[t] * scales[t] for t in outputs])
        feedback = np.empty_like(target)
        for (_, held), values in zip(self.folds, self.fold_values, strict=True):
            feedback[held] = _joined([values[t] * scales[t] for t in outputs])[held]
        head = self._head()
        self.held_out = {"on": "held_out", "sequences": len(target), "folds": len(self.folds)}
        per_sequence = {}
        for name, y in ((rounding.NEAREST, nearest), (rounding.ERROR_FEEDBACK, feedback)):
            self.held_out[name] = calibration.output_errors(head, y, target)
            per_sequence[name] = calibration.sequence_errors(head, y, target)
        share = calibration.win_share(
            per_sequence[rounding.NEAREST], per_sequence[rounding.ERROR_FEEDBACK]
        )
        self.held_out["resamples_won"] = share
        better = share >= calibration.CONFIDENCE and calibration.prefer_error_feedback(
            self.held_out[rounding.NEAREST], self.held_out[rounding.ERROR_FEEDBACK]
        )
        self.kept = rounding.ERROR_FEEDBACK if better else rounding.NEAREST
        return qlayers if better else self.nearest_layers

    def _head(self) -> Any:
        """What ``calibration.decisions`` reads: the layer producing a single output (its
        softmax or sigmoid decides); several outputs are compared as values only."""
        if len(self.graph.outputs) != 1:
            return SimpleNamespace(layers=(None,))
        node, index = self.graph.producer(self.graph.outputs[0])
        return SimpleNamespace(layers=(node.layer if node is not None and index == 0 else None,))

    def record(self) -> dict[str, Any]:
        result: dict[str, Any] = {"option": self.option, "kept": self.kept}
        if self.note:
            result["note"] = self.note
        if self.held_out:
            result["held_out"] = self.held_out
        return result


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    """Every output of each sequence side by side, (N, values)."""
    return np.concatenate([np.asarray(a, np.float64).reshape(len(a), -1) for a in arrays], axis=1)
