"""Graphs on the targets (issue 19, "every entry point speaks graphs"): the firmware commands,
profile and export take a graph folder as they take a chain's.

The model: a trained two-input, two-output graph (tests/graph_models.py's data; a sequence into
two stacked LSTMs, a static vector into a Dense, both heads reading the second LSTM's h), so
the harnesses feed several inputs and print several outputs, run() plans an arena (the first
LSTM's sequence) and step() exists. Oracles: the host build of the same C (bit for bit) and
the integer reference (tests/test_graph.py holds the host C to it), an independent count of the
same QEMU trace, report.json's buffer plan against the linked C, Keras for the range.
"""

from __future__ import annotations

import json
import shutil
import string
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.graph_pipeline import GraphConversion, convert_graph
from lstm_embed.reference import graph_run
from lstm_embed.targets.boards import get_board
from lstm_embed.targets.graph_firmware import build_graph_bench, run_graph_qemu
from lstm_embed.targets.graph_host import run_graph_host
from tests import graph_models
from tests.test_graph import GRAPH_RANGE_FRACTION
from tests.test_profile import independent_counts

pytestmark = [pytest.mark.slow, pytest.mark.firmware]

QEMU_SAMPLES = 3  # samples compiled into a QEMU harness (every value of each is compared)


def build_two_heads(seed: int = 0):
    """Inputs "sequence" (T, 4) and "static" (6,); outputs Dense(3) of [h, Dense(8)(static)]
    and Dense(1) of h, h the second LSTM's returned state."""
    import keras

    layers = keras.layers
    keras.utils.set_random_seed(seed)
    seq, static, target = graph_models._data(seed)
    inp = keras.Input((graph_models.TIMESTEPS, graph_models.FEATURES), name="sequence")
    side = keras.Input((graph_models.STATIC,), name="static")
    a = layers.LSTM(16, return_sequences=True)(inp)
    _, h, _c = layers.LSTM(8, return_state=True)(a)
    d = layers.Dense(8, activation="relu")(side)
    first = layers.Dense(3, name="first")(layers.Concatenate()([h, d]))
    second = layers.Dense(1, name="second")(h)
    model = keras.Model([inp, side], [first, second])
    graph_models._train(model, [seq, static], target, (3, 1))
    return model, {"sequence": seq, "static": static}


@dataclass
class Case:
    folder: Path
    model_path: Path
    conversion: GraphConversion
    x: dict[str, np.ndarray]
    keras_y: list[np.ndarray]

    @property
    def out(self) -> Path:
        return self.conversion.out_dir

    def few(self, count: int = QEMU_SAMPLES) -> dict[str, np.ndarray]:
        return {k: v[-count:] for k, v in self.x.items()}  # samples calibration did not pick


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Case:
    model, x = build_two_heads()
    folder = tmp_path_factory.mktemp("two_heads")
    path = folder / "model.keras"
    model.save(path)
    conversion = convert_graph(path, {k: v[:256] for k, v in x.items()}, folder / "out")
    y = model.predict([x["sequence"], x["static"]], verbose=0)
    return Case(folder, path, conversion, x, [np.asarray(a, np.float64) for a in y])


def test_the_model_is_a_streaming_graph_within_the_keras_range(case: Case) -> None:
    report = case.conversion.report
    assert [i["name"] for i in report["graph"]["inputs"]] == ["sequence", "static"]
    assert len(report["graph"]["outputs"]) == 2 and not report["run_only"]
    assert report["buffers"]["arena_bytes"] > 0  # the first LSTM's sequence
    got = run_graph_host(case.out, case.x, "run_f32")
    for ours, want in zip(got, case.keras_y, strict=True):
        span = float(want.max() - want.min())
        assert np.max(np.abs(ours - want)) <= GRAPH_RANGE_FRACTION * span


