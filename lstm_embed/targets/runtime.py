"""``lstm_embed.load(OUT)``: the generated C of a converted folder, callable from Python.

The model's C files and a small shim (templates/export/runtime/shim.c.j2) are compiled with
the host C compiler into a shared library, cached by content hash beside hostbuild's runners,
and called through ctypes. Python owns every state: buffers of ``sizeof(NAME_state_t)`` bytes
(the shim reports the size), one per stream. ``predict`` runs ``NAME_run`` / ``NAME_run_f32``,
the functions ``lstm-embed run`` runs, so the outputs are the same bits.

    model = lstm_embed.load("out")
    y = model.predict(x)          # (N, T, m) float -> float32, int16 -> int16, like run
    model.reset()
    y_t = model.step(x[:, 0])     # one timestep of N streams (or x[0, 0]: one stream)

Input is validated by ``inputs.check_input``, the check of the host runner, the QEMU runs and
the command line: the same bad input gets the same ``InputError`` (a ValueError) message. The
folder's report.json is read by ``hostbuild.read_report``, which refuses another format version.
A stateful model's predict takes the rows of x as one stream from a reset state (as Keras'
predict(x, batch_size=1) after reset_states()); a run-only model has no step.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.emit import cformat
from lstm_embed.emit.render import render
from lstm_embed.targets.hostbuild import ReportFileError, read_report
from lstm_embed.targets.inputs import InputError, InputRule, check_entry, check_input, step_input
from lstm_embed.targets.kernels import KERNELS, kernel_flags, kernel_options, model_files
from lstm_embed.version import __version__

# The strict host flags (hostbuild.STRICT_FLAGS) plus position-independent code.
SHARED_FLAGS = ("-fPIC", "-shared")


class ModelLoadError(RuntimeError):
    """The folder cannot be loaded: no converted model (or one of another format version), or
    the host build failed."""


def _check_kernel(out_dir: Path, kernel: str, core: str) -> None:
    """Refuse, before compiling, a kernel the folder's C does not hold (a file converted with
    --core holds only that core's kernels; targets.kernels.kernel_options says which)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel {kernel!r} not supported (supported: {', '.join(KERNELS)})")
    try:
        offered = kernel_options(core).offered
    except ValueError as error:
        raise ModelLoadError(f"{out_dir / 'report.json'}: {error}; convert again") from error
    if kernel not in offered:
        raise ValueError(
            f"kernel {kernel!r}: {out_dir} was converted with --core {core}, which holds no"
            f" {kernel} kernel (supported: {', '.join(offered)}); convert with --core all to"
            " choose it"
        )


def _shim_prefix(name: str) -> str:
    return f"lstm_embed_shim_{name}_"


