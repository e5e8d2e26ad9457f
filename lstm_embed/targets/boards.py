"""Board descriptions: core flags, memory map, how to run (QEMU) or flash (pyOCD) each board.

The memory maps of the QEMU machines come from ../shared/notes/cortex-m-qemu.md (QEMU 7.2);
those of the real parts from their datasheets (STM32L476RG: RM0351, nRF52840: PS v1.7).
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB

M0_FLAGS = ("-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft")
M3_FLAGS = ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft")
M4F_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
M7_FLAGS = ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16")
M33_FLAGS = ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16")
M55_FLAGS = ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard")

# -fno-schedule-insns: GCC's pre-register-allocation scheduling caused spills in the LSTM
# kernels (M4 1.32 -> 1.64 instructions/MAC, notes). On M0 GCSE/PRE also raised pressure on
# its 8 low registers.
COMMON_OPT_FLAGS = ("-O2", "-fno-schedule-insns")
M0_OPT_FLAGS = (*COMMON_OPT_FLAGS, "-fno-gcse", "-fno-tree-pre")


@dataclass(frozen=True)
class Region:
    """A memory region: start address and size in bytes."""

    origin: int
    size: int


@dataclass(frozen=True)
class Board:
    """Everything the firmware build needs to know about one target."""

    name: str
    description: str
    cpu_flags: tuple[str, ...]
    flash: Region
    ram: Region
    irq_count: int
    board_source: str
    opt_flags: tuple[str, ...] = COMMON_OPT_FLAGS
    stack_bytes: int = 4 * KIB
    qemu_machine: str | None = None
    pyocd_target: str | None = None

    @property
    def emulated(self) -> bool:
        return self.qemu_machine is not None

    @property
    def core(self) -> str:
        """The core ("m4" for -mcpu=cortex-m4), whose kernel layout convert --board emits."""
        cpu = next(f for f in self.cpu_flags if f.startswith("-mcpu="))
        return cpu.removeprefix("-mcpu=cortex-").removesuffix("+nofp")


def _qemu(name: str, machine: str, core: str, flags: tuple[str, ...], **kw: object) -> Board:
    defaults: dict = {
        "flash": Region(0x00000000, 4 * MIB),
        "ram": Region(0x20000000, 4 * MIB),
        "irq_count": 32,
    }
    defaults.update(kw)
    return Board(
        name=name,
        description=f"QEMU {machine}, {core}",
        cpu_flags=flags,
        board_source="boards/qemu.c",
        qemu_machine=machine,
        **defaults,
    )


BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        _qemu(
            "qemu-m0",
            "microbit",
            "Cortex-M0",
            M0_FLAGS,
            flash=Region(0x00000000, 256 * KIB),
            ram=Region(0x20000000, 16 * KIB),
            opt_flags=M0_OPT_FLAGS,
            stack_bytes=2 * KIB,
        ),
        _qemu("qemu-m3", "mps2-an385", "Cortex-M3", M3_FLAGS),
        _qemu("qemu-m4", "mps2-an386", "Cortex-M4F", M4F_FLAGS),
        _qemu("qemu-m7", "mps2-an500", "Cortex-M7F", M7_FLAGS),
        _qemu(
            "qemu-m33",
            "mps2-an505",
            "Cortex-M33F, secure state",
            M33_FLAGS,
            flash=Region(0x10000000, 4 * MIB),
            ram=Region(0x38000000, 2 * MIB),
        ),
        _qemu(
            "qemu-m55",
            "mps3-an547",
            "Cortex-M55 with MVE, secure state",
            M55_FLAGS,
            flash=Region(0x10000000, 512 * KIB),
            ram=Region(0x30000000, 512 * KIB),
        ),
        Board(
            name="nucleo-l476rg",
            description="ST NUCLEO-L476RG, STM32L476RG Cortex-M4F at 80 MHz",
            cpu_flags=M4F_FLAGS,
            flash=Region(0x08000000, 1 * MIB),
            ram=Region(0x20000000, 96 * KIB),  # SRAM1 only; SRAM2 (32K) is not contiguous
            irq_count=82,
            board_source="boards/nucleo_l476rg.c",
            pyocd_target="stm32l476rg",
        ),
        Board(
            name="nrf52840-dk",
            description="Nordic nRF52840-DK, nRF52840 Cortex-M4F at 64 MHz",
            cpu_flags=M4F_FLAGS,
            flash=Region(0x00000000, 1 * MIB),
            ram=Region(0x20000000, 256 * KIB),
            irq_count=48,
            board_source="boards/nrf52840_dk.c",
            pyocd_target="nrf52840",
        ),
    )
}

DEFAULT_BOARD = "qemu-m4"
EMULATED_BOARDS = tuple(name for name, b in BOARDS.items() if b.emulated)
REAL_BOARDS = tuple(name for name, b in BOARDS.items() if not b.emulated)


def get_board(name: str) -> Board:
    """Look a board up by name; the error lists the known ones."""
    try:
        return BOARDS[name]
    except KeyError:
        known = ", ".join(BOARDS)
        raise ValueError(f"unknown board {name!r}; known boards: {known}") from None
