"""The input contract of every entry point that runs a converted model.

The host runner (``hostbuild``), the QEMU runs (``firmware``), the command line (run, compare)
and the Python API (``lstm_embed.load(OUT)``'s predict and step) all validate input with
``check_input`` (and ``check_entry`` for a model without step()); the same bad input gets the
same ``InputError`` (a ValueError) message from each of them.

Policies (docs/cli.md, "Inputs"):

* Shape: ``(sequences, timesteps, input_size)`` with at least one sequence and one timestep.
  The Python API's ``step`` also takes one timestep, ``(input_size,)`` of one stream or
  ``(streams, input_size)``, checked as ``(streams, 1, input_size)`` (``step_input``).
* Run-only models (a Bidirectional or go_backwards layer needs the whole window): no step or
  step_f32, and at most the built length, which sizes the C's window buffers (Keras would take
  any length; the error says why not).
* Stateful models (Keras stateful=True): the sequences of one input are one stream, each
  starting from the state the one before left, as Keras' predict(x, batch_size=1) takes the rows
  of a stateful model whose state was reset once before the first row (checked with Keras 3 and
  tf_keras); every runner resets once per input and entry point, never between sequences.
* Timesteps: any length, also for a model built with a fixed length, as Keras 3's
  ``Sequential.predict`` does (measured with Keras 3.15: a Sequential model built for T=40
  predicts T=20 and T=60 without a warning; a functional model refuses both). An LSTM is
  defined at every length, and the generated ``run()`` takes the length as an argument.
  The cell formats were calibrated at the built length, so much longer windows may saturate
  the cell more often than ``report.json`` says.
* Ids (a model whose first layer is an Embedding, report.json's ``input_ids`` > 0): the
  input is one integer id per timestep, ``(sequences, timesteps)`` (or with a last axis of 1),
  integers or floats holding integers, each in [0, input_ids - 1]; anything else is refused
  naming the first bad value (the C clamps such ids into the range instead: docs/layers.md,
  "Embedding"; ``check_finite=False`` lets them through for tests of that). The Python API's
  ``step`` takes one id (a number) or one per stream ``(streams,)``.
* Values: integer input is the model's quantized int16 format and must lie in int16's range;
  float input (any float dtype, converted to float32) must be finite in float32. NaN and
  infinity are refused, naming the first one, because a quantized model cannot represent
  them (Keras would propagate NaN to the outputs). The C float entry points, which have no
  way to refuse, quantize a NaN feature to 0 and +/-infinity to the int16 limits (after the
  input scale), exactly as ``fixedpoint.quantize_input``; ``check_finite=False`` exists only
  so that tests can hold the C to that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

INT16_MIN, INT16_MAX = -32768, 32767


class InputError(ValueError):
    """Input a model cannot run; the message is one line naming what is wrong and where."""


@dataclass(frozen=True)
class InputRule:
    """What a converted model accepts, from its report.json."""

    name: str
    input_size: int
    timesteps: int  # the length the model was built for; 0 when built for any length
    run_only: str = ""  # why the model has no step() (run-only models); "" when it has one
    stateful: bool = False  # the sequences are one stream
    ids: int = 0  # an Embedding's input_dim: the input is integer ids below it; 0: features

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> InputRule:
        return cls(
            str(report["name"]),
            int(report["input_size"]),
            int(report["timesteps"] or 0),
            str(report.get("run_only", "") or ""),
            bool(report.get("stateful", False)),
            int(report.get("input_ids", 0) or 0),
        )

    @property
    def entry_points(self) -> tuple[str, ...]:
        """The entry points the model's C has."""
        return tuple(e for e in ENTRY_POINTS if not (self.run_only and ENTRY_POINTS[e].steps))


@dataclass(frozen=True)
class EntryPoint:
    """A function of the generated C API that a runner can call on whole sequences."""

    name: str  # NAME_<name> in C
    float_input: bool  # float32 in, else int16
    float_output: bool  # float32 out, else int16
    per_timestep: bool  # one output vector per timestep whatever RETURN_SEQUENCES says
    output_is_input: bool = False  # quantize_input: INPUT_SIZE values per timestep
    steps: bool = False  # NAME_step / NAME_step_f32: absent from run-only models


# The runners reset() the state before every stepped sequence (run() does so itself) and
# start from a state filled with a non-zero pattern, so reset() is exercised too; for a
# stateful model they reset once per input and entry point (the sequences are one stream).
ENTRY_POINTS: dict[str, EntryPoint] = {
    e.name: e
    for e in (
        EntryPoint("run", float_input=False, float_output=False, per_timestep=False),
        EntryPoint("step", float_input=False, float_output=False, per_timestep=True, steps=True),
        EntryPoint("run_f32", float_input=True, float_output=True, per_timestep=False),
        EntryPoint("step_f32", float_input=True, float_output=True, per_timestep=True, steps=True),
        EntryPoint(
            "quantize_input",
            float_input=True,
            float_output=False,
            per_timestep=True,
            output_is_input=True,
        ),
    )
}


def entry_point(name: str) -> EntryPoint:
    try:
        return ENTRY_POINTS[name]
    except KeyError:
        known = ", ".join(ENTRY_POINTS)
        raise ValueError(f"unknown entry point {name!r} (known: {known})") from None


def check_entry(entry: str, rule: InputRule) -> EntryPoint:
    """The entry point, or an InputError when the model's C does not have it."""
    e = entry_point(entry)
    if rule.run_only and e.steps:
        raise InputError(f"model {rule.name} has no {entry}(): {rule.run_only}; use run()")
    return e


