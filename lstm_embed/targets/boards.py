"""Board descriptions: core flags, memory map, how to run (QEMU) or flash (pyOCD) each board.

The memory maps of the QEMU machines come from ../shared/notes/cortex-m-qemu.md (QEMU 7.2);
those of the real parts from their datasheets (STM32L476RG: RM0351, STM32F411RE: RM0383 and
DS10314, nRF52840: PS v1.7, RP2040: its datasheet). Clocks and flash wait states are what the
board files (firmware/boards/) set; docs/boards-and-timing.md explains them.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB

M0_FLAGS = ("-mcpu=cortex-m0", "-mthumb", "-mfloat-abi=soft")
M0PLUS_FLAGS = ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft")
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
class FlashCache:
    """An instruction cache (or ART accelerator) in front of flash: lines of line_bytes."""

    lines: int
    line_bytes: int


# Where the firmware's text output goes (templates and firmware/common/console.h)
SEMIHOSTING = "semihosting"
UART = "uart"


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
    console: str = SEMIHOSTING  # default console: SEMIHOSTING or UART (build --semihosting)
    console_port: str = ""  # the UART and pins, for messages and docs
    extra_sources: tuple[str, ...] = ()  # drivers and start-up stubs beside board_source
    clock_hz: int = 25_000_000  # core clock as the board file sets it (or as the board boots)
    flash_wait_states: int = 0  # at clock_hz
    flash_cache: FlashCache | None = None
    timing_core: str | None = None  # cycles.py's cost table; None: Arm publishes none
    entry_stub: bool = False  # an entry stub precedes the vector table (pico_entry.S)
    uf2_family: int | None = None  # write a .uf2 for this family id (RP2040: 0xE48BFF56)

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
        "board_source": "boards/qemu.c",
    }
    defaults.update(kw)
    return Board(
        name=name,
        description=f"QEMU {machine}, {core}",
        cpu_flags=flags,
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
            clock_hz=16_000_000,  # the micro:bit's nRF51822
            timing_core="m0",
        ),
        _qemu("qemu-m3", "mps2-an385", "Cortex-M3", M3_FLAGS, timing_core="m3"),
        _qemu("qemu-m4", "mps2-an386", "Cortex-M4F", M4F_FLAGS, timing_core="m4"),
        _qemu("qemu-m7", "mps2-an500", "Cortex-M7F", M7_FLAGS),
        _qemu(
            "qemu-m33",
            "mps2-an505",
            "Cortex-M33F, secure state",
            M33_FLAGS,
            flash=Region(0x10000000, 4 * MIB),
            ram=Region(0x38000000, 2 * MIB),
            clock_hz=20_000_000,  # AN505's MPS2 system clock
        ),
        _qemu(
            "qemu-m55",
            "mps3-an547",
            "Cortex-M55 with MVE, secure state",
            M55_FLAGS,
            flash=Region(0x10000000, 512 * KIB),
            ram=Region(0x30000000, 512 * KIB),
            clock_hz=32_000_000,  # AN547's MPS3 system clock
        ),
        _qemu(
            "qemu-stm32f405",
            "netduinoplus2",
            "STM32F405 Cortex-M4F, output through USART1 (the nucleo-f411re's USART driver)",
            M4F_FLAGS,
            flash=Region(0x08000000, 1 * MIB),
            ram=Region(0x20000000, 128 * KIB),  # SRAM1+SRAM2; QEMU maps more, the part has 128K
            irq_count=82,
            board_source="boards/qemu_stm32f405.c",
            extra_sources=("drivers/stm32f4_usart.c",),
            console=UART,
            console_port="USART1, QEMU's first -serial",
            clock_hz=16_000_000,  # HSI at reset: QEMU 7.2 models no RCC, so no PLL is set up
            timing_core="m4",
        ),
        Board(
            name="nucleo-f411re",
            description="ST NUCLEO-F411RE, STM32F411RE Cortex-M4F at 100 MHz",
            cpu_flags=M4F_FLAGS,
            flash=Region(0x08000000, 512 * KIB),
            ram=Region(0x20000000, 128 * KIB),
            irq_count=86,
            board_source="boards/nucleo_f411re.c",
            extra_sources=("drivers/stm32f4_usart.c",),
            pyocd_target="stm32f411retx",
            console=UART,
            console_port="USART2 on PA2 (TX) / PA3 (RX): the ST-LINK virtual COM port, 115200 8N1",
            clock_hz=100_000_000,
            flash_wait_states=3,  # RM0383 table 5, 90-100 MHz at 2.7-3.6 V
            flash_cache=FlashCache(lines=64, line_bytes=16),  # ART: 64 lines of 128 bits
            timing_core="m4",
        ),
        Board(
            name="pico",
            description=(
                "Raspberry Pi Pico, RP2040 Cortex-M0+ at 125 MHz (264 KB SRAM, 2 MB flash);"
                " the image runs from SRAM, loaded by the boot ROM from a .uf2"
            ),
            cpu_flags=M0PLUS_FLAGS,
            # SRAM0-3 (striped, 256K): the image in the first 192K, .data/.bss/stack above it.
            # SRAM4/5 stay free for the boot ROM (core 1 waits there).
            flash=Region(0x20000000, 192 * KIB),
            ram=Region(0x20030000, 64 * KIB),
            irq_count=32,
            board_source="boards/pico.c",
            extra_sources=("boards/pico_entry.S", "drivers/pl011_uart.c"),
            opt_flags=M0_OPT_FLAGS,
            console=UART,
            console_port="UART0 on GP0 (TX) / GP1 (RX), 115200 8N1",
            clock_hz=125_000_000,
            timing_core="m0plus",
            entry_stub=True,
            uf2_family=0xE48BFF56,
        ),
        Board(
            name="nucleo-l476rg",
            description="ST NUCLEO-L476RG, STM32L476RG Cortex-M4F at 80 MHz",
            cpu_flags=M4F_FLAGS,
            flash=Region(0x08000000, 1 * MIB),
            ram=Region(0x20000000, 96 * KIB),  # SRAM1 only; SRAM2 (32K) is not contiguous
            irq_count=82,
            board_source="boards/nucleo_l476rg.c",
            extra_sources=("drivers/stm32l4_usart.c",),
            pyocd_target="stm32l476rg",
            console=UART,
            console_port="USART2 on PA2 (TX) / PA3 (RX): the ST-LINK virtual COM port, 115200 8N1",
            clock_hz=80_000_000,
            flash_wait_states=4,  # RM0351 table 11, 64-80 MHz in voltage range 1
            flash_cache=FlashCache(lines=32, line_bytes=32),  # ART: 32 lines of 4x64 bits
            timing_core="m4",
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
            console=UART,
            console_port=(
                "UARTE0 on P0.06 (TX) / P0.08 (RX): the J-Link virtual COM port, 115200 8N1"
            ),
            clock_hz=64_000_000,
            # PS v1.7 gives no wait-state figure; 2 is assumed for a cache miss (docs say so)
            flash_wait_states=2,
            flash_cache=FlashCache(lines=512, line_bytes=16),  # 8 KB instruction cache
            timing_core="m4",
        ),
    )
}

DEFAULT_BOARD = "qemu-m4"
EMULATED_BOARDS = tuple(name for name, b in BOARDS.items() if b.emulated)
# One emulated board per core (bench's default): qemu-stm32f405 is a second M4F, there to run
# the STM32F4 USART driver
CORE_BOARDS = tuple(name for name in EMULATED_BOARDS if name != "qemu-stm32f405")
REAL_BOARDS = tuple(name for name, b in BOARDS.items() if not b.emulated)


def get_board(name: str) -> Board:
    """Look a board up by name; the error lists the known ones."""
    try:
        return BOARDS[name]
    except KeyError:
        known = ", ".join(BOARDS)
        raise ValueError(f"unknown board {name!r}; known boards: {known}") from None
