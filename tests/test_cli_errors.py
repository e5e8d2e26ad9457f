"""Bad input: one clear line on stderr, exit status 2, and no output folder left behind.

Most cases call ``cli.main`` in-process (fast); one runs the installed entry point as a
subprocess to prove the real exit status and the absence of a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.emit.render import model_file_names

os.environ.setdefault("KERAS_BACKEND", "jax")

T, M = 6, 3


def _save(model, path: Path) -> Path:
    model.save(path)
    return path


def _lstm_model(**options):
    import keras

    return keras.Sequential([keras.Input((T, M)), keras.layers.LSTM(4, **options)])


def _unsupported() -> dict[str, tuple[Callable, str]]:
    """name -> (model builder, text the error must contain)."""
    import keras
    from keras import layers

    def seq(*body):
        return lambda: keras.Sequential([keras.Input((T, M)), *body])

    def attention(layer_fn):
        def build():
            x = keras.Input((T, M))
            y = layer_fn()(x)
            return keras.Model(x, layers.LSTM(2)(y))

        return build

    def return_state():
        x = keras.Input((T, M))
        out, _, _ = layers.LSTM(4, return_state=True)(x)
        return keras.Model(x, out)

    def stateful_bidirectional():
        x = keras.Input(batch_shape=(1, T, M))
        return keras.Model(x, layers.Bidirectional(layers.LSTM(4, stateful=True))(x))

    return {
        # Bidirectional, go_backwards and stateful are supported; these of their options are not
        "bidirectional_merge_none": (
            seq(layers.Bidirectional(layers.LSTM(4), merge_mode=None)),
            "merge_mode=None",
        ),
        "gru_activation": (seq(layers.GRU(4, activation="sigmoid")), "activation"),
        # Conv1D converts (tests/test_around_core.py); grouped convolutions do not
        "conv1d_groups": (seq(layers.Conv1D(3, 3, groups=3), layers.LSTM(2)), "groups"),
        "multi_head_attention": (
            attention(lambda: lambda v: layers.MultiHeadAttention(2, 4)(v, v)),
            "MultiHeadAttention",
        ),
        "simple_rnn_sigmoid": (seq(layers.SimpleRNN(4, activation="sigmoid")), "activation"),
        "return_state": (return_state, "return_state"),
        "stateful_bidirectional": (stateful_bidirectional, "stateful=True inside Bidirectional"),
        "activation_selu": (lambda: _lstm_model(activation="selu"), "activation"),
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    out = {"good": _save(_lstm_model(), folder / "good.keras")}
    nan_model = _lstm_model()
    weights = nan_model.get_weights()
    weights[0][0, 0] = np.nan
    nan_model.set_weights(weights)
    out["nan_weights"] = _save(nan_model, folder / "nan_weights.keras")
    inf_model = _lstm_model()
    weights = inf_model.get_weights()
    weights[1][0, 0] = np.inf
    inf_model.set_weights(weights)
    out["inf_weights"] = _save(inf_model, folder / "inf_weights.keras")
    for name, (build, _) in _unsupported().items():
        out[name] = _save(build(), folder / f"{name}.keras")
    out["corrupt"] = folder / "corrupt.keras"
    out["corrupt"].write_bytes(out["good"].read_bytes()[:200])
    out["garbage_h5"] = folder / "garbage.h5"
    out["garbage_h5"].write_bytes(rng.bytes(4096))
    out["zip_not_keras"] = folder / "other.keras"
    with zipfile.ZipFile(out["zip_not_keras"], "w") as archive:
        archive.writestr("hello.txt", "not a model")
    out["text"] = folder / "model.txt"
    out["text"].write_text("LSTM(4)\n")
    x = rng.normal(size=(8, T, M))
    arrays = {
        "calib": x.astype(np.float32),
        "calib_2d": x[:, :, 0].astype(np.float32),
        "calib_features": rng.normal(size=(8, T, M + 1)).astype(np.float32),
        "calib_steps": rng.normal(size=(8, T + 2, M)).astype(np.float32),
        "calib_int": (x * 10).astype(np.int32),
        "calib_nan": np.where(rng.random(x.shape) < 0.1, np.nan, x).astype(np.float32),
        "calib_inf": np.where(rng.random(x.shape) < 0.1, np.inf, x).astype(np.float32),
        "calib_empty": np.zeros((0, T, M), np.float32),
    }
    for name, array in arrays.items():
        out[name] = folder / f"{name}.npy"
        np.save(out[name], array)
    out["calib_pickle"] = folder / "calib_pickle.npy"
    np.save(out["calib_pickle"], np.array([{"x": 1}], dtype=object), allow_pickle=True)
    out["calib_text"] = folder / "calib.npy.txt"
    out["calib_text"].write_text("1 2 3\n")
    return out


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_error(status: int, err: str, *needles: str) -> None:
    assert status == cli.EXIT_ERROR
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("lstm-embed "), lines[0]
    assert "Traceback" not in err
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


def assert_nothing_written(parent: Path, name: str = "out") -> None:
    assert not (parent / name).exists()
    leftovers = [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]
    assert not leftovers, f"temporary folders left behind: {leftovers}"


def convert_args(model: Path, calibration: Path, out: Path, *extra: str) -> list:
    return ["convert", model, "--calibration", calibration, "-o", out, *extra]


# ------------------------------------------------------------------ model files

MODEL_ERRORS = {
    "missing": (None, "no such file"),
    "corrupt": ("corrupt", "not a zip archive"),
    "garbage_h5": ("garbage_h5", "not an HDF5 file"),
    "zip_not_keras": ("zip_not_keras", "no config.json"),
    "text": ("text", "expected a Keras model file"),
    "nan_weights": ("nan_weights", "NaN or Inf"),
    "inf_weights": ("inf_weights", "NaN or Inf"),
}


@pytest.mark.parametrize("case", sorted(MODEL_ERRORS))
def test_bad_model_file(case: str, files, tmp_path: Path, capsys) -> None:
    key, needle = MODEL_ERRORS[case]
    model = files[key] if key else tmp_path / "missing.keras"
    out = tmp_path / "out"
    status, _, err = run_cli(convert_args(model, files["calib"], out), capsys)
    assert_error(status, err, needle)
    assert_nothing_written(tmp_path)


UNSUPPORTED_IDS = [
    "bidirectional_merge_none",
    "gru_activation",
    "conv1d_groups",
    "multi_head_attention",
    "simple_rnn_sigmoid",
    "return_state",
    "stateful_bidirectional",
    "activation_selu",
]


@pytest.mark.parametrize("case", UNSUPPORTED_IDS)
def test_unsupported_layer_or_option(case: str, files, tmp_path: Path, capsys) -> None:
    needle = _unsupported()[case][1]
    status, _, err = run_cli(convert_args(files[case], files["calib"], tmp_path / "out"), capsys)
    assert_error(status, err, needle, "not supported")
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("case", ["gru_activation", "simple_rnn_sigmoid"])
def test_inspect_names_the_unsupported_part(case: str, files, capsys) -> None:
    status, _, err = run_cli(["inspect", files[case]], capsys)
    assert_error(status, err, _unsupported()[case][1], "not supported")


# ------------------------------------------------------------------ calibration data

CALIBRATION_ERRORS = {
    "calib_2d": "shape",
    "calib_features": "shape",
    "calib_steps": "timesteps",
    "calib_int": "floating point",
    "calib_nan": "NaN",
    "calib_inf": "Inf",
    "calib_empty": "shape",
    "calib_pickle": "--calibration",
    "calib_text": "--calibration",
    "calib_missing": "no such calibration file",
}


@pytest.mark.parametrize("case", sorted(CALIBRATION_ERRORS))
def test_bad_calibration(case: str, files, tmp_path: Path, capsys) -> None:
    calibration = files.get(case, tmp_path / "nothing.npy")
    status, _, err = run_cli(convert_args(files["good"], calibration, tmp_path / "out"), capsys)
    assert_error(status, err, CALIBRATION_ERRORS[case])
    assert_nothing_written(tmp_path)


# ------------------------------------------------------------------ names and output folders


@pytest.mark.parametrize(
    "name,needle",
    [
        ("1net", "not a valid C identifier"),
        ("my-net", "not a valid C identifier"),
        ("", "not a valid C identifier"),
        ("int", "reserved word"),
        ("while", "reserved word"),
        ("__net", "reserved"),
        ("_Net", "reserved"),
    ],
    ids=["digit", "dash", "empty", "int", "while", "double_underscore", "underscore_capital"],
)
def test_bad_c_name(name: str, needle: str, files, tmp_path: Path, capsys) -> None:
    args = convert_args(files["good"], files["calib"], tmp_path / "out", "--name", name)
    status, _, err = run_cli(args, capsys)
    assert_error(status, err, needle)
    assert_nothing_written(tmp_path)


def test_foreign_folder_is_refused_unless_forced(files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    status, _, err = run_cli(convert_args(files["good"], files["calib"], out), capsys)
    assert_error(status, err, "not written by lstm-embed", "--force")
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    status, _, _ = run_cli(convert_args(files["good"], files["calib"], out, "--force"), capsys)
    assert status == 0
    assert not (out / "thesis.tex").exists()
    assert (out / "sequential.c").exists() or any(out.glob("*.c"))


def test_a_file_in_place_of_the_folder_is_refused(files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.write_text("a file")
    status, _, err = run_cli(convert_args(files["good"], files["calib"], out), capsys)
    assert_error(status, err, "not a folder")
    assert out.read_text() == "a file"


def test_own_folder_is_replaced_whole(files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = convert_args(files["good"], files["calib"], out, "--name", "first")
    assert run_cli(args, capsys)[0] == 0
    (out / "stale.txt").write_text("from an older run")
    args = convert_args(files["good"], files["calib"], out, "--name", "second")
    assert run_cli(args, capsys)[0] == 0
    names = {p.name for p in out.iterdir()}
    assert {*model_file_names("second"), "report.json"} <= names
    assert not names & {*model_file_names("first"), "stale.txt"}
    assert_no_temporaries(tmp_path)


def assert_no_temporaries(parent: Path) -> None:
    hidden = [p.name for p in parent.iterdir() if p.name.startswith(".")]
    assert not hidden, hidden


def test_failed_conversion_keeps_the_previous_output(files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert (
        run_cli(convert_args(files["good"], files["calib"], out, "--name", "net"), capsys)[0] == 0
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    status, _, err = run_cli(convert_args(files["good"], files["calib_nan"], out), capsys)
    assert_error(status, err, "NaN")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert_no_temporaries(tmp_path)


# ------------------------------------------------------------------ running


@pytest.fixture(scope="module")
def converted(files, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "out"
    args = convert_args(files["good"], files["calib"], out, "--name", "net")
    assert cli.main([str(a) for a in args]) == 0
    return out


def test_run_without_compiler(converted: Path, files, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("LSTM_EMBED_CACHE", str(tmp_path / "cache"))
    args = ["run", converted, "--input", files["calib"], "-o", tmp_path / "y.npy"]
    status, _, err = run_cli(args, capsys)
    assert_error(status, err, "no host C compiler", "/nonexistent/cc")
    assert not (tmp_path / "y.npy").exists()


def test_run_on_a_folder_convert_did_not_write(files, tmp_path: Path, capsys) -> None:
    args = ["run", tmp_path, "--input", files["calib"], "-o", tmp_path / "y.npy"]
    status, _, err = run_cli(args, capsys)
    assert_error(status, err, "report.json")


def test_run_with_wrong_input_shape(converted: Path, files, tmp_path: Path, capsys) -> None:
    args = ["run", converted, "--input", files["calib_features"], "-o", tmp_path / "y.npy"]
    status, _, err = run_cli(args, capsys)
    assert_error(status, err, "shape")


def test_run_without_qemu(converted: Path, files, tmp_path: Path, capsys, monkeypatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    args = ["run", converted, "--board", "qemu-m4", "--input", files["calib"], "-o", tmp_path / "y"]
    status, _, err = run_cli(args, capsys)
    assert_error(status, err, "not found")
    assert not (tmp_path / "y.npy").exists()


def test_entry_point_exit_status(tmp_path: Path) -> None:
    """The real command: exit status 2, one line, no traceback."""
    exe = Path(sys.executable).with_name("lstm-embed")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "lstm_embed.cli"]
    proc = subprocess.run(
        [*cmd, "convert", str(tmp_path / "none.keras"), "-c", str(tmp_path / "x.npy"), "-o",
         str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert_error(proc.returncode, proc.stderr, "no such")
    assert_nothing_written(tmp_path)


def test_flash_without_probe(toolchain: None, converted: Path, capsys) -> None:
    """No board attached (as in CI): one clear line naming the board, exit 2."""
    status, _, err = run_cli(["flash", converted, "--board", "nucleo-l476rg"], capsys)
    assert_error(status, err, "nucleo-l476rg", "probe")


def test_flash_dry_run_prints_the_pyocd_command(toolchain: None, converted: Path, capsys) -> None:
    status, out, _ = run_cli(["flash", converted, "--board", "nrf52840-dk", "--dry-run"], capsys)
    assert status == 0
    assert "pyocd flash" in out and "-t nrf52840" in out and "firmware.elf" in out


def test_unknown_board(converted: Path, capsys) -> None:
    status, _, err = run_cli(["build", converted, "--board", "stm32-nowhere"], capsys)
    assert_error(status, err, "stm32-nowhere", "qemu-m4")


# ------------------------------------------------------------------ failing tools, bugs, --debug


@pytest.fixture
def broken_copy(converted: Path, tmp_path: Path) -> Callable[[str, str], Path]:
    """A copy of the converted folder whose net.c has every `old` replaced by `new`."""

    def make(old: str, new: str) -> Path:
        out = tmp_path / "broken"
        shutil.copytree(converted, out)
        source = out / "net.c"
        text = source.read_text()
        assert old in text
        source.write_text(text.replace(old, new))
        return out

    return make


def assert_tool_failure(status: int, err: str, summary: str, *shown: str) -> Path:
    """Exit 2; the first line names what failed; the tool's own lines follow; the last line
    says where the whole log is, and the log exists. Returns the log's path."""
    assert status == cli.EXIT_ERROR
    lines = err.strip().splitlines()
    assert lines[0].startswith("lstm-embed ") and summary in lines[0], lines[0]
    assert "Traceback" not in err
    for needle in shown:
        assert needle in err, (needle, err)
    assert "its whole output: " in lines[-1], lines[-1]
    log = Path(lines[-1].split("its whole output: ", 1)[1])
    assert log.is_file()
    return log


