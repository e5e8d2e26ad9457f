"""`lstm-embed bench`: instructions per timestep, flash and RAM of fixed shapes on every core.

Data flow: a list of shapes -> random float IR -> ``pipeline.convert_ir`` (C in a folder) ->
one firmware per (shape, board, kernel) built with the bench harness
(templates/firmware/bench_harness.c.j2) -> QEMU with ``-singlestep -d exec,nochain`` streamed
through a FIFO -> instructions between the two marker calls around each ``NAME_step`` ->
table, BENCHMARKS.md, a PNG chart, JSON.

Instruction counts are exact and repeat run for run (the trace method of
../shared/notes/cortex-m-qemu.md); they are a proxy for cycles, not cycles.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO

import numpy as np

from lstm_embed.emit.cformat import c_int_array
from lstm_embed.emit.render import emit_model, render
from lstm_embed.ir.model import DenseLayer, LSTMLayer, Model
from lstm_embed.kinds.base import FloatLayer
from lstm_embed.kinds.gru import GRULayer
from lstm_embed.pipeline import Conversion, convert_ir
from lstm_embed.quantize.quantizer import QuantizeOptions
from lstm_embed.targets import cycles, firmware
from lstm_embed.targets.boards import CORE_BOARDS, EMULATED_BOARDS, Board, get_board
from lstm_embed.targets.hostbuild import exit_description
from lstm_embed.tools import bench_layers

BENCH_TIMESTEPS = 3  # the last step is reported: its state is non-zero, like a running stream
KERNELS = ("reference", "optimized")
NAME = "bench"


LAYER_KINDS = ("lstm", "gru")
GATE_ROWS = {"lstm": 4, "gru": 3}  # weight rows per unit: MACs = rows * n * (m + n)


@dataclass(frozen=True)
class Shape:
    """One benchmarked model: recurrent layers of kind ``layer`` (LSTM or GRU; units each),
    then Dense layers (units, activation)."""

    label: str
    input_size: int
    lstm_units: tuple[int, ...]  # units of each recurrent layer (LSTM or GRU)
    dense: tuple[tuple[int, str], ...] = ()
    recurrent_activation: str = "sigmoid"
    input_scale: float = 1.0  # calibration range; a wide one makes input rows' shifts < 33
    input_shift: int | str = 0  # QuantizeOptions.input_shift: 0..6 or "auto"
    gate_bias: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 0.0)  # i f g o; forget 1
    layer: str = "lstm"  # the recurrent layers' kind
    reset_after: bool = True  # GRU: Keras' default form
    # layers before the recurrent ones (bench_layers.FrontLayer: Conv1D, depthwise, Dense)
    front: tuple[bench_layers.FrontLayer, ...] = ()
    # the index of the one layer whose call is timed (the markers around it), or None: the step
    timed_layer: int | None = None

    @property
    def macs(self) -> int:
        """4*n*(m+n) per LSTM layer (3*n*(m+n) per GRU layer) plus inputs*units per Dense
        layer; with a timed layer, that layer's MACs (bench_layers.FrontLayer.macs)."""
        if self.timed_layer is not None:
            return bench_layers.timed_macs(self.front, self.input_size, self.timed_layer)
        total, width = 0, self.input_size
        for n in self.lstm_units:
            total, width = total + GATE_ROWS[self.layer] * n * (width + n), n
        for units, _ in self.dense:
            total, width = total + width * units, units
        return total

    def ir(self, seed: int) -> Model:
        rng = np.random.default_rng(seed)
        layers: list[FloatLayer] = []
        width = self.input_size
        for k, front in enumerate(self.front):
            layers.append(front.layer(rng, k, width))
            width = front.output_size(width)
        for k, n in enumerate(self.lstm_units):
            sequences = k + 1 < len(self.lstm_units)
            if self.layer == "gru":
                layers.append(self._gru(rng, k, width, n, sequences))
                width = n
                continue
            limit = np.sqrt(6.0 / (width + 4 * n))  # Glorot uniform, like Keras' default
            bias = np.repeat(np.asarray(self.gate_bias, dtype=np.float64), n)
            layers.append(
                LSTMLayer(
                    name=f"lstm{k}",
                    input_size=width,
                    units=n,
                    kernel=rng.uniform(-limit, limit, (width, 4 * n)),
                    recurrent_kernel=rng.normal(0.0, 1.0 / np.sqrt(n), (n, 4 * n)),
                    bias=bias,
                    recurrent_activation=self.recurrent_activation,
                    return_sequences=sequences,
                )
            )
            width = n
        for k, (units, activation) in enumerate(self.dense):
            limit = np.sqrt(6.0 / (width + units))
            kernel = rng.uniform(-limit, limit, (width, units))
            bias = np.zeros(units)
            layers.append(DenseLayer(f"dense{k}", width, units, kernel, bias, activation))
            width = units
        return Model(name=NAME, input_size=self.input_size, timesteps=None, layers=tuple(layers))

    def _gru(self, rng: np.random.Generator, k: int, width: int, n: int, sequences: bool):
        """A GRU with Keras' default initializers' scales and small random biases (z, r, h)."""
        limit = np.sqrt(6.0 / (width + 3 * n))
        shape = (2, 3 * n) if self.reset_after else (3 * n,)
        return GRULayer(
            name=f"gru{k}",
            input_size=width,
            units=n,
            kernel=rng.uniform(-limit, limit, (width, 3 * n)),
            recurrent_kernel=rng.normal(0.0, 1.0 / np.sqrt(n), (n, 3 * n)),
            bias=rng.uniform(-0.1, 0.1, shape),
            reset_after=self.reset_after,
            recurrent_activation=self.recurrent_activation,
            return_sequences=sequences,
        )


