"""What the calibration data is used for beyond the ranges, and whether it can be trusted.

- ``LayerRounding``: the weight rounding of each layer (``rounding``), layer by layer in chain
  order so that each layer's rounding sees the inputs its already quantized predecessors give
  on the calibration data; ``auto`` keeps error feedback only when it does no worse than
  nearest on data it was not fitted on (the validation data, else every calibration sequence
  held out once in FOLDS folds), on CONFIDENCE of the bootstrap resamples of that data.
- ``range_check``: what of some data lies beyond a quantized model's ranges (clipped inputs,
  layer outputs beyond their int16 range, saturated cells); ``held_out_check`` runs it on the
  held-out part against ranges calibrated on the rest, ``validation`` on separate data, and
  ``trust_warnings`` turns a small calibration set, or data beyond the ranges, into warnings
  with the numbers and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from lstm_embed.kinds.base import FloatLayer, QLayer, QuantContext, QuantizeError
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
# Ranges are maxima: a new sequence exceeds the maximum of N exchangeable ones with probability
# up to 1/(N + 1) per feature, before headroom. Below 100 sequences (over 1%), or without the
# 25 held out to check them against, the ranges are not to be trusted.
MIN_TRUSTED_SEQUENCES = 100
# The held-out part warns when more than 1% of its sequences leave a range calibrated on the
# rest: about as many new sequences would. (The digits sample: 1 of its 336 held-out images has
# a pixel in a column that only a few others mark; its test images clip nowhere.) Validation
# data warns on any sequence: it is the data the model is to see.
HELD_OUT_BEYOND_SHARE = 0.01
# A layer output counts as beyond its range when it lies more than one LSB past the int16
# limit: Q0.15 formats hold |y| <= 32767/32768, and h or a probability of 1.0 saturating by one
# LSB costs no more than the format's own rounding.
BEYOND_LSB = 1.0

# --validation warns when the quantized model is off by more than this share of the output
# range (the float model's on the validation data) anywhere: beyond what int8 weights cost on
# the zoo's models (docs/accuracy-zoo.md) that converted well
VALIDATION_ERROR_PCT = 5.0

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


# ---------------------------------------------------------------------------------------------
# Whether the calibrated ranges can be trusted


def range_check(model: Any, qmodel: Any, x: np.ndarray) -> dict[str, Any]:
    """What of ``x`` lies beyond ``qmodel``'s ranges and saturates on the device: input values
    beyond the int16 input range, and per layer (float forward pass of ``model``) outputs more
    than BEYOND_LSB past their int16 range and cell values past the cell's range."""
    from lstm_embed.emit.report import input_clipping
    from lstm_embed.ir.float_model import forward

    x = np.asarray(x, np.float32)
    clip = input_clipping(qmodel, x)
    limit = qmodel.input_scale.astype(np.float64) * fp.INT16_MAX * (1 + 1e-6)  # as clip's

    def per_sequence(beyond: np.ndarray) -> np.ndarray:
        return np.any(beyond.reshape(len(x), -1), axis=1)

    clipped = per_sequence(np.abs(x) > limit)
    affected = clipped.copy()  # sequences with anything beyond a range
    _, traces = forward(model, x.astype(np.float64))
    layers = []
    for layer, qlayer, trace in zip(model.layers, qmodel.layers, traces, strict=True):
        limit = (fp.INT16_MAX + BEYOND_LSB) * np.asarray(qlayer.output_feature_scale)
        beyond = np.abs(trace.output) > limit
        row = {"layer": layer.name, "outputs_beyond": int(np.sum(beyond))}
        affected |= per_sequence(beyond)
        cell_limits = getattr(qlayer, "cell_limits", None)
        if trace.cell is not None and cell_limits is not None:  # LSTM cell state
            cells = np.abs(trace.cell) > cell_limits[1] * 2.0**-qlayer.cell_stored_frac
            row["cells_beyond"] = int(np.sum(cells))
            affected |= per_sequence(cells)
        row["values"] = int(trace.output.size)
        layers.append(row)
    return {
        "sequences": len(x),
        "inputs_clipped": clip["clipped_values"],
        "input_values": clip["values"],
        "sequences_clipped": int(np.sum(clipped)),
        "sequences_beyond": int(np.sum(affected)),
        "layers": layers,
    }


def held_out_check(model: Any, x: np.ndarray, options: Any) -> dict[str, Any] | None:
    """The held-out part of the calibration set against ranges calibrated on the rest (nearest
    rounding: only the ranges matter); None when nothing can be held out."""
    from lstm_embed.quantize.quantizer import quantize

    fit, held = held_out_split(len(x))
    if len(held) == 0 or model.stateful:
        return None
    qmodel = quantize(model, x[fit], replace(options, rounding=rounding.NEAREST))
    return {"fitted_on": len(fit), **range_check(model, qmodel, x[held])}


