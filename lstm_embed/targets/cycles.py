"""Estimated cycles of a traced step: the executed instructions, costed by Arm's tables.

Data flow: the firmware's ELF -> ``arm-none-eabi-objdump -d`` (every instruction's address,
size, mnemonic and operands) and ``arm-none-eabi-nm -S`` (function ranges); QEMU's
``-singlestep -d exec,nochain`` log -> the PC of every executed instruction between the two
harness markers of each step -> per instruction: its cost on the core, whether it branched
(the next PC is not the following instruction), and the flash line it was fetched from ->
cycles per step, per function, and microseconds at the board's clock.

The costs are the cycle counts of Arm's Technical Reference Manuals:
- Cortex-M0: TRM (DDI 0432C) section 3.3, Table 3-1 "Cortex-M0 instruction summary".
- Cortex-M0+: TRM (DDI 0484C) section 3.3, Table 3-1 "Cortex-M0+ instruction summary".
- Cortex-M3: TRM (DDI 0337H) section 18.2, Table 18-1 "Cortex-M3 instruction set summary".
- Cortex-M4: TRM (DDI 0439B) section 3.3.1, Table 3-1 "Cortex-M4 instruction set summary",
  the load/store pipelining rules of section 3.3.2, and Table 7-1 "FPU instruction set".
What those tables leave open is a stated choice here (module constants): P, the pipeline refill
after a taken branch on M3/M4, which Arm gives as 1 to 3 cycles, is counted as 2; multiplies
and divides with early termination (M3's long multiplies, SDIV/UDIV) at the middle of their
range; MULS on M0/M0+ as the single-cycle multiplier (RP2040 and nRF51 have it).

Flash: a fetch that misses the board's instruction cache (an LRU model of its lines) and is
not the next line after the previous fetch (which the prefetch buffer covers) stalls for the
board's wait states. Data reads of constants from flash are not traced (QEMU's exec log has
no data addresses) and cost no wait states here. Arm publishes no cycle tables for the M7
(dual issue), M33 or M55; those boards get no estimate.

Not yet checked against silicon: the DWT cycle counts the real-board firmware prints are how
a user checks it (docs/boards-and-timing.md).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from lstm_embed.targets.boards import Board, FlashCache

OBJDUMP = "arm-none-eabi-objdump"
NM = "arm-none-eabi-nm"

CORES_WITH_TIMING = ("m0", "m0plus", "m3", "m4")
# M3/M4 TRMs: "P: the number of cycles required for a pipeline refill. This ranges from 1 to 3
# depending on the alignment and width of the target instruction, and whether the processor
# manages to speculate the address early." Counted as the middle of that range.
PIPELINE_REFILL_M3_M4 = 2
M3_LONG_MULTIPLY = 4  # SMULL/UMULL: 3-5 cycles (early termination)
M3_LONG_MULTIPLY_ACCUMULATE = 6  # SMLAL/UMLAL: 4-7 cycles
DIVIDE = 7  # SDIV/UDIV on M3/M4: 2-12 cycles
FP_DIVIDE = 14  # VDIV.F32 / VSQRT.F32 on M4
FP_MULTIPLY_ACCUMULATE = 3  # VMLA/VMLS/VNMLA/VNMLS and the fused VFMA family on M4

CONDITIONS = frozenset(
    [
        "eq",
        "ne",
        "cs",
        "hs",
        "cc",
        "lo",
        "mi",
        "pl",
        "vs",
        "vc",
        "hi",
        "ls",
        "ge",
        "lt",
        "gt",
        "le",
        "al",
    ]
)


@dataclass(frozen=True)
class Instruction:
    address: int
    size: int  # bytes: 2 or 4
    mnemonic: str  # as objdump prints it, e.g. "ldr.w", "bne.n", "vmul.f32"
    operands: str = ""

    @property
    def base(self) -> str:
        """The mnemonic without width or type qualifiers: "ldr.w" -> "ldr"."""
        return self.mnemonic.lower().split(".", 1)[0]


# ---------------------------------------------------------------- classification


def _strip_condition(base: str, known: frozenset[str]) -> str:
    """'addeq' -> 'add' when 'add' is in known (an instruction inside an IT block)."""
    if base not in known and base[-2:] in CONDITIONS and base[:-2] in known:
        return base[:-2]
    return base


_LOAD_SINGLE = re.compile(r"^ldr(b|h|sb|sh|ex|exb|exh|t|bt|ht|sbt|sht)?$")
_STORE_SINGLE = re.compile(r"^str(b|h|ex|exb|exh|t|bt|ht)?$")
_MULTIPLE = re.compile(r"^(ldm|stm)(ia|db|fd|ea)?$")
_BRANCHES = frozenset(["b", "bl", "bx", "blx", "cbz", "cbnz", "tbb", "tbh"])
_KNOWN = frozenset(
    [
        *_BRANCHES,
        "ldr", "ldrb", "ldrh", "ldrsb", "ldrsh", "ldrd", "str", "strb", "strh", "strd",
        "push", "pop", "ldm", "ldmia", "ldmdb", "stm", "stmia", "stmdb",
        "mul", "muls", "mla", "mls", "smull", "umull", "smlal", "umlal", "sdiv", "udiv",
        "mov", "movs", "add", "adds", "sub", "subs",
    ]
)  # fmt: skip


def _register_count(operands: str) -> int:
    """Registers in a {list}: "{r4, r5, r6, lr}" -> 4, "{r4-r7}" -> 4, "{d8-d9}" -> 2."""
    inside = operands[operands.find("{") + 1 : operands.find("}")]
    count = 0
    for item in inside.split(","):
        item = item.strip()
        if "-" in item:
            first, last = item.split("-")
            count += int(last.strip()[1:]) - int(first.strip()[1:]) + 1
        elif item:
            count += 1
    return count


def _writes_pc(base: str, operands: str) -> bool:
    ops = operands.replace(" ", "").lower()
    if base in ("pop", "ldm", "ldmia", "ldmdb") or base.startswith("ldm"):
        return "pc}" in ops or ",pc," in ops or "{pc" in ops
    return ops.startswith("pc,") and base in ("ldr", "mov", "add")


@dataclass(frozen=True)
class Cost:
    """An instruction's cycles when it does not / does change the flow, and what the
    neighbour rules need to know about it."""

    sequential: int
    taken: int
    load_store_single: bool = False  # M3/M4: can pipeline with a neighbouring one
    store_register_offset: bool = False  # M3/M4: nothing pipelines after it
    it: bool = False  # M3/M4: IT folds onto a preceding 16-bit instruction


def cost(core: str, insn: Instruction) -> Cost:
    """The TRM cycle counts of one instruction on core (CORES_WITH_TIMING)."""
    if core in ("m0", "m0plus"):
        return _cost_v6m(core, insn)
    if core in ("m3", "m4"):
        return _cost_v7m(core, insn)
    raise ValueError(f"no cycle table for core {core!r} (tables: {', '.join(CORES_WITH_TIMING)})")


def _cost_v6m(core: str, insn: Instruction) -> Cost:
    """M0 Table 3-1 / M0+ Table 3-1. The M0+ has a two-stage pipeline: a taken branch costs
    one cycle less than on the M0."""
    plus = core == "m0plus"
    base = _strip_condition(insn.base, _KNOWN)
    refill = 1 if plus else 2  # taken branch: 2 (M0+) / 3 (M0) cycles in all
    if insn.base[:1] == "b" and insn.base[1:] in CONDITIONS:
        return Cost(1, 1 + refill)  # B<cond>: 1 not taken
    if base == "b":
        return Cost(1 + refill, 1 + refill)
    if base == "bl":
        return Cost(2 + refill, 2 + refill)  # 4 on M0, 3 on M0+
    if base in ("bx", "blx"):
        return Cost(1 + refill, 1 + refill)
    if base in ("push", "stm", "stmia", "stmdb"):
        n = _register_count(insn.operands)
        return Cost(1 + n, 1 + n)
    if base in ("pop", "ldm", "ldmia"):
        # N counts the list without PC: POP {.., pc} is 4+N on M0, 3+N on M0+
        n = _register_count(insn.operands)
        return Cost(1 + n, n + 1 + refill)
    if _LOAD_SINGLE.match(base) or _STORE_SINGLE.match(base):
        return Cost(2, 2)
    if base in ("mov", "add") and _writes_pc(base, insn.operands):
        return Cost(1 + refill, 1 + refill)
    if base in ("mrs", "msr", "dmb", "dsb", "isb"):
        return Cost(3 if plus else 4, 3 if plus else 4)
    if base in ("wfi", "wfe"):
        return Cost(2, 2)
    return Cost(1, 1)  # data processing, MULS with the single-cycle multiplier, NOP, CPS


def _cost_v7m(core: str, insn: Instruction) -> Cost:
    """M3 Table 18-1 / M4 Table 3-1 (and Table 7-1 for the M4's FPU)."""
    p = PIPELINE_REFILL_M3_M4
    base = _strip_condition(insn.base, _KNOWN)
    in_it_block = base != insn.base  # a conditional bx/bl inside an IT block may not branch
    if base.startswith("it") and set(base[2:]) <= set("te"):
        return Cost(1, 1, it=True)
    if base in ("b", "bl", "bx", "blx", "cbz", "cbnz") or (
        base[:1] == "b" and base[1:] in CONDITIONS
    ):
        unconditional = base in ("b", "bl", "bx", "blx") and not in_it_block
        return Cost(1 + p if unconditional else 1, 1 + p)
    if base in ("tbb", "tbh"):
        return Cost(2 + p, 2 + p)
    if base in ("push", "stm", "stmia", "stmdb") or (_MULTIPLE.match(base) and base[:3] == "stm"):
        n = _register_count(insn.operands)
        return Cost(1 + n, 1 + n)
    if base in ("pop", "ldm", "ldmia", "ldmdb") or base.startswith("ldm"):
        n = _register_count(insn.operands)
        return Cost(1 + n, 1 + n + p)
    if base in ("ldrd", "strd"):
        return Cost(3, 3)  # 1 + N, N = 2 registers
    if _LOAD_SINGLE.match(base):
        return Cost(2, 2 + p, load_store_single=not _writes_pc(base, insn.operands))
    if _STORE_SINGLE.match(base):
        inside = insn.operands[insn.operands.find("[") + 1 : insn.operands.find("]")].split(",")
        register_offset = len(inside) >= 2 and not inside[1].strip().startswith("#")
        return Cost(2, 2, load_store_single=True, store_register_offset=register_offset)
    if base.startswith("v"):
        return _cost_fpu(base, insn.operands)
    if base in ("sdiv", "udiv"):
        return Cost(DIVIDE, DIVIDE)
    if core == "m3":
        if base in ("mla", "mls"):
            return Cost(2, 2)
        if base in ("smull", "umull"):
            return Cost(M3_LONG_MULTIPLY, M3_LONG_MULTIPLY)
        if base in ("smlal", "umlal"):
            return Cost(M3_LONG_MULTIPLY_ACCUMULATE, M3_LONG_MULTIPLY_ACCUMULATE)
    if base in ("mov", "add") and _writes_pc(base, insn.operands):
        return Cost(1 + p, 1 + p)
    # everything else is one cycle: data processing, bit fields, extends, saturation, and on
    # the M4 every multiply (MUL/MLA/MLS, the 64-bit ones, the DSP SMLAD/SMLALD/SMUL* family)
    return Cost(1, 1)


def _cost_fpu(base: str, operands: str) -> Cost:
    if base in ("vdiv", "vsqrt"):
        return Cost(FP_DIVIDE, FP_DIVIDE)
    if base in ("vmla", "vmls", "vnmla", "vnmls", "vfma", "vfms", "vfnma", "vfnms"):
        return Cost(FP_MULTIPLY_ACCUMULATE, FP_MULTIPLY_ACCUMULATE)
    if base in ("vldr", "vstr"):
        return Cost(2, 2)
    if base in ("vpush", "vpop", "vldm", "vstm") or base.startswith(("vldm", "vstm")):
        n = _register_count(operands)
        return Cost(1 + n, 1 + n)
    if base == "vmov" and operands.count(",") == 2:
        return Cost(2, 2)  # two core registers <-> two singles or a double
    return Cost(1, 1)


# ---------------------------------------------------------------- the ELF


_OBJDUMP_LINE = re.compile(r"^\s*([0-9a-f]+):\t([0-9a-f ]+?)\s*\t(\S+)\s*(.*)$")


def parse_objdump(text: str) -> dict[int, Instruction]:
    """``objdump -d`` text -> instruction per address (data words such as .word skipped)."""
    out = {}
    for line in text.splitlines():
        m = _OBJDUMP_LINE.match(line)
        if m is None or m[3].startswith("."):
            continue
        size = sum(len(group) // 2 for group in m[2].split())
        operands = m[4].split("@", 1)[0].split(";", 1)[0].strip()
        out[int(m[1], 16)] = Instruction(int(m[1], 16), size, m[3], operands)
    return out


def disassemble(elf: Path) -> dict[int, Instruction]:
    proc = subprocess.run([OBJDUMP, "-d", str(elf)], capture_output=True, text=True, check=True)
    return parse_objdump(proc.stdout)


def functions(elf: Path) -> list[tuple[int, int, str]]:
    """(start, size, name) of every function with a size, sorted by start."""
    proc = subprocess.run([NM, "-S", str(elf)], capture_output=True, text=True, check=True)
    out = []
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "Tt":
            out.append((int(fields[0], 16) & ~1, int(fields[1], 16), fields[3]))
    return sorted(out)


# ---------------------------------------------------------------- costing a trace


@dataclass(frozen=True)
class Timing:
    """What the estimate needs of a board."""

    core: str
    clock_hz: int
    flash_wait_states: int = 0
    flash_cache: FlashCache | None = None
    flash_start: int = 0
    flash_size: int = 0

    @classmethod
    def of(cls, board: Board, clock_hz: int | None = None) -> Timing | None:
        if board.timing_core is None:
            return None
        ws = board.flash_wait_states
        return cls(
            board.timing_core,
            clock_hz or board.clock_hz,
            ws,
            board.flash_cache,
            board.flash.origin,
            board.flash.size,
        )


@dataclass
class StepEstimate:
    instructions: int
    core_cycles: int  # the TRM costs with branch refills and M3/M4 pipelining
    stall_cycles: int  # flash wait states on fetches
    by_function: dict[str, int] = field(default_factory=dict)

    @property
    def cycles(self) -> int:
        return self.core_cycles + self.stall_cycles


class FetchModel:
    """Flash fetch stalls across steps: an LRU cache of lines (or none) and a prefetch buffer
    that covers the line after the previous one."""

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self.lines: OrderedDict[int, None] = OrderedDict()
        self.previous_line = -2

    def stalls(self, pcs: np.ndarray) -> np.ndarray:
        """Stall cycles charged to each fetch in pcs (zero outside flash)."""
        t = self.timing
        out = np.zeros(len(pcs), dtype=np.int64)
        if t.flash_wait_states == 0 or len(pcs) == 0:
            return out
        line_bytes = t.flash_cache.line_bytes if t.flash_cache else 16
        lines = pcs.astype(np.int64) // line_bytes
        in_flash = (pcs >= t.flash_start) & (pcs < t.flash_start + t.flash_size)
        changes = np.flatnonzero(np.diff(lines, prepend=lines[0] - 1) != 0)
        capacity = t.flash_cache.lines if t.flash_cache else 0
        for i in changes:
            line = int(lines[i])
            hit = line in self.lines
            if hit:
                self.lines.move_to_end(line)
            elif capacity:
                self.lines[line] = None
                if len(self.lines) > capacity:
                    self.lines.popitem(last=False)
            if not hit and line != self.previous_line + 1 and in_flash[i]:
                out[i] = t.flash_wait_states
            self.previous_line = line
        return out


def estimate_step(
    timing: Timing,
    program: dict[int, Instruction],
    pcs: np.ndarray,
    next_pc: int,
    fetch: FetchModel | None = None,
    function_table: Sequence[tuple[int, int, str]] = (),
) -> StepEstimate:
    """Cycles of one executed sequence pcs; next_pc is the PC executed after it (to tell
    whether the last instruction branched)."""
    pcs = np.asarray(pcs, dtype=np.int64)
    n = len(pcs)
    if n == 0:
        return StepEstimate(0, 0, 0)
    unique, index = np.unique(pcs, return_inverse=True)
    try:
        insns = [program[int(pc)] for pc in unique]
    except KeyError as error:
        missing = int(error.args[0])
        raise ValueError(f"traced PC 0x{missing:08x} is not an instruction of the ELF") from None
    costs = [cost(timing.core, insn) for insn in insns]
    size = np.array([i.size for i in insns], dtype=np.int64)[index]
    sequential = np.array([c.sequential for c in costs], dtype=np.int64)[index]
    taken_cost = np.array([c.taken for c in costs], dtype=np.int64)[index]
    following = np.append(pcs[1:], next_pc)
    taken = following != pcs + size
    cycles = np.where(taken, taken_cost, sequential)
    if timing.core in ("m3", "m4"):
        ls = np.array([c.load_store_single for c in costs])[index]
        blocks = np.array([c.store_register_offset for c in costs])[index]
        it = np.array([c.it for c in costs])[index]
        # TRM 3.3.2: neighbouring load/store single instructions pipeline, the second taking
        # one cycle (not after a register-offset store, not across a branch)
        pipelined = ls[1:] & ls[:-1] & ~blocks[:-1] & ~taken[:-1]
        cycles[1:] -= pipelined.astype(np.int64)
        # Table 3-1 note: IT folds onto a preceding 16-bit instruction (zero cycles)
        folded = it[1:] & (size[:-1] == 2) & ~taken[:-1]
        cycles[1:] -= folded.astype(np.int64)
    stalls = fetch.stalls(pcs) if fetch is not None else np.zeros(n, dtype=np.int64)
    by_function: dict[str, int] = {}
    if function_table:
        starts = np.array([f[0] for f in function_table], dtype=np.int64)
        owner = np.searchsorted(starts, pcs, side="right") - 1
        totals = np.bincount(owner.clip(0), weights=cycles + stalls, minlength=len(starts))
        for k in np.flatnonzero(totals):
            by_function[function_table[k][2]] = int(totals[k])
    return StepEstimate(n, int(cycles.sum()), int(stalls.sum()), by_function)


# ---------------------------------------------------------------- tracing


_PC = re.compile(rb"\[[0-9a-f]+/([0-9a-f]{8})/")


def read_pcs(stream: IO[bytes], chunk: int = 1 << 22) -> np.ndarray:
    """Every executed PC of a QEMU ``-d exec,nochain -singlestep`` log, in order."""
    parts = []
    carry = b""
    while data := stream.read(chunk):
        data = carry + data
        cut = data.rfind(b"\n") + 1
        block, carry = data[:cut], data[cut:]
        found = _PC.findall(block)
        if found:
            parts.append(np.array([int(x, 16) for x in found], dtype=np.uint32))
    found = _PC.findall(carry)
    if found:
        parts.append(np.array([int(x, 16) for x in found], dtype=np.uint32))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)


def step_windows(pcs: np.ndarray, begin: int, end: int) -> list[tuple[int, int]]:
    """(first, stop) index ranges strictly between each `begin` PC and the next `end` PC:
    the same instructions bench.count_steps counts."""
    windows = []
    start = None
    for i in np.flatnonzero((pcs == begin) | (pcs == end)):
        if pcs[i] == begin:
            start = i + 1
        elif start is not None:
            windows.append((int(start), int(i)))
            start = None
    return windows


def trace_pcs(qemu_cmd: list[str], timeout: float = 900.0) -> tuple[np.ndarray, str, int]:
    """Run QEMU with its exec log through a FIFO: (all PCs, stdout, exit status)."""
    with tempfile.TemporaryDirectory() as tmp:
        fifo = Path(tmp) / "trace"
        os.mkfifo(fifo)
        cmd = [*qemu_cmd[:-2], "-singlestep", "-d", "exec,nochain", "-D", str(fifo), *qemu_cmd[-2:]]
        out_path = Path(tmp) / "stdout"
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stdin=subprocess.DEVNULL)

            def release() -> None:  # QEMU gone before opening the FIFO: let the reader see EOF
                proc.wait()
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

            threading.Thread(target=release, daemon=True).start()
            with open(fifo, "rb") as trace:
                pcs = read_pcs(trace)
            status = proc.wait(timeout=timeout)
        stdout = out_path.read_text(errors="replace")
    return pcs, stdout, status