LAYER_SHAPES = (
    Shape(
        "conv1d 9->32 k5", 9, (4,), front=(bench_layers.FrontLayer("conv1d", 32, 5),), timed_layer=0
    ),
    Shape(
        "depthwise k5 32ch",
        32,
        (4,),
        front=(bench_layers.FrontLayer("depthwise", 1, 5),),
        timed_layer=0,
    ),
    Shape("dense 64->32", 64, (4,), front=(bench_layers.FrontLayer("dense", 32),), timed_layer=0),
)
SHAPES = (
    Shape("1/3", 1, (3,)),
    Shape("8/32", 8, (32,)),
    Shape("6/64", 6, (64,)),
    Shape("16/128", 16, (128,)),
    Shape("8/32+32 stack", 8, (32, 32)),
    Shape("6/64+dense 6 softmax", 6, (64,), ((6, "softmax"),)),
    # inputs of scale 4: --input-shift auto picks k > 0 (3), the cost of the scaled input part
    Shape("6/64 inputs x4, input shift auto", 6, (64,), input_scale=4.0, input_shift="auto"),
    Shape("gru 1/3", 1, (3,), layer="gru"),
    Shape("gru 8/32", 8, (32,), layer="gru"),
    Shape("gru 6/64", 6, (64,), layer="gru"),
    # one layer's call timed alone (the LSTM(4) after it only makes the model convertible)
    *LAYER_SHAPES,
)
QUICK_SHAPES = (SHAPES[0], SHAPES[1])
QUICK_BOARDS = ("qemu-m0", "qemu-m4")

# Issue 4's done-when: (board, shape label, metric, limit); metric "per_mac" or "per_step".
TARGETS = (
    ("qemu-m4", "6/64", "per_mac", 1.5),
    ("qemu-m4", "8/32", "per_mac", 1.7),
    ("qemu-m4", "1/3", "per_step", 400.0),
    ("qemu-m0", "6/64", "per_mac", 5.5),
    ("qemu-m55", "6/64", "per_mac", 0.5),
    # the GRU issue: MACs = 3*n*(m+n)
    ("qemu-m4", "gru 6/64", "per_mac", 1.6),
    ("qemu-m4", "gru 1/3", "per_step", 450.0),
    ("qemu-m0", "gru 6/64", "per_mac", 6.0),
    ("qemu-m55", "gru 6/64", "per_mac", 0.55),
    # issue 20: one layer's call (LAYER_SHAPES). Floors (BENCHMARKS.md's last section): DSP
    # 1.0 per MAC for the rows (8 instructions per column pair of a quad of rows) plus about 16
    # per row (requantization, activation, the quad's call and header); MVE 9 instructions per
    # 32 MACs plus about 7 per row; depthwise: DSP 2 per MAC (SMLABB/SMLATT) plus 11 per channel,
    # MVE 1 per MAC (4 lanes) plus 13 per 4 channels; plus the ring buffer's update.
    ("qemu-m4", "dense 64->32", "per_mac", 1.55),
    ("qemu-m4", "conv1d 9->32 k5", "per_mac", 1.95),
    ("qemu-m4", "depthwise k5 32ch", "per_mac", 6.5),
    ("qemu-m55", "dense 64->32", "per_mac", 0.55),
    ("qemu-m55", "conv1d 9->32 k5", "per_mac", 0.85),
    ("qemu-m55", "depthwise k5 32ch", "per_mac", 3.5),
)
# CMSIS-NN arm_lstm_unidirectional_s8 measured the same way (../shared/notes/cortex-m-qemu.md)
CMSIS_NN = {("qemu-m4", "6/64"): 4.06, ("qemu-m4", "8/32"): 5.76, ("qemu-m0", "6/64"): 10.6}


