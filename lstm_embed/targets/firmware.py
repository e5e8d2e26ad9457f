"""Build the generated model into Cortex-M firmware, run it in QEMU, flash it with pyOCD.

Data flow: out/NAME.{h,c} + out/report.json (from the converter) -> out/build/<board>/
(rendered harness, input header and linker script; objects; firmware.elf, .map, .uf2 on the
Pico) -> QEMU's semihosting output, or the board's UART (QEMU's -serial, or a real board's
serial port: serial_port.py) -> numpy arrays shaped like ``hostbuild.run_entry_point``'s.

Input is validated by ``inputs.check_input``, the check the host runner shares; a failed
compile, link or QEMU run raises ``FirmwareToolError`` with the tool's whole output, also
written to a log in the build folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lstm_embed.emit.cformat import c_identifier, c_int_array
from lstm_embed.emit.render import render
from lstm_embed.resources import firmware_dir
from lstm_embed.targets.boards import DEFAULT_BOARD, Board, get_board
from lstm_embed.targets.errors import FirmwareError
from lstm_embed.targets.hostbuild import ToolFailure, exit_description, read_report
from lstm_embed.targets.inputs import InputRule, check_entry, check_input, entry_point, output_shape

GCC = "arm-none-eabi-gcc"
SIZE = "arm-none-eabi-size"
QEMU = "qemu-system-arm"
INSTALL_HINT = (
    "install it with: apt-get install -y gcc-arm-none-eabi libnewlib-arm-none-eabi "
    "qemu-system-arm  (or `make toolchain` as root)"
)

# The generated model code must compile cleanly under these (issue 1's contract).
MODEL_WARNING_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Wconversion", "-Werror")
SECTION_FLAGS = ("-ffunction-sections", "-fdata-sections", "-g")
FIRMWARE_SOURCES = (
    "common/vectors.c",
    "common/cycles.c",
    "common/console.c",
    "common/startup.S",
)
CONSOLE_SOURCES = {"semihosting": "common/semihost.c", "uart": "common/uart_console.c"}
# Stems of the firmware's own sources, headers and rendered files in a build folder.
RESERVED_NAMES = frozenset(
    [
        "vectors",
        "semihost",
        "uart_console",
        "console",
        "reg",
        "halt",
        "cycles",
        "startup",
        "board",
        "harness",
        "harness_input",
        "firmware",
        "link",
        "qemu",
        "nucleo_l476rg",
        "nucleo_f411re",
        "nrf52840_dk",
        "qemu_stm32f405",
        "pico",
        "pico_entry",
        "stm32f4_usart",
        "stm32l4_usart",
        "pl011_uart",
        "stm32_gpio",
    ]
)

DEFAULT_TIMESTEPS = 8  # input length of the built-in input when the model accepts any length
QEMU_TIMEOUT_S = 120.0


class FirmwareToolError(FirmwareError, ToolFailure):
    """The compiler, linker or QEMU failed; carries the tool's output (and its log's path)."""


class ToolchainMissingError(FirmwareError):
    pass


class FitError(FirmwareError):
    """The model (or the whole firmware) does not fit the board's flash or RAM."""


@dataclass(frozen=True)
class ModelInfo:
    """The parts of out/report.json the firmware build uses."""

    name: str
    input_size: int
    output_size: int
    timesteps: int
    return_sequences: bool
    flash_bytes: int
    ram_bytes: int
    report: dict

    @classmethod
    def load(cls, out_dir: Path) -> ModelInfo:
        r = read_report(Path(out_dir))  # refuses another format or a missing key
        return cls(
            name=r["name"],
            input_size=int(r["input_size"]),
            output_size=int(r["output_size"]),
            timesteps=int(r["timesteps"]),
            return_sequences=bool(r["return_sequences"]),
            flash_bytes=int(r["flash_bytes"]["total"]),
            ram_bytes=int(r["ram_bytes"]["total"]),
            report=r,
        )

    @property
    def rule(self) -> InputRule:
        return InputRule.from_report(self.report)


@dataclass(frozen=True)
class SizeTable:
    """Section sizes in bytes of a whole ELF, or of the model's part of it."""

    text: int
    rodata: int
    data: int
    bss: int
    stack: int = 0

    @property
    def flash(self) -> int:
        return self.text + self.rodata + self.data

    @property
    def ram(self) -> int:
        return self.data + self.bss + self.stack


