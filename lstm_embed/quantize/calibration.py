"""What the calibration data is used for beyond the ranges.

- ``LayerRounding``: the weight rounding of each layer (``rounding``), layer by layer in chain
  order so that each layer's rounding sees the inputs its already quantized predecessors give
  on the calibration data; ``auto`` keeps error feedback only when it does no worse than
  nearest on data it was not fitted on (the validation data, else every calibration sequence
  held out once in FOLDS folds), on CONFIDENCE of the bootstrap resamples of that data.
- ``decisions``, ``output_errors``: what the quantized model decides and how far it is off,
  which ``auto`` and ``quantize.trust`` (whether the ranges can be trusted) both use.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from lstm_embed.kinds.base import FloatLayer, QLayer, QuantContext
from lstm_embed.kinds.masking import masking_index
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize import rounding

# Every 4th calibration sequence is held out (25%): spread over the set, so an ordered set (by
# class, by time) still has every part on both sides.
HOLDOUT_EVERY = 4
# auto holds each calibration sequence out once, in FOLDS folds of at least this many
# sequences (fewer: nearest rounding, unless --validation gives the data to decide on)
FOLDS = 4
MIN_AUTO_SEQUENCES = 8
# auto keeps error feedback when it is no worse than nearest (max, mean, changed decisions) on
# at least CONFIDENCE of RESAMPLES bootstrap resamples of the sequences it decides on: the max
# over a new set of sequences is a draw from the tail, so winning on the one set seen is not
# enough. On the zoo (docs/accuracy-zoo.md), of the models whose test split --rounding gptq
# loses to nearest, the one that won the most resamples won 90% (activity_stacked: 1.55x the
# max, on its held-out sequences 0.64x); every model kept won 96-100%.
CONFIDENCE = 0.95
RESAMPLES = 1000
NEAREST_QMODEL_FILE = "qmodel_nearest.npz"  # beside qmodel.npz when the rounding differs


class CalibrationWarning(UserWarning):
    """Calibration that cannot be trusted (convert also records it in report["warnings"])."""


def held_out_split(count: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices) of ``count`` sequences: every HOLDOUT_EVERY-th held out,
    starting with the last one of the first group (one sequence: nothing held out)."""
    index = np.arange(count)
    held = (index % HOLDOUT_EVERY) == HOLDOUT_EVERY - 1
    return index[~held], index[held]


def activation_tables(log2_entries: int) -> dict[str, fp.ActivationTable]:
    return {name: fp.build_table(name, log2_entries) for name in fp.TABLE_FUNCTIONS}


def run_layer(qlayer: QLayer, layer: FloatLayer, x_q: np.ndarray, tables: dict) -> np.ndarray:
    """The integer outputs of one quantized layer on its integer inputs, (N, T, m) or (N, m),
    shaped as its float layer's ``chain_output`` (the last step when it drops the timesteps)."""
    # as the reference runs it: go_backwards, stateful streams, Bidirectional's whole window
    from lstm_embed.kinds.common import run_window

    x_q = np.asarray(x_q, np.int64)
    state = qlayer.initial_state(1 if qlayer.stateful else len(x_q))
    return run_window(qlayer, x_q, state, tables)


def float_rest(layers: tuple[FloatLayer, ...], y: np.ndarray) -> np.ndarray:
    for layer in layers:
        y = layer.chain_output(layer.forward(y))
    return y


def folds(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit indices, held-out indices) of ``count`` sequences for each of FOLDS folds: fold k
    holds out every sequence i with i % FOLDS == k, so each is held out once."""
    index = np.arange(count)
    return [(index[index % FOLDS != k], index[index % FOLDS == k]) for k in range(FOLDS)]


def decisions(model: Any, y: np.ndarray) -> np.ndarray | None:
    """What a classifier head decides from its outputs y (N, ...): the class (softmax) or each
    label (sigmoid), per sequence; None for other heads (their outputs are the answer)."""
    from lstm_embed.kinds.activation import ActivationLayer
    from lstm_embed.kinds.dense import DenseLayer

    last = model.layers[-1]
    function = (
        last.activation if isinstance(last, DenseLayer)
        else last.function if isinstance(last, ActivationLayer) else None
    )  # fmt: skip
    if function == "softmax" and y.shape[-1] > 1:
        return np.argmax(y, axis=-1).reshape(len(y), -1)
    if function == "sigmoid":
        return (y > 0.5).reshape(len(y), -1)
    return None


def output_errors(model: Any, y: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Max and mean abs error of outputs y against the float model's, and (classifier heads)
    how many sequences decide otherwise."""
    per_sequence = sequence_errors(model, y, target)
    result = {
        "max_abs_error": float(per_sequence["max"].max()),
        "mean_abs_error": float(per_sequence["mean"].mean()),
    }
    if "changed" in per_sequence:
        result["changed"] = int(per_sequence["changed"].sum())
    return result