@dataclass
class Result:
    shape: str
    board: str
    kernel: str
    macs: int
    step_instructions: list[int]
    code_bytes: int  # the model object's .text after --gc-sections
    const_bytes: int  # its .rodata: weights, biases, multipliers, tables
    weight_bytes: int  # int8 weights alone (from the converter's report)
    state_bytes: int  # the state struct: h, c, scratch
    stack_bytes: int  # stack high-water mark of NAME_step, by painting
    units: int
    layer: str = "lstm"  # the recurrent layers' kind (bench.LAYER_KINDS)
    outputs: list[list[int]] = field(default_factory=list, repr=False)
    # the last step's estimated cycles and time on TIME_BOARDS' board (None: no timing table)
    est_cycles: int | None = None
    est_us: float | None = None
    est_board: str | None = None
    est_clock_hz: int | None = None

    @property
    def per_step(self) -> int:
        return self.step_instructions[-1]

    @property
    def per_mac(self) -> float:
        return self.per_step / self.macs

    def row(self) -> dict:
        data = asdict(self)
        del data["outputs"]
        return {**data, "per_step": self.per_step, "per_mac": round(self.per_mac, 3)}


# ---------------------------------------------------------------- build and run


def convert_shape(shape: Shape, out_dir: Path, seed: int = 0) -> Conversion:
    """Random-weight model of `shape` converted into out_dir."""
    ir = shape.ir(seed)
    rng = np.random.default_rng(seed + 1)
    size = (16, 8, shape.input_size)
    calibration = (rng.normal(size=size) * shape.input_scale).astype(np.float32)
    options = QuantizeOptions(input_shift=shape.input_shift)
    conversion = convert_ir(ir, calibration, out_dir, name=NAME, options=options, force=True)
    if shape.timed_layer is not None:  # the same C with the markers around that layer's call
        emit_model(conversion.qmodel, out_dir, NAME, bench_layer=shape.timed_layer)
    return conversion


def bench_input(input_size: int, timesteps: int = BENCH_TIMESTEPS, seed: int = 0) -> np.ndarray:
    """(timesteps, input_size) int16, fixed seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(-12000, 12000, size=(timesteps, input_size), dtype=np.int16)


def compile_flags(board: Board, reference: bool = False, name: str = NAME) -> list[str]:
    """Flags the model is compiled with (also printed in BENCHMARKS.md)."""
    flags = [*board.cpu_flags, *board.opt_flags, *firmware.MODEL_WARNING_FLAGS]
    return flags + ([f"-D{name.upper()}_USE_REFERENCE_KERNEL"] if reference else [])


def build_bench(
    out_dir: Path,
    board_name: str,
    x_q: np.ndarray,
    reference: bool,
    bdir: Path,
    name: str = NAME,
    run_only: bool = False,
) -> tuple[Path, Path]:
    """Compile out_dir's model ``name`` with the bench harness into bdir; returns (elf, map).
    ``run_only``: the model has no step(); the harness times one run() over the whole x_q."""
    board = get_board(board_name)
    bdir.mkdir(parents=True, exist_ok=True)
    origin = {
        "flash_origin": f"0x{board.flash.origin:08X}",
        "ram_origin": f"0x{board.ram.origin:08X}",
    }
    (bdir / "link.ld").write_text(render("firmware/link.ld.j2", board=board, **origin))
    (bdir / "harness.c").write_text(
        render(
            "firmware/bench_harness.c.j2",
            name=name,
            prefix=name.upper(),
            board=board.name,
            timesteps=x_q.shape[0],
            values=c_int_array(x_q, per_line=max(1, min(x_q.shape[1], 16))),
            paint_words=(board.stack_bytes - 512) // 4,
            run_only=run_only,
        )
    )
    flags = [
        *compile_flags(board, reference, name),
        *firmware.SECTION_FLAGS,
        f"-DBOARD_IRQ_COUNT={board.irq_count}",
        f"-I{out_dir.resolve()}",
        *firmware.firmware_include_flags(),
    ]
    sources = [out_dir / f"{name}.c", bdir / "harness.c", *firmware.firmware_sources(board)]
    objs = []
    for src in sources:
        obj = bdir / f"{src.stem}.o"
        _run([firmware.GCC, *flags, "-c", str(src), "-o", str(obj)], f"compiling {src.name}")
        objs.append(obj)
    elf, map_file = bdir / "firmware.elf", bdir / "firmware.map"
    link = [firmware.GCC, *board.cpu_flags, "-nostartfiles", "--specs=nano.specs"]
    link += [f"-T{bdir / 'link.ld'}", "-Wl,--gc-sections", f"-Wl,-Map={map_file}"]
    _run([*link, *map(str, objs), "-o", str(elf)], "linking")
    return elf, map_file


def _run(cmd: list[str], what: str) -> None:
    """Run a compiler or linker; on failure a ToolFailure carrying its output, so the command
    line prints the first error (not just "compiling failed")."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise firmware.FirmwareToolError(
            f"{what} failed ({exit_description(proc.returncode)})",
            cmd,
            proc.stdout + proc.stderr,
        )


