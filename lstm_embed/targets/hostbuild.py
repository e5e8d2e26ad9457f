"""Compile a converted model with the host C compiler and run it on arrays.

Every entry point of the generated C API can be run (``run_entry_point``); ``run_host``
picks run() for int16 input and run_f32() for float input. Input is validated by
``inputs.check_input``, the check every entry point shares. Builds are cached by a hash of
the sources and flags, so repeated runs cost one compile.

``read_report`` is the one reader of a converted folder's report.json (the command line,
firmware, ``lstm_embed.load``, compare, profile and export use it): a report of another format
version (``REPORT_FORMAT``) or missing a key is refused with one line ending in "convert again".
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lstm_embed.emit.render import model_file_names, render
from lstm_embed.targets.inputs import InputRule, check_entry, check_input, entry_point, output_shape
from lstm_embed.version import __version__

STRICT_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Wconversion", "-Wshadow", "-Werror")
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g", "-O1")


TAIL_LINES = 30  # of a failed tool's output, on the command line (the log has all)


class ToolFailure(RuntimeError):
    """An external program (compiler, linker, QEMU, the host runner) failed.

    ``str()`` holds the summary, the command and the program's whole output, for Python
    callers; the command line prints the summary, the last ``TAIL_LINES`` lines of the output
    and the path of ``log``, which holds everything.
    """

    def __init__(
        self, summary: str, command: Sequence[str], output: str, log: Path | None = None
    ) -> None:
        self.summary = summary
        self.command = [str(c) for c in command]
        self.output = output.rstrip()
        self.log = log
        if log is not None:
            try:
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(f"{summary}\n$ {shlex.join(self.command)}\n{self.output}\n")
            except OSError:
                self.log = None
        super().__init__(f"{summary}\n$ {shlex.join(self.command)}\n{self.output}")

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last ``lines`` lines of the output, saying how many came before; when the first
        error is among those, it and its two lines of source context stand first (a
        compiler's first error is the one to read)."""
        out = self.output.splitlines()
        if len(out) <= lines:
            return "\n".join(out)
        hidden = len(out) - lines
        first = next((k for k in range(hidden) if "error" in out[k]), None)
        if first is None:
            return f"[... {hidden} earlier lines]\n" + "\n".join(out[-lines:])
        excerpt = out[first : min(first + 3, hidden)]
        kept = out[-(lines - len(excerpt)) :]
        skipped = len(out) - len(excerpt) - len(kept)
        return "\n".join([*excerpt, f"[... {skipped} earlier lines]", *kept])


class HostBuildError(RuntimeError):
    pass


class HostToolError(HostBuildError, ToolFailure):
    """The host compiler or the compiled runner failed; carries the tool's output."""


def exit_description(status: int) -> str:
    """'exit 1', or 'killed by signal 6 (SIGABRT)' for a negative subprocess status."""
    if status < 0:
        try:
            return f"killed by signal {-status} ({signal.Signals(-status).name})"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit {status}"


def compiler() -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise HostBuildError(
            f"no host C compiler '{cc}' found; install gcc (apt-get install gcc) or set CC"
        )
    return cc


REPORT_FILE = "report.json"
# bump when a key or its meaning changes; a folder of another format is refused with "convert
# again" (1: lstm-embed 0.1.0 before the version field; 2: "format" recorded)
REPORT_FORMAT = 2
# what the readers rely on (hostbuild, firmware, runtime, compare, profile, export); every report
# convert writes has them; "a.b": key b of the object at key a
REPORT_KEYS = (
    "name",
    "source",
    "input_size",
    "output_size",
    "timesteps",
    "return_sequences",
    "params",
    "macs_per_step",
    "layers",
    "input_scale",
    "output_scale",
    "flash_bytes.total",
    "ram_bytes.total",
)


class ReportFileError(HostBuildError, ValueError):
    """A folder whose report.json this version cannot read: missing, damaged or of another
    format. One line, ending in what to do, like ``qir.QModelFileError``."""


def _has(report: dict, key: str) -> bool:
    node: object = report
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def read_report(out_dir: Path) -> dict:
    """out_dir/report.json, read for every command and the Python API: ReportFileError unless
    it was written in this version's format (REPORT_FORMAT) with every key of REPORT_KEYS."""
    path = Path(out_dir) / REPORT_FILE
    if not path.is_file():
        raise ReportFileError(f"{out_dir}: no report.json; is this a folder written by convert?")
    try:
        report = json.loads(path.read_text())
    except ValueError as error:  # not JSON, or not UTF-8
        message = f"{path}: not a report written by convert ({error}); convert again"
        raise ReportFileError(message) from error
    if not isinstance(report, dict):
        raise ReportFileError(f"{path}: not a report written by convert; convert again")
    version = report.get("format", 1)  # format 1 (lstm-embed 0.1.0) had no version field
    writer = report.get("tool") or "an lstm-embed that recorded no version"
    if version != REPORT_FORMAT or isinstance(version, bool):
        shown = version if isinstance(version, int) else repr(version)
        raise ReportFileError(
            f"{out_dir}: written by {writer} (report format {shown}, this version reads"
            f" {REPORT_FORMAT}); convert again"
        )
    if "graph" in report:  # written by the graph pipeline (docs/graphs.md)
        raise ReportFileError(
            f"{out_dir}: a graph model (several inputs, outputs or branches); this command"
            " takes a chain's folder for now (graphs: run, compare, build, flash, profile, export,"
            " lstm_embed.load)"
        )
    missing = [key for key in REPORT_KEYS if not _has(report, key)]
    if missing:
        raise ReportFileError(
            f"{path}: no {', '.join(repr(k) for k in missing)} (written by {writer}, report format"
            f" {version}); convert again"
        )
    return report


