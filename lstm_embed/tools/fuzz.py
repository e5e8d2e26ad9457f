"""Random-model fuzzing: generated C (sanitized host build) must equal the integer reference.

Models are described by a ``ModelSpec`` (plain data: shapes, activations and the *kind* of
weights, e.g. zeros, 1e4, 1e-8, all equal) and built from its seed, so a failing spec printed
in a report rebuilds the exact model. The hypothesis tests draw specs; ``make fuzz`` runs

    python -m lstm_embed.tools.fuzz --models 10000 --jobs 2

which converts models in batches, compiles several into one sanitized binary (each model's
``host_main.c`` with ``main`` renamed, plus a dispatcher), and compares every entry point of
every model (run, step, run_f32, step_f32, quantize_input; reset through run and step) with
the numpy reference bit for bit. ``make fuzz-qemu`` runs

    python -m lstm_embed.tools.fuzz --qemu --models 500 --jobs 2

which builds every model into Cortex-M0, M4 and M55 firmware (one image per model and core
calling all the entry points) and holds the outputs QEMU prints to the same reference.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from lstm_embed.emit.render import render
from lstm_embed.ir.model import DenseLayer, LSTMLayer, Model
from lstm_embed.kinds.base import Diverges
from lstm_embed.kinds.bidirectional import MERGE_MODES, BidirectionalLayer
from lstm_embed.kinds.common import RecurrentOptions
from lstm_embed.kinds.masking import float_step_masks
from lstm_embed.kinds.simple_rnn import ACTIVATIONS as RNN_ACTIVATIONS
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize import fixedpoint as fp
from lstm_embed.quantize.qir import QModel
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.reference import interpreter as reference
from lstm_embed.targets import firmware
from lstm_embed.targets.hostbuild import SANITIZE_FLAGS, STRICT_FLAGS, compiler
from lstm_embed.targets.inputs import ENTRY_POINTS
from lstm_embed.tools import fuzz_graph
from lstm_embed.tools.fuzz_around import insert as insert_around
from lstm_embed.tools.fuzz_around import needs_fixed_length, with_around
from lstm_embed.tools.fuzz_front import state_activations
from lstm_embed.tools.fuzz_layers import (
    WEIGHT_KINDS,
    LSTMSpec,
    recurrent_layer,
    weights,
)
from lstm_embed.tools.quiet import WarningTally
from lstm_embed.version import __version__

# Ranges of the issue: units 1-64, inputs 1-16, T 1-100.
UNITS = (1, 64)
INPUTS = (1, 16)
TIMESTEPS = (1, 100)
MAX_LSTM_LAYERS, MAX_DENSE_LAYERS = 3, 3
GRU_FRACTION = 0.3  # of the recurrent layers random_spec draws (before SimpleRNN's share)
FLOAT_SEQUENCES = 6  # calibration-like, zeros, +/-1e6, 100x calibration, alternating, NaN/Inf
INT_SEQUENCES = 4  # random int16, all -32768, all 32767, alternating extremes
# float-cast-overflow and float-divide-by-zero are not part of -fsanitize=undefined in GCC.
# outcomes that are not bugs: a model refused because its float model overflows, one too big
# for a board, one whose run() buffers do not fit (step checked alone)
ACCEPTED = ("ok", "diverges", "too_big", "stepped_only")
EXTRA_SANITIZE = ("-fsanitize=float-cast-overflow,float-divide-by-zero",)
# Batches rotate through hostbuild's -O1 and the faster -O0, with the host's default
# (reference) kernel and the plain-C optimized one.
# "dsp": converted with --core m4, whose DSP kernel runs on the host with its instructions in C
VARIANTS = (
    ("-O1", "reference"),
    ("-O0", "plain"),
    ("-O1", "dsp"),
    ("-O1", "plain"),
    ("-O0", "reference"),
    ("-O0", "dsp"),
)
# The QEMU profile: the portable/plain kernels (M0), the DSP kernel (M4), the MVE kernel (M55).
QEMU_BOARDS = ("qemu-m0", "qemu-m4", "qemu-m55")


def case_flags(optimize: str = "-O1") -> tuple[str, ...]:
    """hostbuild's strict + sanitizer flags (its -O1 by default); the last -O wins."""
    return (*STRICT_FLAGS, *SANITIZE_FLAGS, *EXTRA_SANITIZE, optimize)


