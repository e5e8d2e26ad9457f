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
    for array, x in zip(arrays, graph["inputs"], strict=True):
        want = (rows, steps, x["size"]) if x["sequence"] else (rows, x["size"])
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
        per_row = steps if (item["sequence"] or stepped) else 1
        count = per_row * item["size"]
        part = y[:, start : start + count]
        start += count
        shape = (rows, steps, item["size"]) if (item["sequence"] or stepped) else (rows, -1)
        outputs.append(part.reshape(shape))
    return outputs


class GraphModel:
    """A converted graph, run on the host: ``predict`` takes the inputs as a dict keyed by the
    input names, a list in the model's input order, or one array for a model with one input;
    it returns the outputs as Keras does (one array, or a list in the model's order). Each
    call runs the compiled run_f32() on every sample."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.report = graph_report(self.out_dir)
        self.input_names = [x["name"] for x in self.report["graph"]["inputs"]]
        self.output_names = [y["tensor"] for y in self.report["graph"]["outputs"]]
        build_graph_host(self.out_dir)

    def predict(self, x: Any) -> np.ndarray | list[np.ndarray]:
        if isinstance(x, dict):
            missing = [n for n in self.input_names if n not in x]
            if missing:
                raise ValueError(f"no input {missing[0]!r} (the inputs: {self.input_names})")
            inputs = {n: x[n] for n in self.input_names}
        elif isinstance(x, list | tuple):
            if len(x) != len(self.input_names):
                raise ValueError(f"{len(x)} arrays for the inputs {self.input_names}")
            inputs = dict(zip(self.input_names, x, strict=True))
        elif len(self.input_names) == 1:
            inputs = {self.input_names[0]: x}
        else:
            raise ValueError(f"the model has inputs {self.input_names}: give a dict or a list")
        y = run_graph_host(self.out_dir, inputs, "run_f32")
        return y[0] if len(y) == 1 else y

    def __repr__(self) -> str:
        return (
            f"<lstm_embed graph {self.report['name']!r}: inputs {self.input_names} -> outputs"
            f" {self.output_names}>"
        )
