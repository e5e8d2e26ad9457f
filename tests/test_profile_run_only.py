"""`lstm-embed profile` and `convert --board` on a run-only model (a trained Conv1D +
MaxPooling1D + LSTM activity classifier, which has no step()), and a failed compile that shows
the compiler's first error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.frontends.keras.frontend import read_keras_model
from lstm_embed.pipeline import convert_ir
from lstm_embed.reference import interpreter as reference
from lstm_embed.targets.hostbuild import read_report
from lstm_embed.tools import bench
from lstm_embed.tools.profile import profile_input
from tests.test_profile import independent_counts

pytestmark = [pytest.mark.firmware, pytest.mark.slow]

T, FEATURES, CLASSES = 32, 3, 3


def activity_windows(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Three-axis 'accelerometer' windows: a class-specific frequency plus noise."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, CLASSES, n)
    t = np.arange(T)
    freq = (0.2 + 0.25 * label)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, (n, 1, FEATURES))
    x = np.sin(freq * t[None, :, None] + phase) + 0.2 * rng.normal(size=(n, T, FEATURES))
    return x.astype(np.float32), label


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, object]:
    import keras

    L = keras.layers
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [
            keras.Input((T, FEATURES)),
            L.Conv1D(16, 5, activation="relu"),
            L.MaxPooling1D(2),
            L.LSTM(16),
            L.Dense(CLASSES, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    x, label = activity_windows(0, 384)
    model.fit(x, label, epochs=4, batch_size=32, verbose=0)
    out = tmp_path_factory.mktemp("run_only") / "out"
    conversion = convert_ir(read_keras_model(model), x[:256], out)
    assert not conversion.qmodel.streaming
    return out, conversion.qmodel


@pytest.mark.parametrize("board", ["qemu-m4", "qemu-m0"])
def test_profile_times_one_run_of_the_window(toolchain, converted, tmp_path, capsys, board):
    """The run-only model's profile: one run() over the window, counted exactly (an
    independent count of the same trace), per step = that over the window's timesteps; the
    harness's outputs equal the integer reference."""
    out, qmodel = converted
    argv = ["profile", str(out), "--board", board, "--json", str(tmp_path / "p.json")]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    (row,) = json.loads((tmp_path / "p.json").read_text())
    report = read_report(out)
    x_q = profile_input(report)
    elf, _ = bench.build_bench(out, board, x_q, False, tmp_path / "b", name=report["name"],
                               run_only=True)  # fmt: skip
    (count,) = independent_counts(elf, board, tmp_path / "exec.log")
    assert row["instructions_per_run"] == count
    assert row["steps"] == T
    assert row["instructions_per_step"] == pytest.approx(count / T)
    assert f"instructions per run() of {T} timesteps: {board} {count}" in printed
    assert row["ram_bytes"] == row["state_bytes"] + row["stack_bytes"] > 0
    outputs, _ = bench.run_outputs(
        out, board, x_q, "optimized", tmp_path / "r", report["name"], run_only=True
    )
    assert np.array_equal(outputs, reference.run(qmodel, x_q[None]).astype(np.int16))


def test_convert_board_measures_a_run_only_model(toolchain, tmp_path):
    import keras

    # the same architecture from a file, through the command line
    keras.utils.set_random_seed(3)
    L = keras.layers
    model = keras.Sequential(
        [keras.Input((T, FEATURES)), L.Conv1D(8, 3, activation="relu"), L.MaxPooling1D(2),
         L.LSTM(8), L.Dense(CLASSES, activation="softmax")]
    )  # fmt: skip
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "x.npy", activity_windows(1, 128)[0])
    argv = ["convert", str(tmp_path / "m.keras"), "-c", str(tmp_path / "x.npy"),
            "-o", str(tmp_path / "out"), "--board", "qemu-m4"]  # fmt: skip
    assert cli.main(argv) == 0
    measured = read_report(tmp_path / "out")["measured"]
    assert measured["board"] == "qemu-m4"
    assert measured["instructions_per_run"] > measured["instructions_per_step"] * (T - 1)


