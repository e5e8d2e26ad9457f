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

from lstm_embed.kinds.base import FloatLayer, QLayer, QuantContext
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize import rounding

# Every 4th calibration sequence is held out (25%): spread over the set, so an ordered set (by
# class, by time) still has every part on both sides.
HOLDOUT_EVERY = 4
# auto needs this many sequences on each side to compare roundings (fewer: nearest rounding)
MIN_AUTO_SEQUENCES = 8
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
    state = qlayer.initial_state(1 if getattr(qlayer, "stateful", False) else len(x_q))
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
            if getattr(model, "stateful", False):
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