def sequence_errors(model: Any, y: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per sequence: max and mean abs error against the float model's outputs, and (classifier
    heads) whether it decides otherwise."""
    error = np.abs(y - target).reshape(len(y), -1)
    result = {"max": error.max(axis=1), "mean": error.mean(axis=1)}
    mine, theirs = decisions(model, y), decisions(model, target)
    if mine is not None and theirs is not None:
        result["changed"] = np.any(mine != theirs, axis=1).astype(np.int64)
    return result


def win_share(nearest: dict[str, np.ndarray], feedback: dict[str, np.ndarray]) -> float:
    """The share of bootstrap resamples of the sequences (``sequence_errors`` of each rounding)
    on which error feedback is no worse than nearest in the max and the mean abs error and in
    changed decisions (fixed seed: the same answer every run)."""
    rng = np.random.default_rng(0)
    count = len(nearest["max"])
    index = rng.integers(0, count, (RESAMPLES, count))
    wins = (feedback["max"][index].max(axis=1) <= nearest["max"][index].max(axis=1)) & (
        feedback["mean"][index].sum(axis=1) <= nearest["mean"][index].sum(axis=1)
    )
    if "changed" in nearest:
        wins &= feedback["changed"][index].sum(axis=1) <= nearest["changed"][index].sum(axis=1)
    return float(np.mean(wins))


@dataclass
class LayerRounding:
    """The quantizer's weight rounding: ``quantize(index, layer, ctx)`` for each layer in chain
    order, then ``finish(layers)`` for the layers to keep.

    Error feedback (``rounding``) fits each layer on the integer outputs of the layers before
    it, already rounded the same way. ``auto`` decides between error feedback and nearest
    rounding on data the feedback was not fitted on: the validation data when given (the
    chain fitted on every calibration sequence), else the calibration sequences themselves,
    each held out once: FOLDS chains, each fitted on all sequences but one fold and run on that
    fold. Error feedback, fitted on every sequence, is kept when on that data it is no worse
    than nearest rounding in the mean and the max abs error of the model output against the
    float model and changes no more of a classifier head's decisions, and so on at least
    CONFIDENCE of the bootstrap resamples of those sequences (``win_share``); otherwise
    nearest.
    ``nearest_layers`` (the same scales: nearest rounding depends on the float ranges only)
    serve the comparison and ``compare --report``.
    """

    option: str  # as asked: nearest, gptq or auto
    method: str  # what the chain is rounded with: nearest or gptq
    layers: tuple[FloatLayer, ...]
    tables: dict
    x_q: np.ndarray | None = None  # the next layer's integer input, every sequence
    model: Any = None
    folds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    fold_chains: list[np.ndarray] = field(default_factory=list)  # x_q through each fold's chain
    x_q_check: np.ndarray | None = None  # the model's integer input where auto decides
    target_check: np.ndarray | None = None  # the float model's output there
    check_on: str = ""  # "validation" or "held_out"
    nearest_layers: list[QLayer] = field(default_factory=list)
    rounded_layers: list[QLayer] = field(default_factory=list)
    note: str = ""
    held_out: dict[str, Any] = field(default_factory=dict)
    kept: str = rounding.NEAREST
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # what auto compared

    @classmethod
    def start(
        cls,
        model: Any,
        x: np.ndarray,
        input_inv_scale: np.ndarray,
        traces: list,
        options: Any,
        validation: np.ndarray | None = None,
    ) -> LayerRounding:
        option = getattr(options, "rounding", rounding.NEAREST)
        if option not in rounding.OPTIONS:
            raise ValueError(f"rounding {option!r} is not one of {', '.join(rounding.OPTIONS)}")
        method, note = option, ""
        if option == rounding.AUTO:
            method = rounding.ERROR_FEEDBACK
            if model.stateful:
                method, note = rounding.NEAREST, "stateful: the rows are one stream; nearest"
            elif masking_index(model.layers) is not None:
                # the chain below runs each layer without the mask: its statistics and outputs
                # would be those of the padding too (the zoo's Masking models, held out: gptq's
                # mean error 1.3-1.6x nearest's; on their test splits 165-640x)
                method, note = rounding.NEAREST, "Masking: nearest"
            elif validation is None and len(x) < FOLDS * MIN_AUTO_SEQUENCES:
                method = rounding.NEAREST
                plural = "s" if len(x) != 1 else ""
                note = (
                    f"{len(x)} calibration sequence{plural}: auto needs"
                    f" {FOLDS * MIN_AUTO_SEQUENCES} ({FOLDS} folds of {MIN_AUTO_SEQUENCES}) or"
                    " --validation; nearest rounding"
                )
        if method == rounding.NEAREST:
            return cls(option, method, model.layers, {}, note=note)
        x_q = fp.quantize_input(x, input_inv_scale)
        tables = activation_tables(options.log2_table_entries(len(model.layers)))
        result = cls(option, method, model.layers, tables, x_q, model)
        if option == rounding.AUTO:
            if validation is not None:
                from lstm_embed.ir.float_model import forward

                result.check_on = "validation"
                result.x_q_check = fp.quantize_input(validation, input_inv_scale)
                result.target_check = forward(model, np.asarray(validation, np.float64))[0]
            else:
                result.check_on = "held_out"
                result.folds = folds(len(x))
                result.fold_chains = [x_q] * FOLDS
                result.x_q_check = x_q
                result.target_check = model.layers[-1].chain_output(traces[-1])
        return result

    def quantize(self, index: int, layer: FloatLayer, ctx: QuantContext) -> QLayer:
        nearest = layer.quantize(ctx)
        self.nearest_layers.append(nearest)
        if self.method == rounding.NEAREST:
            return nearest
        feedback = replace(ctx, rounding=rounding.ERROR_FEEDBACK)
        fitted = layer.quantize(replace(feedback, quantized_input=self.x_q))
        self.rounded_layers.append(fitted)
        if index + 1 < len(self.layers):
            self.x_q = run_layer(fitted, layer, self.x_q, self.tables)
        for k, (fit, _) in enumerate(self.folds):
            chain = self.fold_chains[k]
            part = layer.quantize(replace(feedback, quantized_input=chain, fit=fit))
            self.fold_chains[k] = run_layer(part, layer, chain, self.tables)
        return fitted

    def run(self, qlayers: list[QLayer], x_q: np.ndarray) -> np.ndarray:
        """The integer chain ``qlayers`` on x_q, in real units."""
        y = x_q
        for layer, qlayer in zip(self.layers, qlayers, strict=True):
            y = run_layer(qlayer, layer, y, self.tables)
        return y * qlayers[-1].output_feature_scale

    def finish(self, layers: list[QLayer]) -> list[QLayer]:
        """The quantized layers to keep (``layers``: what ``quantize`` returned)."""
        if self.method == rounding.NEAREST:
            return layers
        if self.x_q_check is None:
            self.kept = rounding.ERROR_FEEDBACK
            return layers
        target = self.target_check
        if self.check_on == "validation":
            feedback = self.run(layers, self.x_q_check)
        else:  # each sequence from the chain fitted without it
            feedback = np.empty_like(target)
            scale = self.nearest_layers[-1].output_feature_scale
            for (_, held), chain in zip(self.folds, self.fold_chains, strict=True):
                feedback[held] = chain[held] * scale
        outputs = {
            rounding.NEAREST: self.run(self.nearest_layers, self.x_q_check),
            rounding.ERROR_FEEDBACK: feedback,
        }
        self.outputs = {**outputs, "float": target}  # for scripts that study the choice
        self.held_out = {"on": self.check_on, "sequences": len(target)}
        if self.check_on == "held_out":
            self.held_out["folds"] = len(self.folds)
        per_sequence = {}
        for name, y in outputs.items():
            self.held_out[name] = output_errors(self.model, y, target)
            per_sequence[name] = sequence_errors(self.model, y, target)
        share = win_share(per_sequence[rounding.NEAREST], per_sequence[rounding.ERROR_FEEDBACK])
        self.held_out["resamples_won"] = share
        better = share >= CONFIDENCE and prefer_error_feedback(
            self.held_out[rounding.NEAREST], self.held_out[rounding.ERROR_FEEDBACK]
        )
        self.kept = rounding.ERROR_FEEDBACK if better else rounding.NEAREST
        return layers if better else self.nearest_layers

    def record(self) -> dict[str, Any]:
        """For report.json: what was asked, what was kept, and (auto) the figures it decided
        on."""
        result: dict[str, Any] = {"option": self.option, "kept": self.kept}
        if self.note:
            result["note"] = self.note
        if self.held_out:
            result["held_out"] = self.held_out
        return result


def decided_on(held: dict[str, Any]) -> str:
    """Where auto compared the roundings, in words (for the CLI and compare --report)."""
    if held["on"] == "validation":
        return f"{held['sequences']} validation sequences"
    return (
        f"the {held['sequences']} calibration sequences, each held out of gptq's fit once"
        f" ({held['folds']} folds)"
    )


def prefer_error_feedback(nearest: dict[str, float], feedback: dict[str, float]) -> bool:
    """Error feedback is kept when it is no worse than nearest in both the mean and the max abs
    error of the model output, and changes no more decisions of a classifier head: so auto is
    never worse than nearest on the data it decides on."""
    return (
        feedback["mean_abs_error"] <= nearest["mean_abs_error"]
        and feedback["max_abs_error"] <= nearest["max_abs_error"]
        and feedback.get("changed", 0) <= nearest.get("changed", 0)
    )
