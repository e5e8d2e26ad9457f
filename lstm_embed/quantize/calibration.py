"""What the calibration data is used for beyond the ranges, and whether it can be trusted.

- ``LayerRounding``: the weight rounding of each layer (``rounding``), layer by layer in chain
  order so that each layer's rounding sees the inputs its already quantized predecessors give
  on the calibration data; ``auto`` holds out every HOLDOUT_EVERY-th sequence and keeps error
  feedback only when, fitted on the others, it does no worse than nearest there.
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
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize import rounding

# Every 4th calibration sequence is held out (25%): spread over the set, so an ordered set (by
# class, by time) still has every part on both sides.
HOLDOUT_EVERY = 4
# auto needs this many sequences on each side to compare roundings (fewer: nearest rounding)
MIN_AUTO_SEQUENCES = 8
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


@dataclass
class LayerRounding:
    """The quantizer's weight rounding: ``quantize(index, layer, ctx)`` for each layer in chain
    order, then ``finish(layers)`` for the layers to keep.

    Error feedback (``rounding``) fits each layer on the integer outputs of the layers before
    it, already rounded the same way. ``auto`` also runs that chain fitted on the fit part alone
    (every sequence but the held-out ones), and keeps error feedback, refitted on every
    sequence, when the model output of the fit-part chain on the held-out sequences is no worse
    than nearest rounding's in both mean and max abs error against the float model; otherwise
    nearest. ``nearest_layers`` (the same scales: nearest rounding depends on the float ranges
    only) serve the comparison in ``compare --report``.
    """

    option: str  # as asked: nearest, gptq or auto
    method: str  # what the chain is rounded with: nearest or gptq
    layers: tuple[FloatLayer, ...]
    tables: dict
    fit: np.ndarray
    held: np.ndarray
    x_q: np.ndarray | None = None  # the next layer's integer input, every sequence
    x_q_fit_chain: np.ndarray | None = None  # the same through the fit-part chain (auto)
    x_q_held: np.ndarray | None = None  # the model's integer input on the held-out part
    target_held: np.ndarray | None = None  # the float model's output there
    nearest_layers: list[QLayer] = field(default_factory=list)
    rounded_layers: list[QLayer] = field(default_factory=list)
    note: str = ""
    held_out: dict[str, Any] = field(default_factory=dict)
    kept: str = rounding.NEAREST

    @classmethod
    def start(
        cls, model: Any, x: np.ndarray, input_inv_scale: np.ndarray, traces: list, options: Any
    ) -> LayerRounding:
        option = getattr(options, "rounding", rounding.NEAREST)
        if option not in rounding.OPTIONS:
            raise ValueError(f"rounding {option!r} is not one of {', '.join(rounding.OPTIONS)}")
        fit, held = held_out_split(len(x))
        method, note = option, ""
        if option == rounding.AUTO:
            method = rounding.ERROR_FEEDBACK
            if model.stateful:
                method, note = rounding.NEAREST, "stateful: the rows are one stream; nearest"
            elif min(len(fit), len(held)) < MIN_AUTO_SEQUENCES:
                method = rounding.NEAREST
                plural = "s" if len(x) != 1 else ""
                note = (
                    f"{len(x)} calibration sequence{plural}: auto needs"
                    f" {HOLDOUT_EVERY * MIN_AUTO_SEQUENCES} (every {HOLDOUT_EVERY}th held out);"
                    " nearest rounding"
                )
        if method == rounding.NEAREST:
            return cls(option, method, model.layers, {}, fit, held, note=note)
        x_q = fp.quantize_input(x, input_inv_scale)
        tables = activation_tables(options.log2_table_entries(len(model.layers)))
        result = cls(option, method, model.layers, tables, fit, held, x_q)
        if option == rounding.AUTO:
            result.x_q_fit_chain = x_q
            result.x_q_held = x_q[held]
            result.target_held = model.layers[-1].chain_output(traces[-1])[held]
        return result

    def quantize(self, index: int, layer: FloatLayer, ctx: QuantContext) -> QLayer:
        nearest = layer.quantize(ctx)
        self.nearest_layers.append(nearest)
        if self.method == rounding.NEAREST:
            return nearest
        fitted = layer.quantize(
            replace(ctx, rounding=rounding.ERROR_FEEDBACK, quantized_input=self.x_q)
        )
        self.rounded_layers.append(fitted)
        if index + 1 < len(self.layers):
            self.x_q = run_layer(fitted, layer, self.x_q, self.tables)
        if self.x_q_fit_chain is not None:
            part = layer.quantize(
                replace(
                    ctx,
                    rounding=rounding.ERROR_FEEDBACK,
                    quantized_input=self.x_q_fit_chain,
                    fit=self.fit,
                )
            )
            self.x_q_fit_chain = run_layer(part, layer, self.x_q_fit_chain, self.tables)
        return fitted

    def finish(self, layers: list[QLayer]) -> list[QLayer]:
        """The quantized layers to keep (``layers``: what ``quantize`` returned)."""
        if self.method == rounding.NEAREST:
            return layers
        if self.x_q_fit_chain is None:
            self.kept = rounding.ERROR_FEEDBACK
            return layers
        y = self.x_q_held
        for layer, qlayer in zip(self.layers, self.nearest_layers, strict=True):
            y = run_layer(qlayer, layer, y, self.tables)
        scale = self.nearest_layers[-1].output_feature_scale
        outputs = {
            rounding.NEAREST: y * scale,
            rounding.ERROR_FEEDBACK: self.x_q_fit_chain[self.held] * scale,
        }
        self.held_out = {"sequences": len(self.held), "fitted_on": len(self.fit)}
        for name, y in outputs.items():
            error = np.abs(y - self.target_held)
            self.held_out[name] = {
                "max_abs_error": float(error.max()),
                "mean_abs_error": float(error.mean()),
            }
        better = prefer_error_feedback(
            self.held_out[rounding.NEAREST], self.held_out[rounding.ERROR_FEEDBACK]
        )
        self.kept = rounding.ERROR_FEEDBACK if better else rounding.NEAREST
        return layers if better else self.nearest_layers

    def record(self) -> dict[str, Any]:
        """For report.json: what was asked, what was kept, and (auto) the held-out figures."""
        result: dict[str, Any] = {"option": self.option, "kept": self.kept}
        if self.note:
            result["note"] = self.note
        if self.held_out:
            result["held_out"] = self.held_out
        return result


def prefer_error_feedback(nearest: dict[str, float], feedback: dict[str, float]) -> bool:
    """Error feedback is kept when it is no worse than nearest in both the mean and the max abs
    error of the model output: so auto is never worse than nearest on the held-out part."""
    return (
        feedback["mean_abs_error"] <= nearest["mean_abs_error"]
        and feedback["max_abs_error"] <= nearest["max_abs_error"]
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


def trust_warnings(
    samples: int, held_out: dict[str, Any] | None, validation: dict[str, Any] | None
) -> list[str]:
    """Warnings (each starting with "warning:") about calibration that cannot be trusted."""
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
    return warnings