def test_a_failed_compile_shows_the_compilers_first_error(toolchain, converted, tmp_path, capsys):
    out, _ = converted
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in out.iterdir():
        if path.is_file():
            (broken / path.name).write_bytes(path.read_bytes())
    name = read_report(out)["name"]
    source = broken / f"{name}.c"
    broken_line = "\nint lstm_embed_broken(void) { return undeclared_x; }\n"
    source.write_text(source.read_text() + broken_line)
    assert cli.main(["profile", str(broken), "--board", "qemu-m4"]) == 2
    err = capsys.readouterr().err
    assert f"compiling {name}.c failed" in err
    assert "'undeclared_x' undeclared" in err


# The activity classifier: 128 timesteps of 9 features, Conv1D(32, 5) widest
HAR_T, HAR_FEATURES, HAR_CLASSES, HAR_FILTERS = 128, 9, 6, 32
# The bound: at most half of the T x widest layer x 2 window buffers (int16) that the
# model needed before its buffers were sized per layer and a Conv1D fused with its pooling
HAR_RAM_BOUND = HAR_T * HAR_FILTERS * 2 * 2 // 2


def test_conv_pool_lstm_ram_at_most_half_of_the_window_buffers(toolchain, tmp_path, capsys):
    """Input((128, 9)) -> Conv1D(32, 5, relu) -> MaxPooling1D(2) -> LSTM(32) -> Dense(6): the
    Conv1D runs as the pooling needs its outputs (its 124 x 32 outputs are never stored), so
    report.json's RAM and the state's .bss linked for qemu-m4 are at most half of T x widest x
    2 int16 values; the C still equals the integer reference (host, ASan/UBSan, on the whole
    window and on shorter ones; the profile harness on qemu-m4)."""
    import keras

    from tests.helpers import host_difference

    L = keras.layers
    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(0)
    label = rng.integers(0, HAR_CLASSES, 320)
    t = np.arange(HAR_T)
    phase = rng.uniform(0, 2 * np.pi, (320, 1, HAR_FEATURES))
    x = np.sin((0.1 + 0.08 * label)[:, None, None] * t[None, :, None] + phase)
    x = (x + 0.2 * rng.normal(size=x.shape)).astype(np.float32)
    model = keras.Sequential(
        [keras.Input((HAR_T, HAR_FEATURES)), L.Conv1D(HAR_FILTERS, 5, activation="relu"),
         L.MaxPooling1D(2), L.LSTM(32), L.Dense(HAR_CLASSES, activation="softmax")]
    )  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, label, epochs=2, batch_size=32, verbose=0)
    out = tmp_path / "out"
    conversion = convert_ir(read_keras_model(model), x[:256], out)
    ram = read_report(out)["ram_bytes"]["total"]
    assert ram <= HAR_RAM_BOUND, f"report.json ram_bytes {ram} B (bound {HAR_RAM_BOUND} B)"
    x_q = np.asarray(profile_input(read_report(out)))
    difference = host_difference(out, conversion.qmodel, x_q[None], x[256:257], sanitize=True)
    assert difference is None, difference
    short = x_q[None, : HAR_T - 7]  # 121 steps: the pooling drops the Conv1D's odd last output
    assert np.array_equal(
        bench_outputs_host(out, short), reference.run(conversion.qmodel, short).astype(np.int16)
    )
    argv = ["profile", str(out), "--board", "qemu-m4", "--json", str(tmp_path / "p.json")]
    assert cli.main(argv) == 0
    capsys.readouterr()
    (row,) = json.loads((tmp_path / "p.json").read_text())
    print(f"report.json ram_bytes {ram} B, qemu-m4 .bss {row['state_bytes']} B")
    assert row["state_bytes"] <= HAR_RAM_BOUND


def bench_outputs_host(out: Path, x_q: np.ndarray) -> np.ndarray:
    """The host C's run() on int16 windows (ASan/UBSan)."""
    from lstm_embed.targets.hostbuild import run_entry_point

    return run_entry_point(out, "run", x_q, sanitize=True)