def cache_dir() -> Path:
    base = os.environ.get("LSTM_EMBED_CACHE") or Path.home() / ".cache" / "lstm-embed"
    return Path(base) / "host"


def build_host(out_dir: Path, sanitize: bool = False) -> Path:
    """Compile out_dir's model with the harness; returns the runner executable (cached)."""
    out_dir = Path(out_dir)
    report = read_report(out_dir)
    name = report["name"]
    # NAME.c and the headers it reads (a folder converted before the weights and the kernels
    # had files of their own holds NAME.h and NAME.c only)
    sources = [out_dir / f for f in model_file_names(name) if (out_dir / f).is_file()]
    flags = list(STRICT_FLAGS) + (list(SANITIZE_FLAGS) if sanitize else [])
    harness = render(
        "host_main.c.j2",
        tool_version=__version__,
        source=report["source"],
        name=name,
        NAME=name.upper(),
    )
    return compile_cached(out_dir, name, sources, harness, flags)


def compile_cached(
    out_dir: Path,
    name: str,
    sources: list[Path],
    harness: str,
    flags: list[str],
    exe_name: str = "runner",
    main_name: str = "host_main.c",
) -> Path:
    """NAME.c of out_dir with a rendered harness, compiled for the host once per content of
    the model's files, harness and flags; returns the cached executable."""
    digest = hashlib.sha256()
    for part in [*(p.read_bytes() for p in sources), harness.encode(), " ".join(flags).encode()]:
        digest.update(hashlib.sha256(part).digest())
    target = cache_dir() / digest.hexdigest()[:24] / exe_name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        main_c = Path(tmp) / main_name
        main_c.write_text(harness)
        exe = Path(tmp) / exe_name
        cmd = [compiler(), *flags, f"-I{out_dir}", str(out_dir / f"{name}.c"), str(main_c)]
        result = subprocess.run([*cmd, "-o", str(exe)], capture_output=True, text=True)
        if result.returncode != 0:
            raise HostToolError(
                f"compiling {name}.c for the host failed ({exit_description(result.returncode)})",
                cmd,
                result.stdout + result.stderr,
                log=target.parent / "compile.log",
            )
        os.replace(exe, target)
    return target


def run_entry_point(
    out_dir: Path,
    entry: str,
    x: np.ndarray,
    sanitize: bool = False,
    check_finite: bool = True,
) -> np.ndarray:
    """Run one entry point of the compiled model on every sequence of x (N, T, m); for a
    stateful model the sequences are one stream (the state reset once, before the first).

    ``entry``: run / step (int16 in and out), run_f32 / step_f32 (float32 in and out),
    quantize_input (float32 in, int16 out). Output (N, T, k) for step, step_f32 and when the
    model returns sequences, else (N, k); quantize_input gives (N, T, m).
    ``check_finite=False`` passes NaN and infinity to the C (tests of its documented handling).
    """
    report = read_report(out_dir)
    rule = InputRule.from_report(report)
    e = check_entry(entry, rule)
    x = check_input(x, rule, "float32" if e.float_input else "int16", check_finite=check_finite)
    return _run_checked(Path(out_dir), report, entry, x, sanitize)


def run_host(out_dir: Path, x: np.ndarray, sanitize: bool = False) -> np.ndarray:
    """Run the compiled model on x (N, T, m): int16 -> int16 via run(), float -> float32 via
    run_f32(). Output (N, T, k) when the model returns sequences, else (N, k)."""
    report = read_report(out_dir)
    x = check_input(x, InputRule.from_report(report))
    entry = "run_f32" if x.dtype == np.float32 else "run"
    return _run_checked(Path(out_dir), report, entry, x, sanitize)


def _run_checked(
    out_dir: Path, report: dict, entry: str, x: np.ndarray, sanitize: bool
) -> np.ndarray:
    e = entry_point(entry)
    runner = build_host(out_dir, sanitize)
    with tempfile.TemporaryDirectory() as tmp:
        in_path, out_path = Path(tmp) / "x.bin", Path(tmp) / "y.bin"
        header = np.array(x.shape[:2], dtype=np.int32).tobytes()
        in_path.write_bytes(header + x.tobytes())
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
        y = np.fromfile(out_path, dtype=np.float32 if e.float_output else np.int16)
    shape = output_shape(
        e, x.shape, report["input_size"], report["output_size"], report["return_sequences"]
    )
    return y.reshape(shape)
