"""Quiet by default: TensorFlow's start-up and C++ log lines stay out of lstm-embed's output.

TF_CPP_MIN_LOG_LEVEL=3 silences TensorFlow's C++ log once it runs (the oneDNN note, cuInit,
"NodeDef mentions attribute use_unbounded_threadpool"), but its shared libraries write a few
lines while they load, before any setting is read (absl's "All log messages before
absl::InitializeLog() is called are written to STDERR", cudart_stub's "Could not find cuda
drivers"). So the first import of an ML framework runs with the process's stderr (file
descriptor 2) pointed at /dev/null; its exceptions still propagate. LSTM_EMBED_VERBOSE=1 (or a
command's --verbose) shows everything. Only code that needs Keras (compare, the demo's samples,
accuracy tables, tests) imports it, through ``ml_import``; conversion never does.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from types import ModuleType

VERBOSE_ENV = "LSTM_EMBED_VERBOSE"
TF_LOG_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3"}  # 3: fatal errors only


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose(on: bool) -> None:
    """--verbose: framework logs too (set before the first ``ml_import``)."""
    if on:
        os.environ[VERBOSE_ENV] = "1"


def quiet_environment() -> None:
    """TensorFlow's log level, unless the user set one (inherited by child processes too)."""
    if not verbose():
        for name, value in TF_LOG_ENV.items():
            os.environ.setdefault(name, value)


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null: C++ libraries write there directly, not to sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def ml_import(name: str) -> ModuleType:
    """import name (keras, tf_keras, tensorflow), quietly unless verbose."""
    quiet_environment()
    if name in sys.modules or verbose():
        return importlib.import_module(name)
    with stderr_silenced():
        module = importlib.import_module(name)
    _quiet_absl()
    return module


def _quiet_absl() -> None:
    """TensorFlow's Python side logs at WARNING (through absl, and its "tensorflow" logger:
    "5 out of the last 5 calls ... triggered tf.function retracing"); errors still show."""
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.set_verbosity(absl_logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


class WarningTally:
    """Warnings that repeat per model (a random model's CalibrationWarning in `make fuzz`),
    counted by category instead of printed, with the first text of each as an example."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, str] = {}
        self._lock = threading.Lock()

    def record(self, message, category, filename, lineno, file=None, line=None) -> None:
        with self._lock:  # fuzz warns from its worker threads
            name = category.__name__
            self.counts[name] = self.counts.get(name, 0) + 1
            self.examples.setdefault(name, str(message))

    @contextlib.contextmanager
    def collecting(self) -> Iterator[WarningTally]:
        """Within: every warning counted here, none printed (process-wide, threads too)."""
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = self.record
            yield self

    def summary(self, example_chars: int = 110) -> str:
        """One line: "3,120 CalibrationWarning (e.g. "...")", or "no warnings"."""
        if not self.counts:
            return "no warnings"
        parts = []
        for name, count in sorted(self.counts.items(), key=lambda item: -item[1]):
            example = self.examples[name]
            if len(example) > example_chars:
                example = example[: example_chars - 3] + "..."
            parts.append(f'{count:,} {name} (e.g. "{example}")')
        return "; ".join(parts)
