"""Output folders carry a format version: the integer model of another version is refused with
"written by ...; convert again", one line, exit 2, instead of a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.pipeline import convert
from lstm_embed.qir import QMODEL_FILE, QMODEL_FORMAT, load_qmodel

FIXTURE = Path(__file__).parent / "fixtures" / "keras" / "lstm_dense.k3.keras"


def rewrite_description(path: Path, change) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    description = json.loads(str(arrays["__description__"]))
    arrays["__description__"] = np.array(json.dumps(change(description)))
    np.savez(path, **arrays)


@pytest.fixture
def converted(tmp_path: Path) -> tuple[Path, Path]:
    x = np.load(FIXTURE.with_name("lstm_dense.k3.npz"))["x"]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    convert(FIXTURE, x, out)
    return out, tmp_path / "x.npy"


def test_the_integer_model_records_its_format_and_reads_back(converted):
    out, _ = converted
    with np.load(out / QMODEL_FILE) as data:
        description = json.loads(str(data["__description__"]))
    assert description["format"] == QMODEL_FORMAT
    assert description["tool"].startswith("lstm-embed ")
    assert load_qmodel(out / QMODEL_FILE).input_size == 2


@pytest.mark.parametrize(
    "change, writer",
    [
        (lambda d: d["model"], "lstm-embed 0.1"),  # the first release wrote no version field
        (lambda d: {**d, "format": QMODEL_FORMAT + 1, "tool": "lstm-embed 9.0"}, "lstm-embed 9.0"),
    ],
    ids=["older", "newer"],
)
def test_another_version_says_convert_again(converted, capsys, change, writer):
    out, x = converted
    rewrite_description(out / QMODEL_FILE, change)
    status = cli.main(["trace", str(out), "-i", str(x), "-o", str(out.parent / "t.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and "Traceback" not in err[0]
    assert f"written by {writer}" in err[0] and "convert again" in err[0]
