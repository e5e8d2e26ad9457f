"""Output folders carry a format version: the integer model (qmodel.npz) and the report
(report.json) of another version are refused with "written by ...; convert again", one line,
exit 2, instead of a traceback; so is a damaged report. Every reader of report.json goes through
``hostbuild.read_report``: run, build, compare and ``lstm_embed.load`` give the same line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import lstm_embed
from lstm_embed import __version__, cli
from lstm_embed.pipeline import convert
from lstm_embed.quantize.qir import QMODEL_FILE, QMODEL_FORMAT, load_qmodel
from lstm_embed.targets.hostbuild import REPORT_FORMAT, read_report
from lstm_embed.targets.runtime import ModelLoadError

FIXTURE = Path(__file__).parent / "fixtures" / "keras" / "lstm_dense.k3.keras"


def rewrite_description(path: Path, change) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    description = json.loads(str(arrays["__description__"]))
    arrays["__description__"] = np.array(json.dumps(change(description)))
    np.savez(path, **arrays)


@pytest.fixture(scope="module")
def converted_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "out"
    convert(FIXTURE, np.load(FIXTURE.with_name("lstm_dense.k3.npz"))["x"], out)
    return out


@pytest.fixture
def converted(converted_once: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A fresh copy of the converted folder, and its calibration inputs as x.npy."""
    np.save(tmp_path / "x.npy", np.load(FIXTURE.with_name("lstm_dense.k3.npz"))["x"])
    out = tmp_path / "out"
    shutil.copytree(converted_once, out)
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


# ---------------------------------------------------------------- report.json


def rewrite_report(out: Path, change) -> None:
    path = out / "report.json"
    path.write_text(json.dumps(change(json.loads(path.read_text())), indent=2) + "\n")


def without(report: dict, key: str) -> dict:
    return {k: v for k, v in report.items() if k != key}


# every command and function that reads a converted folder's report.json
READERS = ["run", "build", "compare", "load"]


def refusal(reader: str, out: Path, x: Path) -> tuple[int, list[str]]:
    """(exit status, stderr lines) of a command, or (2, [message]) of lstm_embed.load."""
    if reader == "load":
        with pytest.raises(ModelLoadError) as info:
            lstm_embed.load(out)
        assert isinstance(info.value, RuntimeError)
        return 2, [f"lstm-embed load: error: {info.value}"]
    argv = {
        "run": ["run", str(out), "-i", str(x), "-o", str(out.parent / "y.npy")],
        "build": ["build", str(out), "--board", "qemu-m4"],
        "compare": ["compare", str(FIXTURE), str(out), "-i", str(x)],
    }[reader]
    status = cli.main(argv)
    return status, []


def test_the_report_records_its_format(converted):
    out, _ = converted
    report = read_report(out)
    assert report["format"] == REPORT_FORMAT
    assert report["tool"] == f"lstm-embed {__version__}"


THIS = f"lstm-embed {__version__}"
# label -> (change of report.json, the writer and the format the message names)
OTHER_FORMATS = {
    "no_format": (lambda r: without(r, "format"), THIS, 1),  # before the version field: 1
    "one_lower": (lambda r: {**r, "format": REPORT_FORMAT - 1}, THIS, REPORT_FORMAT - 1),
    "newer": (
        lambda r: {**r, "format": REPORT_FORMAT + 1, "tool": "lstm-embed 9.0"},
        "lstm-embed 9.0",
        REPORT_FORMAT + 1,
    ),
    "no_tool": (
        lambda r: without(without(r, "format"), "tool"),
        "an lstm-embed that recorded no version",
        1,
    ),
}


@pytest.mark.parametrize("label", OTHER_FORMATS)
@pytest.mark.parametrize("reader", READERS)
def test_a_report_of_another_format_says_convert_again(converted, capsys, reader, label):
    """The same line from every command, exit 2, and from lstm_embed.load (ModelLoadError)."""
    change, writer, version = OTHER_FORMATS[label]
    out, x = converted
    rewrite_report(out, change)
    want = (
        f"{out}: written by {writer} (report format {version}, this version reads"
        f" {REPORT_FORMAT}); convert again"
    )
    status, lines = refusal(reader, out, x)
    lines = lines or capsys.readouterr().err.strip().splitlines()
    assert status == cli.EXIT_ERROR
    assert lines == [f"lstm-embed {reader}: error: {want}"]
    assert not (out.parent / "y.npy").exists() and not (out / "build").exists()


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda r: without(r, "input_size"), "no 'input_size'"),
        (lambda r: without(without(r, "name"), "layers"), "no 'name', 'layers'"),
        (lambda r: {**r, "flash_bytes": {}}, "no 'flash_bytes.total'"),
        (lambda r: [r], "not a report written by convert"),
    ],
    ids=["input_size", "two_keys", "nested", "not_an_object"],
)
@pytest.mark.parametrize("reader", READERS)
def test_a_damaged_report_is_not_an_internal_error(converted, capsys, reader, change, words):
    out, x = converted
    rewrite_report(out, change)
    status, lines = refusal(reader, out, x)
    lines = lines or capsys.readouterr().err.strip().splitlines()
    assert status == cli.EXIT_ERROR
    assert len(lines) == 1 and "internal error" not in lines[0] and "Traceback" not in lines[0]
    assert lines[0].startswith(f"lstm-embed {reader}: error: {out}")
    assert words in lines[0] and lines[0].endswith("convert again")


def test_a_report_that_is_not_json(converted, capsys):
    out, x = converted
    (out / "report.json").write_text("{ not json")
    status, _ = refusal("run", out, x)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == cli.EXIT_ERROR and len(err) == 1
    assert "not a report written by convert" in err[0] and err[0].endswith("convert again")


# ---------------------------------------------------------------- kernels of a --core folder


# core -> (the kernels load refuses, those it loads): emit.CORE_KERNELS
CORE_FOLDERS = {
    "m4": (("reference", "plain"), ("auto",)),  # the DSP kernel only
    "m0": (("reference",), ("auto", "plain")),
    "m55": (("plain",), ("auto", "reference")),  # MVE and the reference kernel
}


@pytest.mark.parametrize("core", CORE_FOLDERS)
def test_load_refuses_a_kernel_the_core_folder_lacks(tmp_path, monkeypatch, core):
    """convert --core holds only that core's kernels: load(kernel=...) for another is refused
    before anything is compiled, naming --core; auto and the kernels it holds load."""
    from lstm_embed.targets import runtime

    refused, loads = CORE_FOLDERS[core]
    x = np.load(FIXTURE.with_name("lstm_dense.k3.npz"))["x"]
    out = tmp_path / core
    convert(FIXTURE, x, out, core=core)
    with monkeypatch.context() as patch:
        patch.setattr(runtime, "_library", lambda *_: pytest.fail("compiled before refusing"))
        for kernel in refused:
            with pytest.raises(ValueError, match=f"--core {core}, which holds no {kernel} kern"):
                lstm_embed.load(out, kernel=kernel)
    for kernel in loads:
        model = lstm_embed.load(out, kernel=kernel)
        assert (model.info["core"], model.info["kernel"]) == (core, kernel)
        assert model.predict(x).shape == (len(x), model.output_size)
