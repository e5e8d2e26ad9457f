"""`lstm-embed export` and `lstm_embed.load`.

CMake: the exported library configured and built with the real cmake, for the host (through
add_subdirectory and through find_package, installed and from the build tree) and for
Cortex-M4 with the shipped arm-none-eabi toolchain file, run in QEMU, equal bit for bit to the
same export's CMake host build and to `lstm-embed run`. A folder converted with `--core m4`:
every format offers and describes only the kernel its file holds, `--kernel reference` is
refused, and its CMake host build equals `lstm-embed run`. Arduino: the example sketch and
src/ compiled with arm-none-eabi-g++/gcc for Cortex-M4 against tests/fixtures/arduino/Arduino.h
and run in QEMU. Zephyr and PlatformIO:
the keys their documentation requires (sources cited in the templates and lstm_embed/export.py),
and the Zephyr CMakeLists run by cmake with stand-ins for Zephyr's functions. load():
predict and step equal to `lstm-embed run` bit for bit.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import string
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.emit.render import model_file_names
from lstm_embed.pipeline import MARKER, convert_ir
from lstm_embed.targets import firmware
from lstm_embed.targets.boards import get_board
from lstm_embed.targets.hostbuild import run_host
from tests.helpers import random_inputs, random_model

ARDUINO_FIXTURE = Path(__file__).parent / "fixtures" / "arduino"
KERAS_FIXTURE = Path(__file__).parent / "fixtures" / "keras" / "lstm_dense.k3.keras"
M4 = get_board("qemu-m4")
QEMU_TIMEOUT_S = 60


@dataclass(frozen=True)
class Case:
    out_dir: Path
    x: np.ndarray  # float inputs
    x_q: np.ndarray  # int16 inputs, one sequence at the int16 limits


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """'stream': 2 LSTMs returning sequences + Dense(tanh), any length; 'net': LSTM with
    hard_sigmoid + linear Dense, built for 6 timesteps, last output only."""
    specs = {
        "stream": (
            random_model(31, 3, [8, 5], None, return_sequences=True, dense=[(2, "tanh")]),
            7,
        ),
        "net": (random_model(32, 4, [12], 6, recurrent="hard_sigmoid", dense=[(3, "linear")]), 6),
    }
    result = {}
    for name, (ir, steps) in specs.items():
        m = ir.input_size
        out_dir = tmp_path_factory.mktemp(name) / "out"
        convert_ir(ir, random_inputs(len(name), 24, steps, m), out_dir, name=name)
        rng = np.random.default_rng(len(name))
        x_q = rng.integers(-20000, 20000, size=(3, steps, m)).astype(np.int16)
        x_q[-1] = np.where(rng.random((steps, m)) < 0.5, -32768, 32767)
        result[name] = Case(out_dir, random_inputs(len(name) + 7, 4, steps, m, scale=1.5), x_q)
    return result


def _main(argv: list[str]) -> tuple[int, str, str]:
    """cli.main in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


def _lstm_embed_run(out_dir: Path, x: np.ndarray, tmp: Path) -> np.ndarray:
    """`lstm-embed run OUT -i X.npy -o Y.npy`: the reference every other path must equal."""
    tmp.mkdir(parents=True, exist_ok=True)
    x_path, y_path = tmp / "x.npy", tmp / "y.npy"
    np.save(x_path, x)
    status, _, err = _main(["run", str(out_dir), "-i", str(x_path), "-o", str(y_path)])
    assert status == 0, err
    return np.load(y_path)


def _assert_same_bits(actual: np.ndarray, expected: np.ndarray, label: str) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, label
    bits = np.uint32 if actual.dtype == np.float32 else actual.dtype
    if not np.array_equal(actual.view(bits), expected.view(bits)):
        first = tuple(int(i) for i in np.argwhere(actual.view(bits) != expected.view(bits))[0])
        pytest.fail(f"{label}: first difference at {first}: {actual[first]} vs {expected[first]}")


def _export(case: Case, fmt: str, dest: Path, *extra: str) -> Path:
    status, out, err = _main(["export", str(case.out_dir), "-f", fmt, "-o", str(dest), *extra])
    assert status == 0 and err == "", err
    assert str(dest) in out
    return dest


# ---------------------------------------------------------------- tools


@pytest.fixture(scope="session")
def cmake() -> str:
    """cmake and a host C compiler; skipped without them unless CI requires the toolchain."""
    path = shutil.which("cmake")
    if path and shutil.which(os.environ.get("CC", "cc")):
        return path
    if os.environ.get("LSTM_EMBED_REQUIRE_FIRMWARE"):
        pytest.fail("LSTM_EMBED_REQUIRE_FIRMWARE is set but cmake or cc is missing")
    pytest.skip("cmake not installed (apt-get install cmake)")


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, check=False)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


