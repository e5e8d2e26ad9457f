"""Random-model fuzzing: generated C (sanitized host build) must equal the integer reference.

Models are described by a ``ModelSpec`` (plain data: shapes, activations and the *kind* of
weights, e.g. zeros, 1e4, 1e-8, all equal) and built from its seed, so a failing spec printed
in a report rebuilds the exact model. The hypothesis tests draw specs; ``make fuzz`` runs

    python -m lstm_embed.fuzz --models 10000 --jobs 2

which converts models in batches, compiles several into one sanitized binary (each model's
``host_main.c`` with ``main`` renamed, plus a dispatcher), and compares the int16 and float
entry points of every model with ``reference.run`` / ``reference.run_float`` bit for bit.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, reference
from .emit import render
from .hostbuild import SANITIZE_FLAGS, STRICT_FLAGS, compiler
from .ir import DenseLayer, LSTMLayer, Model
from .pipeline import convert_ir
from .qir import QModel
from .quantize import QuantizeOptions

# Ranges of the issue: units 1-64, inputs 1-16, T 1-100.
UNITS = (1, 64)
INPUTS = (1, 16)
TIMESTEPS = (1, 100)
MAX_LSTM_LAYERS, MAX_DENSE_LAYERS = 3, 3
WEIGHT_KINDS = ("normal", "zeros", "huge", "tiny", "equal", "spiky")
HUGE, TINY = 1e4, 1e-8
FLOAT_SEQUENCES = 6  # calibration-like, zeros, +/-1e6, 100x calibration, alternating, NaN/Inf
INT_SEQUENCES = 4  # random int16, all -32768, all 32767, alternating extremes
# float-cast-overflow and float-divide-by-zero are not part of -fsanitize=undefined in GCC.
EXTRA_SANITIZE = ("-fsanitize=float-cast-overflow,float-divide-by-zero",)
# Batches rotate through hostbuild's -O1 and the faster -O0, with the host's default
# (reference) kernel and the plain-C optimized one.
VARIANTS = (("-O1", "reference"), ("-O0", "plain"), ("-O1", "plain"), ("-O0", "reference"))


def case_flags(optimize: str = "-O1") -> tuple[str, ...]:
    """hostbuild's strict + sanitizer flags (its -O1 by default); the last -O wins."""
    return (*STRICT_FLAGS, *SANITIZE_FLAGS, *EXTRA_SANITIZE, optimize)


def kernel_defines(names: list[str], kernel: str) -> list[str]:
    if kernel == "reference":
        return []
    return [f"-D{name.upper()}_USE_{kernel.upper()}_KERNEL" for name in names]


@dataclass(frozen=True)
class LSTMSpec:
    units: int
    recurrent_activation: str = "sigmoid"
    weights: str = "normal"
    bias: str | None = "normal"  # a weight kind, or None for use_bias=False


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
    status: str  # "ok", "mismatch", "crash" (sanitizer or runner failure), "rejected"
    detail: str = ""


# ---------------------------------------------------------------------------------- models


