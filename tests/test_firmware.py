"""Firmware: every emulated Cortex-M build equals the host C build bit for bit under QEMU;
real boards build; oversized models are refused; flashing goes through pyOCD.

Needs arm-none-eabi-gcc + newlib and qemu-system-arm. Skips without them unless
LSTM_EMBED_REQUIRE_FIRMWARE is set (CI), in which case a missing toolchain fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lstm_embed.targets import firmware
from lstm_embed.targets.boards import BOARDS, EMULATED_BOARDS, REAL_BOARDS, get_board

os.environ.setdefault("KERAS_BACKEND", "jax")

FAKE_MODEL_DIR = Path(__file__).parent / "fixtures" / "fake_net"
SEQUENCES = 3


# ---------------------------------------------------------------- models


@dataclass(frozen=True)
class Case:
    """A converted model folder and the int16 input its tests use."""

    out_dir: Path
    x_q: np.ndarray


def _keras_models() -> dict[str, Callable]:
    import keras

    def tiny():  # LSTM(1): the smallest shape, fixed length, last output only
        return keras.Sequential([keras.Input((5, 1)), keras.layers.LSTM(1)])

    def stacked_sequences():  # stacked, return_sequences, any length
        return keras.Sequential(
            [
                keras.Input((None, 3)),
                keras.layers.LSTM(8, return_sequences=True),
                keras.layers.LSTM(4, return_sequences=True),
            ]
        )

    def wide():  # LSTM(64) + Dense: the widest kernel the notes measure
        return keras.Sequential(
            [keras.Input((10, 6)), keras.layers.LSTM(64), keras.layers.Dense(3)]
        )

    return {"tiny": tiny, "stacked_sequences": stacked_sequences, "wide": wide}


def _trained_model():
    """LSTM(16) trained briefly to predict the next sample of noisy sines (fixed seeds)."""
    import keras

    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    phase = rng.uniform(0, 2 * np.pi, size=(256, 1))
    t = np.arange(13) * 0.4
    wave = np.sin(phase + t) + 0.05 * rng.normal(size=(256, 13))
    x, y = wave[:, :12, None].astype(np.float32), wave[:, 12:].astype(np.float32)
    model = keras.Sequential([keras.Input((12, 1)), keras.layers.LSTM(16), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return model, x[:32]


def _random_input(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Random int16 with one all-extreme sequence, to exercise saturation."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-12000, 12000, size=shape, dtype=np.int16)
    x[-1] = np.where(rng.random(shape[1:]) < 0.5, -32768, 32767)
    return x


def _convert(model, calibration: np.ndarray, out_dir: Path, options=None) -> Path:
    import lstm_embed

    lstm_embed.convert(model, calibration=calibration, out_dir=out_dir, name="net", options=options)
    return out_dir


def _mixed_precision_model():
    """int16 weights (portable kernel, int32 cell) beside an int8 layer (optimized kernel)."""
    import keras

    from lstm_embed.quantize.quantizer import QuantizeOptions

    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [
            keras.Input((6, 3)),
            keras.layers.LSTM(8, return_sequences=True),
            keras.layers.LSTM(5),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    return model, QuantizeOptions(weight_bits=(16, 8, 16))


@pytest.fixture(scope="session")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """Every model the QEMU tests run: converted once per session."""
    import keras

    result = {}
    for i, (label, make) in enumerate(_keras_models().items()):
        keras.utils.set_random_seed(i)
        model = make()
        steps = model.input_shape[1] or 7
        width = model.input_shape[2]
        calibration = np.random.default_rng(i).normal(size=(32, steps, width)).astype(np.float32)
        out_dir = _convert(model, calibration, tmp_path_factory.mktemp(label) / "out")
        result[label] = Case(out_dir, _random_input((SEQUENCES, steps, width), seed=i))
    model, calibration = _trained_model()
    out_dir = _convert(model, calibration, tmp_path_factory.mktemp("trained") / "out")
    result["trained"] = Case(out_dir, _random_input((SEQUENCES, 12, 1), seed=9))
    model, options = _mixed_precision_model()
    calibration = np.random.default_rng(11).normal(size=(32, 6, 3)).astype(np.float32)
    out_dir = _convert(model, calibration, tmp_path_factory.mktemp("mixed") / "out", options)
    result["int16_int8_mixed"] = Case(out_dir, _random_input((SEQUENCES, 6, 3), seed=11))
    return result


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    """Hand-written contract-following C: checks the firmware without the converter."""
    out_dir = tmp_path / "out"
    shutil.copytree(FAKE_MODEL_DIR, out_dir)
    return out_dir


def _fake_reference(x_q: np.ndarray) -> np.ndarray:
    """numpy model of tests/fixtures/fake_net/net.c."""
    w = np.array([[3, -5], [-7, 11], [13, 17]], dtype=np.int64)
    h = np.zeros((x_q.shape[0], 3), dtype=np.int64)
    ys = []
    for t in range(x_q.shape[1]):
        h = np.clip(h + ((x_q[:, t].astype(np.int64) @ w.T) >> 4), -32768, 32767)
        ys.append(h)
    return np.stack(ys, axis=1).astype(np.int16)


def _assert_bit_exact(y_board: np.ndarray, y_host: np.ndarray, label: str) -> None:
    assert y_board.shape == y_host.shape, label
    if not np.array_equal(y_board, y_host):
        first = tuple(int(i) for i in np.argwhere(y_board != y_host)[0])
        pytest.fail(
            f"{label}: first difference at (sequence, [timestep,] output) {first}: "
            f"board {y_board[first]} host {y_host[first]}"
        )


# ---------------------------------------------------------------- QEMU == host


MODEL_LABELS = ("tiny", "stacked_sequences", "wide", "trained", "int16_int8_mixed")


@pytest.mark.firmware
@pytest.mark.parametrize("board", EMULATED_BOARDS)
@pytest.mark.parametrize("label", MODEL_LABELS)
def test_qemu_equals_host(toolchain: None, cases: dict[str, Case], label: str, board: str) -> None:
    from lstm_embed.targets.hostbuild import run_host

    case = cases[label]
    y_board = firmware.run_qemu(case.out_dir, board, case.x_q)
    _assert_bit_exact(y_board, run_host(case.out_dir, case.x_q), f"{label} on {board}")


@pytest.mark.firmware
@pytest.mark.parametrize("board", EMULATED_BOARDS)
def test_qemu_f32_equals_host(toolchain: None, cases: dict[str, Case], board: str) -> None:
    """run_f32 (float in, float out) too: same float32 bits on every core as on the host."""
    from lstm_embed.targets.hostbuild import run_host

    case = cases["trained"]
    x = np.random.default_rng(5).normal(size=case.x_q.shape).astype(np.float32)
    y_board = firmware.run_qemu_f32(case.out_dir, board, x)
    y_host = run_host(case.out_dir, x)
    assert y_board.dtype == np.float32
    _assert_bit_exact(y_board.view(np.uint32), y_host.view(np.uint32), f"run_f32 on {board}")


@pytest.mark.firmware
@pytest.mark.parametrize("board", EMULATED_BOARDS)
def test_fake_model_runs(toolchain: None, fake_model: Path, board: str) -> None:
    x_q = _random_input((2, 4, 2), seed=3)
    y = firmware.run_qemu(fake_model, board, x_q)
    _assert_bit_exact(y, _fake_reference(x_q), f"fake model on {board}")


@pytest.mark.firmware
def test_instruction_count_is_deterministic(toolchain: None, cases: dict[str, Case]) -> None:
    case = cases["tiny"]
    first = firmware.count_instructions(case.out_dir, "qemu-m4", case.x_q[:2])
    assert len(first) == 2 and min(first) > 0
    assert firmware.count_instructions(case.out_dir, "qemu-m4", case.x_q[:2]) == first


# ---------------------------------------------------------------- real boards


def _symbols(elf: Path) -> dict[str, tuple[int, int]]:
    out = subprocess.run(
        ["arm-none-eabi-nm", "-S", str(elf)], capture_output=True, text=True, check=True
    ).stdout
    table = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 4:
            table[fields[3]] = (int(fields[0], 16), int(fields[1], 16))
    return table


@pytest.mark.firmware
@pytest.mark.parametrize("board", REAL_BOARDS)
def test_real_board_builds(toolchain: None, cases: dict[str, Case], board: str) -> None:
    b = get_board(board)
    result = firmware.build(cases["wide"].out_dir, board)
    assert result.elf.is_file() and result.map_file.is_file()
    address, size = _symbols(result.elf)["vector_table"]
    # the Pico's boot ROM enters the image at its first byte: a stub precedes the table
    assert address == b.flash.origin + (256 if b.entry_stub else 0)
    assert size == 4 * (16 + b.irq_count)
    board_object = Path(b.board_source).stem + ".o"
    assert board_object in result.map_file.read_text()  # its clock set-up is linked
    assert result.model.rodata > 0 and result.model.flash <= result.size.flash
    assert "model" in result.table() and "rodata" in result.table()


@pytest.mark.firmware
def test_run_refuses_real_board(toolchain: None, fake_model: Path) -> None:
    with pytest.raises(firmware.FirmwareError, match="real hardware"):
        firmware.run_qemu(fake_model, "nucleo-l476rg", _random_input((1, 2, 2), seed=0))


# ---------------------------------------------------------------- does not fit


@pytest.mark.firmware
def test_model_too_big_for_flash_is_refused(toolchain: None, tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 64)), keras.layers.LSTM(256)])
    x = np.random.default_rng(0).normal(size=(4, 4, 64)).astype(np.float32)
    out_dir = _convert(model, x, tmp_path / "out")
    with pytest.raises(firmware.FitError, match=r"needs \d+ bytes of flash.*has 262144"):
        firmware.build(out_dir, "qemu-m0")
    assert not (out_dir / "build" / "qemu-m0" / "firmware.elf").exists()


@pytest.mark.firmware
def test_linker_overflow_is_refused_with_numbers(toolchain: None, fake_model: Path) -> None:
    x_q = np.zeros((1, 70_000, 2), dtype=np.int16)  # 280 kB of compiled-in input > 256 kB
    with pytest.raises(firmware.FitError, match=r"FLASH \(262144 bytes\) overflowed by \d+"):
        firmware.build(fake_model, "qemu-m0", x_q)


# ---------------------------------------------------------------- flashing


PYOCD_BOARDS = tuple(b for b in REAL_BOARDS if get_board(b).pyocd_target)


@pytest.mark.parametrize("board", PYOCD_BOARDS)
def test_flash_dry_run_prints_pyocd_command(fake_model: Path, board: str) -> None:
    cmd = firmware.flash(fake_model, board, dry_run=True)
    assert Path(cmd[0]).name == "pyocd" and cmd[1] == "flash"
    assert cmd[cmd.index("-t") + 1] == get_board(board).pyocd_target
    assert cmd[-1] == str(fake_model / "build" / board / "firmware.elf")


@pytest.mark.firmware
def test_flash_without_probe_fails_clearly(toolchain: None, fake_model: Path) -> None:
    if shutil.which(firmware.flash_command(get_board("nrf52840-dk"), Path("x.elf"))[0]) is None:
        pytest.skip("pyOCD not installed (pip install .[flash])")
    with pytest.raises(firmware.FirmwareError, match="no debug probe"):
        firmware.flash(fake_model, "nrf52840-dk")


def test_flash_refuses_emulated_board(fake_model: Path) -> None:
    with pytest.raises(firmware.FirmwareError, match="emulated"):
        firmware.flash(fake_model, "qemu-m4", dry_run=True)


# ---------------------------------------------------------------- no toolchain needed


def test_boards_have_consistent_descriptions() -> None:
    for name, b in BOARDS.items():
        assert b.name == name
        # a real board is flashed by pyOCD or by copying a .uf2; an emulated one by neither
        assert b.emulated != (b.pyocd_target is not None or b.uf2_family is not None), name
        assert (firmware.firmware_dir() / b.board_source).is_file(), name
        assert b.stack_bytes < b.ram.size


def test_unknown_board_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="qemu-m4"):
        get_board("qemu-m99")


def test_model_named_like_a_firmware_file_is_refused(fake_model: Path) -> None:
    report = json.loads((fake_model / "report.json").read_text())
    (fake_model / "report.json").write_text(json.dumps({**report, "name": "semihost"}))
    with pytest.raises(firmware.FirmwareError, match="clashes with a firmware file"):
        firmware.build(fake_model, "qemu-m4")


def test_parse_output_shapes(fake_model: Path) -> None:
    model = firmware.ModelInfo.load(fake_model)
    stdout = "run 1 2 3 4 5 6\ncycles 0\nrun -1 -2 -3 -4 -5 -6\ncycles 0\ndone 2\n"
    y = firmware.parse_output(stdout, model, (2, 2, 2))
    assert y.dtype == np.int16 and y.shape == (2, 2, 3) and y[1, 1, 2] == -6
    with pytest.raises(firmware.FirmwareError, match="incomplete"):
        firmware.parse_output("run 1 2 3 4 5 6\n", model, (2, 2, 2))
    with pytest.raises(firmware.FirmwareError, match="expected 6 values"):
        firmware.parse_output("run 1 2 3\nrun 1 2 3\ndone 2\n", model, (2, 2, 2))
    bits = np.array([1.5, -0.0, np.inf], np.float32).view(np.uint32)
    stdout = "step_f32 " + " ".join(str(b) for b in np.tile(bits, 2)) + "\ndone 1\n"
    y = firmware.parse_entry_output(stdout, model, "step_f32", (1, 2, 2))
    assert y.dtype == np.float32 and y.shape == (1, 2, 3)
    assert np.array_equal(y.view(np.uint32).ravel(), np.tile(bits, 2))


@pytest.mark.skipif(shutil.which("cppcheck") is None, reason="cppcheck not installed")
def test_firmware_sources_pass_cppcheck() -> None:
    proc = subprocess.run(
        [
            "cppcheck",
            "--error-exitcode=1",
            "--enable=warning,portability",
            "--quiet",
            "-DBOARD_IRQ_COUNT=32",
            f"-I{firmware.firmware_dir() / 'common'}",
            str(firmware.firmware_dir()),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