def count_steps(stream: IO[bytes], begin: int, end: int, chunk: int = 1 << 22) -> list[int]:
    """Trace lines strictly between each `begin` PC line and the next `end` PC line.

    Reads the QEMU exec log in large binary chunks and counts newlines between marker
    matches, instead of parsing every line (a 16/128 step on M0 is millions of lines).
    """
    marker = re.compile(rb"\[[0-9a-f]+/(%08x|%08x)/" % (begin, end))
    end_text = b"%08x" % end
    counts: list[int] = []
    start: int | None = None
    lines_before = 0
    carry = b""
    while data := stream.read(chunk):
        data = carry + data
        cut = data.rfind(b"\n") + 1
        block, carry = data[:cut], data[cut:]
        position, line = 0, lines_before
        for m in marker.finditer(block):
            line += block.count(b"\n", position, m.start())
            position = m.start()
            if m[1] != end_text:
                start = line
            elif start is not None:
                counts.append(line - start - 1)
                start = None
        lines_before = line + block.count(b"\n", position)
    return counts


def trace_steps(elf: Path, board_name: str, timeout: float = 900.0) -> tuple[list[int], str]:
    """(instructions of each NAME_step, harness stdout) from one traced QEMU run."""
    begin = firmware._symbol_address(elf, "harness_mark_begin")
    end = firmware._symbol_address(elf, "harness_mark_end")
    with tempfile.TemporaryDirectory() as tmp:
        fifo = Path(tmp) / "trace"
        os.mkfifo(fifo)
        extra = ("-singlestep", "-d", "exec,nochain", "-D", str(fifo))
        cmd = firmware.qemu_command(get_board(board_name), elf, extra)
        out_path = Path(tmp) / "stdout"
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stdin=subprocess.DEVNULL)
            with open(fifo, "rb") as trace:
                counts = count_steps(trace, begin, end)
            status = proc.wait(timeout=timeout)
        stdout = out_path.read_text(errors="replace")
    if status != 0:
        raise firmware.FirmwareError(f"bench firmware exited with {status}:\n{stdout[-400:]}")
    return counts, stdout


def run_outputs(
    out_dir: Path,
    board_name: str,
    x_q: np.ndarray,
    kernel: str,
    bdir: Path,
    name: str = NAME,
    run_only: bool = False,
) -> tuple[np.ndarray, int]:
    """Untraced run: (outputs (timesteps, output_size) int16, stack bytes); run-only: the
    outputs of one run() (one row, or timesteps rows when it returns sequences)."""
    elf, _ = build_bench(out_dir, board_name, x_q, kernel == "reference", bdir, name, run_only)
    cmd = firmware.qemu_command(get_board(board_name), elf)
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise firmware.FirmwareError(f"bench firmware exited with {proc.returncode}")
    outputs, stack = parse_bench_output(proc.stdout)
    return np.array(outputs, dtype=np.int16), stack