def weights(rng: np.random.Generator, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "huge":
        return rng.uniform(-1, 1, shape) * HUGE
    if kind == "tiny":
        return rng.uniform(-1, 1, shape) * TINY
    if kind == "equal":
        return np.full(shape, rng.choice([HUGE, -HUGE, 0.5, -1.0, TINY]))
    scale = 10 ** rng.uniform(-2, 0.5)
    values = rng.uniform(-1, 1, shape) * scale
    if kind == "spiky" and values.size:
        spikes = rng.integers(0, values.size, max(1, values.size // 50))
        values.flat[spikes] = rng.choice([HUGE, -HUGE], spikes.size)
    elif kind != "normal":
        raise ValueError(f"unknown weight kind {kind!r}")
    return values


def build_model(spec: ModelSpec) -> Model:
    rng = np.random.default_rng(spec.seed)
    layers: list[LSTMLayer | DenseLayer] = []
    size = spec.inputs
    for k, la in enumerate(spec.lstm):
        n = la.units
        last = k == len(spec.lstm) - 1
        bias = weights(rng, la.bias, (4 * n,)) if la.bias else None
        layers.append(
            LSTMLayer(
                name=f"lstm_{k}",
                input_size=size,
                units=n,
                kernel=weights(rng, la.weights, (size, 4 * n)),
                recurrent_kernel=weights(rng, la.weights, (n, 4 * n)),
                bias=bias,
                recurrent_activation=la.recurrent_activation,
                return_sequences=spec.return_sequences or not last,
            )
        )
        size = n
    for k, de in enumerate(spec.dense):
        bias = weights(rng, de.bias, (de.units,)) if de.bias else None
        kernel = weights(rng, de.weights, (size, de.units))
        layers.append(DenseLayer(f"dense_{k}", size, de.units, kernel, bias, de.activation))
        size = de.units
    timesteps = spec.timesteps if spec.fixed_length else None
    source = f"fuzz spec {spec.to_json()}"
    return Model("net", spec.inputs, timesteps, tuple(layers), source=source)


def build_inputs(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibration, float test inputs, int16 test inputs), all with the spec's T and m."""
    rng = np.random.default_rng(spec.seed + 1)
    shape = (spec.timesteps, spec.inputs)
    calibration = rng.normal(size=(4, *shape)) * spec.calibration_scale
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
    return calibration.astype(np.float32), x.astype(np.float32), x_q


def build_case(spec: ModelSpec) -> Case:
    calibration, x, x_q = build_inputs(spec)
    return Case(spec, build_model(spec), calibration, x, x_q)


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
    scale = 0.0 if rng.random() < 0.05 else float(10 ** rng.uniform(-3, 3))
    return ModelSpec(
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


def _convert(case: Case, folder: Path, name: str) -> _Converted | Outcome:
    try:
        options = QuantizeOptions(weight_bits=case.spec.weight_bits)
        conversion = convert_ir(
            case.model, case.calibration, folder, name=name, options=options, force=True
        )
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


def _compare(item: _Converted, runner: Path, index: int) -> Outcome:
    case, q = item.case, item.qmodel
    expected = {"q": reference.run(q, case.x_q), "f": reference.run_float(q, case.x)}
    inputs = {"q": case.x_q, "f": case.x}
    for mode in ("q", "f"):
        in_path, out_path = item.folder / f"x_{mode}.bin", item.folder / f"y_{mode}.bin"
        _write_input(in_path, inputs[mode])
        proc = subprocess.run(
            [str(runner), str(index), mode, str(in_path), str(out_path)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            return Outcome(case.spec, "crash", f"{mode} run exit {proc.returncode}: {proc.stderr}")
        dtype = np.float32 if mode == "f" else np.int16
        want = expected[mode].astype(dtype)
        got = np.fromfile(out_path, dtype=dtype)
        if got.size != want.size:
            return Outcome(case.spec, "mismatch", f"{mode}: {got.size} values, want {want.size}")
        got = got.reshape(want.shape)
        # bit patterns, so that the float path is compared exactly (and -0.0 != 0.0)
        bits = np.int32 if mode == "f" else np.int16
        if not np.array_equal(got.view(bits), want.view(bits)):
            return Outcome(case.spec, "mismatch", f"{mode}: {first_difference(want, got)}")
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
        result = _convert(case, folder / f"m{k}", f"m{k}")
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
    specs: list[ModelSpec], jobs: int = 2, batch_size: int = 8, keep: Path | None = None
) -> list[Outcome]:
    """Check many specs, ``jobs`` batches at a time (numpy and the compiler release the GIL
    for most of the time; compiles dominate)."""
    root = Path(tempfile.mkdtemp(prefix="lstm-embed-fuzz-", dir=keep))
    chunks = [specs[i : i + batch_size] for i in range(0, len(specs), batch_size)]

    def work(k: int) -> list[Outcome]:
        folder = root / f"batch{k}"
        folder.mkdir()
        optimize, kernel = VARIANTS[k % len(VARIANTS)]
        with np.errstate(all="ignore"):  # exp overflow in the float model of huge weights
            outcomes = check_batch([build_case(s) for s in chunks[k]], folder, optimize, kernel)
        if all(o.status == "ok" for o in outcomes):
            shutil.rmtree(folder, ignore_errors=True)
        return outcomes

    try:
        with ThreadPoolExecutor(jobs) as pool:
            return [o for outcomes in pool.map(work, range(len(chunks))) for o in outcomes]
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lstm_embed.fuzz", description="random models: host C vs reference"
    )
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="first spec seed")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="models per compiled binary")
    parser.add_argument("--chunk", type=int, default=128, help="models between progress lines")
    parser.add_argument("--keep", type=Path, help="keep failing batches under this folder")
    parser.add_argument("--log", type=Path, help="append one JSON line per non-ok model")
    args = parser.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    start = time.monotonic()
    for first in range(args.seed, args.seed + args.models, args.chunk):
        last = min(first + args.chunk, args.seed + args.models)
        specs = [random_spec(seed) for seed in range(first, last)]
        for outcome in check_specs(specs, args.jobs, args.batch, args.keep):
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            if outcome.status != "ok":
                line = {"status": outcome.status, "detail": outcome.detail[:2000]}
                line["spec"] = asdict(outcome.spec)
                print(json.dumps(line), file=sys.stderr)
                if args.log:
                    with args.log.open("a") as log:
                        log.write(json.dumps(line) + "\n")
        elapsed = time.monotonic() - start
        print(f"{last - args.seed} models in {elapsed:.0f} s: {counts}", flush=True)
    print(f"fuzz: variants (optimization, kernel) rotated per batch: {VARIANTS}")
    bad = sum(n for status, n in counts.items() if status in ("mismatch", "crash"))
    print(f"fuzz: {args.models} models from seed {args.seed}: {counts}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
