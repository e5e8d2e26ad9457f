"""--weights auto: per layer int8 or int16, the least flash whose error stays under a limit.

The error is the max abs difference between the converted model (the integer reference on
float inputs, what the C computes) and the float model, in percent of the float outputs' range
(``report.errors``), measured on the validation data when given, else on the held-out part of
the calibration sequences (``calibration.held_out_split``) with every candidate calibrated on
the rest. Each layer's contribution is the error with that layer alone in int8 and every other
weighted layer in int16.

Choice: every layer int8 when that meets the limit; else, from every layer int16, layers go to
int8 one at a time, the largest flash saving first, each kept only if the measured error still
meets the limit (at most 2 + 2 * layers conversions of the model).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from lstm_embed.emit.report import errors
from lstm_embed.ir.float_model import forward
from lstm_embed.ir.model import Model
from lstm_embed.quantize.calibration import held_out_split
from lstm_embed.quantize.quantizer import QuantizeOptions, check_calibration, quantize
from lstm_embed.reference.interpreter import run_float

DEFAULT_MAX_ERROR_PCT = 1.0


@dataclass(frozen=True)
class EvaluationData:
    """Where candidates are calibrated (fit) and measured (held), and how to say so."""

    fit: np.ndarray
    held: np.ndarray
    description: str

    @staticmethod
    def of(ir: Model, x: np.ndarray, x_val: np.ndarray | None) -> EvaluationData:
        if x_val is not None:
            return EvaluationData(x, x_val, f"the {len(x_val)} validation sequences")
        fit, held = held_out_split(len(x))
        if len(held) == 0 or ir.stateful:  # one stream, or too few to hold any out
            return EvaluationData(x, x, f"the {len(x)} calibration sequences (none held out)")
        return EvaluationData(
            x[fit], x[held], f"{len(held)} held-out calibration sequences (of {len(x)})"
        )


@dataclass
class WeightChoice:
    bits: tuple[int, ...]  # per layer of the IR
    max_error_pct: float
    data: str
    error_pct: float  # of the chosen widths
    all_int8_pct: float
    all_int16_pct: float
    layers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return self.error_pct <= self.max_error_pct

    def record(self) -> dict[str, Any]:
        """report.json["weights_auto"]."""
        return {
            "max_error_pct": self.max_error_pct,
            "measured_on": self.data,
            "error_pct": self.error_pct,
            "met": self.met,
            "all_int8_error_pct": self.all_int8_pct,
            "all_int16_error_pct": self.all_int16_pct,
            "layers": self.layers,
        }


def summary_lines(record: dict[str, Any]) -> list[str]:
    """convert's summary of report.json["weights_auto"]."""
    limit, error = record["max_error_pct"], record["error_pct"]
    weighted = [la for la in record["layers"] if la["weighted"]]
    layers = ", ".join(
        f"{la['name']} int{la['bits']} (alone in int8: {la['int8_alone_error_pct']:.3g}%)"
        for la in weighted
    )
    lines = [
        f"weights auto: {layers}; max error {error:.3g}% of the output range (limit {limit:g}%)"
        f" on {record['measured_on']}; all int8 {record['all_int8_error_pct']:.3g}%,"
        f" all int16 {record['all_int16_error_pct']:.3g}%"
    ]
    wide = [la["name"] for la in weighted if la["bits"] == 16]
    if wide and record["met"]:
        lines.append(
            f"weights auto: int16 for {', '.join(wide)}, since int8 there exceeds {limit:g}%"
        )
    if not record["met"]:
        lines.append(
            f"weights auto: int16 everywhere still misses {limit:g}% ({error:.3g}%); check the"
            " calibration data, or allow more with --max-error"
        )
    return lines


def choose(
    ir: Model,
    x: np.ndarray,
    options: QuantizeOptions,
    x_val: np.ndarray | None = None,
    max_error_pct: float = DEFAULT_MAX_ERROR_PCT,
) -> WeightChoice:
    """The widths of the least flash that keep the error under ``max_error_pct``."""
    check_calibration(ir, x)  # refused here as quantize would, before any float run
    data = EvaluationData.of(ir, np.asarray(x, np.float32), x_val)
    expected, _ = forward(ir, np.asarray(data.held, np.float64))
    count = len(ir.layers)
    # layers without weights (or whose flash does not depend on the width) stay int8
    saving = [layer.flash_bytes(16) - layer.flash_bytes(8) for layer in ir.layers]
    weighted = [k for k in range(count) if saving[k] > 0]

    def error_of(bits: tuple[int, ...]) -> float:
        qmodel = quantize(ir, data.fit, replace(options, weight_bits=bits))
        measured = run_float(qmodel, np.asarray(data.held, np.float32))
        return errors(expected, measured)["max_abs_error_pct_of_range"]

    def widths(int16_layers: set[int]) -> tuple[int, ...]:
        return tuple(16 if k in int16_layers else 8 for k in range(count))

    all_int8 = error_of(widths(set()))
    all_int16 = error_of(widths(set(weighted))) if weighted else all_int8
    alone = {
        k: (all_int8 if len(weighted) == 1 else error_of(widths(set(weighted) - {k})))
        for k in weighted
    }
    if all_int8 <= max_error_pct:
        wide: set[int] = set()
        chosen = all_int8
    else:
        wide, chosen = set(weighted), all_int16
        for k in sorted(weighted, key=lambda k: -saving[k]):
            if chosen > max_error_pct:
                break  # even int16 everywhere misses: keep it, the least error
            trial = error_of(widths(wide - {k}))
            if trial <= max_error_pct:
                wide, chosen = wide - {k}, trial
    bits = widths(wide)
    layers = [
        {
            "name": layer.name,
            "weighted": k in alone,
            "bits": bits[k],
            "flash_bytes": layer.flash_bytes(bits[k]),
            "flash_bytes_int8": layer.flash_bytes(8),
            "flash_bytes_int16": layer.flash_bytes(16),
            **({"int8_alone_error_pct": alone[k]} if k in alone else {}),
        }
        for k, layer in enumerate(ir.layers)
    ]
    return WeightChoice(bits, max_error_pct, data.description, chosen, all_int8, all_int16, layers)
