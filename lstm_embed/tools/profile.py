"""`lstm-embed profile`: the user's own converted model on each emulated core.

Per board: instructions per step (exact: QEMU's per-instruction trace between two markers around
each ``step()``, as the bench counts them; a run-only model, which has no step(), is traced over
one ``run()`` of its whole window, and its per-step figures are that run's over the window's
timesteps), flash (the model's code and constants after --gc-sections), RAM (the state struct
and the stack high-water mark), and estimated cycles and microseconds per step at the board's
clock from the same trace (cycles.py: Arm's published cycle tables, branch refills, flash wait
states). A real board is traced on the QEMU machine of its core (TRACE_BOARDS) and costed with
its own clock, wait states and cache.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lstm_embed.targets import cycles, firmware, graph_firmware
from lstm_embed.targets.boards import BOARDS, EMULATED_BOARDS, Board, get_board
from lstm_embed.targets.hostbuild import read_report
from lstm_embed.tools import bench
from lstm_embed.tools.bench import board_timing, trace_and_estimate

DEFAULT_BOARDS = ("qemu-m0", "qemu-m4", "qemu-m55")
PROFILE_TIMESTEPS = 8  # steps traced when the model takes any length
# The QEMU machine whose trace stands for a real board's: same instruction set (the pico's
# M0+ runs ARMv6-M code as the M0 does; the M0 build's code is what is traced)
TRACE_BOARDS = {"m4": "qemu-m4", "m0plus": "qemu-m0", "m0": "qemu-m0", "m3": "qemu-m3"}
PROFILE_BOARDS = EMULATED_BOARDS + tuple(
    name for name, b in BOARDS.items() if not b.emulated and b.timing_core in TRACE_BOARDS
)


@dataclass(frozen=True)
class Profile:
    board: str
    instructions_per_step: float  # mean over the traced steps
    instructions_min: int
    instructions_max: int
    macs_per_step: int
    flash_bytes: int  # code + constants of the model
    code_bytes: int
    const_bytes: int
    ram_bytes: int  # state + stack
    state_bytes: int
    stack_bytes: int
    steps: int
    clock_hz: int
    estimated_cycles_per_step: float | None  # None: Arm publishes no timing for the core
    estimated_us_per_step: float | None
    estimated_stall_cycles_per_step: float | None  # the flash wait states' part
    estimated_cycles_by_function: dict[str, float]  # mean per step, largest first
    traced_on: str  # the QEMU board whose trace this is
    instructions_per_run: int | None = None  # run-only models and graphs: one window's run()
    # graphs: the intermediate tensors' arena as the linked C holds it (sizeof arena_q), which
    # profile checks against report.json's buffer plan; None for a chain
    arena_bytes: int | None = None


def profile_input(report: dict, seed: int = 0) -> np.ndarray:
    """(T, m) int16 inputs over most of the int16 range (the values do not change the count
    much: the kernels have no data-dependent loops beyond saturation)."""
    steps = report["timesteps"] or PROFILE_TIMESTEPS
    return bench.bench_input(report["input_size"], steps, seed)


def trace_board(board: Board) -> Board:
    if board.emulated:
        return board
    return get_board(TRACE_BOARDS[str(board.timing_core)])


def profile_board(out_dir: Path, board: str, work: Path, clock_hz: int | None = None) -> Profile:
    if graph_firmware.is_graph_folder(out_dir):
        return profile_graph_board(out_dir, board, work, clock_hz)
    report = read_report(out_dir)
    name = report["name"]
    # a model bigger than the board: one line naming the sizes, not the linker's overflow
    firmware.check_fit(firmware.ModelInfo.load(out_dir), get_board(board))
    x_q = profile_input(report)
    run_only = bool(report.get("run_only"))
    real = get_board(board)
    traced = trace_board(real)
    elf, map_file = bench.build_bench(
        out_dir, traced.name, x_q, False, work / board, name=name, run_only=run_only
    )
    estimate, stdout = trace_and_estimate(elf, traced, board_timing(real, traced, clock_hz))
    counts = estimate.counts
    per_call = len(x_q) if run_only else 1  # timesteps one traced call covers
    _, stack = bench.parse_bench_output(stdout)
    sizes = firmware.model_sizes(map_file, name, state_symbol="harness_state")
    const = sizes.rodata + sizes.data
    per_step = [c / len(x_q) for c in counts] if run_only else counts
    return Profile(
        board=board,
        instructions_per_step=float(np.mean(per_step)),
        instructions_min=int(np.floor(min(per_step))),
        instructions_max=int(np.ceil(max(per_step))),
        macs_per_step=int(report["macs_per_step"]),
        flash_bytes=sizes.text + const,
        code_bytes=sizes.text,
        const_bytes=const,
        ram_bytes=sizes.bss + stack,
        state_bytes=sizes.bss,
        stack_bytes=stack,
        steps=len(x_q) if run_only else len(counts),
        clock_hz=clock_hz or real.clock_hz,
        estimated_cycles_per_step=_per_step(estimate.cycles_per_step, per_call),
        estimated_us_per_step=_per_step(estimate.us_per_step, per_call, 3),
        estimated_stall_cycles_per_step=_per_step(
            float(np.mean([s.stall_cycles for s in estimate.steps])) if estimate.steps else None,
            per_call,
        ),
        estimated_cycles_by_function={
            k: round(v / per_call, 1) for k, v in estimate.by_function().items()
        },
        traced_on=traced.name,
        instructions_per_run=int(counts[0]) if run_only else None,
    )


def profile_graph_board(
    out_dir: Path, board: str, work: Path, clock_hz: int | None = None
) -> Profile:
    """A graph's profile: one run() over a whole window, traced; when the graph streams, one
    step() per timestep too, whose figures are the per-step ones (a run-only graph's are its
    run's over the window's timesteps, as a chain's). The linked arena must be the one
    report.json plans, inside the state's .bss."""
    report = graph_firmware.graph_report(out_dir)
    real = get_board(board)
    traced = trace_board(real)
    built = graph_firmware.build_graph_bench(out_dir, traced, work / board)
    estimate, stdout = trace_and_estimate(built.elf, traced, board_timing(real, traced, clock_hz))
    sizes = graph_firmware.parse_bench(stdout)
    _check_arena(out_dir, report, sizes, built.model.bss)
    steps, run_only = report["timesteps"], bool(report["run_only"])
    run_count, step_counts = estimate.counts[0], estimate.counts[1:]
    if run_only:
        per_step, per_call = [run_count / steps], steps
        timed = cycles.TraceEstimate(estimate.counts[:1], estimate.steps[:1], estimate.clock_hz)
    else:
        per_step, per_call = step_counts, 1
        timed = cycles.TraceEstimate(step_counts, estimate.steps[1:], estimate.clock_hz)
    model = built.model
    const = model.rodata + model.data
    return Profile(
        board=board,
        instructions_per_step=float(np.mean(per_step)),
        instructions_min=int(np.floor(min(per_step))),
        instructions_max=int(np.ceil(max(per_step))),
        macs_per_step=int(report["macs_per_step"]),
        flash_bytes=model.text + const,
        code_bytes=model.text,
        const_bytes=const,
        ram_bytes=model.bss + sizes["stack"],
        state_bytes=model.bss,
        stack_bytes=sizes["stack"],
        steps=steps,
        clock_hz=clock_hz or real.clock_hz,
        estimated_cycles_per_step=_per_step(timed.cycles_per_step, per_call),
        estimated_us_per_step=_per_step(timed.us_per_step, per_call, 3),
        estimated_stall_cycles_per_step=_per_step(
            float(np.mean([s.stall_cycles for s in timed.steps])) if timed.steps else None,
            per_call,
        ),
        estimated_cycles_by_function={
            k: round(v / per_call, 1) for k, v in timed.by_function().items()
        },
        traced_on=traced.name,
        instructions_per_run=int(run_count),
        arena_bytes=sizes["arena"],
    )


def _check_arena(out_dir: Path, report: dict, sizes: dict[str, int], state_bss: int) -> None:
    """The linked C holds the arena report.json plans (the larger of run()'s and step()'s),
    inside the state whose size the map's .bss shows."""
    buffers = report["buffers"]
    planned = max(buffers["arena_bytes"], buffers["step_arena_bytes"])
    if sizes["arena"] != planned or sizes["state"] != state_bss or planned > state_bss:
        raise firmware.FirmwareError(
            f"{out_dir}: report.json plans a {planned}-byte arena; the linked C holds"
            f" {sizes['arena']} B in a {sizes['state']}-byte state ({state_bss} B of .bss);"
            " convert again"
        )


def _rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _per_step(value: float | None, per_call: int, digits: int = 1) -> float | None:
    """A traced call's figure per timestep (a run-only model's call is one whole window)."""
    return None if value is None else round(value / per_call, digits)


def profile(
    out_dir: Path, boards: tuple[str, ...] = DEFAULT_BOARDS, clock_hz: int | None = None
) -> list[Profile]:
    unknown = [b for b in boards if b not in PROFILE_BOARDS]
    if unknown:
        raise ValueError(
            f"--board {', '.join(unknown)}: not a board profile can trace (profile runs in QEMU;"
            f" supported: {', '.join(PROFILE_BOARDS)})"
        )
    if clock_hz is not None and clock_hz <= 0:
        raise ValueError(f"--clock-hz {clock_hz}: must be positive")
    with tempfile.TemporaryDirectory(prefix="lstm-embed-profile-") as tmp:
        return [profile_board(Path(out_dir), board, Path(tmp), clock_hz) for board in boards]


def table(results: list[Profile]) -> str:
    head = (
        "board           instr/step  instr/MAC  est. cycles/step  est. us/step (clock)"
        "  flash B (code+const)  RAM B (state+stack)"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        per_mac = r.instructions_per_step / r.macs_per_step if r.macs_per_step else 0.0
        if r.estimated_cycles_per_step is None:
            est, us = "no table", "-"
        else:
            est = f"{r.estimated_cycles_per_step:.0f}"
            us = f"{r.estimated_us_per_step:.1f} ({r.clock_hz / 1e6:g} MHz)"
        lines.append(
            f"{r.board:<15} {r.instructions_per_step:>10.0f}  {per_mac:>9.3f}"
            f"  {est:>16}  {us:>20}"
            f"  {r.flash_bytes:>7} ({r.code_bytes}+{r.const_bytes})"
            f"  {r.ram_bytes:>8} ({r.state_bytes}+{r.stack_bytes})"
        )
    runs = [r for r in results if r.instructions_per_run is not None]
    graphs = [r for r in results if r.arena_bytes is not None]
    if graphs:
        per_run = ", ".join(f"{r.board} {r.instructions_per_run}" for r in graphs)
        lines.append(f"graph: instructions per run() of {graphs[0].steps} timesteps: {per_run}")
        r = graphs[0]
        lines.append(
            f"graph: intermediate tensors in the state's arena: {r.arena_bytes} B, as report.json"
            f" plans (checked against the linked state, {r.state_bytes} B of .bss; stack"
            f" {', '.join(f'{g.board} {g.stack_bytes} B' for g in graphs)})"
        )
        runs = [r for r in runs if r.arena_bytes is None]
    if runs:
        per_run = ", ".join(f"{r.board} {r.instructions_per_run}" for r in runs)
        lines.append(
            f"run-only model (no step()): instructions per run() of {runs[0].steps} timesteps:"
            f" {per_run}; instr/step is that over {runs[0].steps}"
        )
    lines.append(
        "instructions are counted exactly under QEMU; cycles are estimated from that trace with"
        " Arm's published per-instruction timings, branch refills and the board's flash wait"
        " states (not checked against silicon; see docs/boards-and-timing.md). Arm publishes no"
        " timings for M7, M33 and M55: no estimate there"
    )
    for r in results:
        if r.estimated_cycles_by_function and r.estimated_cycles_per_step:
            top = list(r.estimated_cycles_by_function.items())[:4]
            parts = ", ".join(
                f"{name} {c:.0f} ({100 * c / r.estimated_cycles_per_step:.0f}%)" for name, c in top
            )
            lines.append(f"{r.board} est. cycles by function: {parts}")
    traced = [r for r in results if r.traced_on != r.board]
    for r in traced:
        lines.append(
            f"{r.board}: traced on {r.traced_on} (same instruction set), costed as {r.board}"
        )
    return "\n".join(lines)


def write_json(results: list[Profile], path: Path) -> None:
    path.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