def parse_bench_output(stdout: str) -> tuple[list[list[int]], int]:
    """(outputs per step, stack bytes) from the bench harness's lines."""
    lines = stdout.splitlines()
    outputs = [[int(v) for v in line.split()[1:]] for line in lines if line.startswith("y")]
    stack = [int(line.split()[1]) for line in lines if line.startswith("stack ")]
    if not stack or not any(line.startswith("done ") for line in lines):
        raise firmware.FirmwareError(f"bench harness output incomplete:\n{stdout[-400:]}")
    return outputs, stack[0]


# The board whose clock, wait states and cache the estimated time of a core's rows is for: the
# real board of that core (the M0 trace costed as the Pico's M0+), else the QEMU machine
TIME_BOARDS = {"qemu-m0": "pico", "qemu-m3": "qemu-m3", "qemu-m4": "nucleo-f411re"}


def trace_and_estimate(
    elf: Path, traced: Board, timing: cycles.Timing | None
) -> tuple[cycles.TraceEstimate, str]:
    """One traced QEMU run of a bench-harness ELF: per-step counts and estimates, stdout."""
    begin = firmware._symbol_address(elf, "harness_mark_begin")
    end = firmware._symbol_address(elf, "harness_mark_end")
    pcs, stdout, status = cycles.trace_pcs(firmware.qemu_command(traced, elf))
    if status != 0:
        raise firmware.FirmwareError(f"profile firmware exited with {status}:\n{stdout[-400:]}")
    return cycles.estimate_trace(elf, pcs, begin, end, timing), stdout


def board_timing(board: Board, traced: Board, clock_hz: int | None) -> cycles.Timing | None:
    """board's timing, with the flash region of the machine the trace comes from."""
    timing = cycles.Timing.of(board, clock_hz)
    if timing is None:
        return None
    return replace(timing, flash_start=traced.flash.origin, flash_size=traced.flash.size)


def _estimate(elf: Path, board_name: str) -> tuple[list[int], str, cycles.StepEstimate | None]:
    """Step counts, stdout and the last step's estimate on TIME_BOARDS' board."""
    traced = get_board(board_name)
    timed = TIME_BOARDS.get(board_name)
    timing = board_timing(get_board(timed), traced, None) if timed else None
    estimate, stdout = trace_and_estimate(elf, traced, timing)
    return estimate.counts, stdout, (estimate.steps[-1] if estimate.steps else None)


def run_one(shape: Shape, board_name: str, kernel: str, work: Path, report: dict) -> Result:
    """Build and trace one (shape, board, kernel) from the converted folder work/model."""
    x_q = bench_input(shape.input_size)
    bdir = work / f"{board_name}-{kernel}"
    elf, map_file = build_bench(work / "model", board_name, x_q, kernel == "reference", bdir)
    counts, stdout, last = _estimate(elf, board_name)
    outputs, stack = parse_bench_output(stdout)
    if len(counts) != x_q.shape[0]:
        raise firmware.FirmwareError(f"expected {x_q.shape[0]} step counts, got {counts}")
    sizes = firmware.model_sizes(map_file, NAME, state_symbol="harness_state")
    return Result(
        shape=shape.label,
        board=board_name,
        kernel=kernel,
        macs=shape.macs,
        step_instructions=counts,
        code_bytes=sizes.text,
        const_bytes=sizes.rodata + sizes.data,
        weight_bytes=int(report["flash_bytes"]["weights"]),
        state_bytes=sizes.bss,
        stack_bytes=stack,
        units=sum(shape.lstm_units),
        layer=shape.layer,
        outputs=outputs,
        **_estimate_fields(board_name, last),
    )


def _estimate_fields(board_name: str, last: cycles.StepEstimate | None) -> dict:
    if last is None:
        return {}
    timed = get_board(TIME_BOARDS[board_name])
    return {
        "est_cycles": last.cycles,
        "est_us": round(1e6 * last.cycles / timed.clock_hz, 2),
        "est_board": timed.name,
        "est_clock_hz": timed.clock_hz,
    }


def run_bench(
    shapes: Sequence[Shape],
    boards: Sequence[str],
    kernels: Sequence[str] = KERNELS,
    work_dir: Path | None = None,
    jobs: int = 2,
) -> list[Result]:
    """Every (shape, board, kernel); results in the order of the arguments."""
    with tempfile.TemporaryDirectory(prefix="lstm-embed-bench-") as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        reports = {}
        for k, shape in enumerate(shapes):
            reports[shape.label] = convert_shape(shape, work / f"s{k}" / "model").report
        tasks = [
            (shape, board, kernel, work / f"s{k}", reports[shape.label])
            for k, shape in enumerate(shapes)
            for board in boards
            for kernel in kernels
        ]
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            return list(pool.map(lambda task: run_one(*task), tasks))