@dataclass(frozen=True)
class BuildResult:
    board: str
    elf: Path
    map_file: Path
    size: SizeTable  # the whole firmware
    model: SizeTable  # the model's objects, plus its state struct counted as bss
    console: str = "semihosting"
    uf2: Path | None = None

    def table(self) -> str:
        """The size table `lstm-embed build` prints."""
        rows = [("firmware", self.size), ("model", self.model)]
        head = f"{'':10}{'text':>9}{'rodata':>9}{'data':>9}{'bss':>9}{'stack':>9}"
        head += f"{'flash':>10}{'RAM':>9}"
        lines = [f"{self.elf}  (board {self.board})", head]
        for label, s in rows:
            cells = (s.text, s.rodata, s.data, s.bss, s.stack)
            line = f"{label:10}" + "".join(f"{c:>9}" for c in cells)
            lines.append(line + f"{s.flash:>10}{s.ram:>9}")
        lines.append(f"console: {self.console}")
        if self.uf2 is not None:
            lines.append(f"uf2: {self.uf2}")
        return "\n".join(lines)


# ---------------------------------------------------------------- templates


def _render(template_name: str, **context: object) -> str:
    """Render templates/<template_name> with the project's single Jinja environment."""
    return render(template_name, **context)


# ---------------------------------------------------------------- toolchain


def toolchain_available(need_qemu: bool = True) -> bool:
    tools = (GCC, SIZE, QEMU) if need_qemu else (GCC, SIZE)
    return all(shutil.which(t) for t in tools)


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolchainMissingError(f"{tool} not found on PATH; {INSTALL_HINT}")
    return path


