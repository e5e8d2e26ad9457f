"""A real board's results over its serial port: the lines the UART console prints, up to its
"exit <status>" line.

pyserial is an optional extra (``pip install lstm-embed[serial]``); it is imported only to
open a port. Reading works on anything with ``readline()`` returning bytes (b"" on a read
timeout), so the parser is tested on a pseudo-terminal without a board or pyserial.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from lstm_embed.targets.boards import Board
from lstm_embed.targets.errors import FirmwareError

BAUD = 115200  # what every board file sets (8N1)
READ_TIMEOUT_S = 0.5  # one readline's wait; the whole run has its own deadline
INSTALL_HINT = "reading a serial port needs pyserial: pip install 'lstm-embed[serial]'"


class LineSource(Protocol):
    def readline(self) -> bytes: ...


@dataclass(frozen=True)
class SerialRun:
    text: str  # every line up to and including "exit <status>", "\n"-separated
    status: int


def read_until_exit(
    source: LineSource, timeout: float, clock: Callable[[], float] = time.monotonic
) -> SerialRun:
    """Lines from source until the console's "exit <status>" line; raises FirmwareError
    naming what arrived when the deadline passes first."""
    lines: list[str] = []
    deadline = clock() + timeout
    partial = b""
    while clock() < deadline:
        raw = source.readline()
        if not raw:
            continue
        partial += raw
        if not partial.endswith(b"\n"):
            continue  # a read timeout cut the line: keep it for the next read
        line = partial.decode(errors="replace").rstrip("\r\n")
        partial = b""
        lines.append(line)
        if line.startswith("exit "):
            try:
                status = int(line.split()[1])
            except (IndexError, ValueError):
                continue
            return SerialRun("\n".join(lines) + "\n", status)
    seen = "\n".join(lines[-5:]) or "(nothing)"
    raise FirmwareError(
        f"no 'exit' line from the board within {timeout:.0f} s; last lines:\n{seen}\n"
        "check the port, the baud rate (115200) and that the board was reset after flashing"
    )


def candidate_ports() -> list[str]:
    """Serial ports that look like a probe's virtual COM port (pyserial's list when
    installed, else the usual device names)."""
    try:
        from serial.tools import list_ports
    except ImportError:
        return sorted(glob.glob("/dev/ttyACM*") + glob.glob("/dev/ttyUSB*"))
    return sorted(p.device for p in list_ports.comports())


def port_hint(board: Board) -> str:
    """What to pass as --port, for a run without one."""
    found = candidate_ports()
    listed = ", ".join(found) if found else "none found now"
    where = (
        "a USB-serial adapter (or a Raspberry Pi Debug Probe) on GP0/GP1"
        if board.uf2_family is not None
        else "the probe's virtual COM port"
    )
    return (
        f"--port is needed to read the results of {board.name}: its console is "
        f"{board.console_port}, reached through {where}. Serial ports here: {listed} "
        "(on Linux usually /dev/ttyACM0; `python -m serial.tools.list_ports -v` lists them "
        "with their USB names; on Windows COM3 and so on)"
    )


def require_pyserial() -> None:
    """Fail before any build or flash when pyserial is missing."""
    try:
        import serial  # noqa: F401
    except ImportError:
        raise FirmwareError(INSTALL_HINT) from None


def open_port(port: str, baud: int = BAUD) -> object:
    require_pyserial()
    import serial

    try:
        return serial.Serial(port, baud, timeout=READ_TIMEOUT_S)
    except serial.SerialException as error:
        raise FirmwareError(f"--port {port}: {error}") from None


def run_over_serial(
    port: str, start: Callable[[], object], timeout: float, baud: int = BAUD
) -> SerialRun:
    """Open the port, then call start() (flash and reset the board), then read its run."""
    ser = open_port(port, baud)
    try:
        ser.reset_input_buffer()  # type: ignore[attr-defined]
        start()
        return read_until_exit(ser, timeout)  # type: ignore[arg-type]
    finally:
        ser.close()  # type: ignore[attr-defined]
