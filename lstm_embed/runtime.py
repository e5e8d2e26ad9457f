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

A stateful model's predict takes the rows of x as one stream from a reset state (as Keras'
predict(x, batch_size=1) after reset_states()); a run-only model has no step.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, cformat
from .emit import render
from .export import KERNELS, kernel_flags, model_files

INT16_MIN, INT16_MAX = -32768, 32767
# The strict host flags (hostbuild.STRICT_FLAGS) plus position-independent code.
SHARED_FLAGS = ("-fPIC", "-shared")


class ModelLoadError(RuntimeError):
    """The folder cannot be loaded: no converted model, or the host build failed."""


def _shim_prefix(name: str) -> str:
    return f"lstm_embed_shim_{name}_"


def _library(out_dir: Path, report: dict[str, Any], kernel: str) -> Path:
    """Compile (or find in the cache) the shared library of out_dir's model."""
    from .hostbuild import STRICT_FLAGS, cache_dir, compiler

    name = report["name"]
    sources, headers = model_files(out_dir)
    if f"{name}.h" not in headers or not sources:
        raise ModelLoadError(f"{out_dir}: {name}.h or the model's .c files are missing; reconvert")
    shim = render(
        "export/runtime/shim.c.j2",
        tool_version=__version__,
        source=report.get("source", "?"),
        name=name,
        NAME=name.upper(),
        prefix=_shim_prefix(name),
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
        path = out_dir / "report.json"
        if not path.is_file():
            raise ModelLoadError(f"{out_dir}: no report.json; is this a folder written by convert?")
        if kernel not in KERNELS:
            raise ValueError(f"kernel {kernel!r} not supported (supported: {', '.join(KERNELS)})")
        report = json.loads(path.read_text())
        self.name = cformat.c_identifier(str(report["name"]))
        self.out_dir = out_dir
        self.kernel = kernel
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
                    f"{path}: {key} is {report[key]} but {self.name}.h says {value}; reconvert"
                )
        self._report = report
        self.stateful = bool(report.get("stateful", False))
        self.run_only = str(report.get("run_only", "") or "")
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

    # ------------------------------------------------------------ input

    def _values(self, x: np.ndarray, what: str) -> np.ndarray:
        """float -> float32 (finite), integers -> int16 (in range); anything else refused."""
        if x.dtype.kind == "f":
            x32 = x.astype(np.float32)
            if not np.isfinite(x32).all():
                first = tuple(int(i) for i in np.argwhere(~np.isfinite(x32))[0])
                raise ValueError(f"{what}: value at {first} is {x32[first]}; inputs must be finite")
            return np.ascontiguousarray(x32)
        if x.dtype.kind in "iu" and x.dtype != np.bool_:
            if x.size and (x.min() < INT16_MIN or x.max() > INT16_MAX):
                raise ValueError(
                    f"{what}: integer input is the model's int16 format; values reach"
                    f" {x.min()}..{x.max()}, outside {INT16_MIN}..{INT16_MAX}"
                )
            return np.ascontiguousarray(x, dtype=np.int16)
        raise ValueError(f"{what}: dtype {x.dtype} not supported (float, or int16 quantized)")

    # ------------------------------------------------------------ API

    def predict(self, x: Any) -> np.ndarray:
        """x (N, T, m) -> (N, T, k) when the model returns sequences, else (N, k), like
        ``model.predict``. Float input runs NAME_run_f32 (float32 out); integer input is the
        quantized int16 format and runs NAME_run (int16 out). Any T >= 1 (an LSTM is defined
        at every length; a run-only model takes at most its built length); the stream state of
        ``step`` is not touched. A stateful model takes the N rows as one stream, from a reset
        state (each call: Keras' reset_states() then predict(x, batch_size=1))."""
        x = np.asarray(x)
        m = self.input_size
        if x.ndim != 3 or x.shape[2] != m:
            raise ValueError(f"predict: input shaped {x.shape}; expected (N, T, {m})")
        if x.shape[1] < 1:
            raise ValueError("predict: input has 0 timesteps; expected at least 1")
        if self.run_only and x.shape[1] > self.timesteps:
            raise ValueError(
                f"predict: input has {x.shape[1]} timesteps; {self.name} takes at most"
                f" {self.timesteps} ({self.run_only})"
            )
        x = self._values(x, "predict")
        n, steps = x.shape[0], x.shape[1]
        out_steps = steps if self.return_sequences else 1
        is_float = x.dtype == np.float32
        y = np.empty((n, out_steps, self.output_size), dtype=x.dtype)
        if n:
            if self.stateful:  # the rows are one stream from a reset state; run() continues it
                self._fn("reset")(self._run_state.ctypes.data, 1)
            ctype = ctypes.c_float if is_float else ctypes.c_int16
            run = self._fn("run_f32" if is_float else "run")
            status = run(
                self._run_state.ctypes.data, _pointer(x, ctype), n, steps, _pointer(y, ctype)
            )
            if status != 0:
                raise RuntimeError(f"{self.name}_run returned {status}")
        return y if self.return_sequences else y[:, 0]

    def reset(self) -> None:
        """Zero the stream states; the next ``step`` may start any number of streams."""
        if self._stream is not None:
            self._fn("reset")(self._stream.ctypes.data, self._streams)
        self._fresh = True

    def step(self, x_t: Any) -> np.ndarray:
        """One timestep: x_t (m,) for one stream -> (k,), or (N, m) for N streams -> (N, k).

        Stream i keeps its state between calls (NAME_step); reset() starts again. The output
        is the model's output at this timestep: for a model that does not return sequences,
        what predict would give if the window ended here."""
        if not self.has_step:
            raise ValueError(f"step: {self.name} has no step(): {self.run_only}; use predict")
        x_t = np.asarray(x_t)
        m = self.input_size
        if x_t.ndim not in (1, 2) or x_t.shape[-1] != m:
            raise ValueError(f"step: input shaped {x_t.shape}; expected ({m},) or (N, {m})")
        single = x_t.ndim == 1
        x = self._values(x_t.reshape(1, m) if single else x_t, "step")
        n = x.shape[0]
        if n != self._streams:
            if not self._fresh:
                raise ValueError(
                    f"step: {n} stream(s) given but the state holds {self._streams};"
                    " call reset() to start other streams"
                )
            self._stream, self._streams = self._states(n), n
        self._fresh = False
        is_float = x.dtype == np.float32
        ctype = ctypes.c_float if is_float else ctypes.c_int16
        y = np.empty((n, self.output_size), dtype=x.dtype)
        if n:
            step = self._fn("step_f32" if is_float else "step")
            step(self._stream.ctypes.data, n, _pointer(x, ctype), _pointer(y, ctype))
        return y[0] if single else y

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

    kernel: auto (the host's: reference), reference, or plain (the optimized plain-C kernel
    of the small cores, to check it on the host); all give the same bits."""
    return Model(out_dir, kernel)