def checked_validation(model: Any, x: np.ndarray) -> np.ndarray:
    """Validation inputs, checked like calibration inputs (the message says which)."""
    from lstm_embed.quantize.quantizer import check_calibration

    try:
        return check_calibration(model, x)
    except QuantizeError as error:
        raise QuantizeError(str(error).replace("calibration data", "validation data")) from error


def _beyond_text(check: dict[str, Any], where: str) -> str:
    parts = []
    if check["inputs_clipped"]:
        share = 100 * check["inputs_clipped"] / max(check["input_values"], 1)
        parts.append(
            f"{check['inputs_clipped']} of {check['input_values']} input values ({share:.2g}%, in"
            f" {check['sequences_clipped']} of {check['sequences']} sequences) {where} lie beyond"
            " the input range and saturate"
        )
    for la in check["layers"]:
        if la["outputs_beyond"]:
            parts.append(f"{la['outputs_beyond']} outputs of layer '{la['layer']}' saturate")
        if la.get("cells_beyond"):
            parts.append(f"{la['cells_beyond']} cell values of layer '{la['layer']}' saturate")
    return "; ".join(parts)


def changed_decisions(model: Any, measured: np.ndarray, expected: np.ndarray) -> dict[str, int]:
    """{"changed": sequences whose classifier decision differs} ({} for other heads)."""
    mine, theirs = decisions(model, measured), decisions(model, expected)
    if mine is None or theirs is None:
        return {}
    return {"changed": int(np.sum(np.any(mine != theirs, axis=1)))}


def accuracy_warning(validation: dict[str, Any], rounding_record: dict | None) -> str | None:
    """A warning when the quantized model on the validation data is more than
    VALIDATION_ERROR_PCT of the output range off, or decides a sequence otherwise, with what to
    try (what is not already in use)."""
    error = validation["error"]
    changed = validation.get("changed", 0)
    pct = error["max_abs_error_pct_of_range"]
    if pct <= VALIDATION_ERROR_PCT and not changed:
        return None
    found = []
    if pct > VALIDATION_ERROR_PCT:
        found.append(
            f"max abs error {error['max_abs_error']:.3g}, {pct:.1f}% of the output range (over"
            f" {VALIDATION_ERROR_PCT:g}%)"
        )
    if changed:
        found.append(
            f"{changed} of {validation['samples']} sequences decided otherwise (class or label)"
        )
    record = rounding_record or {}
    # nearest rounding is worth a try unless in use, or measured worse on this very data
    decided_here = record.get("held_out", {}).get("on") == "validation"
    try_nearest = record.get("kept", rounding.NEAREST) != rounding.NEAREST and not decided_here
    tries = [
        "--weights int16 (twice the weight flash; or per layer: --weights int16,int8,...)",
        "more calibration data (a few hundred sequences of real inputs)",
        "--table-log2-entries 8",
    ]
    if try_nearest:
        tries.insert(0, "--rounding nearest")
    return (
        f"warning: on the {validation['samples']} validation sequences vs"
        f" {validation['oracle']}: {'; '.join(found)}; try " + ", ".join(tries)
    )


def trust_warnings(
    samples: int,
    held_out: dict[str, Any] | None,
    validation: dict[str, Any] | None,
    rounding_record: dict | None = None,
) -> list[str]:
    """Warnings (each starting with "warning:") about calibration that cannot be trusted, and
    about a quantized model too far from the float model on the validation data."""
    warnings = []
    if samples < MIN_TRUSTED_SEQUENCES:
        warnings.append(
            f"warning: the calibration set has {samples} sequence{'s' if samples != 1 else ''};"
            f" ranges calibrated on fewer than {MIN_TRUSTED_SEQUENCES} are not to be trusted"
            f" (a new sequence can exceed the maximum of {samples} with probability up to"
            f" 1/{samples + 1}, and inputs beyond the ranges saturate): calibrate on a few"
            " hundred sequences of real inputs (e.g. the training inputs) and check with"
            " --validation X.npy"
        )
    if held_out is not None and (
        held_out["sequences_beyond"] > HELD_OUT_BEYOND_SHARE * held_out["sequences"]
    ):
        where = (
            f"of the {held_out['sequences']} held-out calibration sequences (every"
            f" {HOLDOUT_EVERY}th), against ranges calibrated on the other {held_out['fitted_on']},"
        )
        warnings.append(
            f"warning: {_beyond_text(held_out, where)}: the calibration set does not cover its"
            " own variation, so other inputs will saturate too; calibrate on more sequences,"
            " or declare the input range with --input-range"
        )
    if validation is not None and validation["ranges"]["sequences_beyond"]:
        error = validation["error"]
        warnings.append(
            f"warning: {_beyond_text(validation['ranges'], 'of the validation data')}"
            f" (max abs error vs {validation['oracle']} {error['max_abs_error']:.3g},"
            f" {error['max_abs_error_pct_of_range']:.1f}% of the output range, mean"
            f" {error['mean_abs_error']:.3g}): calibrate on data that covers these inputs, or"
            " declare the input range with --input-range"
        )
    if validation is not None:
        text = accuracy_warning(validation, rounding_record)
        if text:
            warnings.append(text)
    return warnings
