"""Whether the calibrated ranges can be trusted: what of some data lies beyond a quantized
model's ranges (it saturates on the device), the held-out part of the calibration set checked
against ranges fitted on the rest, validation data, and the warnings convert prints."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from lstm_embed.ir.float_model import forward
from lstm_embed.kinds.base import QuantizeError
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize import rounding
from lstm_embed.quantize.calibration import HOLDOUT_EVERY, decisions, held_out_split
from lstm_embed.quantize.qir import QModel
from lstm_embed.quantize.quantizer import check_calibration, quantize

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


def input_clipping(qmodel: QModel, x: np.ndarray) -> dict[str, Any]:
    """How many input values lie beyond the int16 input range (they saturate on the device)."""
    limit = qmodel.input_scale.astype(np.float64) * 32767
    beyond = np.abs(np.asarray(x, np.float64)) > limit * (1 + 1e-6)  # float32 scale rounding
    return {
        "limit_per_feature": [float(v) for v in limit],
        "clipped_values": int(np.sum(beyond)),
        "values": int(beyond.size),
    }


def range_check(model: Any, qmodel: Any, x: np.ndarray) -> dict[str, Any]:
    """What of ``x`` lies beyond ``qmodel``'s ranges and saturates on the device: input values
    beyond the int16 input range, and per layer (float forward pass of ``model``) outputs more
    than BEYOND_LSB past their int16 range and cell values past the cell's range."""
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
        if trace.cell is not None:  # a kind with a cell state (LSTM) says where it saturates
            cells = qlayer.cell_beyond(trace.cell)
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
    fit, held = held_out_split(len(x))
    if len(held) == 0 or model.stateful:
        return None
    qmodel = quantize(model, x[fit], replace(options, rounding=rounding.NEAREST))
    return {"fitted_on": len(fit), **range_check(model, qmodel, x[held])}


def checked_validation(model: Any, x: np.ndarray) -> np.ndarray:
    """Validation inputs, checked like calibration inputs (the message says which)."""
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