def kernel_defines(names: list[str], kernel: str) -> list[str]:
    if kernel in ("reference", "dsp"):  # the host's default; the only kernel of an m4 file
        return []
    return [f"-D{name.upper()}_USE_{kernel.upper()}_KERNEL" for name in names]


@dataclass(frozen=True)
class DenseSpec:
    units: int
    activation: str = "linear"
    weights: str = "normal"
    bias: str | None = "normal"


@dataclass(frozen=True)
class ModelSpec:
    seed: int
    inputs: int
    timesteps: int
    lstm: tuple[LSTMSpec, ...]
    dense: tuple[DenseSpec, ...] = ()
    return_sequences: bool = False
    fixed_length: bool = True
    calibration_scale: float = 1.0  # 0 gives all-zero calibration data
    weight_bits: tuple[int, ...] = (8,)  # QuantizeOptions.weight_bits: all layers or per layer
    around: tuple[str, ...] = ()  # layers around the recurrent core ("place:kind", fuzz_around)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Case:
    spec: ModelSpec
    model: Model
    calibration: np.ndarray  # (4, T, m) float32
    x: np.ndarray  # (FLOAT_SEQUENCES, T, m) float32, extreme values included
    x_q: np.ndarray  # (INT_SEQUENCES, T, m) int16


@dataclass
class Outcome:
    spec: ModelSpec
    # "ok", "mismatch", "crash" (sanitizer, runner or firmware failure), "rejected" (the
    # converter refused, saying why), "diverges" (the float model itself overflows float32 on
    # the calibration data, so the converter refuses it by design), "too_big" (does not fit
    # the board's flash or RAM),
    # "stepped_only" (QEMU: step, step_f32 and quantize_input equal; run's buffers too big)
    status: str
    detail: str = ""
    board: str = "host"


# ---------------------------------------------------------------------------------- models


def build_model(spec: ModelSpec) -> Model:
    rng = np.random.default_rng(spec.seed)
    layers: list[LSTMLayer | DenseLayer] = []
    size = spec.inputs
    for k, la in enumerate(spec.lstm):
        last = k == len(spec.lstm) - 1
        sequences = spec.return_sequences or not last
        layer = recurrent_layer(rng, la, f"lstm_{k}", size, sequences)
        if la.bidirectional:
            backward = recurrent_layer(rng, la, f"backward_lstm_{k}", size, sequences)
            backward = RecurrentOptions(backward, go_backwards=not la.go_backwards)
            layer = BidirectionalLayer(
                f"bidirectional_{k}", size, layer, backward, la.bidirectional
            )
        layers.append(layer)
        size = layer.output_size
    for k, de in enumerate(spec.dense):
        bias = weights(rng, de.bias, (de.units,)) if de.bias else None
        kernel = weights(rng, de.weights, (size, de.units))
        layers.append(DenseLayer(f"dense_{k}", size, de.units, kernel, bias, de.activation))
        size = de.units
    layers = insert_around(spec.seed, spec.around, layers, spec.timesteps)
    # a layer that needs the whole window (go_backwards, Bidirectional) needs a fixed length
    whole_window = any(la.go_backwards or la.bidirectional for la in spec.lstm)
    whole_window = whole_window or needs_fixed_length(spec.around)
    timesteps = spec.timesteps if spec.fixed_length or whole_window else None
    source = f"fuzz spec {spec.to_json()}"
    # an input kind (fuzz_front) takes ids or frames: the model's input is its first layer's
    return Model("net", layers[0].input_size, timesteps, tuple(layers), source=source)