@dataclass(frozen=True)
class TraceEstimate:
    counts: list[int]  # instructions of each step, as bench.count_steps counts them
    steps: list[StepEstimate]  # empty when the core has no timing table
    clock_hz: int | None

    @property
    def cycles_per_step(self) -> float | None:
        return float(np.mean([s.cycles for s in self.steps])) if self.steps else None

    @property
    def us_per_step(self) -> float | None:
        cycles = self.cycles_per_step
        return None if cycles is None or not self.clock_hz else 1e6 * cycles / self.clock_hz

    def by_function(self) -> dict[str, float]:
        """Mean cycles per step of each function, largest first."""
        totals: dict[str, float] = {}
        for s in self.steps:
            for name, c in s.by_function.items():
                totals[name] = totals.get(name, 0.0) + c / len(self.steps)
        return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def estimate_trace(
    elf: Path, pcs: np.ndarray, begin: int, end: int, timing: Timing | None
) -> TraceEstimate:
    """Counts, and with a timing the estimate, of every marked step of one trace."""
    windows = step_windows(pcs, begin, end)
    counts = [stop - first for first, stop in windows]
    if timing is None:
        return TraceEstimate(counts, [], None)
    program = disassemble(elf)
    table = functions(elf)
    fetch = FetchModel(timing)
    steps = []
    previous = 0
    for first, stop in windows:
        fetch.stalls(pcs[previous:first].astype(np.int64))  # the harness between steps
        steps.append(estimate_step(timing, program, pcs[first:stop], int(pcs[stop]), fetch, table))
        previous = stop
    return TraceEstimate(counts, steps, timing.clock_hz)