def _cmake_build(cmake: str, source: Path, build: Path, *defines: str) -> None:
    _run([cmake, "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *defines])
    _run([cmake, "--build", str(build), "-j", "2"])


def _qemu_m4(elf: Path) -> str:
    proc = subprocess.run(
        firmware.qemu_command(M4, elf),
        capture_output=True,
        text=True,
        timeout=QEMU_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{elf} in QEMU: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    )
    return proc.stdout


@pytest.fixture(scope="session")
def m4_harnesses(cases: dict[str, Case], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The project's own QEMU harness for model 'net' (harness.c, its input header and the
    mps2-an386 linker script, as `lstm-embed build` renders them), for the int16 input ('q')
    and the float input ('f'); each in a folder of its own."""
    case = cases["net"]
    folders = {}
    for kind, x in (("q", case.x_q), ("f", case.x)):
        result = firmware.build(case.out_dir, M4.name, x)
        folder = tmp_path_factory.mktemp(f"harness_{kind}")
        for file in ("harness.c", "harness_input.h", "link.ld"):
            shutil.copyfile(result.elf.parent / file, folder / file)
        folders[kind] = folder
    return folders


# ---------------------------------------------------------------- CMake

# A consumer of the exported library that runs NAME_run (q) or NAME_run_f32 (f) on N
# sequences read from a raw file: what an application or a host test of it would do.
HOST_CONSUMER_C = string.Template(r"""
#include <stdio.h>
#include <stdlib.h>
#include "$name.h"

int main(int argc, char **argv)
{
    static ${name}_state_t state;
    size_t size, in_len, out_len;
    long n, t, i;
    int is_float;
    void *x, *y;
    FILE *in, *out;
    if (argc != 6) {
        return 2;
    }
    is_float = argv[1][0] == 'f';
    n = strtol(argv[2], NULL, 10);
    t = strtol(argv[3], NULL, 10);
    size = is_float ? sizeof(float) : sizeof(int16_t);
    in_len = (size_t)t * ${NAME}_INPUT_SIZE;
    out_len = (size_t)(${NAME}_RETURN_SEQUENCES ? t : 1) * ${NAME}_OUTPUT_SIZE;
    x = malloc(in_len * size);
    y = malloc(out_len * size);
    in = fopen(argv[4], "rb");
    out = fopen(argv[5], "wb");
    if (x == NULL || y == NULL || in == NULL || out == NULL) {
        return 3;
    }
    for (i = 0; i < n; ++i) {
        int status;
        if (fread(x, size, in_len, in) != in_len) {
            return 4;
        }
        status = is_float ? ${name}_run_f32(&state, (const float *)x, (int32_t)t, (float *)y)
                          : ${name}_run(&state, (const int16_t *)x, (int32_t)t, (int16_t *)y);
        if (status != ${NAME}_OK || fwrite(y, size, out_len, out) != out_len) {
            return 5;
        }
    }
    free(x);
    free(y);
    fclose(in);
    return fclose(out) == 0 ? 0 : 6;
}
""")

HOST_CONSUMER_CMAKE = string.Template("""
cmake_minimum_required(VERSION 3.13)
project(consumer C)
if(USE_FIND_PACKAGE)
    find_package($name $version EXACT CONFIG REQUIRED)
else()
    add_subdirectory($${MODEL_DIR} model)
endif()
add_executable(consumer consumer.c)
set_target_properties(consumer PROPERTIES C_STANDARD 99 C_EXTENSIONS OFF)
target_link_libraries(consumer PRIVATE lstm_embed::$name)
""")

# Firmware for mps2-an386 from the project's startup code, board file and harness, linked
# with the exported library; built with the toolchain file the export ships.
QEMU_CONSUMER_CMAKE = string.Template("""
cmake_minimum_required(VERSION 3.13)
project(qemu_consumer C ASM)
add_subdirectory($${MODEL_DIR} model)
foreach(kind q f)
    set(harness $${HARNESS_$${kind}})
    add_executable(firmware_$${kind}.elf
        $${FIRMWARE}/common/vectors.c $${FIRMWARE}/common/semihost.c
        $${FIRMWARE}/common/console.c
        $${FIRMWARE}/common/cycles.c $${FIRMWARE}/common/startup.S
        $${FIRMWARE}/boards/qemu.c $${harness}/harness.c)
    target_include_directories(firmware_$${kind}.elf PRIVATE $${FIRMWARE}/common $${harness})
    target_compile_definitions(firmware_$${kind}.elf PRIVATE BOARD_IRQ_COUNT=$irq_count)
    target_link_libraries(firmware_$${kind}.elf PRIVATE lstm_embed::$name)
    target_link_options(firmware_$${kind}.elf PRIVATE
        -nostartfiles --specs=nano.specs -T$${harness}/link.ld -Wl,--gc-sections)
endforeach()
""")


def _host_consumer(project: Path, name: str, version: str) -> Path:
    project.mkdir(parents=True)
    mapping = {"name": name, "NAME": name.upper(), "version": version}
    (project / "consumer.c").write_text(HOST_CONSUMER_C.substitute(mapping))
    (project / "CMakeLists.txt").write_text(HOST_CONSUMER_CMAKE.substitute(mapping))
    return project


def _run_consumer(exe: Path, x: np.ndarray, case: Case, tmp: Path) -> np.ndarray:
    kind = "f" if x.dtype == np.float32 else "q"
    x_path, y_path = tmp / f"in_{kind}.bin", tmp / f"out_{kind}.bin"
    x_path.write_bytes(np.ascontiguousarray(x).tobytes())
    n, t = x.shape[:2]
    _run([str(exe), kind, str(n), str(t), str(x_path), str(y_path)])
    report = json.loads((case.out_dir / "report.json").read_text())
    shape = (n, t, report["output_size"]) if report["return_sequences"] else (n, -1)
    return np.fromfile(y_path, dtype=x.dtype).reshape(shape)


STRICT_C_FLAGS = "-DCMAKE_C_FLAGS=-Wall -Wextra -Wconversion -Wshadow -Werror"


def test_cmake_host_add_subdirectory_and_find_package(
    cmake: str, cases: dict[str, Case], tmp_path: Path
) -> None:
    case = cases["stream"]
    expected_f = _lstm_embed_run(case.out_dir, case.x, tmp_path / "ref")
    expected_q = run_host(case.out_dir, case.x_q)
    lib = _export(case, "cmake", tmp_path / "stream_cmake", "--lib-version", "2.3.4")
    consumer = _host_consumer(tmp_path / "consumer", "stream", "2.3.4")

    # add_subdirectory, with the kernel cache variable set: the plain-C optimized kernel
    sub_build = tmp_path / "build_subdirectory"
    _cmake_build(
        cmake,
        consumer,
        sub_build,
        f"-DMODEL_DIR={lib}",
        "-DLSTM_EMBED_STREAM_KERNEL=plain",
        "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
        STRICT_C_FLAGS,
    )
    commands = json.loads((sub_build / "compile_commands.json").read_text())
    model_command = next(c["command"] for c in commands if c["file"].endswith("stream.c"))
    assert "-DSTREAM_USE_PLAIN_KERNEL" in model_command and "-std=c99" in model_command
    consumer_command = next(c["command"] for c in commands if c["file"].endswith("consumer.c"))
    assert "KERNEL" not in consumer_command  # the choice is private to the model's sources
    exe = sub_build / "consumer"
    _assert_same_bits(_run_consumer(exe, case.x, case, tmp_path), expected_f, "subdirectory f32")
    _assert_same_bits(_run_consumer(exe, case.x_q, case, tmp_path), expected_q, "subdirectory")

    # the export as a top-level project: built, installed, found by find_package
    lib_build, prefix = tmp_path / "build_lib", tmp_path / "prefix"
    _cmake_build(cmake, lib, lib_build, STRICT_C_FLAGS)
    _run([cmake, "--install", str(lib_build), "--prefix", str(prefix)])
    installed = {p.name for p in (prefix / "include" / "stream").iterdir()}
    assert installed == {f for f in model_file_names("stream") if f.endswith(".h")}
    for label, where in (
        ("installed", f"-DCMAKE_PREFIX_PATH={prefix}"),
        ("build tree", f"-Dstream_DIR={lib_build}"),
    ):
        build = tmp_path / f"build_find_package_{label.replace(' ', '_')}"
        _cmake_build(cmake, consumer, build, "-DUSE_FIND_PACKAGE=ON", where, STRICT_C_FLAGS)
        exe = build / "consumer"
        _assert_same_bits(_run_consumer(exe, case.x, case, tmp_path), expected_f, label)
        _assert_same_bits(_run_consumer(exe, case.x_q, case, tmp_path), expected_q, label)


def test_cmake_refuses_an_unknown_kernel(
    cmake: str, cases: dict[str, Case], tmp_path: Path
) -> None:
    lib = _export(cases["stream"], "cmake", tmp_path / "lib")
    err = _cmake_configure_error(cmake, lib, tmp_path / "b", "-DLSTM_EMBED_STREAM_KERNEL=fast")
    assert "expected auto, reference or plain" in err


def _cmake_configure_error(cmake: str, lib: Path, build: Path, define: str) -> str:
    """Configure lib with one -D that it must refuse; its error output."""
    proc = subprocess.run(
        [cmake, "-S", str(lib), "-B", str(build), define],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


@pytest.mark.firmware
def test_cmake_cortex_m4_toolchain_file_in_qemu_equals_host(
    toolchain: None, cmake: str, cases: dict[str, Case], m4_harnesses: dict, tmp_path: Path
) -> None:
    case = cases["net"]
    lib = _export(case, "cmake", tmp_path / "net_cmake")
    toolchain_file = lib / "cmake" / "arm-none-eabi.cmake"
    project = tmp_path / "qemu_consumer"
    project.mkdir()
    (project / "CMakeLists.txt").write_text(
        QEMU_CONSUMER_CMAKE.substitute(name="net", irq_count=M4.irq_count)
    )
    build = tmp_path / "build_m4"
    _cmake_build(
        cmake,
        project,
        build,
        f"-DCMAKE_TOOLCHAIN_FILE={toolchain_file}",
        f"-DMODEL_DIR={lib}",
        f"-DFIRMWARE={firmware.firmware_dir()}",
        f"-DHARNESS_q={m4_harnesses['q']}",
        f"-DHARNESS_f={m4_harnesses['f']}",
        "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
    )
    commands = json.loads((build / "compile_commands.json").read_text())
    model_command = next(c["command"] for c in commands if c["file"].endswith("net.c"))
    assert "arm-none-eabi-gcc" in model_command
    assert " ".join(M4.cpu_flags) in model_command and "-fno-schedule-insns" in model_command

    # the same export configured and built for the host with CMake: the QEMU result equals it
    host_build = tmp_path / "build_host"
    _cmake_build(
        cmake,
        _host_consumer(tmp_path / "consumer", "net", "0.1.0"),
        host_build,
        f"-DMODEL_DIR={lib}",
        STRICT_C_FLAGS,
    )
    host_q = _run_consumer(host_build / "consumer", case.x_q, case, tmp_path)
    host_f = _run_consumer(host_build / "consumer", case.x, case, tmp_path)

    model = firmware.ModelInfo.load(case.out_dir)
    y_q = firmware.parse_output(_qemu_m4(build / "firmware_q.elf"), model, case.x_q.shape)
    _assert_same_bits(y_q, host_q, "CMake firmware on qemu-m4 vs CMake host build, run")
    _assert_same_bits(y_q, run_host(case.out_dir, case.x_q), "CMake firmware on qemu-m4, run")
    y_f = firmware.parse_output(_qemu_m4(build / "firmware_f.elf"), model, case.x.shape, f32=True)
    _assert_same_bits(y_f, host_f, "CMake firmware on qemu-m4 vs CMake host build, run_f32")
    expected_f = _lstm_embed_run(case.out_dir, case.x, tmp_path / "ref")
    _assert_same_bits(y_f, expected_f, "CMake firmware on qemu-m4, run_f32")


@pytest.fixture(scope="session")
def core_m4(tmp_path_factory: pytest.TempPathFactory) -> Case:
    """A Keras file converted by the CLI with `--core m4` (the DSP kernel's layout only), as
    model 'tiny'."""
    folder = tmp_path_factory.mktemp("core_m4")
    x = random_inputs(5, 8, 4, 2)  # the fixture: 4 timesteps of 2 features
    np.save(folder / "x.npy", x)
    out_dir = folder / "out"
    argv = ["convert", str(KERAS_FIXTURE), "-c", str(folder / "x.npy"), "-o", str(out_dir)]
    status, _, err = _main([*argv, "--core", "m4", "--name", "tiny"])
    assert status == 0, err
    assert json.loads((out_dir / "report.json").read_text())["core"] == "m4"
    rng = np.random.default_rng(4)
    x_q = rng.integers(-20000, 20000, size=(3, 4, 2)).astype(np.int16)
    x_q[-1] = np.where(rng.random((4, 2)) < 0.5, -32768, 32767)
    return Case(out_dir, x, x_q)


def test_cmake_export_of_a_core_m4_folder_offers_auto_only_and_builds_for_the_host(
    cmake: str, core_m4: Case, tmp_path: Path
) -> None:
    case = core_m4
    dest = tmp_path / "refused"
    for kernel in ("reference", "plain"):
        argv = ["export", str(case.out_dir), "-f", "cmake", "-o", str(dest), "--kernel", kernel]
        line = _error_line(argv)
        assert f"--kernel '{kernel}'" in line and "--core m4" in line, line
        assert f"no {kernel} kernel (supported: auto)" in line, line
    assert not dest.exists()

    lib = _export(case, "cmake", tmp_path / "tiny_cmake")
    text = (lib / "CMakeLists.txt").read_text()
    assert "PROPERTY STRINGS auto)" in text and "set(_lstm_embed_kernels auto)" in text
    assert "_USE_REFERENCE_KERNEL" not in text and "_USE_PLAIN_KERNEL" not in text
    assert "reference (portable)" not in text and "DSP-extension kernel on every core" in text

    # the default kernel (auto): the DSP kernel, its instructions in C on the host
    build = tmp_path / "build_host"
    consumer = _host_consumer(tmp_path / "consumer", "tiny", "0.1.0")
    _cmake_build(
        cmake,
        consumer,
        build,
        f"-DMODEL_DIR={lib}",
        "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
        STRICT_C_FLAGS,
    )
    commands = json.loads((build / "compile_commands.json").read_text())
    model_command = next(c["command"] for c in commands if c["file"].endswith("tiny.c"))
    assert "KERNEL" not in model_command
    exe = build / "consumer"
    expected_f = _lstm_embed_run(case.out_dir, case.x, tmp_path / "ref")
    _assert_same_bits(_run_consumer(exe, case.x, case, tmp_path), expected_f, "--core m4 f32")
    expected_q = run_host(case.out_dir, case.x_q)
    _assert_same_bits(_run_consumer(exe, case.x_q, case, tmp_path), expected_q, "--core m4")

    # the cache variable refuses a kernel the file lacks when configuring, too
    err = _cmake_configure_error(cmake, lib, tmp_path / "b", "-DLSTM_EMBED_TINY_KERNEL=reference")
    assert "expected auto (converted with --core m4" in " ".join(err.split())


# ---------------------------------------------------------------- Arduino

ARDUINO_REQUIRED = (
    "name",
    "version",
    "author",
    "maintainer",
    "sentence",
    "paragraph",
    "category",
    "url",
    "architectures",
)
ARDUINO_CATEGORIES = {
    "Display",
    "Communication",
    "Signal Input/Output",
    "Sensors",
    "Device Control",
    "Timing",
    "Data Storage",
    "Data Processing",
    "Other",
}
SEMVER = re.compile(r"\d+\.\d+\.\d+\Z")


def _properties(path: Path) -> dict[str, str]:
    """key=value lines; '#' lines are comments (the Arduino properties format)."""
    pairs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path}: line without '=': {line!r}"
            pairs[key] = value
    return pairs


def test_arduino_library_properties_has_every_required_field(
    cases: dict[str, Case], tmp_path: Path
) -> None:
    case = cases["net"]
    lib = _export(case, "arduino", tmp_path / "net", "--lib-version", "1.2.0")
    props = _properties(lib / "library.properties")
    missing = [k for k in ARDUINO_REQUIRED if not props.get(k)]
    assert not missing, f"library.properties lacks {missing}"
    assert re.match(r"[A-Za-z0-9][A-Za-z0-9 _.\-]*\Z", props["name"]) and len(props["name"]) <= 63
    assert props["version"] == "1.2.0" and props["category"] in ARDUINO_CATEGORIES
    assert props["architectures"] == "*" and props["includes"] == "net.h"
    assert props["url"].startswith("https://")
    assert (lib / "examples" / "net" / "net.ino").is_file()
    assert sorted(p.name for p in (lib / "src").iterdir()) == sorted(model_file_names("net"))

    lib = _export(case, "arduino", tmp_path / "net2", "--url", "https://example.org/my-model")
    assert _properties(lib / "library.properties")["url"] == "https://example.org/my-model"


@pytest.mark.firmware
def test_arduino_sketch_builds_for_cortex_m4_and_prints_the_host_outputs(
    toolchain: None, cases: dict[str, Case], m4_harnesses: dict, tmp_path: Path
) -> None:
    case = cases["net"]
    x_path = tmp_path / "window.npy"
    np.save(x_path, case.x[1:3])  # the sketch runs the first sequence given
    lib = _export(case, "arduino", tmp_path / "net", "--input", str(x_path))
    objs = tmp_path / "obj"
    objs.mkdir()
    cpu = list(M4.cpu_flags)
    common = [*cpu, "-Os", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections"]
    cxx = ["arm-none-eabi-g++", *common, "-std=gnu++17", "-fno-exceptions", "-fno-rtti"]
    fw = firmware.firmware_dir()

    # The Arduino builder's sketch preprocessing: #include <Arduino.h> before the .ino text.
    ino = lib / "examples" / "net" / "net.ino"
    sketch = tmp_path / "net.ino.cpp"
    sketch.write_text(f'#include <Arduino.h>\n#line 1 "{ino}"\n' + ino.read_text())
    jobs = [[*cxx, f"-I{ARDUINO_FIXTURE}", f"-I{lib / 'src'}", "-c", str(sketch)]]
    # Library .c files are C, as the Arduino builder compiles them (gcc, -std=gnu11)
    for source in sorted((lib / "src").glob("*.c")):
        jobs.append(["arm-none-eabi-gcc", *common, "-std=gnu11", "-c", str(source)])
        # ... and they also compile as C++ (g++ treats .c as C++), for builds that push every
        # file through g++; errors only, as C++ warns about C idioms
        as_cxx = [f for f in cxx if f != "-Werror"]
        jobs.append([*as_cxx, "-x", "c++", "-c", str(source), "-o", str(objs / "cxx_check.o")])
    jobs.append(
        [
            *cxx,
            f"-I{ARDUINO_FIXTURE}",
            f"-I{fw / 'common'}",
            "-c",
            str(ARDUINO_FIXTURE / "core.cpp"),
        ]
    )
    for source in (
        "common/vectors.c",
        "common/semihost.c",
        "common/console.c",
        "common/startup.S",
        "boards/qemu.c",
    ):
        jobs.append(
            [
                "arm-none-eabi-gcc",
                *common,
                f"-DBOARD_IRQ_COUNT={M4.irq_count}",
                f"-I{fw / 'common'}",
                "-c",
                str(fw / source),
            ]
        )
    for cmd in jobs:
        if "-o" not in cmd:
            cmd += ["-o", str(objs / (Path(cmd[cmd.index("-c") + 1]).name + ".o"))]
        _run(cmd)
    elf = tmp_path / "sketch.elf"
    linked = sorted(str(p) for p in objs.glob("*.o") if p.name != "cxx_check.o")
    link_ld = m4_harnesses["q"] / "link.ld"
    _run(
        [
            *cxx,
            "-nostartfiles",
            "--specs=nano.specs",
            f"-T{link_ld}",
            "-Wl,--gc-sections",
            *linked,
            "-o",
            str(elf),
        ]
    )

    stdout = _qemu_m4(elf)
    lines = stdout.splitlines()
    printed = next(line for line in lines if line.startswith("net outputs:"))
    values = np.array([float(v) for v in printed.split(":", 1)[1].split()])
    expected = _lstm_embed_run(case.out_dir, case.x[1:2], tmp_path / "ref")[0]
    assert values.shape == expected.shape and np.abs(expected).max() > 0.01  # not all ~0
    # Serial.print(value, 6): six decimals, rounded half up
    np.testing.assert_allclose(values, expected.astype(np.float64), rtol=0, atol=5.01e-7)
    assert "net took 0 us" in lines  # the stand-in core's micros() reads 0


# ---------------------------------------------------------------- Zephyr

# Zephyr's own functions, as far as the module's CMakeLists uses them, for a build without Zephyr.
ZEPHYR_STANDIN_CMAKE = string.Template("""
cmake_minimum_required(VERSION 3.13)
project(zephyr_standin C)
add_library(zephyr_interface INTERFACE)
macro(zephyr_library)
    set(ZEPHYR_CURRENT_LIBRARY zephyr_module_lib)
    add_library(zephyr_module_lib STATIC)
endmacro()
function(zephyr_library_sources)
    target_sources($${ZEPHYR_CURRENT_LIBRARY} PRIVATE $${ARGN})
endfunction()
function(zephyr_include_directories)
    foreach(dir $${ARGN})
        get_filename_component(dir $${dir} ABSOLUTE)
        target_include_directories(zephyr_interface INTERFACE $${dir})
    endforeach()
endfunction()
function(zephyr_library_compile_definitions)
    target_compile_definitions($${ZEPHYR_CURRENT_LIBRARY} PRIVATE $${ARGN})
endfunction()
set(CONFIG_LSTM_EMBED_NET y)
set(CONFIG_LSTM_EMBED_NET_KERNEL_$kernel y)
add_subdirectory($${MODULE} module)
target_link_libraries(zephyr_module_lib PRIVATE zephyr_interface)
""")


def _kconfig_symbols(text: str) -> dict[str, list[str]]:
    """symbol -> the lines of its entry (config blocks end at the next keyword line)."""
    symbols: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        head = line.split()
        if head and head[0] in ("config", "choice") and len(head) == 2:
            current = head[1]
            symbols[current] = []
        elif head and head[0] in ("endchoice", "if", "endif", "menu", "endmenu"):
            current = None
        elif current is not None:
            symbols[current].append(line.strip())
    return symbols


def test_zephyr_module_keys_kconfig_and_cmake(
    cmake: str, cases: dict[str, Case], tmp_path: Path
) -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML (installed with the [flash] extra)")
    case = cases["net"]
    module = _export(case, "zephyr", tmp_path / "net_zephyr", "--kernel", "plain")
    meta = yaml.safe_load((module / "zephyr" / "module.yml").read_text())
    # build.cmake: a folder holding CMakeLists.txt; build.kconfig: a file (both relative to
    # the module root), as zephyr/scripts/zephyr_module.py validates them.
    assert (module / meta["build"]["cmake"] / "CMakeLists.txt").is_file()
    assert (module / meta["build"]["kconfig"]).is_file()
    assert re.match(r"[A-Za-z0-9_-]+\Z", meta["name"])

    kconfig = (module / meta["build"]["kconfig"]).read_text()
    symbols = _kconfig_symbols(kconfig)
    assert any(line.startswith("bool ") for line in symbols["LSTM_EMBED_NET"])
    choice = symbols["LSTM_EMBED_NET_KERNEL"]
    assert "default LSTM_EMBED_NET_KERNEL_PLAIN" in choice and any(
        line.startswith("prompt ") for line in choice
    )
    for kernel in ("AUTO", "REFERENCE", "PLAIN"):
        assert any(line.startswith("bool ") for line in symbols[f"LSTM_EMBED_NET_KERNEL_{kernel}"])
    assert kconfig.count("choice ") == 1 and kconfig.count("endchoice") == 1
    assert kconfig.count("\nif ") == kconfig.count("\nendif")

    cmakelists = (module / "CMakeLists.txt").read_text()
    assert "if(CONFIG_LSTM_EMBED_NET)" in cmakelists and "zephyr_library()" in cmakelists
    # Zephyr's build runs this CMakeLists; here cmake does, with stand-ins for its functions.
    for kernel, define in (("PLAIN", "-DNET_USE_PLAIN_KERNEL"), ("AUTO", None)):
        project = tmp_path / f"zephyr_standin_{kernel}"
        project.mkdir()
        (project / "CMakeLists.txt").write_text(ZEPHYR_STANDIN_CMAKE.substitute(kernel=kernel))
        build = project / "build"
        _cmake_build(
            cmake, project, build, f"-DMODULE={module}", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON"
        )
        commands = json.loads((build / "compile_commands.json").read_text())
        model_command = next(c["command"] for c in commands if c["file"].endswith("net.c"))
        assert (define in model_command) if define else "KERNEL" not in model_command


# ---------------------------------------------------------------- PlatformIO


def test_platformio_library_json_keys_and_kernel_flag(
    cases: dict[str, Case], tmp_path: Path
) -> None:
    case = cases["net"]
    for kernel, flags in (("reference", ["-DNET_USE_REFERENCE_KERNEL"]), ("auto", [])):
        lib = _export(case, "platformio", tmp_path / kernel, "--kernel", kernel)
        manifest = json.loads((lib / "library.json").read_text())
        # Required (PlatformIO manifests/library-json/fields): name, version, description.
        assert re.match(r"[a-z0-9]+(-[a-z0-9]+)*\Z", manifest["name"])
        assert len(manifest["name"]) <= 50
        assert SEMVER.match(manifest["version"]) and len(manifest["version"]) <= 20
        assert 0 < len(manifest["description"]) <= 255
        build = manifest["build"]
        assert build["flags"] == flags
        src = lib / build["srcDir"]
        assert (src / manifest["headers"]).is_file() and (
            lib / build["includeDir"] / "net.h"
        ).is_file()
        assert (src / "net.c").is_file()


# ---------------------------------------------------------------- every format


def test_every_c_and_h_file_is_exported_whatever_its_name(
    cases: dict[str, Case], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(cases["net"].out_dir, out, ignore=shutil.ignore_patterns("build"))
    (out / "net_tables.c").write_text("/* a later converter's second source file */\n")
    (out / "net_config.h").write_text("/* and a second header */\n")
    case = Case(out, cases["net"].x, cases["net"].x_q)
    expected = {*model_file_names("net"), "net_tables.c", "net_config.h"}
    for fmt in ("cmake", "zephyr", "arduino", "platformio"):
        lib = _export(case, fmt, tmp_path / fmt)
        src = lib / "src"
        assert {p.name for p in src.iterdir()} == expected, fmt
        for name in expected:
            assert (src / name).read_bytes() == (out / name).read_bytes(), (fmt, name)
        assert (lib / "report.json").read_bytes() == (out / "report.json").read_bytes()
        assert (lib / MARKER).is_file()
        assert not (lib / "qmodel.npz").exists() and not (lib / "build").exists()
    for build_file in ("cmake/CMakeLists.txt", "zephyr/CMakeLists.txt"):
        text = (tmp_path / build_file).read_text()
        assert "src/net_tables.c" in text and "src/net.c" in text, build_file


def test_zephyr_arduino_platformio_of_a_core_m4_folder_describe_its_kernel(
    core_m4: Case, tmp_path: Path
) -> None:
    module = _export(core_m4, "zephyr", tmp_path / "zephyr")
    kconfig = (module / "Kconfig").read_text()
    symbols = _kconfig_symbols(kconfig)
    assert [s for s in symbols if s.startswith("LSTM_EMBED_TINY_KERNEL_")] == [
        "LSTM_EMBED_TINY_KERNEL_AUTO"
    ]
    auto_help = " ".join(symbols["LSTM_EMBED_TINY_KERNEL_AUTO"])
    assert "--core m4" in auto_help and "DSP-extension kernel on every" in auto_help
    assert "MVE" not in kconfig and "plain C" not in kconfig
    assert "_USE_" not in (module / "CMakeLists.txt").read_text()

    lib = _export(core_m4, "arduino", tmp_path / "arduino")
    paragraph = _properties(lib / "library.properties")["paragraph"]
    assert "--core m4" in paragraph and "DSP-extension kernel on every core" in paragraph
    assert "MVE" not in paragraph and "plain C" not in paragraph

    lib = _export(core_m4, "platformio", tmp_path / "platformio")
    manifest = json.loads((lib / "library.json").read_text())
    assert "DSP on every core (--core m4)" in manifest["description"]
    assert manifest["build"]["flags"] == []
    for fmt in ("zephyr", "arduino", "platformio"):
        argv = ["export", str(core_m4.out_dir), "-f", fmt, "-o", str(tmp_path / "x")]
        assert "--core m4" in _error_line([*argv, "--kernel", "plain"])


def test_folders_converted_before_core_offer_every_kernel(
    cases: dict[str, Case], tmp_path: Path
) -> None:
    out = tmp_path / "old"
    shutil.copytree(cases["net"].out_dir, out, ignore=shutil.ignore_patterns("build"))
    report = json.loads((out / "report.json").read_text())
    del report["core"]
    (out / "report.json").write_text(json.dumps(report))
    case = Case(out, cases["net"].x, cases["net"].x_q)
    lib = _export(case, "cmake", tmp_path / "lib", "--kernel", "plain")
    assert "PROPERTY STRINGS auto reference plain)" in (lib / "CMakeLists.txt").read_text()

    report["core"] = "m9"
    (out / "report.json").write_text(json.dumps(report))
    line = _error_line(["export", str(out), "-f", "cmake", "-o", str(tmp_path / "new")])
    assert "--core 'm9' is not supported" in line and "reconvert" in line


def _error_line(argv: list[str]) -> str:
    status, out, err = _main(argv)
    assert status == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm-embed export: error: "), err
    return lines[0]


def test_export_refuses_foreign_folders_and_bad_options(
    cases: dict[str, Case], tmp_path: Path
) -> None:
    out = str(cases["net"].out_dir)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert "not written by lstm-embed" in _error_line(
        ["export", out, "-f", "cmake", "-o", str(foreign)]
    )
    assert (foreign / "notes.txt").read_text() == "keep me"
    _export(cases["net"], "cmake", foreign, "--force")
    assert not (foreign / "notes.txt").exists() and (foreign / "CMakeLists.txt").is_file()
    _export(cases["net"], "zephyr", foreign)  # a folder lstm-embed wrote is replaced
    assert not (foreign / "cmake").exists() and (foreign / "Kconfig").is_file()

    dest = str(tmp_path / "new")
    for argv, text in (
        (["-f", "makefile", "-o", dest], "--format 'makefile' not supported"),
        (["-f", "cmake", "-o", dest, "--kernel", "fast"], "--kernel 'fast' not supported"),
        (["-f", "cmake", "-o", dest, "--lib-version", "1.0"], "MAJOR.MINOR.PATCH"),
        (["-f", "cmake", "-o", out], "would replace the converted folder"),
        (["-f", "cmake", "-o", str(Path(out).parent)], "would replace the converted folder"),
    ):
        assert text in _error_line(["export", out, *argv])
    assert "no report.json" in _error_line(["export", str(tmp_path), "-f", "cmake", "-o", dest])
    assert not Path(dest).exists()


def test_a_failed_export_leaves_nothing_behind(
    cases: dict[str, Case], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lstm_embed.tools import export as export_module

    copied = []
    real_copyfile = shutil.copyfile

    def copy_then_fail(source, target):  # the second file copied fails
        if copied:
            raise OSError("No space left on device")
        copied.append(real_copyfile(source, target))

    monkeypatch.setattr(export_module.shutil, "copyfile", copy_then_fail)
    argv = ["export", str(cases["net"].out_dir), "-f", "cmake", "-o", str(tmp_path / "lib")]
    assert "No space left on device" in _error_line(argv)
    assert copied and list(tmp_path.iterdir()) == []  # neither the folder nor its temporary


# ---------------------------------------------------------------- lstm_embed.load


def test_load_predict_equals_lstm_embed_run(cases: dict[str, Case], tmp_path: Path) -> None:
    import lstm_embed

    for name, case in cases.items():
        model = lstm_embed.load(case.out_dir)
        expected = _lstm_embed_run(case.out_dir, case.x, tmp_path / name)
        _assert_same_bits(model.predict(case.x), expected, f"{name} predict float")
        _assert_same_bits(model.predict(case.x.astype(np.float64)), expected, f"{name} float64")
        _assert_same_bits(
            model.predict(case.x_q), run_host(case.out_dir, case.x_q), f"{name} int16"
        )
        plain = lstm_embed.load(case.out_dir, kernel="plain")
        _assert_same_bits(plain.predict(case.x), expected, f"{name} plain kernel")
    # any length, as Keras' Sequential.predict and `lstm-embed run`: 'net' was built for 6
    case = cases["net"]
    longer = random_inputs(5, 2, 9, 4)
    expected = _lstm_embed_run(case.out_dir, longer, tmp_path / "longer")
    _assert_same_bits(lstm_embed.load(case.out_dir).predict(longer), expected, "9 timesteps")


def test_load_step_streams_equal_lstm_embed_run(cases: dict[str, Case], tmp_path: Path) -> None:
    import lstm_embed

    for name, case in cases.items():
        model = lstm_embed.load(case.out_dir)
        expected = _lstm_embed_run(case.out_dir, case.x, tmp_path / name)
        steps = case.x.shape[1]
        for attempt in ("fresh", "after reset"):
            ys = np.stack([model.step(case.x[:, t]) for t in range(steps)], axis=1)
            got = ys if model.return_sequences else ys[:, -1]
            _assert_same_bits(got, expected, f"{name} step, {attempt}")
            model.reset()
        # one stream, (m,) in and (k,) out; predict in between does not touch the stream
        single = []
        for t in range(steps):
            single.append(model.step(case.x[2, t]))
            model.predict(case.x[:1])
        got = np.stack(single) if model.return_sequences else single[-1]
        _assert_same_bits(got, expected[2], f"{name} one stream")
        model.reset()
        ys_q = np.stack([model.step(case.x_q[:, t]) for t in range(steps)], axis=1)
        expected_q = run_host(case.out_dir, case.x_q)
        _assert_same_bits(
            ys_q if model.return_sequences else ys_q[:, -1], expected_q, f"{name} int16 step"
        )


def test_load_validates_input(cases: dict[str, Case]) -> None:
    """predict refuses bad input with `lstm-embed run`'s messages (the shared inputs.check_input;
    tests/test_entry_points.py holds every runner, step included, to them); load refuses an
    unknown kernel and a folder without a converted model."""
    import lstm_embed
    from lstm_embed.targets.inputs import InputError

    case = cases["net"]
    model = lstm_embed.load(case.out_dir)
    x = case.x
    nan = np.where(np.arange(4) == 2, np.nan, x)
    for bad in (x[0], x[..., :3], x[:0], x[:, :0], nan, np.full((1, 6, 4), 40000), x > 0):
        with pytest.raises(InputError) as host:
            run_host(case.out_dir, bad)
        with pytest.raises(ValueError) as python:
            model.predict(bad)
        assert str(python.value) == str(host.value)
    with pytest.raises(ValueError, match="kernel 'fast' not supported"):
        lstm_embed.load(case.out_dir, kernel="fast")
    with pytest.raises(RuntimeError, match=r"no report\.json"):
        lstm_embed.load(case.out_dir.parent)


def test_load_info_and_build_cache(cases: dict[str, Case]) -> None:
    import lstm_embed

    case = cases["stream"]
    report = json.loads((case.out_dir / "report.json").read_text())
    model = lstm_embed.load(case.out_dir)
    info = model.info
    assert [layer["format"] for layer in info["layers"]] == [
        la["format"] for la in report["layers"]
    ]
    assert info["flash_bytes"] == report["flash_bytes"]
    # the C compiler's sizeof(stream_state_t) against the report's RAM figure
    assert info["state_bytes"] == report["ram_bytes"]["total"]
    assert (info["input_size"], info["output_size"], info["timesteps"]) == (3, 2, 0)
    assert "stream" in repr(model)
    library = Path(info["library"])
    stamp = library.stat().st_mtime_ns
    assert lstm_embed.load(case.out_dir).library == library and library.stat().st_mtime_ns == stamp


def test_import_lstm_embed_stays_light() -> None:
    code = (
        "import sys, lstm_embed;"
        " print(sorted({'numpy', 'lstm_embed.targets.runtime'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