# An undeclared name, not a syntax error: after `int x = ;` GCC drops the declaration that
# follows, and the errors that cascades into would end the output instead of these lines.
COMPILE_ERROR = "int lstm_embed_test_error = lstm_embed_no_such_name;\n"


def test_host_compile_failure_shows_the_compiler(
    broken_copy, files, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("LSTM_EMBED_CACHE", str(tmp_path / "cache"))
    out = broken_copy("#include", COMPILE_ERROR + "#include")
    args = ["run", out, "--input", files["calib"], "-o", tmp_path / "y.npy"]
    status, _, err = run_cli(args, capsys)
    log = assert_tool_failure(status, err, "compiling net.c for the host failed", "error:")
    assert "lstm_embed_test_error" in err and "net.c" in err
    assert "lstm_embed_test_error" in log.read_text()
    assert not (tmp_path / "y.npy").exists()


def test_firmware_compile_failure_shows_the_last_30_lines(
    toolchain: None, broken_copy, capsys
) -> None:
    """More output than 30 lines: the first error (with -Werror, warning 0) and its source
    lines, then the last lines, 30 in all, on the terminal; all of it in the log."""
    errors = "".join(f'#warning "lstm-embed test warning {k}"\n' for k in range(40))
    out = broken_copy("#include", errors + COMPILE_ERROR + "#include")
    status, _, err = run_cli(["build", out, "--board", "qemu-m4"], capsys)
    log = assert_tool_failure(
        status, err, "compiling net.c for qemu-m4 failed", "earlier lines]", "error:"
    )
    assert len(err.strip().splitlines()) <= 30 + 3
    assert "test warning 39" in err and 'test warning 1"' not in err
    assert 'test warning 0"' in err.splitlines()[1]  # the first error leads
    assert all(f'test warning {k}"' in log.read_text() for k in range(40))
    assert log.parent == out / "build" / "qemu-m4"


RUN_FAILURES = {
    "host": ("the host build of net failed in run_f32() (exit 2)", "the entry point returned"),
    "qemu-m4": ("the firmware failed in QEMU (exit 3)", "run_f32: the model returned an error"),
}


@pytest.mark.parametrize("board", sorted(RUN_FAILURES))
def test_run_failure_shows_the_runner_output(
    request, broken_copy, files, tmp_path: Path, capsys, monkeypatch, board: str
) -> None:
    """run_f32() returning an error: the runner's or the firmware's own line is shown."""
    if board != "host":
        request.getfixturevalue("toolchain")
    monkeypatch.setenv("LSTM_EMBED_CACHE", str(tmp_path / "cache"))
    out = broken_copy("    net_reset(state);\n", "    return NET_ERROR_ARGUMENT;\n")
    args = ["run", out, "--board", board, "--input", files["calib"], "-o", tmp_path / "y.npy"]
    status, _, err = run_cli(args, capsys)
    assert_tool_failure(status, err, *RUN_FAILURES[board])
    assert not (tmp_path / "y.npy").exists()


def test_internal_error_says_it_is_a_bug(
    converted: Path, files, tmp_path: Path, capsys, monkeypatch
) -> None:
    from lstm_embed.targets import hostbuild

    report = hostbuild.read_report(converted)
    monkeypatch.setattr(hostbuild, "read_report", lambda _: {**report, "output_size": "three"})
    args = ["run", converted, "--input", files["calib"], "-o", tmp_path / "y.npy"]
    status, _, err = run_cli(args, capsys)
    assert status == cli.EXIT_INTERNAL
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert "internal error" in lines[0] and "bug in lstm-embed" in lines[0]
    assert "--debug" in lines[0]
    assert not (tmp_path / "y.npy").exists()


def test_a_value_error_out_of_numpy_is_a_bug_too(
    converted: Path, files, tmp_path: Path, capsys, monkeypatch
) -> None:
    """A ValueError that no `raise` of lstm-embed wrote (numpy's reshape here) is not a user
    error, though user errors are ValueErrors too."""
    from lstm_embed.targets import hostbuild

    report = hostbuild.read_report(converted)
    monkeypatch.setattr(hostbuild, "read_report", lambda _: {**report, "output_size": 7})
    args = ["run", converted, "--input", files["calib"], "-o", tmp_path / "y.npy"]
    status, _, err = run_cli(args, capsys)
    assert status == cli.EXIT_INTERNAL
    assert "internal error: ValueError" in err and "reshape" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(files, tmp_path: Path, capsys, where: str) -> None:
    """--debug anywhere on the line: the traceback, then the same one-line message."""
    args = convert_args(files["good"], files["calib_nan"], tmp_path / "out")
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    status, _, err = run_cli(args, capsys)
    assert status == cli.EXIT_ERROR
    assert err.startswith("Traceback (most recent call last):")
    last = err.strip().splitlines()[-1]
    assert last.startswith("lstm-embed convert: error:") and "NaN" in last
    assert_nothing_written(tmp_path)
