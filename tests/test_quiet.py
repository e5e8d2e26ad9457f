"""Quiet by default: `compare` (which imports TensorFlow) prints lstm-embed's lines only, for
Keras 3 and Keras 2 files, without the caller setting TF_CPP_MIN_LOG_LEVEL; `make fuzz`
counts its models' warnings into one summary line instead of printing one per model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lstm_embed.pipeline import convert
from lstm_embed.tools import fuzz
from lstm_embed.tools.quiet import VERBOSE_ENV, WarningTally

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
# TensorFlow's and absl's C++ log lines ("I0000 00:00:... cudart_stub.cc:31] ...", "WARNING: All
# log messages before absl::InitializeLog() ...") and its oneDNN / CUDA notes
TF_LOG_LINE = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d|absl::InitializeLog|oneDNN|cuInit|cuda|NodeDef|\.cc:\d+\]",
    re.M,
)


@pytest.mark.parametrize("kind", ["k3", "k2"])
def test_compare_prints_no_tensorflow_log_lines(tmp_path: Path, kind: str) -> None:
    model = FIXTURES / f"lstm_dense.{kind}.h5"
    x = np.load(FIXTURES / f"lstm_dense.{kind}.npz")["x"]
    np.save(tmp_path / "x.npy", x)
    convert(model, x, tmp_path / "out")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", VERBOSE_ENV)}
    result = subprocess.run(
        [sys.executable, "-m", "lstm_embed", "compare", str(model), "out", "-i", "x.npy"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "max_abs_error" in result.stdout
    assert ("tf_keras" if kind == "k2" else "Keras 3") in result.stdout  # the oracle ran
    noise = TF_LOG_LINE.findall(result.stdout + result.stderr)
    assert not noise, result.stderr


def test_the_tally_counts_warnings_from_threads() -> None:
    tally = WarningTally()
    with tally.collecting(), ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: warnings.warn(f"model {i}", UserWarning, stacklevel=1), range(40)))
        warnings.warn("once", RuntimeWarning, stacklevel=1)
    assert tally.counts == {"UserWarning": 40, "RuntimeWarning": 1}
    assert tally.summary().startswith('40 UserWarning (e.g. "model ')
    assert WarningTally().summary() == "no warnings"


def test_fuzz_summarizes_the_models_warnings_once(capfd: pytest.CaptureFixture[str]) -> None:
    status = fuzz.main(["--models", "3", "--chunk", "3", "--batch", "3", "--jobs", "1"])
    out, err = capfd.readouterr()
    assert status == 0, out + err
    assert "CalibrationWarning" not in err  # random calibration sets warn on every model here
    lines = out.splitlines()
    assert lines[0].startswith("fuzz: 3 random models from seed 0")
    assert any(line.startswith("3/3 models in ") for line in lines)
    (summary,) = [line for line in lines if "warnings of the conversions" in line]
    assert re.search(r": 3 CalibrationWarning \(e\.g\. \"the calibration set has", summary)
