"""Real boards without a debugger: UART consoles, no semihosting in their default firmware,
the Pico's UF2 file, the serial reader, and the STM32F4 USART driver under QEMU
(qemu-stm32f405) through the CLI.

The QEMU runs of every test model on qemu-stm32f405 are in test_firmware.py (it runs every
emulated board); here the CLI path and what the image links.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.targets import firmware, serial_port
from lstm_embed.targets.boards import BOARDS, REAL_BOARDS, get_board

FAKE_MODEL_DIR = Path(__file__).parent / "fixtures" / "fake_net"
KERAS_FIXTURE = Path(__file__).parent / "fixtures" / "keras" / "lstm_dense.k3.keras"

# Semihosting traps: BKPT 0xAB (Thumb, every M profile) and SVC 0x123456 (the Arm-state
# call, which a Thumb-only core could only meet as data; checked all the same)
SEMIHOSTING = re.compile(r"\b(bkpt\s+0x0*ab|svc\s+0x0*123456)\b", re.IGNORECASE)


@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    out_dir = tmp_path / "out"
    shutil.copytree(FAKE_MODEL_DIR, out_dir)
    return out_dir


def _disassembly(elf: Path) -> str:
    return subprocess.run(
        ["arm-none-eabi-objdump", "-d", str(elf)], capture_output=True, text=True, check=True
    ).stdout


def _linked_objects(map_file: Path) -> set[str]:
    return set(re.findall(r"(\w+)\.o\b", map_file.read_text()))


# ---------------------------------------------------------------- no semihosting by default


@pytest.mark.firmware
@pytest.mark.parametrize("board", REAL_BOARDS)
def test_default_firmware_has_no_semihosting_call(toolchain, fake_model, board) -> None:
    result = firmware.build(fake_model, board)
    assert result.console == "uart"
    found = SEMIHOSTING.findall(_disassembly(result.elf))
    assert not found, f"{board}: semihosting calls in the default firmware: {found}"
    objects = _linked_objects(result.map_file)
    assert "uart_console" in objects and "semihost" not in objects
    # the check can fail: the same board built with --semihosting has the traps
    with_semihosting = firmware.build(fake_model, board, semihosting=True)
    assert SEMIHOSTING.search(_disassembly(with_semihosting.elf))


@pytest.mark.firmware
def test_qemu_stm32f405_prints_through_its_usart(toolchain, fake_model) -> None:
    """The output comes through USART1 (QEMU's -serial stdio): the semihosting console is not
    linked, the F4 USART driver is, and the one semihosting call left is the exit."""
    x_q = np.arange(-8, 8, dtype=np.int16).reshape(2, 4, 2) * 100
    y = firmware.run_qemu(fake_model, "qemu-stm32f405", x_q)
    assert y.shape == (2, 4, 3)
    elf = firmware.build_dir(fake_model, "qemu-stm32f405") / "firmware.elf"
    objects = _linked_objects(elf.with_suffix(".map"))
    assert {"uart_console", "stm32f4_usart", "qemu_stm32f405"} <= objects
    assert "semihost" not in objects
    cmd = firmware.qemu_command(get_board("qemu-stm32f405"), elf)
    assert cmd[cmd.index("-serial") + 1] == "stdio" and "chardev" not in " ".join(cmd)


@pytest.mark.firmware
def test_cli_run_on_qemu_stm32f405_equals_the_host_build(toolchain, tmp_path, capsys) -> None:
    from lstm_embed.pipeline import convert

    out = tmp_path / "out"
    with np.load(KERAS_FIXTURE.with_name("lstm_dense.k3.npz")) as data:
        x = data["x"]
        convert(KERAS_FIXTURE, x, out)
    np.save(tmp_path / "x.npy", x[:3])
    argv = ["run", str(out), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]
    assert cli.main([*argv, "--board", "qemu-stm32f405"]) == 0
    assert "qemu-stm32f405 equals the host build bit for bit" in capsys.readouterr().out
    assert cli.main(argv) == 0  # host build
    y_host = np.load(tmp_path / "y.npy")
    assert cli.main([*argv, "--board", "qemu-stm32f405"]) == 0
    assert np.array_equal(np.load(tmp_path / "y.npy").view(np.uint32), y_host.view(np.uint32))


# ---------------------------------------------------------------- the Pico's UF2


def _decode_uf2(data: bytes) -> list[dict]:
    """Every 512-byte block's fields, by the UF2 specification's layout."""
    assert len(data) % 512 == 0
    blocks = []
    for k in range(len(data) // 512):
        block = data[512 * k : 512 * (k + 1)]
        fields = struct.unpack_from("<8I", block, 0)
        names = ("magic0", "magic1", "flags", "address", "size", "number", "count", "family")
        entry = dict(zip(names, fields, strict=True))
        entry["payload"] = block[32 : 32 + entry["size"]]
        (entry["magic_end"],) = struct.unpack_from("<I", block, 508)
        blocks.append(entry)
    return blocks


@pytest.mark.firmware
def test_pico_uf2_decodes_to_the_elf_image(toolchain, fake_model, tmp_path) -> None:
    result = firmware.build(fake_model, "pico")
    assert result.uf2 == result.elf.with_suffix(".uf2")
    blocks = _decode_uf2(result.uf2.read_bytes())
    for n, b in enumerate(blocks):
        assert (b["magic0"], b["magic1"], b["magic_end"]) == (0x0A324655, 0x9E5D5157, 0x0AB16F30)
        assert b["flags"] & 0x2000 and b["family"] == 0xE48BFF56  # family id present: RP2040
        assert (b["number"], b["count"], b["size"]) == (n, len(blocks), 256)
        assert b["address"] % 256 == 0
    addresses = [b["address"] for b in blocks]
    assert addresses[0] == 0x20000000  # the boot ROM enters an SRAM image at its start
    assert addresses == list(range(addresses[0], addresses[0] + 256 * len(blocks), 256))
    image = b"".join(b["payload"] for b in blocks)
    # the oracle: binutils' own flat image of the ELF's loadable sections
    flat = tmp_path / "image.bin"
    subprocess.run(
        ["arm-none-eabi-objcopy", "-O", "binary", str(result.elf), str(flat)], check=True
    )
    expected = flat.read_bytes()
    assert image[: len(expected)] == expected
    assert not image[len(expected) :].strip(b"\0")  # the last page's padding
    # the image starts with the entry stub, the vector table follows at 0x20000100
    vector_table = struct.unpack_from("<2I", image, 0x100)
    assert vector_table[0] == get_board("pico").ram.origin + get_board("pico").ram.size
    assert 0x20000000 < vector_table[1] < 0x20000000 + len(image) and vector_table[1] & 1


@pytest.mark.firmware
def test_pico_flash_without_its_drive_says_how(toolchain, fake_model, monkeypatch) -> None:
    monkeypatch.setattr(firmware, "UF2_DRIVE_PARENTS", ())
    with pytest.raises(firmware.FirmwareError, match="BOOTSEL"):
        firmware.flash(fake_model, "pico")


def test_pico_uf2_drive_is_found_by_its_info_file(tmp_path) -> None:
    drive = tmp_path / "user" / "RPI-RP2"
    drive.mkdir(parents=True)
    assert firmware.find_uf2_drive(get_board("pico"), [str(tmp_path)]) is None
    (drive / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\n"
                                        "Board-ID: RPI-RP2\n")  # fmt: skip
    assert firmware.find_uf2_drive(get_board("pico"), [str(tmp_path)]) == drive


# ---------------------------------------------------------------- reading a board's UART


class Chunks:
    """A serial port's readline(): each call returns the next chunk (b"" for a timeout)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    def readline(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def test_serial_reader_joins_cut_lines_and_stops_at_exit(fake_model) -> None:
    lines = "boot noise|run_f32 1 2 3 ||4 5 6\n|cycles 812\n|step_cycles 400 412\n|done 2\n"
    lines += "|exit 0\n|after exit\n"
    chunks = [c.replace("\n", "\r\n").encode() for c in lines.split("|")]
    chunks[0] += b"\r\n"
    run = serial_port.read_until_exit(Chunks(chunks), timeout=5)
    assert run.status == 0
    assert "after exit" not in run.text and "run_f32 1 2 3 4 5 6" in run.text
    assert firmware.parse_cycles(run.text) == [812]
    assert firmware.parse_step_cycles(run.text) == [[400, 412]]
    y = firmware.parse_entry_output(
        run.text, firmware.ModelInfo.load(fake_model), "run_f32", (1, 2, 2)
    )
    assert y.shape == (1, 2, 3)


def test_serial_reader_times_out_naming_what_it_saw() -> None:
    ticks = iter(range(100))
    with pytest.raises(firmware.FirmwareError, match=r"no 'exit' line.*\n.*run 1 2"):
        serial_port.read_until_exit(Chunks([b"run 1 2\n"]), timeout=10, clock=lambda: next(ticks))


def test_run_on_a_real_board_without_port_says_how_to_find_one(fake_model, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 2, 2), np.float32))
    argv = ["run", str(fake_model), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]
    assert cli.main([*argv, "--board", "nucleo-f411re"]) == 2
    err = capsys.readouterr().err
    assert "--port" in err and "USART2" in err and "/dev/ttyACM0" in err
    assert not (tmp_path / "y.npy").exists()