def _library(
    out_dir: Path,
    report: dict[str, Any],
    kernel: str,
    shim_template: str = "export/runtime/shim.c.j2",
    **shim_context: Any,
) -> Path:
    """Compile (or find in the cache) the shared library of out_dir's model with a shim
    (a chain's by default; a graph's passes its own template and inputs and outputs)."""
    from lstm_embed.targets.hostbuild import STRICT_FLAGS, cache_dir, compiler

    name = report["name"]
    sources, headers = model_files(out_dir)
    if f"{name}.h" not in headers or not sources:
        raise ModelLoadError(f"{out_dir}: {name}.h or the model's .c files are missing; reconvert")
    shim = render(
        shim_template,
        tool_version=__version__,
        source=report.get("source", "?"),
        name=name,
        NAME=name.upper(),
        prefix=_shim_prefix(name),
        **shim_context,
    )
    cc = compiler()
    flags = [*STRICT_FLAGS, *SHARED_FLAGS, *kernel_flags(name, kernel)]
    digest = hashlib.sha256()
    for part in [
        *(f.encode() + (out_dir / f).read_bytes() for f in (*sources, *headers)),
        shim.encode(),
        " ".join([cc, *flags]).encode(),
    ]:
        digest.update(hashlib.sha256(part).digest())
    target = cache_dir() / f"lib-{digest.hexdigest()[:24]}" / f"lib{name}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        shim_c = Path(tmp) / "lstm_embed_shim.c"
        shim_c.write_text(shim)
        built = Path(tmp) / target.name
        cmd = [
            cc,
            *flags,
            f"-I{out_dir.resolve()}",
            *(str((out_dir / f).resolve()) for f in sources),
            str(shim_c),
            "-o",
            str(built),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ModelLoadError(
                f"compiling {name} as a shared library failed: {' '.join(cmd)}\n{result.stderr}"
            )
        os.replace(built, target)  # atomic: a concurrent load sees no half-written file
    return target


def _pointer(array: np.ndarray, ctype: type) -> Any:
    return array.ctypes.data_as(ctypes.POINTER(ctype))


class Model:
    """A converted model's C, loaded for the host. Not thread-safe: one stream state per
    handle; load the folder again for another thread."""

    def __init__(self, out_dir: str | Path, kernel: str = "auto") -> None:
        out_dir = Path(out_dir)
        try:
            report = read_report(out_dir)  # refuses another format version or a missing key
        except ReportFileError as error:
            raise ModelLoadError(str(error)) from error
        self.core = str(report.get("core", "all"))  # folders converted before --core: all
        _check_kernel(out_dir, kernel, self.core)
        self.name = cformat.c_identifier(str(report["name"]))
        self.out_dir = out_dir
        self.kernel = kernel
        self.rule = InputRule.from_report(report)  # what check_input lets through
        self.library = _library(out_dir, report, kernel)
        self._lib = ctypes.CDLL(str(self.library))
        self._bind()
        self.input_size = int(self._fn("input_size")())
        self.output_size = int(self._fn("output_size")())
        self.timesteps = int(self._fn("timesteps")())  # 0: built for any length
        self.return_sequences = bool(self._fn("return_sequences")())
        self.state_bytes = int(self._fn("state_size")())
        for key, value in (
            ("input_size", self.input_size),
            ("output_size", self.output_size),
            ("timesteps", self.timesteps),
            ("return_sequences", self.return_sequences),
        ):
            if report[key] != value:
                raise ModelLoadError(
                    f"{out_dir / 'report.json'}: {key} is {report[key]} but {self.name}.h says"
                    f" {value}; reconvert"
                )
        self._report = report
        self.stateful = self.rule.stateful
        self.run_only = self.rule.run_only
        if self.has_step == bool(self.run_only):
            steps = "has" if self.has_step else "has no"
            raise ModelLoadError(
                f"{out_dir / 'report.json'}: run_only is {self.run_only!r} but {self.name}.c"
                f" {steps} step(); reconvert"
            )
        self._run_state = self._states(1)  # predict's: NAME_run resets it per sequence
        self._stream: np.ndarray | None = None  # step's states, one per stream
        self._streams = 0
        self._fresh = True  # no step since load or reset(): a step may choose the stream count

    # ------------------------------------------------------------ ctypes

    def _fn(self, suffix: str) -> Any:
        return getattr(self._lib, _shim_prefix(self.name) + suffix)

    def _bind(self) -> None:
        i16, f32 = ctypes.POINTER(ctypes.c_int16), ctypes.POINTER(ctypes.c_float)
        vp, i32 = ctypes.c_void_p, ctypes.c_int32
        signatures: dict[str, tuple[Any, list[Any]]] = {
            "state_size": (ctypes.c_size_t, []),
            "input_size": (i32, []),
            "output_size": (i32, []),
            "timesteps": (i32, []),
            "return_sequences": (i32, []),
            "has_step": (i32, []),
            "reset": (None, [vp, i32]),
            "run": (ctypes.c_int, [vp, i16, i32, i32, i16]),
            "run_f32": (ctypes.c_int, [vp, f32, i32, i32, f32]),
        }
        self.has_step = bool(self._fn("has_step")())  # run-only models have none
        if self.has_step:
            signatures |= {
                "step": (None, [vp, i32, i16, i16]),
                "step_f32": (None, [vp, i32, f32, f32]),
            }
        for suffix, (restype, argtypes) in signatures.items():
            fn = self._fn(suffix)
            fn.restype, fn.argtypes = restype, argtypes

    def _states(self, n: int) -> np.ndarray:
        """n zeroed-by-reset states, contiguous; uint64 words keep the buffer 8-byte aligned."""
        words = -(-n * self.state_bytes // 8)
        buffer = np.zeros(max(words, 1), dtype=np.uint64)
        self._fn("reset")(buffer.ctypes.data, n)
        return buffer

    # ------------------------------------------------------------ API

    def predict(self, x: Any) -> np.ndarray:
        """x (N, T, m) -> (N, T, k) when the model returns sequences, else (N, k), like
        ``model.predict``. Float input runs NAME_run_f32 (float32 out); integer input is the
        quantized int16 format and runs NAME_run (int16 out). N >= 1 and any T >= 1 (an LSTM
        is defined at every length; a run-only model takes at most its built length), checked
        by ``inputs.check_input`` as ``lstm-embed run`` checks; the stream state of ``step`` is
        not touched. A stateful model takes the N rows as one stream, from a reset
        state (each call: Keras' reset_states() then predict(x, batch_size=1))."""
        x = check_input(x, self.rule)  # float -> float32 (finite), integers -> int16
        n, steps = x.shape[0], x.shape[1]
        out_steps = steps if self.return_sequences else 1
        is_float = x.dtype == np.float32
        y = np.empty((n, out_steps, self.output_size), dtype=x.dtype)
        if self.stateful:  # the rows are one stream from a reset state; run() continues it
            self._fn("reset")(self._run_state.ctypes.data, 1)
        ctype = ctypes.c_float if is_float else ctypes.c_int16
        run = self._fn("run_f32" if is_float else "run")
        status = run(self._run_state.ctypes.data, _pointer(x, ctype), n, steps, _pointer(y, ctype))
        if status != 0:
            raise RuntimeError(f"{self.name}_run returned {status}")
        return y if self.return_sequences else y[:, 0]

    def reset(self) -> None:
        """Zero the stream states; the next ``step`` may start any number of streams."""
        if self._stream is not None:
            self._fn("reset")(self._stream.ctypes.data, self._streams)
        self._fresh = True

    def step(self, x_t: Any) -> np.ndarray:
        """One timestep: x_t (m,) for one stream -> (k,), or (N, m) for N streams -> (N, k);
        or T timesteps of N streams: (N, T, m) -> (N, T, k), as the host runner's step.

        Stream i keeps its state between calls (NAME_step / NAME_step_f32: float input gives
        float32, int16 input int16, as predict); reset() starts again. The output is the
        model's output at each timestep: for a model that does not return sequences, what
        predict would give if the window ended there. Input is checked as (streams, timesteps,
        features) by check_input before any timestep runs: the same messages as the host's."""
        x_in = np.asarray(x_t)
        e = check_entry("step_f32" if x_in.dtype.kind == "f" else "step", self.rule)
        x = check_input(
            step_input(x_in, self.rule), self.rule, "float32" if e.float_input else "int16"
        )
        n = x.shape[0]
        if n != self._streams:
            if not self._fresh:
                raise InputError(
                    f"input shape {x_in.shape}: {n} stream(s) but the state holds"
                    f" {self._streams}; call reset() to start other streams"
                )
            self._stream, self._streams = self._states(n), n
        self._fresh = False
        ctype = ctypes.c_float if e.float_input else ctypes.c_int16
        step = self._fn(e.name)
        y = np.empty((x.shape[1], n, self.output_size), dtype=x.dtype)
        for t in range(x.shape[1]):
            x_step = np.ascontiguousarray(x[:, t])
            step(self._stream.ctypes.data, n, _pointer(x_step, ctype), _pointer(y[t], ctype))
        ndim = x_in.ndim + (1 if self.rule.ids else 0)  # ids have no feature axis
        if ndim == 3:
            return y.transpose(1, 0, 2).copy()
        return y[0, 0] if ndim == 1 else y[0]

    @property
    def info(self) -> dict[str, Any]:
        """Formats and sizes: from report.json, and the state size from the compiled C."""
        r = self._report
        return {
            "name": self.name,
            "source": r.get("source"),
            "input_size": self.input_size,
            "output_size": self.output_size,
            "timesteps": self.timesteps,
            "return_sequences": self.return_sequences,
            "input_scale": list(r["input_scale"]),
            "output_scale": r["output_scale"],
            "layers": [
                {k: layer.get(k) for k in ("name", "type", "units", "activation", "format")}
                for layer in r["layers"]
            ],
            "params": r["params"],
            "macs_per_step": r["macs_per_step"],
            "flash_bytes": dict(r["flash_bytes"]),
            "ram_bytes": dict(r["ram_bytes"]),
            "state_bytes": self.state_bytes,
            "kernel": self.kernel,
            "core": self.core,  # the --core it was converted with: which kernels the C holds
            "library": str(self.library),
        }

    def __repr__(self) -> str:
        steps = self.timesteps or "any"
        return (
            f"<lstm_embed model {self.name!r}: {self.input_size} inputs -> {self.output_size}"
            f" outputs, timesteps {steps}, state {self.state_bytes} B, kernel {self.kernel}>"
        )


def load(out_dir: str | Path, kernel: str = "auto") -> Model:
    """The converted model in out_dir, compiled for the host and ready to ``predict``/``step``.

    kernel: auto (what the C picks on the host: reference when it holds every kernel),
    reference, or plain (the optimized plain-C kernel of the small cores, to check it on the
    host); all give the same bits. A folder converted with --core holds only that core's
    kernels: a kernel it lacks is refused (ValueError). ModelLoadError when the folder holds no
    converted model of this version's format or the host build fails."""
    return Model(out_dir, kernel)