def _run_tool(cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        summary = f"{what} failed ({exit_description(proc.returncode)})"
        raise FirmwareToolError(summary, cmd, proc.stdout + proc.stderr)
    return proc


# ---------------------------------------------------------------- input data


def _check_input(x_in: np.ndarray, model: ModelInfo) -> np.ndarray:
    """Validated input: int16 for run(), float32 (from any float dtype) for run_f32()."""
    return check_input(x_in, model.rule)


@dataclass(frozen=True)
class HarnessPlan:
    """Which entry points the harness calls, on which compiled-in input.

    The integer entry points (run, step) take ``x_q``, the float ones (run_f32, step_f32,
    quantize_input) ``x``; both already validated (``check_input``).
    """

    entries: tuple[str, ...]
    x_q: np.ndarray | None = None
    x: np.ndarray | None = None

    @classmethod
    def make(
        cls,
        model: ModelInfo,
        entries: Sequence[str],
        x_q: np.ndarray | None = None,
        x: np.ndarray | None = None,
        check_finite: bool = True,
    ) -> HarnessPlan:
        kinds = [check_entry(e, model.rule) for e in entries]
        if not kinds:
            raise ValueError("no entry points to run")
        if len(set(entries)) != len(entries):
            raise ValueError(f"entry points listed twice: {list(entries)}")
        if any(not k.float_input for k in kinds):
            if x_q is None:
                raise ValueError("run and step need int16 input (x_q)")
            x_q = check_input(x_q, model.rule, "int16", check_finite=check_finite)  # ids too
        else:
            x_q = None
        if any(k.float_input for k in kinds):
            if x is None:
                raise ValueError("run_f32, step_f32 and quantize_input need float input (x)")
            x = check_input(x, model.rule, "float32", check_finite=check_finite)
        else:
            x = None
        return cls(tuple(entries), x_q, x)

    @classmethod
    def for_input(cls, x: np.ndarray) -> HarnessPlan:
        """run() for int16 input, run_f32() for float32 input (validated)."""
        if x.dtype == np.float32:
            return cls(("run_f32",), x=x)
        return cls(("run",), x_q=x)

    def input_for(self, entry: str) -> np.ndarray:
        x = self.x if entry_point(entry).float_input else self.x_q
        assert x is not None, entry
        return x


def c_float_literals(values: np.ndarray, per_line: int = 4) -> str:
    """float32 values as exact C99 hexadecimal constants; NaN and infinity as math.h's."""
    items = []
    for v in np.asarray(values, dtype=np.float32).ravel():
        if np.isnan(v):
            items.append("NAN")
        elif np.isinf(v):
            items.append("INFINITY" if v > 0 else "-INFINITY")
        else:
            items.append(float(v).hex() + "f")
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return ",\n".join(lines)


def default_input(model: ModelInfo) -> np.ndarray:
    """One fixed pseudo-random sequence, for builds made without test input (benchmarks)."""
    steps = model.timesteps or DEFAULT_TIMESTEPS
    rng = np.random.default_rng(0)
    return rng.integers(-8192, 8192, size=(1, steps, model.input_size), dtype=np.int16)


# ---------------------------------------------------------------- build


def build_dir(out_dir: Path, board: str) -> Path:
    return Path(out_dir) / "build" / board


def check_fit(model: ModelInfo, board: Board) -> None:
    """Refuse, before compiling, a model whose own flash or RAM exceeds the board's."""
    flash = model.report["flash_bytes"]
    if model.flash_bytes > board.flash.size:
        parts = ", ".join(f"{k} {flash[k]}" for k in ("weights", "biases", "tables") if k in flash)
        raise FitError(
            f"model {model.name!r} needs {model.flash_bytes} bytes of flash ({parts}); "
            f"board {board.name} has {board.flash.size}"
        )
    ram_free = board.ram.size - board.stack_bytes
    if model.ram_bytes > ram_free:
        raise FitError(
            f"model {model.name!r} needs {model.ram_bytes} bytes of RAM; board {board.name} has "
            f"{board.ram.size} ({ram_free} after the {board.stack_bytes}-byte stack)"
        )


def _check_name(name: str) -> str:
    """The model's files sit beside the firmware's in one build; their names must differ."""
    c_identifier(name)
    if name in RESERVED_NAMES:
        raise FirmwareError(
            f"model name {name!r} clashes with a firmware file; reconvert with another --name "
            f"(reserved: {', '.join(sorted(RESERVED_NAMES))})"
        )
    return name


ENTRY_DESCRIPTIONS = {
    "run": "NAME_run on the int16 input",
    "step": "NAME_reset, then NAME_step per timestep, on the int16 input",
    "run_f32": "NAME_run_f32 on the float input",
    "step_f32": "NAME_reset, then NAME_step_f32 per timestep, on the float input",
    "quantize_input": "NAME_quantize_input per timestep, on the float input",
}


def _render_sources(bdir: Path, model: ModelInfo, board: Board, plan: HarnessPlan) -> None:
    name = _check_name(model.name)
    entries = [
        {
            "name": e,
            "float_input": entry_point(e).float_input,
            "description": ENTRY_DESCRIPTIONS[e].replace("NAME", name),
        }
        for e in plan.entries
    ]
    q, f = plan.x_q, plan.x
    files = {
        "link.ld": _render(
            "firmware/link.ld.j2",
            board=board,
            flash_origin=f"0x{board.flash.origin:08X}",
            ram_origin=f"0x{board.ram.origin:08X}",
        ),
        "harness_input.h": _render(
            "firmware/harness_input.h.j2",
            name=name,
            input_size=model.input_size,
            q_values=None if q is None else c_int_array(q),
            q_sequences=0 if q is None else q.shape[0],
            q_timesteps=0 if q is None else q.shape[1],
            f_values=None if f is None else c_float_literals(f),
            f_sequences=0 if f is None else f.shape[0],
            f_timesteps=0 if f is None else f.shape[1],
        ),
        "harness.c": _render(
            "firmware/harness.c.j2",
            name=name,
            prefix=name.upper(),
            board=board.name,
            entries=entries,
            has={e: e in plan.entries for e in ENTRY_DESCRIPTIONS},
        ),
    }
    for filename, text in files.items():
        _write_if_changed(bdir / filename, text)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _compile_flags(board: Board, out_dir: Path, bdir: Path) -> list[str]:
    return [
        *board.cpu_flags,
        *board.opt_flags,
        *MODEL_WARNING_FLAGS,
        *SECTION_FLAGS,
        f"-DBOARD_IRQ_COUNT={board.irq_count}",
        f"-I{Path(out_dir).resolve()}",
        *firmware_include_flags(),
        f"-I{bdir.resolve()}",
    ]


def firmware_include_flags() -> list[str]:
    return [f"-I{firmware_dir() / 'common'}", f"-I{firmware_dir() / 'drivers'}"]


def console_of(board: Board, semihosting: bool = False) -> str:
    """The console a build links: semihosting when asked (or the board's default), else UART."""
    return "semihosting" if semihosting else board.console


def firmware_sources(board: Board, semihosting: bool = False) -> list[Path]:
    """The firmware's own sources for a board: start-up, console, board file and drivers."""
    console = CONSOLE_SOURCES[console_of(board, semihosting)]
    names = (*FIRMWARE_SOURCES, console, board.board_source, *board.extra_sources)
    return [firmware_dir() / s for s in names]


def _sources(
    out_dir: Path, model: ModelInfo, board: Board, bdir: Path, semihosting: bool
) -> list[Path]:
    model_c = Path(out_dir) / f"{model.name}.c"
    if not model_c.is_file():
        raise FirmwareError(f"{model_c} not found; run `lstm-embed convert` into {out_dir} first")
    return [model_c, *firmware_sources(board, semihosting), bdir / "harness.c"]


def _compile(sources: list[Path], flags: list[str], bdir: Path, board: str) -> list[Path]:
    """Compile every source to bdir/<stem>.o, in parallel (each is a separate gcc)."""
    gcc = _require(GCC)
    jobs = []
    for src in sources:
        obj = bdir / f"{src.stem}.o"
        cmd = [gcc, *flags, "-c", str(src), "-o", str(obj)]
        popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        jobs.append((cmd, src, obj, popen))
    failures = []
    for cmd, src, _obj, proc in jobs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            failures.append((cmd, src, proc.returncode, out))
    if failures:
        cmd, src, status, _ = failures[0]
        output = "\n".join(f"$ {' '.join(c)}\n{out}" for c, _, _, out in failures[1:])
        output = failures[0][3] + ("\n" + output if output else "")
        raise FirmwareToolError(
            f"compiling {src.name} for {board} failed ({exit_description(status)})",
            cmd,
            output,
            log=bdir / "compile.log",
        )
    return [obj for _, _, obj, _ in jobs]


_OVERFLOW = re.compile(r"region `(\w+)' overflowed by (\d+) bytes")


def _link(objs: list[Path], board: Board, bdir: Path, model: ModelInfo) -> tuple[Path, Path]:
    elf, map_file = bdir / "firmware.elf", bdir / "firmware.map"
    cmd = [
        _require(GCC),
        *board.cpu_flags,
        "-nostartfiles",
        "--specs=nano.specs",
        f"-T{bdir / 'link.ld'}",
        "-Wl,--gc-sections",
        f"-Wl,-Map={map_file}",
        *map(str, objs),
        "-o",
        str(elf),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        overflows = _OVERFLOW.findall(proc.stderr)
        if overflows:
            raise FitError(_overflow_message(overflows, board, model))
        raise FirmwareToolError(
            f"linking the firmware for {board.name} failed ({exit_description(proc.returncode)})",
            cmd,
            proc.stdout + proc.stderr,
            log=bdir / "link.log",
        )
    return elf, map_file


def _overflow_message(overflows: list[tuple[str, str]], board: Board, model: ModelInfo) -> str:
    sizes = {"FLASH": board.flash.size, "RAM": board.ram.size}
    parts = [
        f"{region} ({sizes.get(region, '?')} bytes) overflowed by {n}" for region, n in overflows
    ]
    return (
        f"firmware for model {model.name!r} does not fit board {board.name}: "
        + "; ".join(parts)
        + f" (model: {model.flash_bytes} bytes flash, {model.ram_bytes} bytes RAM; "
        f"stack {board.stack_bytes})"
    )


def build(
    out_dir: str | Path,
    board: str = DEFAULT_BOARD,
    x: np.ndarray | None = None,
    *,
    plan: HarnessPlan | None = None,
    semihosting: bool = False,
) -> BuildResult:
    """Build out_dir's model into out_dir/build/<board>/firmware.elf.

    x (sequences, timesteps, input_size) is compiled in as the harness input: int16 runs
    NAME_run, float runs NAME_run_f32; without it, one fixed pseudo-random int16 sequence.
    ``plan`` instead names the entry points to call and their inputs. ``semihosting`` links
    the semihosting console instead of the board's UART (real boards then need a debugger).
    Raises FitError when the model or the firmware does not fit the board,
    ToolchainMissingError without arm-none-eabi-gcc, FirmwareToolError when a tool fails.
    """
    out_dir = Path(out_dir)
    b = get_board(board)
    model = ModelInfo.load(out_dir)
    if plan is None:
        plan = HarnessPlan.for_input(default_input(model) if x is None else _check_input(x, model))
    check_fit(model, b)
    bdir = build_dir(out_dir, board)
    bdir.mkdir(parents=True, exist_ok=True)
    _render_sources(bdir, model, b, plan)
    flags = _compile_flags(b, out_dir, bdir)
    objs = _compile(_sources(out_dir, model, b, bdir, semihosting), flags, bdir, board)
    elf, map_file = _link(objs, b, bdir, model)
    size = elf_sizes(elf)
    model_size = model_sizes(map_file, model.name, state_symbol="harness_state")
    uf2_path = None
    if b.uf2_family is not None:
        from lstm_embed.targets import uf2

        uf2_path = elf.with_suffix(".uf2")
        uf2_path.write_bytes(uf2.elf_to_uf2(elf.read_bytes(), b.uf2_family))
    console = console_of(b, semihosting)
    return BuildResult(board, elf, map_file, size, model_size, console, uf2_path)


# ---------------------------------------------------------------- sizes


def _section_kind(section: str) -> str | None:
    for prefix, kind in (
        (".isr_vector", "text"),
        (".text", "text"),
        (".rodata", "rodata"),
        (".ARM.exidx", "rodata"),
        (".data", "data"),
        (".bss", "bss"),
        (".stack", "stack"),
        ("COMMON", "bss"),
    ):
        if section == prefix or section.startswith(prefix + "."):
            return kind
    return None


def _size_table(pairs: list[tuple[str, int]]) -> SizeTable:
    totals = dict.fromkeys(("text", "rodata", "data", "bss", "stack"), 0)
    for section, size in pairs:
        kind = _section_kind(section)
        if kind is not None:
            totals[kind] += size
    return SizeTable(**totals)


def elf_sizes(elf: Path) -> SizeTable:
    """text/rodata/data/bss/stack of a linked ELF, from `arm-none-eabi-size -A`."""
    proc = _run_tool([_require(SIZE), "-A", str(elf)], "arm-none-eabi-size")
    pairs = []
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1].isdigit():
            pairs.append((fields[0], int(fields[1])))
    return _size_table(pairs)


# An input section line in the map: " .text.net_step  0x00000200  0x1f4 /path/net.o"; a long
# section name puts the address and size on the next line.
_MAP_INPUT = re.compile(r"^ (\.\S+|COMMON)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)$", re.M)


def _map_input_sections(map_file: Path) -> list[tuple[str, int, str]]:
    text = map_file.read_text()
    text = text.split("Linker script and memory map", 1)[-1]
    text = re.sub(r"^ (\.\S+)\n\s+0x", r" \1 0x", text, flags=re.M)
    return [(m[1], int(m[3], 16), m[4]) for m in _MAP_INPUT.finditer(text)]


def model_sizes(map_file: Path, name: str, state_symbol: str) -> SizeTable:
    """What the model's object keeps after --gc-sections, plus its state struct (as bss)."""
    sections = _map_input_sections(map_file)
    own = [(sec, size) for sec, size, obj in sections if Path(obj).name == f"{name}.o"]
    state = [("COMMON", size) for sec, size, _obj in sections if sec == f".bss.{state_symbol}"]
    return _size_table(own + state)


# ---------------------------------------------------------------- QEMU


def qemu_command(board: Board, elf: Path, extra: tuple[str, ...] = ()) -> list[str]:
    if board.qemu_machine is None:
        raise FirmwareError(
            f"board {board.name} is real hardware; QEMU cannot run it (use `run --board"
            f" {board.name} --port PORT` to flash it and read its UART, or `flash`)"
        )
    if board.console == "uart":
        # the harness prints through the USART QEMU connects to its first -serial; the run
        # ends with a semihosting exit (board_halt), the only semihosting call in the image
        console = ["-serial", "stdio", "-semihosting-config", "enable=on,target=native"]
    else:
        console = [
            "-serial",
            "null",  # the harness prints over semihosting only; board UARTs go nowhere
            "-chardev",
            "stdio,id=semihost",
            "-semihosting-config",
            "enable=on,target=native,chardev=semihost",
        ]
    machine = ["-M", board.qemu_machine, "-display", "none", "-monitor", "none"]
    return [_require(QEMU), *machine, *console, *extra, "-kernel", str(elf)]


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _run_firmware(cmd: list[str], timeout: float, log: Path | None = None) -> str:
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        raise FirmwareToolError(
            f"QEMU did not exit within {timeout:.0f} s", cmd, output, log=log
        ) from exc
    if proc.returncode != 0:
        raise FirmwareToolError(
            f"the firmware failed in QEMU ({exit_description(proc.returncode)})",
            cmd,
            proc.stdout + proc.stderr,
            log=log,
        )
    return proc.stdout


def parse_entry_output(
    stdout: str, model: ModelInfo, entry: str, x_shape: tuple[int, ...]
) -> np.ndarray:
    """The harness's lines for one entry point -> an array shaped like
    ``hostbuild.run_entry_point``'s output (int16, or float32 from the printed bits)."""
    e = entry_point(entry)
    shape = output_shape(e, x_shape, model.input_size, model.output_size, model.return_sequences)
    rows = [line.split()[1:] for line in stdout.splitlines() if line.split(" ", 1)[0] == entry]
    if not any(line.startswith("done ") for line in stdout.splitlines()) or len(rows) != shape[0]:
        raise FirmwareError(
            f"harness output incomplete: {len(rows)} of {shape[0]} {entry} sequences"
            f"\n{stdout[-500:]}"
        )
    per_sequence = int(np.prod(shape[1:]))
    for row in rows:
        if len(row) != per_sequence:
            raise FirmwareError(
                f"{entry}: expected {per_sequence} values a sequence, got {len(row)}"
            )
    y = np.array([[int(v) for v in row] for row in rows], dtype=np.int64)
    values = y.astype(np.uint32).view(np.float32) if e.float_output else y.astype(np.int16)
    return values.reshape(shape)


def parse_output(
    stdout: str, model: ModelInfo, x_shape: tuple[int, ...], f32: bool = False
) -> np.ndarray:
    """run (or run_f32) lines -> array shaped like hostbuild.run_host's output:
    (sequences, timesteps, output_size) when the model returns sequences, else
    (sequences, output_size); int16, or float32 when the harness ran run_f32."""
    return parse_entry_output(stdout, model, "run_f32" if f32 else "run", x_shape)


def parse_cycles(stdout: str) -> list[int]:
    """DWT cycle counts per run/run_f32 call (all 0 under QEMU)."""
    return [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("cycles ")]


def _execute(
    out_dir: Path, board: str, model: ModelInfo, plan: HarnessPlan, timeout: float
) -> dict[str, np.ndarray]:
    b = get_board(board)
    qemu_command(b, Path("firmware.elf"))  # refuse real boards before building
    result = build(out_dir, board, plan=plan)
    cmd = qemu_command(b, result.elf)
    log = result.elf.parent / "qemu.log"
    stdout = _run_firmware(cmd, timeout, log)
    try:
        return {
            e: parse_entry_output(stdout, model, e, plan.input_for(e).shape) for e in plan.entries
        }
    except FirmwareError as error:
        summary = str(error).splitlines()[0]
        raise FirmwareToolError(summary, cmd, stdout, log=log) from error


def run_entry_points(
    out_dir: str | Path,
    board: str,
    entries: Sequence[str],
    x_q: np.ndarray | None = None,
    x: np.ndarray | None = None,
    timeout: float = QEMU_TIMEOUT_S,
    check_finite: bool = True,
) -> dict[str, np.ndarray]:
    """Build one firmware image that calls each of ``entries`` (run, step: on the int16
    ``x_q``; run_f32, step_f32, quantize_input: on the float ``x``) on every sequence, run it
    in QEMU, and return each entry point's outputs, shaped like
    ``hostbuild.run_entry_point``'s. ``check_finite=False`` compiles NaN and infinity in
    (tests of the C's documented handling)."""
    model = ModelInfo.load(Path(out_dir))
    plan = HarnessPlan.make(model, entries, x_q, x, check_finite)
    return _execute(Path(out_dir), board, model, plan, timeout)


def run_qemu(
    out_dir: str | Path, board: str, x_q: np.ndarray, timeout: float = QEMU_TIMEOUT_S
) -> np.ndarray:
    """Build with x_q (N, T, m) int16 compiled in, run NAME_run on each sequence in QEMU.

    Returns int16 (N, T, k) when the model returns sequences, else (N, k), like run_host.
    """
    return run_entry_points(out_dir, board, ["run"], x_q=x_q, timeout=timeout)["run"]


def run_qemu_f32(
    out_dir: str | Path, board: str, x: np.ndarray, timeout: float = QEMU_TIMEOUT_S
) -> np.ndarray:
    """Like run_qemu with float input through NAME_run_f32; float32 output, bits exact."""
    return run_entry_points(out_dir, board, ["run_f32"], x=x, timeout=timeout)["run_f32"]


def parse_step_cycles(stdout: str) -> list[list[int]]:
    """DWT cycles of each step, one list per stepped sequence (zeros where the core has no
    DWT cycle counter, and under QEMU)."""
    return [
        [int(v) for v in line.split()[1:]]
        for line in stdout.splitlines()
        if line.startswith("step_cycles")
    ]


@dataclass(frozen=True)
class BoardRun:
    """What a real board printed for run_f32 (and step_f32, for its per-step cycles)."""

    y: np.ndarray
    stdout: str
    run_cycles: list[int]
    step_cycles: list[list[int]]


REAL_BOARD_TIMEOUT_S = 120.0


def run_on_board(
    out_dir: str | Path, board: str, x: np.ndarray, port: str, timeout: float = REAL_BOARD_TIMEOUT_S
) -> BoardRun:
    """Build with float input x compiled in (run_f32, then step_f32 when the model has it),
    flash the board (pyOCD, or the UF2 copy), read its UART on ``port`` until "exit"."""
    from lstm_embed.targets import serial_port

    b = get_board(board)
    if b.emulated:
        raise FirmwareError(f"board {board} is emulated: run it without --port")
    serial_port.require_pyserial()
    model = ModelInfo.load(Path(out_dir))
    entries = ["run_f32"]
    with contextlib.suppress(ValueError):  # a model without step_f32 keeps run_f32 alone
        check_entry("step_f32", model.rule)
        entries.append("step_f32")
    plan = HarnessPlan.make(model, entries, x=x)
    result = build(out_dir, board, plan=plan)
    if result.console != "uart":
        raise FirmwareError(f"{board} was built with semihosting; `run --port` reads its UART")
    done = serial_port.run_over_serial(port, lambda: flash(out_dir, board, rebuild=False), timeout)
    if done.status != 0:
        raise FirmwareError(
            f"the firmware on {board} ended with status {done.status}:\n{done.text[-500:]}"
        )
    y = parse_entry_output(done.text, model, "run_f32", plan.input_for("run_f32").shape)
    return BoardRun(y, done.text, parse_cycles(done.text), parse_step_cycles(done.text))


# ---------------------------------------------------------------- instruction counts


def _symbol_address(elf: Path, symbol: str) -> int:
    nm = _require("arm-none-eabi-nm")
    proc = _run_tool([nm, str(elf)], "arm-none-eabi-nm")
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[2] == symbol:
            return int(fields[0], 16) & ~1
    raise FirmwareError(f"symbol {symbol} not found in {elf}")


_TRACE_PC = re.compile(r"\[[0-9a-f]+/([0-9a-f]+)/")


def _count_between(lines: Iterable[str], begin: int, end: int) -> list[int]:
    """Instructions executed from each entry of `begin` to the following entry of `end`."""
    counts: list[int] = []
    running = None
    for line in lines:
        m = _TRACE_PC.search(line)
        if m is None:
            continue
        pc = int(m[1], 16)
        if pc == begin:
            running = 0
        elif pc == end and running is not None:
            counts.append(running)
            running = None
        elif running is not None:
            running += 1
    return counts


def _release_fifo_when_done(proc: subprocess.Popen[bytes], fifo: Path) -> None:
    """If QEMU exits without opening the trace FIFO, open it once so the reader sees EOF."""
    proc.wait()
    with contextlib.suppress(OSError):  # no reader left: it already finished
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def count_instructions(
    out_dir: str | Path, board: str, x_q: np.ndarray, timeout: float = 600.0
) -> list[int]:
    """Exact instructions executed per NAME_run call (one per sequence) in QEMU.

    Uses -singlestep -d exec,nochain, which logs every executed instruction; the log is
    streamed through a FIFO. Counts include the harness_mark_* return and the cycle-counter
    reads around the call (a handful of instructions). Instructions, not cycles.
    """
    result = build(out_dir, board, _check_input(x_q, ModelInfo.load(Path(out_dir))))
    begin = _symbol_address(result.elf, "harness_mark_begin")
    end = _symbol_address(result.elf, "harness_mark_end")
    with tempfile.TemporaryDirectory() as tmp:
        fifo = Path(tmp) / "trace"
        os.mkfifo(fifo)
        extra = ("-singlestep", "-d", "exec,nochain", "-D", str(fifo))
        cmd = qemu_command(get_board(board), result.elf, extra)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        threading.Thread(target=_release_fifo_when_done, args=(proc, fifo), daemon=True).start()
        with open(fifo, errors="replace") as trace:
            counts = _count_between(trace, begin, end)
        if proc.wait(timeout=timeout) != 0:
            summary = f"the firmware failed in QEMU ({exit_description(proc.returncode)})"
            raise FirmwareToolError(summary, cmd, "(output not captured while tracing)")
    return counts


# ---------------------------------------------------------------- flashing


def flash_command(board: Board, elf: Path) -> list[str]:
    """The pyOCD command that programs elf (-W: fail at once when no probe is attached), or
    for a UF2 board the copy of the .uf2 beside elf onto its boot drive."""
    if board.uf2_family is not None:
        drive = find_uf2_drive(board)
        return ["cp", str(elf.with_suffix(".uf2")), str(drive) if drive else UF2_DRIVE_HINT]
    if board.pyocd_target is None:
        raise FirmwareError(f"board {board.name} is emulated; use `run --board {board.name}`")
    pyocd = Path(sys.executable).with_name("pyocd")
    exe = str(pyocd) if pyocd.exists() else "pyocd"
    return [exe, "flash", "-W", "-t", board.pyocd_target, "--format", "elf", str(elf)]


UF2_DRIVE_LABEL = "RPI-RP2"  # the RP2040 boot ROM's USB drive
UF2_DRIVE_HINT = f"<the {UF2_DRIVE_LABEL} drive>"
UF2_DRIVE_PARENTS = ("/media", "/run/media", "/mnt", "/Volumes")


def find_uf2_drive(board: Board, parents: Sequence[str] | None = None) -> Path | None:
    """A mounted boot drive of the board: a folder up to two levels below parents (e.g.
    /media/USER/RPI-RP2) that holds the INFO_UF2.TXT the boot ROM serves."""
    for parent in map(Path, UF2_DRIVE_PARENTS if parents is None else parents):
        for pattern in (UF2_DRIVE_LABEL, f"*/{UF2_DRIVE_LABEL}", "*/*/INFO_UF2.TXT"):
            for hit in sorted(parent.glob(pattern)) if parent.is_dir() else []:
                drive = hit.parent if hit.name == "INFO_UF2.TXT" else hit
                info = drive / "INFO_UF2.TXT"
                if info.is_file() and UF2_DRIVE_LABEL in info.read_text(errors="replace"):
                    return drive
    return None


def flash(
    out_dir: str | Path, board: str, dry_run: bool = False, *, rebuild: bool = True
) -> list[str]:
    """Build (unless ``rebuild`` is False: the caller just built) and program out_dir's
    firmware; returns the pyOCD (or UF2 copy) command.

    With dry_run the command is only returned (the CLI prints it). Raises FirmwareError
    when pyOCD fails, e.g. no probe attached or the target's CMSIS pack is missing, or when
    no Pico boot drive is mounted.
    """
    b = get_board(board)
    elf = build_dir(Path(out_dir), board) / "firmware.elf"
    cmd = flash_command(b, elf)
    if dry_run:
        return cmd
    if rebuild:
        build(out_dir, board)
    if b.uf2_family is not None:
        return _copy_uf2(b, elf.with_suffix(".uf2"))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise FirmwareError(_flash_failure(proc, b, cmd))
    return cmd


def _copy_uf2(board: Board, uf2_file: Path) -> list[str]:
    drive = find_uf2_drive(board)
    if drive is None:
        raise FirmwareError(
            f"no {UF2_DRIVE_LABEL} drive mounted (looked under {', '.join(UF2_DRIVE_PARENTS)}):"
            f" hold the {board.name}'s BOOTSEL button while plugging it in, then retry; or copy"
            f" {uf2_file} onto the drive yourself"
        )
    shutil.copyfile(uf2_file, drive / uf2_file.name)  # the boot ROM starts it once written
    return ["cp", str(uf2_file), str(drive)]


def _flash_failure(proc: subprocess.CompletedProcess[str], board: Board, cmd: list[str]) -> str:
    said = (proc.stdout + proc.stderr).strip()
    hint = ""
    if "No connected debug probes" in said or "No available debug probes" in said:
        hint = f"no debug probe found: connect the {board.name} over USB (ST-LINK/J-Link/CMSIS-DAP)"
    elif "target" in said.lower():
        hint = f"pyOCD may need the target pack: pyocd pack install {board.pyocd_target}"
    return f"flashing {board.name} failed ({proc.returncode}): {hint}\n{' '.join(cmd)}\n{said}"