@pytest.mark.parametrize("board", ["qemu-m0", "qemu-m4", "qemu-m55"])
def test_run_on_qemu_equals_the_host_bit_for_bit(case: Case, board: str, toolchain, capsys):
    """`run -i X.npz -o Y.npz --board B` (run_f32 in QEMU) writes output_0, output_1 with the
    host build's bits and says so; run() and step() on int16 inputs equal the reference."""
    x = case.few()
    np.savez(case.folder / "x.npz", **x)
    y_path, host_path = case.folder / f"y_{board}.npz", case.folder / "y_host.npz"
    argv = ["run", str(case.out), "-i", str(case.folder / "x.npz")]
    assert cli.main([*argv, "-o", str(y_path), "--board", board]) == 0
    assert f"{board} equals the host build bit for bit" in capsys.readouterr().out
    assert cli.main([*argv, "-o", str(host_path)]) == 0
    y, host = np.load(y_path), np.load(host_path)
    assert y.files == host.files == ["output_0", "output_1"]
    for key in y.files:
        assert y[key].dtype == np.float32 and y[key].shape == host[key].shape
        np.testing.assert_array_equal(y[key].view(np.uint32), host[key].view(np.uint32))

    qgraph = case.conversion.qgraph
    x_q = graph_run.quantize_inputs(qgraph, x)
    expected = graph_run.run(qgraph, x_q)
    got = run_graph_qemu(case.out, board, x_q)
    assert set(got) == {"run", "step"}
    for entry, outputs in got.items():
        for ours, want in zip(outputs, expected, strict=True):
            ours = ours[:, -1] if entry == "step" else ours  # vector outputs after the last step
            np.testing.assert_array_equal(ours, want, err_msg=f"{board} {entry}")


def test_build_and_a_real_board_without_its_port(case: Case, toolchain, capsys, monkeypatch):
    """build for QEMU (the model's sizes: its state holds the arena) and for a real board (the
    UART console); run on a real board without --port, or without pyserial: one line each,
    before any build."""
    assert cli.main(["build", str(case.out), "--board", "qemu-m4"]) == 0
    printed = capsys.readouterr().out
    assert (case.out / "build" / "qemu-m4" / "firmware.elf").is_file()
    model_row = next(line for line in printed.splitlines() if line.startswith("model"))
    text, rodata, _data, bss = (int(v) for v in model_row.split()[1:5])
    assert text > 0 and rodata > 0 and bss >= case.conversion.report["buffers"]["arena_bytes"]
    assert cli.main(["build", str(case.out), "--board", "nucleo-l476rg"]) == 0  # UART console
    assert "console: uart" in capsys.readouterr().out
    np.savez(case.folder / "x1.npz", **case.few(1))
    argv = ["run", str(case.out), "-i", str(case.folder / "x1.npz"), "-o", "y.npz"]
    shutil.rmtree(case.out / "build")
    assert cli.main([*argv, "--board", "nucleo-l476rg"]) == 2
    assert "--port is needed to read the results of nucleo-l476rg" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "serial", None)  # import serial -> ImportError
    assert cli.main([*argv, "--board", "nucleo-l476rg", "--port", "/dev/ttyACM0"]) == 2
    assert "pip install 'lstm-embed[serial]'" in capsys.readouterr().err
    assert not (case.out / "build").exists()  # both refused before building