def build_inputs(
    spec: ModelSpec, width: int | None = None, ids: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibration, float test inputs, int16 test inputs), all with the spec's T and
    ``width`` features (the spec's m by default); ``ids``: the model takes ids below this
    number (an Embedding first), the calibration data is such ids, the test inputs as ever
    (out-of-range, non-integer and non-finite ones test the C's clamp)."""
    rng = np.random.default_rng(spec.seed + 1)
    shape = (spec.timesteps, width or spec.inputs)
    calibration = rng.normal(size=(4, *shape)) * spec.calibration_scale
    if ids:  # (ids models only: every other seed's inputs stay as they were)
        calibration = rng.integers(0, ids, (4, *shape)).astype(np.float64)
    far = rng.normal(size=shape) * max(spec.calibration_scale, 1e-3) * 100
    signs = np.where(np.arange(spec.timesteps)[:, None] % 2 == 0, 1.0, -1.0)
    nonfinite = rng.choice([np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30], shape)
    x = np.stack(
        [
            calibration[0],
            np.zeros(shape),
            rng.choice([-1e6, 1e6], shape),
            far,
            signs * 1e6 * np.ones(shape),
            nonfinite,
        ]
    )
    extremes = np.array([-32768, 32767], dtype=np.int16)
    x_q = np.stack(
        [
            rng.integers(-32768, 32768, shape),
            np.full(shape, -32768),
            np.full(shape, 32767),
            extremes[(np.arange(spec.timesteps) % 2)][:, None] * np.ones(shape, np.int64),
        ]
    ).astype(np.int16)
    if ids:  # ids in range in the first int16 sequence too (the others test the clamp)
        x_q[0] = calibration[1].astype(np.int16)
    return calibration.astype(np.float32), x.astype(np.float32), x_q


def build_case(spec: ModelSpec) -> Case:
    model = build_model(spec)
    first = model.layers[0]
    ids = first.input_dim if first.takes_ids else 0
    calibration, x, x_q = build_inputs(spec, model.input_size, ids)
    return Case(spec, model, calibration, x, x_q)


def via_onnx(case: Case, folder: Path) -> Case | None:
    """The case's model written as an ONNX graph and read back by the ONNX frontend (None
    when ONNX has no operator here for one of its layers: ``writer.NotWritable``)."""
    from lstm_embed.frontends.onnx import load_model
    from lstm_embed.frontends.onnx.writer import NotWritable, write

    try:
        path = write(case.model, folder / f"seed{case.spec.seed}.onnx")
    except NotWritable:
        return None
    model = load_model(path)
    return replace(case, model=replace(model, name="net", source=case.model.source))


def _log_uniform_int(rng: np.random.Generator, low: int, high: int) -> int:
    return int(min(high, math.floor(math.exp(rng.uniform(math.log(low), math.log(high + 1))))))


def _kind(rng: np.random.Generator) -> str:
    # half the layers get ordinary weights so extreme layers meet realistic neighbours
    return "normal" if rng.random() < 0.5 else str(rng.choice(WEIGHT_KINDS))


def _bias(rng: np.random.Generator) -> str | None:
    return None if rng.random() < 0.25 else _kind(rng)


def random_spec(seed: int) -> ModelSpec:
    """A random spec covering the issue's ranges; small shapes are drawn more often."""
    rng = np.random.default_rng([seed, 0x5EED])
    lstm = tuple(
        LSTMSpec(
            _log_uniform_int(rng, *UNITS),
            str(rng.choice(["sigmoid", "hard_sigmoid"])),
            _kind(rng),
            _bias(rng),
        )
        for _ in range(int(rng.integers(1, MAX_LSTM_LAYERS + 1)))
    )
    dense = tuple(
        DenseSpec(
            _log_uniform_int(rng, *UNITS),
            str(rng.choice(["linear", "relu", "sigmoid", "tanh", "softmax"])),
            _kind(rng),
            _bias(rng),
        )
        for _ in range(int(rng.integers(0, MAX_DENSE_LAYERS + 1)))
    )
    lstm = _recurrent_family(seed, _grus(seed, lstm))
    scale = 0.0 if rng.random() < 0.05 else float(10 ** rng.uniform(-3, 3))
    lstm = state_activations(seed, lstm, scale)
    return with_around(
        ModelSpec(
            seed=seed,
            inputs=_log_uniform_int(rng, *INPUTS),
            timesteps=_log_uniform_int(rng, *TIMESTEPS),
            lstm=lstm,
            dense=dense,
            return_sequences=bool(rng.random() < 0.4),
            fixed_length=bool(rng.random() < 0.5),
            calibration_scale=scale,
            weight_bits=_weight_bits(rng, len(lstm) + len(dense)),
        )
    )


def _grus(seed: int, layers: tuple[LSTMSpec, ...]) -> tuple[LSTMSpec, ...]:
    """GRU instead of LSTM in GRU_FRACTION of the layers (Keras' default reset_after in 3 of
    4), drawn from a stream of their own, as _recurrent_family's kinds."""
    rng = np.random.default_rng([seed, 0x6A0])
    drawn = []
    for la in layers:
        gru = rng.random() < GRU_FRACTION
        reset_after = bool(rng.random() < 0.75)
        drawn.append(replace(la, kind="gru", reset_after=reset_after) if gru else la)
    return tuple(drawn)


def _recurrent_family(seed: int, layers: tuple[LSTMSpec, ...]) -> tuple[LSTMSpec, ...]:
    """SimpleRNN instead of LSTM, go_backwards, stateful and Bidirectional, drawn from a stream
    of their own (the other fields of a seed's spec stay what they were before these kinds)."""
    rng = np.random.default_rng([seed, 0xFA11])
    drawn = []
    for la in layers:
        kind = "simple_rnn" if rng.random() < 0.25 else la.kind
        activation = str(rng.choice(RNN_ACTIVATIONS)) if kind == "simple_rnn" else "tanh"
        merge = str(rng.choice(MERGE_MODES)) if rng.random() < 0.15 else None
        drawn.append(
            replace(
                la,
                kind=kind,
                activation=activation,
                go_backwards=bool(rng.random() < 0.15),
                stateful=bool(rng.random() < 0.1) and merge is None,
                bidirectional=merge,
            )
        )
    return tuple(drawn)


def _weight_bits(rng: np.random.Generator, layers: int) -> tuple[int, ...]:
    """Mostly int8; a quarter of the models get int16 weights, all or in some layers."""
    if rng.random() < 0.75:
        return (8,)
    if rng.random() < 0.5:
        return (16,)
    return tuple(int(b) for b in rng.choice([8, 16], layers))


# ---------------------------------------------------------------------------------- checking


@dataclass
class _Converted:
    case: Case
    qmodel: QModel
    folder: Path
    name: str


@dataclass
class Batch:
    converted: list[_Converted] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


def _convert(case: Case, folder: Path, name: str, core: str = "all") -> _Converted | Outcome:
    try:
        options = QuantizeOptions(weight_bits=case.spec.weight_bits)
        conversion = convert_ir(
            case.model, case.calibration, folder, name=name, options=options, force=True,
            core=core,
        )  # fmt: skip
    except Diverges as error:  # huge weights under an unbounded activation: no float model
        return Outcome(case.spec, "diverges", str(error))
    except (ValueError, RuntimeError) as error:  # the converter refused: must say why
        return Outcome(case.spec, "rejected", f"{type(error).__name__}: {error}")
    return _Converted(case, conversion.qmodel, folder, name)


def _write_input(path: Path, x: np.ndarray) -> None:
    header = np.array(x.shape[:2], dtype=np.int32).tobytes()
    path.write_bytes(header + np.ascontiguousarray(x).tobytes())


def first_difference(expected: np.ndarray, actual: np.ndarray) -> str:
    if expected.shape != actual.shape:
        return f"shape {actual.shape} != expected {expected.shape}"
    index = tuple(int(i) for i in np.argwhere(expected != actual)[0])
    where = "sequence, timestep, output" if expected.ndim == 3 else "sequence, output"
    return (
        f"first difference at ({where}) = {index}: C {actual[index]!r}, reference"
        f" {expected[index]!r}; {int(np.sum(expected != actual))} values differ"
    )


def expected_output(q: QModel, entry: str, x: np.ndarray) -> np.ndarray:
    """What entry point ``entry`` must return on x, from the numpy reference alone: int16 for
    run, step and quantize_input, float32 for run_f32 and step_f32 (shapes as the runners')."""
    with np.errstate(over="ignore", invalid="ignore"):  # huge or non-finite float input
        return _expected_output(q, entry, x)


def _expected_output(q: QModel, entry: str, x: np.ndarray) -> np.ndarray:
    if entry == "run":
        return reference.run(q, x).astype(np.int16)
    if entry == "run_f32":
        return reference.run_float(q, x).astype(np.float32)
    if entry == "quantize_input":
        return fp.quantize_input(x, q.input_inv_scale)
    x_q = x if entry == "step" else fp.quantize_input(x, q.input_inv_scale)
    rows, length = x_q.shape[:2]
    if q.stateful:  # the sequences are one stream: reset once, then step through them all
        x_q = x_q.reshape(1, rows * length, -1)
    states = reference.initial_state(q, x_q.shape[0])
    # step_f32 of a Masking model masks on the float input (layers/masking.py)
    masks = float_step_masks(q, x) if entry == "step_f32" else None
    steps = [
        reference.step(q, states, x_q[:, t], mask=None if masks is None else masks[:, t])
        for t in range(x_q.shape[1])
    ]
    y_q = np.stack(steps, axis=1).reshape(rows, length, -1).astype(np.int16)
    return y_q if entry == "step" else fp.dequantize(y_q, q.output_scale).astype(np.float32)


def compare_output(entry: str, want: np.ndarray, got: np.ndarray) -> str | None:
    """None when got equals want bit for bit (floats as bit patterns: -0.0 != 0.0), else
    where they first differ."""
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"{entry}: {got.dtype} {got.shape}, want {want.dtype} {want.shape}"
    bits = np.int32 if want.dtype == np.float32 else np.int16
    if np.array_equal(got.view(bits), want.view(bits)):
        return None
    return f"{entry}: {first_difference(want, got)}"


def model_entries(q: QModel) -> tuple[str, ...]:
    """The entry points the model's C has (a run-only model: no step, step_f32)."""
    return tuple(e for e in ENTRY_POINTS if q.streaming or not ENTRY_POINTS[e].steps)


def _inputs_for(case: Case, entry: str) -> np.ndarray:
    return case.x if ENTRY_POINTS[entry].float_input else case.x_q


def _compare(item: _Converted, runner: Path, index: int) -> Outcome:
    case, q = item.case, item.qmodel
    for entry in model_entries(q):
        x = _inputs_for(case, entry)
        want = expected_output(q, entry, x)
        in_path, out_path = item.folder / f"x_{entry}.bin", item.folder / f"y_{entry}.bin"
        _write_input(in_path, x)
        proc = subprocess.run(
            [str(runner), str(index), entry, str(in_path), str(out_path)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            return Outcome(case.spec, "crash", f"{entry} exit {proc.returncode}: {proc.stderr}")
        got = np.fromfile(out_path, dtype=want.dtype)
        if got.size != want.size:
            return Outcome(case.spec, "mismatch", f"{entry}: {got.size} values, want {want.size}")
        difference = compare_output(entry, want, got.reshape(want.shape))
        if difference:
            return Outcome(case.spec, "mismatch", difference)
    return Outcome(case.spec, "ok")


def _build(
    items: list[_Converted], folder: Path, flags: tuple[str, ...], kernel: str = "reference"
) -> Path:
    """One sanitized binary for several models; raises RuntimeError on a compile error."""
    for item in items:
        (folder / f"{item.name}_main.c").write_text(
            render(
                "host_main.c.j2",
                tool_version=__version__,
                source=item.case.model.source,
                name=item.name,
                NAME=item.name.upper(),
            )
        )
    names = [item.name for item in items]
    (folder / "dispatch.c").write_text(render("fuzz_dispatch.c.j2", names=names))
    unity = folder / "batch.c"
    unity.write_text(render("fuzz_unity.c.j2", names=names))
    includes = [f"-I{folder}", *(f"-I{item.folder}" for item in items)]
    runner = folder / "runner"
    defines = kernel_defines(names, kernel)
    _run([compiler(), *flags, *defines, *includes, str(unity), "-o", str(runner)])
    return runner


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{proc.stderr}")


def check_batch(
    cases: list[Case], folder: Path, optimize: str = "-O1", kernel: str = "reference"
) -> list[Outcome]:
    """Convert, compile (one binary) and compare a batch of cases; one outcome per case."""
    folder.mkdir(parents=True, exist_ok=True)
    batch = Batch()
    for k, case in enumerate(cases):
        result = _convert(case, folder / f"m{k}", f"m{k}", "m4" if kernel == "dsp" else "all")
        if isinstance(result, Outcome):
            batch.outcomes.append(result)
        else:
            batch.converted.append(result)
    if not batch.converted:
        return batch.outcomes
    try:
        runner = _build(batch.converted, folder, case_flags(optimize), kernel)
    except RuntimeError as error:
        if len(batch.converted) == 1:
            return [*batch.outcomes, Outcome(batch.converted[0].case.spec, "crash", str(error))]
        # find the model that does not compile
        return batch.outcomes + [
            outcome
            for item in batch.converted
            for outcome in check_batch(
                [item.case], folder / f"single_{item.name}", optimize, kernel
            )
        ]
    for index, item in enumerate(batch.converted):
        batch.outcomes.append(_compare(item, runner, index))
    return batch.outcomes


def check_specs(
    specs: list[ModelSpec],
    jobs: int = 2,
    batch_size: int = 8,
    keep: Path | None = None,
    onnx: bool = False,
) -> list[Outcome]:
    """Check many specs, ``jobs`` batches at a time (numpy and the compiler release the GIL
    for most of the time; compiles dominate). ``onnx``: each model goes through an ONNX file
    first (``via_onnx``); the specs it cannot write are left out."""
    root = Path(tempfile.mkdtemp(prefix="lstm-embed-fuzz-", dir=keep))
    chunks = [specs[i : i + batch_size] for i in range(0, len(specs), batch_size)]

    def work(k: int) -> list[Outcome]:
        folder = root / f"batch{k}"
        folder.mkdir()
        optimize, kernel = VARIANTS[k % len(VARIANTS)]
        with np.errstate(all="ignore"):  # exp overflow in the float model of huge weights
            cases = [build_case(s) for s in chunks[k]]
            if onnx:
                cases = [c for c in (via_onnx(c, folder) for c in cases) if c is not None]
            if not cases:
                return []
            outcomes = check_batch(cases, folder, optimize, kernel)
        if all(o.status == "ok" for o in outcomes):
            shutil.rmtree(folder, ignore_errors=True)
        return outcomes

    try:
        with ThreadPoolExecutor(jobs) as pool:
            return [o for outcomes in pool.map(work, range(len(chunks))) for o in outcomes]
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------- QEMU


def check_qemu(case: Case, folder: Path, boards: tuple[str, ...] = QEMU_BOARDS) -> list[Outcome]:
    """Convert one case, build it for each board (one image calling every entry point on the
    case's int16 and float inputs, NaN and infinity included) and compare what QEMU prints
    with the reference; one outcome per board."""
    item = _convert(case, folder / "net", "net")
    if isinstance(item, Outcome):
        return [Outcome(item.spec, item.status, item.detail, board) for board in boards]
    return [check_on_board(item, board) for board in boards]


STEPPED = tuple(e for e in ENTRY_POINTS if ENTRY_POINTS[e].per_timestep)


def check_on_board(item: _Converted, board: str, entries: tuple[str, ...] = ()) -> Outcome:
    """One converted case on one emulated board, every entry point against the reference.

    When the image does not fit (run() and run_f32() need timesteps x outputs of RAM for the
    window's outputs, more than the M0's 16 KB for some shapes), the stepped entry points are
    still checked: status "stepped_only" when they equal the reference."""
    case = item.case
    entries = entries or model_entries(item.qmodel)
    try:
        got = firmware.run_entry_points(
            item.folder, board, list(entries), case.x_q, case.x, check_finite=False
        )
    except firmware.FitError as error:
        stepped = tuple(e for e in STEPPED if e in model_entries(item.qmodel))
        if entries != stepped:
            outcome = check_on_board(item, board, stepped)
            if outcome.status == "ok":
                return Outcome(case.spec, "stepped_only", str(error), board)
            if outcome.status != "too_big":
                return outcome
        return Outcome(case.spec, "too_big", str(error), board)
    except firmware.FirmwareError as error:
        return Outcome(case.spec, "crash", str(error)[:4000], board)
    differences = [
        compare_output(e, expected_output(item.qmodel, e, _inputs_for(case, e)), got[e])
        for e in entries
    ]
    found = [d for d in differences if d]
    return Outcome(case.spec, "mismatch" if found else "ok", "; ".join(found), board)


def check_qemu_specs(
    specs: list[ModelSpec],
    boards: tuple[str, ...] = QEMU_BOARDS,
    jobs: int = 2,
    keep: Path | None = None,
) -> list[Outcome]:
    """check_qemu for many specs, ``jobs`` models at a time (compiles and QEMU dominate)."""
    root = Path(tempfile.mkdtemp(prefix="lstm-embed-fuzz-qemu-", dir=keep))

    def work(k: int) -> list[Outcome]:
        folder = root / f"model{k}"
        folder.mkdir()
        with np.errstate(all="ignore"):
            outcomes = check_qemu(build_case(specs[k]), folder, boards)
        if all(o.status in ACCEPTED for o in outcomes):
            shutil.rmtree(folder, ignore_errors=True)
        return outcomes

    try:
        with ThreadPoolExecutor(jobs) as pool:
            return [o for outcomes in pool.map(work, range(len(specs))) for o in outcomes]
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def _commit() -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent,
        check=False,
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent,
        check=False,
    )
    commit = proc.stdout.strip() or "unknown"
    return commit + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


# ---------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lstm_embed.tools.fuzz", description="random models: host C vs reference"
    )
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="first spec seed")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="models per compiled binary")
    parser.add_argument("--chunk", type=int, default=128, help="models between progress lines")
    parser.add_argument("--keep", type=Path, help="keep failing batches under this folder")
    parser.add_argument("--log", type=Path, help="append one JSON line per non-ok model")
    parser.add_argument(
        "--qemu",
        action="store_true",
        help=f"firmware in QEMU instead of the host build, on {', '.join(QEMU_BOARDS)}",
    )
    parser.add_argument(
        "--boards",
        help="comma list of emulated boards for --qemu (default: " + ",".join(QEMU_BOARDS) + ")",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print every model's warnings as they come"
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="write each model as an ONNX graph and convert it from that file (host only;"
        " models with layers ONNX has no operator for are left out)",
    )
    parser.add_argument(
        "--graphs",
        action="store_true",
        help="random graph models (branches, merges, several inputs and outputs, return_state,"
        " attention; fuzz_graph) instead of chains; one model per binary (--batch unused)",
    )
    args = parser.parse_args(argv)
    if args.graphs and args.onnx:
        parser.error("--graphs: graphs are built as the IR, not written as ONNX files")
    if args.onnx and args.qemu:
        parser.error("--onnx runs on the host build (without --qemu)")
    boards = tuple(args.boards.split(",")) if args.boards else QEMU_BOARDS
    if args.boards and not args.qemu:
        parser.error("--boards needs --qemu")
    for board in boards if args.qemu else ():
        try:
            emulated = firmware.get_board(board).emulated
        except ValueError as error:
            parser.error(f"--boards: {error}")
        if not emulated:
            parser.error(f"--boards: {board} is real hardware; QEMU runs emulated boards only")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    what = f"firmware in QEMU on {', '.join(boards)}" if args.qemu else "host C"
    kind = "graph models" if args.graphs else "models"
    print(
        f"fuzz: {args.models} random {kind} from seed {args.seed}, {what} vs the numpy"
        f" reference, {args.jobs} jobs; a line every {args.chunk} models"
    )
    sys.stdout.flush()
    tally = WarningTally()
    with contextlib.nullcontext() if args.verbose else tally.collecting():
        counts, minutes, errors = _fuzz(args, boards, tally)
    if args.qemu:
        entries = "run, step (where the graph streams)" if args.graphs else ", ".join(ENTRY_POINTS)
        print(f"fuzz: boards {', '.join(boards)}; entry points {entries}")
    else:
        print(f"fuzz: variants (optimization, kernel) rotated per batch: {VARIANTS}")
    if args.graphs and not args.qemu:
        print(f"fuzz: {fuzz_graph.error_summary(errors)}")
    if not args.verbose:  # random calibration data warns on most models: one line, not thousands
        print(f"fuzz: warnings of the conversions (expected on random data): {tally.summary()}")
    bad = sum(n for key, n in counts.items() if key.split()[-1] in ("mismatch", "crash"))
    print(
        f"fuzz: {args.models} models from seed {args.seed}, commit {_commit()},"
        f" {minutes:.1f} minutes: {dict(sorted(counts.items()))}"
    )
    return 1 if bad else 0


