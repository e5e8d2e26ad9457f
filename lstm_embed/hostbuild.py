"""Compile a converted model with the host C compiler and run it on arrays.

Builds are cached by a hash of the sources and flags, so repeated runs cost one compile.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from . import __version__
from .emit import render

STRICT_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Wconversion", "-Wshadow", "-Werror")
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-O1")


class HostBuildError(RuntimeError):
    pass


def compiler() -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise HostBuildError(
            f"no host C compiler '{cc}' found; install gcc (apt-get install gcc) or set CC"
        )
    return cc


def read_report(out_dir: Path) -> dict:
    path = Path(out_dir) / "report.json"
    if not path.is_file():
        raise HostBuildError(f"{out_dir}: no report.json; is this a folder written by convert?")
    return json.loads(path.read_text())


def cache_dir() -> Path:
    base = os.environ.get("LSTM_EMBED_CACHE") or Path.home() / ".cache" / "lstm-embed"
    return Path(base) / "host"


def build_host(out_dir: Path, sanitize: bool = False) -> Path:
    """Compile out_dir's model with the harness; returns the runner executable (cached)."""
    out_dir = Path(out_dir)
    report = read_report(out_dir)
    name = report["name"]
    sources = [out_dir / f"{name}.c", out_dir / f"{name}.h"]
    flags = list(STRICT_FLAGS) + (list(SANITIZE_FLAGS) if sanitize else [])
    harness = render(
        "host_main.c.j2",
        tool_version=__version__,
        source=report["source"],
        name=name,
        NAME=name.upper(),
    )
    digest = hashlib.sha256()
    for part in [*(p.read_bytes() for p in sources), harness.encode(), " ".join(flags).encode()]:
        digest.update(hashlib.sha256(part).digest())
    target = cache_dir() / digest.hexdigest()[:24] / "runner"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        main_c = Path(tmp) / "host_main.c"
        main_c.write_text(harness)
        exe = Path(tmp) / "runner"
        cmd = [
            compiler(),
            *flags,
            f"-I{out_dir}",
            str(out_dir / f"{name}.c"),
            str(main_c),
            "-o",
            str(exe),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise HostBuildError(f"host compile failed: {' '.join(cmd)}\n{result.stderr}")
        os.replace(exe, target)
    return target


def run_host(out_dir: Path, x: np.ndarray, sanitize: bool = False) -> np.ndarray:
    """Run the compiled model on x (N, T, m): int16 -> int16 via run(), float -> float32 via
    run_f32(). Output (N, T, k) when the model returns sequences, else (N, k)."""
    report = read_report(out_dir)
    x = np.asarray(x)
    is_float = x.dtype.kind == "f"
    dtype = np.float32 if is_float else np.int16
    if x.ndim != 3 or x.shape[2] != report["input_size"]:
        raise HostBuildError(f"input shape {x.shape}; expected (N, T, {report['input_size']})")
    runner = build_host(out_dir, sanitize)
    with tempfile.TemporaryDirectory() as tmp:
        in_path, out_path = Path(tmp) / "x.bin", Path(tmp) / "y.bin"
        header = np.array(x.shape[:2], dtype=np.int32).tobytes()
        in_path.write_bytes(header + np.ascontiguousarray(x, dtype=dtype).tobytes())
        result = subprocess.run(
            [str(runner), "f" if is_float else "q", str(in_path), str(out_path)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise HostBuildError(f"host runner failed ({result.returncode}): {result.stderr}")
        y = np.fromfile(out_path, dtype=dtype)
    steps = x.shape[1] if report["return_sequences"] else None
    shape = (x.shape[0], steps, report["output_size"]) if steps else (x.shape[0], -1)
    return y.reshape(shape)