def test_real_boards_state_their_console_clock_and_timing() -> None:
    for name in REAL_BOARDS:
        b = BOARDS[name]
        assert b.console == "uart" and b.console_port, name
        assert b.clock_hz >= 64_000_000 and b.timing_core in ("m0plus", "m4"), name
        for source in (b.board_source, *b.extra_sources):
            assert (firmware.firmware_dir() / source).is_file(), source
    assert json.dumps(get_board("pico").uf2_family) == str(0xE48BFF56)


def test_pico_flash_dry_run_is_the_uf2_copy(fake_model, monkeypatch) -> None:
    monkeypatch.setattr(firmware, "UF2_DRIVE_PARENTS", ())
    cmd = firmware.flash(fake_model, "pico", dry_run=True)
    assert cmd[0] == "cp" and cmd[1].endswith("build/pico/firmware.uf2")
    assert "RPI-RP2" in cmd[2]


def test_run_with_port_but_no_pyserial_fails_before_building(
    fake_model, tmp_path, capsys, monkeypatch
):
    import sys

    monkeypatch.setitem(sys.modules, "serial", None)  # import serial -> ImportError
    np.save(tmp_path / "x.npy", np.zeros((1, 2, 2), np.float32))
    argv = ["run", str(fake_model), "-i", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")]
    assert cli.main([*argv, "--board", "nrf52840-dk", "--port", "/dev/ttyACM0"]) == 2
    assert "pip install 'lstm-embed[serial]'" in capsys.readouterr().err
    assert not (fake_model / "build").exists()


@pytest.mark.firmware
def test_pico_uart_driver_runs_on_qemus_pl011(toolchain, fake_model, monkeypatch) -> None:
    """The Pico's UART0 is a PL011; so is the lm3s6965evb's UART0. The whole harness prints
    through firmware/drivers/pl011_uart.c there, and equals the M3 build over semihosting."""
    from lstm_embed.targets.boards import M3_FLAGS, UART, Board, Region

    board = Board(
        name="test-lm3s6965-pl011",
        description="QEMU lm3s6965evb, its PL011 UART0 through the Pico's driver",
        cpu_flags=M3_FLAGS,
        flash=Region(0x00000000, 256 * 1024),
        ram=Region(0x20000000, 64 * 1024),
        irq_count=32,
        board_source=str(Path(__file__).parent / "fixtures" / "pl011_board" / "lm3s6965_pl011.c"),
        extra_sources=("drivers/pl011_uart.c",),
        qemu_machine="lm3s6965evb",
        console=UART,
    )
    monkeypatch.setitem(BOARDS, board.name, board)
    x_q = (np.arange(24, dtype=np.int16).reshape(3, 4, 2) - 12) * 250
    y = firmware.run_qemu(fake_model, board.name, x_q)
    assert np.array_equal(y, firmware.run_qemu(fake_model, "qemu-m3", x_q))
    objects = _linked_objects(firmware.build_dir(fake_model, board.name) / "firmware.map")
    assert {"pl011_uart", "uart_console"} <= objects and "semihost" not in objects