def step_input(x_in: Any, rule: InputRule) -> np.ndarray:
    """The input of the Python API's step() as (streams, timesteps, features), for check_input:
    one timestep of one stream (m,) -> (1, 1, m), of N streams (N, m) -> (N, 1, m); any other
    shape unchanged (T timesteps of N streams, or wrong: check_input names what is wrong)."""
    x = np.asarray(x_in)
    m = rule.input_size
    if rule.ids and x.ndim in (0, 1):  # one id, or one per stream
        return x.reshape(-1, 1, 1)
    if rule.ids:  # (streams, timesteps) ids, or wrong: check_input says
        return x
    if x.ndim not in (1, 2):
        return x
    if x.shape[-1] != m:
        raise InputError(
            f"input shape {x.shape}: expected ({m},) for one stream, (streams, {m}) or"
            f" (streams, timesteps, {m}); model {rule.name} takes {m} feature(s) per timestep"
        )
    if x.ndim == 2 and x.shape[0] < 1:
        raise InputError(f"input shape {x.shape}: needs at least one stream")
    return x.reshape(1 if x.ndim == 1 else x.shape[0], 1, m)


def output_shape(
    entry: EntryPoint,
    x_shape: tuple[int, ...],
    input_size: int,
    output_size: int,
    return_sequences: bool,
) -> tuple[int, ...]:
    """(N, T, k) per timestep (return_sequences, step, quantize_input), else (N, k)."""
    n, steps = x_shape[0], x_shape[1]
    width = input_size if entry.output_is_input else output_size
    if entry.per_timestep or return_sequences:
        return (n, steps, width)
    return (n, width)


def _first(x: np.ndarray, bad: np.ndarray, what: str) -> str:
    """'input holds V at (sequence, timestep, feature) = (s, t, f), WHAT (and K more)'."""
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    others = int(np.count_nonzero(bad)) - 1
    more = f" (and {others} more)" if others else ""
    value = x[index].item()
    return f"input holds {value!r} at (sequence, timestep, feature) = {index}, {what}{more}"


def check_input(
    x_in: Any,
    rule: InputRule,
    dtype: str | None = None,
    *,
    check_finite: bool = True,
) -> np.ndarray:
    """The validated input: int16 (for run/step) or float32 (for the float entry points).

    ``dtype`` "int16" or "float32" asks for one kind; None takes float input as float32 and
    integer input as int16. Raises InputError with one line saying what is wrong.
    """
    x = np.asarray(x_in)
    if rule.ids:
        x = _checked_ids(x, rule, check_finite)
    elif x.ndim == 4 and x.shape[2] * x.shape[3] == rule.input_size:  # (T, F, C) frames
        x = x.reshape(*x.shape[:2], -1)
    expected = f"(sequences, timesteps, {rule.input_size})"
    if x.ndim != 3 or x.shape[2] != rule.input_size:
        features = f"; model {rule.name} takes {rule.input_size} feature(s) per timestep"
        raise InputError(f"input shape {x.shape}: expected {expected}{features}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise InputError(f"input shape {x.shape}: needs at least one sequence and one timestep")
    if rule.run_only and x.shape[1] > rule.timesteps:
        raise InputError(
            f"input shape {x.shape}: model {rule.name} takes at most {rule.timesteps} timesteps"
            f" ({rule.run_only}, held in buffers of {rule.timesteps} timesteps)"
        )
    kind = x.dtype.kind
    if kind not in "fiu":
        raise InputError(f"input dtype {x.dtype}: expected float or int16 values")
    if dtype is None:
        dtype = "float32" if kind == "f" else "int16"
    if dtype == "int16":
        if kind == "f":
            raise InputError(
                f"input dtype {x.dtype}: the integer entry points take int16 (the model's"
                " quantized format); pass float input to the float entry points"
            )
        if x.dtype != np.int16:
            outside = (x < INT16_MIN) | (x > INT16_MAX)
            if outside.any():
                raise InputError(_first(x, outside, "outside int16's range"))
        return np.ascontiguousarray(x, dtype=np.int16)
    if dtype != "float32":
        raise ValueError(f"dtype must be 'int16' or 'float32', not {dtype!r}")
    with np.errstate(over="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if check_finite:
        bad = ~np.isfinite(x32)
        if bad.any():
            first = tuple(np.argwhere(bad)[0])
            what = "infinite in float32" if np.isfinite(x[first]) else "not a finite number"
            raise InputError(_first(x, bad, what) + "; the model takes finite values only")
    return x32


def _checked_ids(x: np.ndarray, rule: InputRule, check_values: bool) -> np.ndarray:
    """Ids (N, T) or (N, T, 1) -> (N, T, 1), each an integer in [0, rule.ids - 1] (the values
    unchecked when ``check_values`` is False: tests of the C's clamp)."""
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[2] != 1:
        raise InputError(
            f"input shape {x.shape}: expected (sequences, timesteps) integer ids; model"
            f" {rule.name} takes one id per timestep"
        )
    if not check_values or x.dtype.kind not in "fiu":
        return x  # a dtype that is no number: check_input names it
    with np.errstate(invalid="ignore"):
        values = np.asarray(x, np.float64)
        bad = ~np.isfinite(values) | (values != np.round(values))
        bad |= (values < 0) | (values >= rule.ids)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0][:2])
        others = int(np.count_nonzero(bad)) - 1
        more = f" (and {others} more)" if others else ""
        raise InputError(
            f"input holds {x[index][0].item()!r} at (sequence, timestep) = {index}, not an id of"
            f" model {rule.name} (integer ids 0 to {rule.ids - 1}: its Embedding's input_dim"
            f" {rule.ids}){more}"
        )
    return x