# ---------------------------------------------------------------- reporting


def _find(results: Iterable[Result], board: str, shape: str, kernel: str) -> Result | None:
    for r in results:
        if (r.board, r.shape, r.kernel) == (board, shape, kernel):
            return r
    return None


def format_table(results: Sequence[Result]) -> str:
    """Markdown table, one row per (shape, board, kernel)."""
    head = (
        "| shape (in/units) | core | kernel | instr/step | instr/MAC | est. cycles/step "
        "| est. µs/step (board, clock) | code B | const B "
        "| weights B | state B | stack B | RAM B/unit |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in results:
        ram_per_unit = r.state_bytes / max(1, r.units)
        lines.append(
            f"| {r.shape} | {r.board.removeprefix('qemu-')} | {r.kernel} | {r.per_step} "
            f"| {r.per_mac:.2f} | {_estimate_cells(r)} | {r.code_bytes} | {r.const_bytes} "
            f"| {r.weight_bytes} | {r.state_bytes} | {r.stack_bytes} | {ram_per_unit:.1f} |"
        )
    return "\n".join(lines)


def _estimate_cells(r: Result) -> str:
    if r.est_cycles is None or r.est_clock_hz is None:
        return "- | -"
    return f"{r.est_cycles} | {r.est_us:g} ({r.est_board}, {r.est_clock_hz / 1e6:g} MHz)"


def target_rows(results: Sequence[Result], kernel: str = "optimized") -> list[dict]:
    rows = []
    for board, shape, metric, limit in TARGETS:
        r = _find(results, board, shape, kernel)
        if r is None:
            continue
        value = r.per_mac if metric == "per_mac" else float(r.per_step)
        rows.append(
            {
                "board": board,
                "shape": shape,
                "metric": "instr/MAC" if metric == "per_mac" else "instr/step",
                "limit": limit,
                "measured": round(value, 3),
                "met": value <= limit,
                "over_by_percent": round(100.0 * (value / limit - 1.0), 1),
                "cmsis_nn": CMSIS_NN.get((board, shape)),
            }
        )
    return rows


def format_targets(rows: Sequence[dict]) -> str:
    lines = ["| core | shape | metric | target | measured | status | CMSIS-NN |", "|" + "---|" * 7]
    for t in rows:
        status = "met" if t["met"] else f"missed by {t['over_by_percent']:.1f}%"
        cmsis = "" if t["cmsis_nn"] is None else f"{t['cmsis_nn']}"
        lines.append(
            f"| {t['board'].removeprefix('qemu-')} | {t['shape']} | {t['metric']} | "
            f"<= {t['limit']:g} | {t['measured']:g} | {status} | {cmsis} |"
        )
    return "\n".join(lines)


# docs/speed.md's tables: the optimized kernel on these cores, every shape but the stack and head
DOC_BOARDS = ("qemu-m0", "qemu-m3", "qemu-m4", "qemu-m55")
DOC_SKIPS = ("stack", "dense", "conv1d", "depthwise")  # the layer rows: BENCHMARKS.md


def doc_sections(results: Sequence[Result]) -> dict[str, str]:
    selected = [
        r
        for r in results
        if r.kernel == "optimized"
        and r.board in DOC_BOARDS
        and not any(word in r.shape for word in DOC_SKIPS)
    ]
    return {"targets": format_targets(target_rows(results)), "selected": format_table(selected)}


def replace_sections(text: str, sections: dict[str, str], where: str, tool: str = "bench") -> str:
    """Put each section's body between ``<!-- TOOL:NAME -->`` and ``<!-- /TOOL:NAME -->``
    (the tool that measures it: bench, accuracy)."""
    for name, body in sections.items():
        begin, end = f"<!-- {tool}:{name} -->", f"<!-- /{tool}:{name} -->"
        head, found, rest = text.partition(begin)
        _, found_end, tail = rest.partition(end)
        if not (found and found_end):
            raise SystemExit(f"{where}: no {begin} ... {end} markers to regenerate")
        text = f"{head}{begin}\n{body}\n{end}{tail}"
    return text


def flags_text(boards: Sequence[str]) -> str:
    return "\n".join(f"- {b}: `{' '.join(compile_flags(get_board(b)))}`" for b in boards)


def markdown(results: Sequence[Result], boards: Sequence[str]) -> str:
    import shutil

    gcc = subprocess.run([firmware.GCC, "--version"], capture_output=True, text=True).stdout
    qemu = subprocess.run(
        [shutil.which(firmware.QEMU) or firmware.QEMU, "--version"], capture_output=True, text=True
    ).stdout
    return render(
        "bench.md.j2",
        gcc=gcc.splitlines()[0] if gcc else "?",
        qemu=qemu.splitlines()[0] if qemu else "?",
        timesteps=BENCH_TIMESTEPS,
        flags=flags_text(boards),
        targets=format_targets(target_rows(results)),
        table=format_table(results),
    )


def write_chart(results: Sequence[Result], path: Path) -> None:
    """Instructions per MAC per core and shape, reference vs optimized (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(r.shape for r in results))
    boards = list(dict.fromkeys(r.board for r in results))
    kernels = list(dict.fromkeys(r.kernel for r in results))
    fig, axes = plt.subplots(1, len(kernels), figsize=(6 * len(kernels), 4.5), sharey=True)
    axes = np.atleast_1d(axes)
    width = 0.8 / max(1, len(shapes))
    for ax, kernel in zip(axes, kernels, strict=True):
        for s, shape in enumerate(shapes):
            values = [
                (r.per_mac if (r := _find(results, b, shape, kernel)) else 0.0) for b in boards
            ]
            ax.bar(np.arange(len(boards)) + s * width, values, width, label=shape)
        ax.set_xticks(np.arange(len(boards)) + 0.4 - width / 2)
        ax.set_xticklabels([b.removeprefix("qemu-") for b in boards])
        ax.set_yscale("log")
        ax.set_title(f"{kernel} kernel")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0].set_ylabel("instructions per MAC (QEMU trace)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="2 shapes on M0 and M4 (for tests)")
    parser.add_argument("--boards", nargs="+", choices=EMULATED_BOARDS, help="cores to run")
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    parser.add_argument("--json", metavar="PATH", help="write results as JSON ('-': stdout)")
    parser.add_argument("--markdown", metavar="PATH", help="regenerate this file (BENCHMARKS.md)")
    parser.add_argument("--chart", metavar="PATH", help="write a PNG chart (docs/bench.png)")
    parser.add_argument(
        "--doc",
        "--readme",
        dest="doc",
        metavar="PATH",
        help="regenerate the speed tables between this page's bench markers (docs/speed.md)",
    )
    parser.add_argument("--shapes", nargs="+", metavar="LABEL", help="only these shape labels")
    parser.add_argument(
        "--input-shift", metavar="K", help="override every shape's input shift (0..6 or auto)"
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--work-dir", metavar="DIR", help="keep the builds here")


def run_from_args(args: argparse.Namespace) -> int:
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.shapes:
        unknown = set(args.shapes) - {s.label for s in SHAPES}
        if unknown:
            raise SystemExit(f"unknown shape labels: {sorted(unknown)}")
        shapes = tuple(s for s in SHAPES if s.label in args.shapes)
    if args.input_shift is not None:
        k = args.input_shift if args.input_shift == "auto" else int(args.input_shift)
        shapes = tuple(replace(s, input_shift=k) for s in shapes)
    boards = args.boards or (QUICK_BOARDS if args.quick else CORE_BOARDS)
    work = Path(args.work_dir) if args.work_dir else None
    results = run_bench(shapes, boards, args.kernels, work, args.jobs)
    if args.json == "-":
        print(json.dumps([r.row() for r in results], indent=2))
    else:
        print(format_table(results))
        print()
        print(format_targets(target_rows(results)))
    if args.json and args.json != "-":
        payload = {"results": [r.row() for r in results], "targets": target_rows(results)}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(results, boards))
    if args.chart:
        write_chart(results, Path(args.chart))
    if args.doc:
        doc = Path(args.doc)
        doc.write_text(replace_sections(doc.read_text(), doc_sections(results), args.doc))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`lstm-embed bench [--quick] [--boards ...] [--json PATH] [--markdown PATH] [--chart PNG]`."""
    parser = argparse.ArgumentParser(prog="lstm-embed bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
