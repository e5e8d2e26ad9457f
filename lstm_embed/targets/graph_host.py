"""Host build and run of a graph's C (tests, run -i, compare): the model's NAME.c with the
graph harness (templates/graph_host_main.c.j2), cached by content like ``hostbuild``'s."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lstm_embed.emit.render import model_file_names, render
from lstm_embed.targets.hostbuild import (
    SANITIZE_FLAGS,
    STRICT_FLAGS,
    HostToolError,
    compile_cached,
    exit_description,
)
from lstm_embed.version import __version__

ENTRIES = ("run", "run_f32", "step", "step_f32")


def is_graph_folder(out_dir: str | Path) -> bool:
    """Whether out_dir's report.json was written by the graph pipeline (docs/graphs.md)."""
    try:
        return "graph" in json.loads((Path(out_dir) / "report.json").read_text())
    except (OSError, ValueError):
        return False


def graph_report(out_dir: Path) -> dict:
    report = json.loads((Path(out_dir) / "report.json").read_text())
    if "graph" not in report:
        raise ValueError(f"{out_dir}: not a graph model's folder (report.json has no 'graph')")
    return report


def build_graph_host(
    out_dir: Path, sanitize: bool = False, extra_flags: tuple[str, ...] = ()
) -> Path:
    """The host runner of a graph folder (``extra_flags``: after the strict and sanitizer
    flags, e.g. the fuzzer's optimization level and kernel choice)."""
    out_dir = Path(out_dir)
    report = graph_report(out_dir)
    name, graph = report["name"], report["graph"]
    sources = [out_dir / f for f in model_file_names(name)]
    flags = list(STRICT_FLAGS) + (list(SANITIZE_FLAGS) if sanitize else []) + list(extra_flags)
    harness = render(
        "graph_host_main.c.j2",
        tool_version=__version__,
        source=report["source"],
        name=name,
        NAME=name.upper(),
        graph_inputs=graph["inputs"],
        graph_outputs=graph["outputs"],
        fixed_windows=bool(report.get("fixed_windows")),
    )
    return compile_cached(
        out_dir, name, sources, harness, flags, "graph_runner", "graph_host_main.c"
    )