def test_profile_counts_and_the_arena_bound(case: Case, toolchain, tmp_path, capsys) -> None:
    """profile: instructions per run() and per step() equal an independent count of the same
    trace; the arena the linked C holds is report.json's plan (the larger of run()'s and
    step()'s), inside the state's .bss, and at least the largest set of tensors alive."""
    argv = ["profile", str(case.out), "--board", "qemu-m4", "--board", "qemu-m0"]
    assert cli.main([*argv, "--json", str(tmp_path / "p.json")]) == 0
    printed = capsys.readouterr().out
    rows = json.loads((tmp_path / "p.json").read_text())
    buffers = case.conversion.report["buffers"]
    planned = max(buffers["arena_bytes"], buffers["step_arena_bytes"])
    for row in rows:
        board = row["board"]
        elf = build_graph_bench(case.out, get_board(board), tmp_path / board).elf
        counts = independent_counts(elf, board, tmp_path / f"{board}.log")
        assert len(counts) == 1 + graph_models.TIMESTEPS  # the run, then each step
        assert row["instructions_per_run"] == counts[0]
        assert row["instructions_per_step"] == pytest.approx(np.mean(counts[1:]))
        assert row["instructions_per_step"] < row["instructions_per_run"]
        assert row["arena_bytes"] == planned >= buffers["peak_live_bytes"] > 0
        assert row["state_bytes"] >= planned and row["stack_bytes"] > 0
        assert row["ram_bytes"] == row["state_bytes"] + row["stack_bytes"]
        assert f"{board} {counts[0]}" in printed
    assert f"arena: {planned} B, as report.json plans" in printed


