"""`lstm-embed profile`: the user's own converted model on each emulated core.

Per board: instructions per step (exact: QEMU's per-instruction trace between two markers around
each ``step()``, as the bench counts them; a run-only model, which has no step(), is traced over
one ``run()`` of its whole window, and its per-step figure is that run's count over the window's
timesteps), flash (the model's code and constants after
--gc-sections), RAM (the state struct and the stack high-water mark). Instructions are not
cycles: on a real M4, loads and taken branches take more than one cycle.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lstm_embed.targets import firmware
from lstm_embed.targets.boards import EMULATED_BOARDS, get_board
from lstm_embed.targets.hostbuild import read_report
from lstm_embed.tools import bench

DEFAULT_BOARDS = ("qemu-m0", "qemu-m4", "qemu-m55")
PROFILE_TIMESTEPS = 8  # steps traced when the model takes any length


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
    steps: int  # steps traced (run-only: the timesteps of the one traced run())
    instructions_per_run: int | None = None  # run-only models: the whole window's run()


def profile_input(report: dict, seed: int = 0) -> np.ndarray:
    """(T, m) int16 inputs over most of the int16 range (the values do not change the count
    much: the kernels have no data-dependent loops beyond saturation)."""
    steps = report["timesteps"] or PROFILE_TIMESTEPS
    return bench.bench_input(report["input_size"], steps, seed)


def profile_board(out_dir: Path, board: str, work: Path) -> Profile:
    report = read_report(out_dir)
    name = report["name"]
    # a model bigger than the board: one line naming the sizes, not the linker's overflow
    firmware.check_fit(firmware.ModelInfo.load(out_dir), get_board(board))
    x_q = profile_input(report)
    run_only = bool(report.get("run_only"))
    elf, map_file = bench.build_bench(
        out_dir, board, x_q, False, work / board, name=name, run_only=run_only
    )
    counts, stdout = bench.trace_steps(elf, board)
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
        instructions_per_run=int(counts[0]) if run_only else None,
    )


def profile(out_dir: Path, boards: tuple[str, ...] = DEFAULT_BOARDS) -> list[Profile]:
    unknown = [b for b in boards if b not in EMULATED_BOARDS]
    if unknown:
        raise ValueError(
            f"--board {', '.join(unknown)}: not an emulated board (profile runs in QEMU;"
            f" supported: {', '.join(EMULATED_BOARDS)})"
        )
    with tempfile.TemporaryDirectory(prefix="lstm-embed-profile-") as tmp:
        return [profile_board(Path(out_dir), board, Path(tmp)) for board in boards]


def table(results: list[Profile]) -> str:
    head = "board      instr/step  instr/MAC  flash B (code+const)  RAM B (state+stack)"
    lines = [head, "-" * len(head)]
    for r in results:
        per_mac = r.instructions_per_step / r.macs_per_step if r.macs_per_step else 0.0
        lines.append(
            f"{r.board:<10} {r.instructions_per_step:>10.0f}  {per_mac:>9.3f}"
            f"  {r.flash_bytes:>7} ({r.code_bytes}+{r.const_bytes})"
            f"  {r.ram_bytes:>8} ({r.state_bytes}+{r.stack_bytes})"
        )
    runs = [r for r in results if r.instructions_per_run is not None]
    if runs:
        per_run = ", ".join(f"{r.board} {r.instructions_per_run}" for r in runs)
        lines.append(
            f"run-only model (no step()): instructions per run() of {runs[0].steps} timesteps:"
            f" {per_run}; instr/step is that over {runs[0].steps}"
        )
    lines.append(
        "instructions are counted exactly under QEMU; they are not cycles (on silicon, loads,"
        " multiplies and taken branches can take more than one)"
    )
    return "\n".join(lines)


def write_json(results: list[Profile], path: Path) -> None:
    path.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