def run_graph_host(
    out_dir: Path,
    inputs: dict[str, np.ndarray],
    entry: str = "run",
    sanitize: bool = False,
    extra_flags: tuple[str, ...] = (),
) -> list[np.ndarray]:
    """Every sample of ``inputs`` (by input name; int16 for run/step, float32 otherwise)
    through one entry point of the compiled graph; the outputs in the model's order, (N, T, k)
    for a sequence output (and every output of step/step_f32), else (N, k)."""
    if entry not in ENTRIES:
        raise ValueError(f"entry {entry!r} (supported: {', '.join(ENTRIES)})")
    report = graph_report(out_dir)
    graph = report["graph"]
    dtype = np.float32 if entry.endswith("_f32") else np.int16
    arrays = [np.asarray(inputs[x["name"]], dtype) for x in graph["inputs"]]
    rows = len(arrays[0])
    steps = next(a.shape[1] for a, x in zip(arrays, graph["inputs"], strict=True) if x["sequence"])
    fixed = bool(report.get("fixed_windows"))  # sequences of declared, different lengths

    def rows_of(item: dict) -> int:
        return int(item["timesteps"]) if fixed else steps

    for array, x in zip(arrays, graph["inputs"], strict=True):
        want = (rows, rows_of(x), x["size"]) if x["sequence"] else (rows, x["size"])
        if array.shape != want or not 1 <= steps <= report["timesteps"]:
            raise ValueError(
                f"input {x['name']!r} has shape {array.shape}; expected {want} with 1 to"
                f" {report['timesteps']} timesteps (every input the same number of rows)"
            )
    flat = np.concatenate([a.reshape(rows, -1) for a in arrays], axis=1)
    runner = build_graph_host(out_dir, sanitize, extra_flags)
    with tempfile.TemporaryDirectory() as tmp:
        in_path, out_path = Path(tmp) / "x.bin", Path(tmp) / "y.bin"
        in_path.write_bytes(np.array([rows, steps], np.int32).tobytes() + flat.tobytes())
        cmd = [str(runner), entry, str(in_path), str(out_path)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise HostToolError(
                f"the host build of {report['name']} failed in {entry}()"
                f" ({exit_description(result.returncode)})",
                cmd,
                result.stdout + result.stderr,
                log=runner.parent / "run.log",
            )
        y = np.fromfile(out_path, dtype=dtype).reshape(rows, -1)
    outputs, start = [], 0
    stepped = entry.startswith("step")
    for item in graph["outputs"]:
        per_row = (steps if stepped else rows_of(item)) if (item["sequence"] or stepped) else 1
        count = per_row * item["size"]
        part = y[:, start : start + count]
        start += count
        shape = (rows, per_row, item["size"]) if (item["sequence"] or stepped) else (rows, -1)
        outputs.append(part.reshape(shape))
    return outputs


class GraphModel:
    """A converted graph, run on the host: ``predict`` takes the inputs as a dict keyed by the
    input names, a list in the model's input order, or one array for a model with one input;
    it returns the outputs as Keras does (one array, or a list in the model's order). Each
    call runs the compiled run_f32() on every sample. Where the graph streams, ``step`` runs
    one timestep of N streams through the compiled step() / step_f32() (a shared library
    called through ctypes, each stream's state kept between calls), and ``reset`` starts
    again."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.report = graph_report(self.out_dir)
        graph = self.report["graph"]
        self.input_names = [x["name"] for x in graph["inputs"]]
        self.output_names = [y["tensor"] for y in graph["outputs"]]
        self.has_step = not self.report["run_only"]
        build_graph_host(self.out_dir)
        self._lib: Any = None
        self._streams = 0
        self._states: np.ndarray | None = None

    def _inputs(self, x: Any) -> dict[str, Any]:
        if isinstance(x, dict):
            missing = [n for n in self.input_names if n not in x]
            if missing:
                raise ValueError(f"no input {missing[0]!r} (the inputs: {self.input_names})")
            return {n: x[n] for n in self.input_names}
        if isinstance(x, list | tuple):
            if len(x) != len(self.input_names):
                raise ValueError(f"{len(x)} arrays for the inputs {self.input_names}")
            return dict(zip(self.input_names, x, strict=True))
        if len(self.input_names) == 1:
            return {self.input_names[0]: x}
        raise ValueError(f"the model has inputs {self.input_names}: give a dict or a list")

    def predict(self, x: Any) -> np.ndarray | list[np.ndarray]:
        y = run_graph_host(self.out_dir, self._inputs(x), "run_f32")
        return y[0] if len(y) == 1 else y

    def _library(self) -> Any:
        import ctypes

        from lstm_embed.targets.runtime import _library, _shim_prefix

        if self._lib is None:
            graph = self.report["graph"]
            path = _library(self.out_dir, self.report, "auto", "export/runtime/graph_shim.c.j2",
                            inputs=graph["inputs"], outputs=graph["outputs"])  # fmt: skip
            lib = ctypes.CDLL(str(path))
            prefix = _shim_prefix(self.report["name"])
            self._lib = {k: getattr(lib, prefix + k)
                         for k in ("state_size", "reset", "step", "step_f32")}  # fmt: skip
            self._lib["state_size"].restype = ctypes.c_size_t
            for k in ("reset", "step", "step_f32"):
                self._lib[k].restype = None
        return self._lib

    def reset(self) -> None:
        """Every stream from a zero state; the next ``step`` may start any number of streams."""
        self._states, self._streams = None, 0

    def step(self, x_t: Any) -> np.ndarray | list[np.ndarray]:
        """One timestep of every input (a dict by name, a list, or one array): (N, size) for N
        streams, or (size,) for one; a sequence input its row for this timestep, a vector
        input its vector. Float input runs step_f32 (float32 out), integer input the int16
        step(). Returns each output's value after this timestep, (N, size) or (size,), one
        array or a list in the model's output order."""
        import ctypes

        if not self.has_step:
            raise ValueError(
                f"{self.out_dir}: a run-only graph has no step ({self.report['run_only']})"
            )
        inputs = self._inputs(x_t)
        arrays = [np.asarray(inputs[n]) for n in self.input_names]
        single = arrays[0].ndim == 1
        floats = arrays[0].dtype.kind == "f"
        dtype, ctype = (np.float32, ctypes.c_float) if floats else (np.int16, ctypes.c_int16)
        rows = 1 if single else len(arrays[0])
        for array, item in zip(arrays, self.report["graph"]["inputs"], strict=True):
            want = (item["size"],) if single else (rows, item["size"])
            if array.shape != want or (array.dtype.kind == "f") != floats:
                raise ValueError(
                    f"input {item['name']!r} has shape {array.shape} ({array.dtype}); expected"
                    f" {want}, every input float or every input int16 (one timestep)"
                )
            if floats and not np.isfinite(array).all():
                raise ValueError(f"input {item['name']!r} holds NaN or infinity")
        lib = self._library()
        if self._states is None:
            words = -(-rows * int(lib["state_size"]()) // 8)
            self._states, self._streams = np.zeros(max(words, 1), np.uint64), rows
            lib["reset"](ctypes.c_void_p(self._states.ctypes.data), ctypes.c_int32(rows))
        elif rows != self._streams:
            raise ValueError(
                f"{rows} stream(s) but the state holds {self._streams}; call reset() to start"
                " other streams"
            )
        xs = [np.ascontiguousarray(a.reshape(rows, -1), dtype) for a in arrays]
        ys = [np.zeros((rows, y["size"]), dtype) for y in self.report["graph"]["outputs"]]
        x_ptrs = (ctypes.POINTER(ctype) * len(xs))(
            *(a.ctypes.data_as(ctypes.POINTER(ctype)) for a in xs))  # fmt: skip
        y_ptrs = (ctypes.POINTER(ctype) * len(ys))(
            *(a.ctypes.data_as(ctypes.POINTER(ctype)) for a in ys))  # fmt: skip
        step = lib["step_f32" if floats else "step"]
        step(ctypes.c_void_p(self._states.ctypes.data), ctypes.c_int32(rows), x_ptrs, y_ptrs)
        out = [y[0] if single else y for y in ys]
        return out[0] if len(out) == 1 else out

    def __repr__(self) -> str:
        return (
            f"<lstm_embed graph {self.report['name']!r}: inputs {self.input_names} -> outputs"
            f" {self.output_names}>"
        )