def test_convert_with_a_board_measures_and_with_validation_reports_it(
    case: Case, toolchain, capsys
) -> None:
    """convert --board: profile's figures in report.json "measured"; --validation X.npz: per
    output the error on the held-out samples (here within float32 noise of the host C's
    against Keras) and how many of their input values saturate the calibrated int16 scales."""
    np.savez(case.folder / "calib.npz", **{k: v[:128] for k, v in case.x.items()})
    held_out = {k: v[-64:] * np.float32(2.5) for k, v in case.x.items()}  # some values clip
    np.savez(case.folder / "val.npz", **held_out)
    calib = str(case.folder / "calib.npz")
    out = case.folder / "measured"
    argv = ["convert", str(case.model_path), "-c", calib, "-o", str(out), "--board", "qemu-m4"]
    assert cli.main([*argv, "--validation", str(case.folder / "val.npz")]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    measured = report["measured"]
    assert measured["board"] == "qemu-m4" and measured["flash_bytes"] > 0
    assert measured["instructions_per_run"] > measured["instructions_per_step"] > 0
    assert "graph: instructions per run() of 16 timesteps: qemu-m4" in printed

    import keras

    model = keras.models.load_model(case.model_path)
    keras_y = model.predict([held_out["sequence"], held_out["static"]], verbose=0)
    c_y = run_graph_host(out, held_out, "run_f32")
    validation = report["validation"]
    assert validation["samples"] == 64 and len(validation["outputs"]) == 2
    for error, want, got in zip(validation["outputs"], keras_y, c_y, strict=True):
        assert error["max_abs_error"] == pytest.approx(np.max(np.abs(got - want)), abs=1e-4)
    clipped = sum(
        int(np.sum(np.abs(held_out[i["name"]] / np.float32(i["scale"])) > 32767))
        for i in report["graph"]["inputs"]
    )  # fmt: skip
    assert validation["inputs_clipped"] == clipped > 0
    assert f"validation inputs clipped: {clipped} of" in printed


CONSUMER_C = string.Template("""
/* Reads N samples of every input (float32, the model's order) from argv[2], writes every
 * output of run_f32 to argv[3]. */
#include <stdio.h>
#include "${name}.h"

static ${name}_state_t state;
${buffers}
int main(int argc, char **argv)
{
    FILE *in, *out;
    long n, i;
    if (argc != 4 || sscanf(argv[1], "%ld", &n) != 1) {
        return 2;
    }
    in = fopen(argv[2], "rb");
    out = fopen(argv[3], "wb");
    if (in == NULL || out == NULL) {
        return 3;
    }
    for (i = 0; i < n; ++i) {
${reads}
        if (${name}_run_f32(&state, ${args}) != ${NAME}_OK) {
            return 5;
        }
${writes}
    }
    fclose(in);
    return fclose(out) == 0 ? 0 : 6;
}
""")

CONSUMER_CMAKE = string.Template("""
cmake_minimum_required(VERSION 3.13)
project(consumer C)
add_subdirectory($${MODEL_DIR} model)
add_executable(consumer consumer.c)
set_target_properties(consumer PROPERTIES C_STANDARD 99 C_EXTENSIONS OFF)
target_link_libraries(consumer PRIVATE lstm_embed::$name)
""")


def _consumer(project: Path, report: dict) -> None:
    """A program of the exported library's API: one pointer per input and output, named and
    sized by the macros of NAME.h."""
    name, NAME, steps = report["name"], report["name"].upper(), report["timesteps"]
    buffers, reads, writes, pointers = [], [], [], []
    for x in report["graph"]["inputs"]:
        size = f"{NAME}_INPUT_{x['c'].upper()}_SIZE" + (f" * {steps}" if x["sequence"] else "")
        buffers.append(f"static float x_{x['c']}[{size}];")
        reads.append(f"        if (fread(x_{x['c']}, sizeof(float), {size}, in) != {size}) {{"
                     "\n            return 4;\n        }")  # fmt: skip
        pointers.append(f"x_{x['c']}")
    pointers.append(str(steps))
    for y in report["graph"]["outputs"]:
        c = y["c_name"].removeprefix("y_")
        size = f"{NAME}_OUTPUT_{c.upper()}_SIZE" + (f" * {steps}" if y["sequence"] else "")
        buffers.append(f"static float {y['c_name']}[{size}];")
        writes.append(f"        fwrite({y['c_name']}, sizeof(float), {size}, out);")
        pointers.append(y["c_name"])
    mapping = {"name": name, "NAME": NAME, "buffers": "\n".join(buffers),
               "reads": "\n".join(reads), "writes": "\n".join(writes),
               "args": ", ".join(pointers)}  # fmt: skip
    project.mkdir(parents=True)
    (project / "consumer.c").write_text(CONSUMER_C.substitute(mapping))
    (project / "CMakeLists.txt").write_text(CONSUMER_CMAKE.substitute(mapping))


def test_export_cmake_builds_on_the_host_and_gives_the_host_outputs(case: Case, tmp_path) -> None:
    """export --format cmake of the graph: the library built by cmake with the host compiler
    (strict warnings) into a program that calls run_f32 with one pointer per input and output;
    its outputs equal `lstm-embed run`'s bit for bit. The other formats write their files."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not installed (apt-get install cmake)")
    lib = tmp_path / "lib"
    assert cli.main(["export", str(case.out), "-f", "cmake", "-o", str(lib)]) == 0
    config = (lib / "cmake" / f"{case.conversion.report['name']}Config.cmake").read_text()
    assert "_INPUTS sequence static)" in config
    report = case.conversion.report
    _consumer(tmp_path / "consumer", report)
    build = tmp_path / "build"
    flags = "-DCMAKE_C_FLAGS=-Wall -Wextra -Wconversion -Wshadow -Werror"
    for cmd in (
        [cmake, "-S", str(tmp_path / "consumer"), "-B", str(build), f"-DMODEL_DIR={lib}", flags],
        [cmake, "--build", str(build), "-j", "2"],
    ):
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    x = case.few(8)
    inputs = np.concatenate(
        [np.asarray(x[i["name"]], np.float32).reshape(8, -1) for i in report["graph"]["inputs"]],
        axis=1,
    )
    (tmp_path / "x.bin").write_bytes(inputs.tobytes())
    subprocess.run([str(build / "consumer"), "8", str(tmp_path / "x.bin"), str(tmp_path / "y.bin")],
                   check=True)  # fmt: skip
    y = np.fromfile(tmp_path / "y.bin", np.float32).reshape(8, -1)
    want = run_graph_host(case.out, x, "run_f32")
    np.testing.assert_array_equal(y.view(np.uint32), np.concatenate(
        [w.reshape(8, -1) for w in want], axis=1).view(np.uint32))  # fmt: skip

    np.savez(tmp_path / "x.npz", **x)
    for fmt in ("zephyr", "arduino", "platformio"):
        dest = tmp_path / fmt
        argv = ["export", str(case.out), "-f", fmt, "-o", str(dest), "-i", str(tmp_path / "x.npz")]
        assert cli.main(argv) == 0
    sketch = next((tmp_path / "arduino" / "examples").rglob("*.ino")).read_text()
    name = report["name"]
    assert (
        f"{name}_run_f32(&state, example_x_sequence, example_x_static, EXAMPLE_TIMESTEPS," in sketch
    )


def test_load_steps_a_streaming_graph(case: Case) -> None:
    """lstm_embed.load(OUT).step: one timestep of N streams per call (a dict or a list), each
    stream's state kept between calls; float steps equal the host runner's step_f32 bits,
    int16 steps end on the integer reference's outputs; reset() starts other streams."""
    import lstm_embed

    model = lstm_embed.load(case.out)
    x = case.few(4)
    want = run_graph_host(case.out, x, "step_f32")
    steps = [model.step({"sequence": x["sequence"][:, t], "static": x["static"]})
             for t in range(graph_models.TIMESTEPS)]  # fmt: skip
    for k, expected in enumerate(want):
        got = np.stack([outputs[k] for outputs in steps], axis=1)
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    with pytest.raises(ValueError, match="call reset"):
        model.step({"sequence": x["sequence"][:1, 0], "static": x["static"][:1]})
    model.reset()
    qgraph = case.conversion.qgraph
    x_q = graph_run.quantize_inputs(qgraph, x)
    for t in range(graph_models.TIMESTEPS):
        last = model.step([x_q["sequence"][0, t], x_q["static"][0]])
    for ours, expected in zip(last, graph_run.run(qgraph, x_q), strict=True):
        assert ours.dtype == np.int16
        np.testing.assert_array_equal(ours, expected[0])


def test_arduino_sketch_of_a_graph_runs_on_cortex_m4(case: Case, toolchain, tmp_path) -> None:
    """The exported sketch (export -f arduino --input X.npz), compiled as the Arduino builder
    does (the .ino as C++ after #include <Arduino.h>, the library's .c as C) with the stand-in
    core of tests/fixtures/arduino, runs in QEMU (M4) and prints every output of sample 0 as
    the host's run_f32 gives it (Serial.print(value, 6): six decimals)."""
    from lstm_embed.targets import firmware
    from tests.test_export import ARDUINO_FIXTURE, M4, _qemu_m4

    x = case.few(1)
    np.savez(tmp_path / "x.npz", **x)
    lib = tmp_path / "lib"
    argv = ["export", str(case.out), "-f", "arduino", "-o", str(lib), "-i", str(tmp_path / "x.npz")]
    assert cli.main(argv) == 0
    name = case.conversion.report["name"]
    ino = lib / "examples" / name / f"{name}.ino"
    sketch = tmp_path / "sketch.ino.cpp"
    sketch.write_text(f'#include <Arduino.h>\n#line 1 "{ino}"\n' + ino.read_text())
    common = [*M4.cpu_flags, "-Os", "-Wall", "-Wextra", "-Werror", "-ffunction-sections",
              "-fdata-sections"]  # fmt: skip
    cxx = ["arm-none-eabi-g++", *common, "-std=gnu++17", "-fno-exceptions", "-fno-rtti"]
    fw = firmware.firmware_dir()
    jobs = [
        [*cxx, f"-I{ARDUINO_FIXTURE}", f"-I{lib / 'src'}", "-c", str(sketch)],
        [*cxx, f"-I{ARDUINO_FIXTURE}", f"-I{fw / 'common'}", "-c",
         str(ARDUINO_FIXTURE / "core.cpp")],
        *(["arm-none-eabi-gcc", *common, "-std=gnu11", "-c", str(c)]
          for c in sorted((lib / "src").glob("*.c"))),
        *(["arm-none-eabi-gcc", *common, f"-DBOARD_IRQ_COUNT={M4.irq_count}", f"-I{fw / 'common'}",
           "-c", str(fw / s)] for s in ("common/vectors.c", "common/semihost.c",
                                       "common/console.c", "common/startup.S", "boards/qemu.c")),
    ]  # fmt: skip
    objects = []
    for k, cmd in enumerate(jobs):
        objects.append(str(tmp_path / f"{k}.o"))
        subprocess.run([*cmd, "-o", objects[-1]], check=True, capture_output=True, text=True)
    origin = {"flash_origin": f"0x{M4.flash.origin:08X}", "ram_origin": f"0x{M4.ram.origin:08X}"}
    (tmp_path / "link.ld").write_text(firmware._render("firmware/link.ld.j2", board=M4, **origin))
    elf = tmp_path / "sketch.elf"
    subprocess.run([*cxx, "-nostartfiles", "--specs=nano.specs", f"-T{tmp_path / 'link.ld'}",
                    "-Wl,--gc-sections", *objects, "-o", str(elf)], check=True)  # fmt: skip
    lines = _qemu_m4(elf).splitlines()
    want = run_graph_host(case.out, x, "run_f32")
    for k, (item, expected) in enumerate(zip(case.conversion.report["graph"]["outputs"], want,
                                             strict=True)):  # fmt: skip
        label = f"{name} output {k} ({item['c_name'].removeprefix('y_')}):"
        printed = next(line for line in lines if line.startswith(label))
        values = np.array([float(v) for v in printed[len(label) :].split()])
        np.testing.assert_allclose(values, expected[0].astype(np.float64), rtol=0, atol=5.01e-7)


def test_run_on_a_real_board_reads_its_uart(case: Case, toolchain, tmp_path, monkeypatch, capsys):
    """`run --board B --port P` on a graph, the wire aside: B is qemu-stm32f405 declared as real
    hardware (its UART console, no QEMU machine), flashing is a no-op, and the serial port is
    QEMU's UART on stdout. The outputs read from the UART equal the host's bits."""
    import dataclasses

    from lstm_embed.targets import firmware, serial_port
    from lstm_embed.targets.boards import BOARDS

    emulated = get_board("qemu-stm32f405")
    board = dataclasses.replace(emulated, name="test-real-stm32f405", qemu_machine=None)
    monkeypatch.setitem(BOARDS, board.name, board)
    monkeypatch.setattr(firmware, "flash", lambda *args, **kwargs: ["true"])

    class Lines:  # a line source: readline() as pyserial's
        def __init__(self, text: str) -> None:
            self.lines = [line.encode() + b"\n" for line in text.splitlines()]

        def readline(self) -> bytes:
            return self.lines.pop(0) if self.lines else b""

    def uart(port: str, start, timeout: float) -> serial_port.SerialRun:
        start()
        elf = firmware.build_dir(case.out, board.name) / "firmware.elf"
        stdout = firmware._run_firmware(firmware.qemu_command(emulated, elf), timeout)
        return serial_port.read_until_exit(Lines(stdout), timeout)

    monkeypatch.setattr(serial_port, "run_over_serial", uart)
    monkeypatch.setattr(serial_port, "require_pyserial", lambda: None)
    np.savez(tmp_path / "x.npz", **case.few())
    argv = ["run", str(case.out), "-i", str(tmp_path / "x.npz"), "-o", str(tmp_path / "y.npz")]
    assert cli.main([*argv, "--board", board.name, "--port", "/dev/null"]) == 0
    assert f"{board.name} equals the host build bit for bit" in capsys.readouterr().out
    y, host = np.load(tmp_path / "y.npz"), run_graph_host(case.out, case.few(), "run_f32")
    for key, want in zip(y.files, host, strict=True):
        np.testing.assert_array_equal(y[key].view(np.uint32), want.view(np.uint32))