def _fuzz(
    args: argparse.Namespace, boards: tuple[str, ...], tally: WarningTally
) -> tuple[dict[str, int], float, list[float]]:
    """The chunks of main's run: outcome counts, minutes and (graphs) the integer models'
    errors against their float models; a progress line per chunk."""
    counts: dict[str, int] = {}
    errors: list[float] = []
    start = time.monotonic()
    for first in range(args.seed, args.seed + args.models, args.chunk):
        last = min(first + args.chunk, args.seed + args.models)
        outcomes: list = []
        if args.graphs:
            graph_specs = [fuzz_graph.random_graph_spec(seed) for seed in range(first, last)]
            outcomes = fuzz_graph.check_graph_specs(
                graph_specs,
                args.jobs,
                args.keep,
                boards if args.qemu else (),
                VARIANTS,
                EXTRA_SANITIZE,
            )
            errors += [o.error for o in outcomes if o.error is not None]
        elif args.qemu:
            outcomes = check_qemu_specs(_specs(first, last), boards, args.jobs, args.keep)
        else:
            outcomes = check_specs(_specs(first, last), args.jobs, args.batch, args.keep,
                                   args.onnx)  # fmt: skip
        for outcome in outcomes:
            key = f"{outcome.board} {outcome.status}" if args.qemu else outcome.status
            counts[key] = counts.get(key, 0) + 1
            if outcome.status != "ok":
                line = {"status": outcome.status, "board": outcome.board}
                line["detail"] = outcome.detail[:2000]
                line["spec"] = asdict(outcome.spec)
                if args.graphs:
                    line["graph"] = outcome.graph
                if outcome.status not in ACCEPTED:
                    print(json.dumps(line), file=sys.stderr)
                if args.log:
                    with args.log.open("a") as log:
                        log.write(json.dumps(line) + "\n")
        elapsed = time.monotonic() - start
        warned = f", {sum(tally.counts.values())} warnings" if tally.counts else ""
        print(
            f"{last - args.seed}/{args.models} models in {elapsed:.0f} s:"
            f" {dict(sorted(counts.items()))}{warned}"
        )
        sys.stdout.flush()
    return counts, (time.monotonic() - start) / 60, errors


def _specs(first: int, last: int) -> list[ModelSpec]:
    return [random_spec(seed) for seed in range(first, last)]


if __name__ == "__main__":
    sys.exit(main())
