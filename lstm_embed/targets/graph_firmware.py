"""A graph's C on Cortex-M boards: the model's NAME.c with a graph harness
(templates/firmware/graph_harness.c.j2, the samples' inputs compiled in: int16 for run() and
step(), float for run_f32() and step_f32()), built with the chain's firmware pieces
(``firmware``: startup, console, link script, compile and link, size tables, flashing) and run
in QEMU or on a real board over its UART; and the profile build (graph_bench_harness.c.j2).

``build_folder`` and ``is_graph_folder`` let a command take either kind of folder: a chain's goes
to ``firmware.build``, a graph's to ``build_graph``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from lstm_embed.emit.cformat import c_int_array
from lstm_embed.targets import firmware as fw
from lstm_embed.targets.boards import Board, get_board
from lstm_embed.targets.graph_host import graph_report, is_graph_folder

ENTRIES = {False: ("run", "step"), True: ("run_f32", "step_f32")}  # by float input


def _length(report: dict, item: dict, steps: int) -> int:
    """The timesteps of a sequence input or output: its declared length in a graph of fixed
    windows (sequences of different lengths, run() on whole windows only), else ``steps``."""
    return int(item["timesteps"]) if report.get("fixed_windows") else steps


def default_inputs(report: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """One fixed pseudo-random int16 sample of every input, a whole window long (builds made
    without inputs: `lstm-embed build`, profile)."""
    rng = np.random.default_rng(seed)
    steps = report["timesteps"]
    return {
        x["name"]: rng.integers(-12000, 12000, size=(1, _length(report, x, steps), x["size"])
                                if x["sequence"]
                                else (1, x["size"]), dtype=np.int16)
        for x in report["graph"]["inputs"]
    }  # fmt: skip


def _arrays(report: dict, inputs: dict[str, Any], floats: bool) -> tuple[list[np.ndarray], int]:
    """The inputs in the model's order, checked: (samples, steps, size) or (samples, size),
    every input the same samples and every sequence the same 1..T steps."""
    dtype = np.float32 if floats else np.int16
    graph = report["graph"]
    missing = [x["name"] for x in graph["inputs"] if x["name"] not in inputs]
    if missing:
        names = ", ".join(x["name"] for x in graph["inputs"])
        raise ValueError(f"no input {missing[0]!r} (the model's inputs: {names})")
    arrays = [np.asarray(inputs[x["name"]]) for x in graph["inputs"]]
    samples = len(arrays[0])
    steps = next(a.shape[1] for a, x in zip(arrays, graph["inputs"], strict=True) if x["sequence"])
    if report.get("fixed_windows"):  # run() takes whole windows only
        steps = report["timesteps"]
    for array, x in zip(arrays, graph["inputs"], strict=True):
        # a static input has no timesteps (its report entry's are null)
        want = ((samples, _length(report, x, steps), x["size"]) if x["sequence"]
                else (samples, x["size"]))  # fmt: skip
        if array.shape != want or not 1 <= steps <= report["timesteps"] or samples < 1:
            raise ValueError(
                f"input {x['name']!r} has shape {array.shape}; expected {want} with 1 to"
                f" {report['timesteps']} timesteps (every input the same number of rows)"
            )
        if floats and not np.isfinite(array).all():
            raise ValueError(f"input {x['name']!r} holds NaN or infinity")
    return [a.astype(dtype) for a in arrays], steps


def _io_context(report: dict, arrays: list[np.ndarray], steps: int, floats: bool) -> dict:
    graph = report["graph"]
    literal = fw.c_float_literals if floats else c_int_array
    inputs = [
        {**x, "per_sample": int(a[0].size), "data": literal(a.reshape(-1))}
        for x, a in zip(graph["inputs"], arrays, strict=True)
    ]
    outputs = [{**y, "per_run": (_length(report, y, steps) if y["sequence"] else 1) * y["size"]}
               for y in graph["outputs"]]  # fmt: skip
    return {"inputs": inputs, "outputs": outputs}


def _link_and_size(
    out_dir: Path, report: dict, board: Board, bdir: Path, harness: str, semihosting: bool
) -> fw.BuildResult:
    """Compile the model and a rendered harness with the board's firmware; link; sizes."""
    name = fw._check_name(report["name"])
    origin = {
        "flash_origin": f"0x{board.flash.origin:08X}",
        "ram_origin": f"0x{board.ram.origin:08X}",
    }
    fw._write_if_changed(bdir / "link.ld", fw._render("firmware/link.ld.j2", board=board, **origin))
    fw._write_if_changed(bdir / "harness.c", harness)
    model = SimpleNamespace(name=name, flash_bytes="?", ram_bytes="?")
    sources = fw._sources(out_dir, model, board, bdir, semihosting)
    objs = fw._compile(sources, fw._compile_flags(board, out_dir, bdir), bdir, board.name)
    elf, map_file = fw._link(objs, board, bdir, model)
    uf2_path = None
    if board.uf2_family is not None:
        from lstm_embed.targets import uf2

        uf2_path = elf.with_suffix(".uf2")
        uf2_path.write_bytes(uf2.elf_to_uf2(elf.read_bytes(), board.uf2_family))
    return fw.BuildResult(
        board.name,
        elf,
        map_file,
        fw.elf_sizes(elf),
        fw.model_sizes(map_file, name, state_symbol="harness_state"),
        fw.console_of(board, semihosting),
        uf2_path,
    )


def build_graph(
    out_dir: str | Path,
    board: str,
    inputs: dict[str, Any] | None = None,
    floats: bool = False,
    semihosting: bool = False,
) -> fw.BuildResult:
    """Build out_dir's graph into out_dir/build/<board>/firmware.elf with ``inputs`` (by input
    name; int16 for run/step, or float32 with ``floats`` for run_f32/step_f32) compiled in;
    without inputs, one fixed pseudo-random int16 window."""
    out_dir = Path(out_dir)
    report = graph_report(out_dir)
    b = get_board(board)
    if inputs is None:
        inputs, floats = default_inputs(report), False
    arrays, steps = _arrays(report, inputs, floats)
    bdir = fw.build_dir(out_dir, board)
    bdir.mkdir(parents=True, exist_ok=True)
    suffix = "_f32" if floats else ""
    harness = fw._render(
        "firmware/graph_harness.c.j2",
        name=report["name"],
        NAME=report["name"].upper(),
        board=b.name,
        samples=len(arrays[0]),
        timesteps=steps,
        streaming=not report["run_only"],
        floats=floats,
        suffix=suffix,
        ctype="float" if floats else "int16_t",
        **_io_context(report, arrays, steps, floats),
    )
    return _link_and_size(out_dir, report, b, bdir, harness, semihosting)


def build_folder(out_dir: str | Path, board: str, semihosting: bool = False) -> fw.BuildResult:
    """`lstm-embed build`: a chain's folder or a graph's, with the default input."""
    if is_graph_folder(out_dir):
        return build_graph(out_dir, board, semihosting=semihosting)
    return fw.build(out_dir, board, semihosting=semihosting)


def _parse(stdout: str, report: dict, entry: str, samples: int, steps: int) -> list[np.ndarray]:
    """The harness's lines of one entry point -> the outputs in the model's order, shaped as
    ``graph_host.run_graph_host``'s (float32 from the printed bits for the _f32 entries)."""
    outputs = report["graph"]["outputs"]
    rows = [line.split()[1:] for line in stdout.splitlines() if line.split(" ", 1)[0] == entry]
    stepped = entry.startswith("step")
    per_row = [(steps if stepped else _length(report, y, steps) if y["sequence"] else 1)
               * y["size"] for y in outputs]  # fmt: skip
    if len(rows) != samples or "done " not in stdout or any(len(r) != sum(per_row) for r in rows):
        raise ValueError(f"harness output incomplete ({entry}: {len(rows)} of {samples} rows)")
    values = np.array([[int(v) for v in row] for row in rows], np.int64)
    if entry.endswith("_f32"):
        values = values.astype(np.uint32).view(np.float32)
    else:
        values = values.astype(np.int16)
    if stepped:  # per timestep, every output in turn
        sizes = [y["size"] for y in outputs]
        return np.split(values.reshape(samples, steps, -1), np.cumsum(sizes)[:-1], axis=2)
    parts = np.split(values, np.cumsum(per_row)[:-1], axis=1)
    shapes = [(samples, _length(report, y, steps), y["size"]) if y["sequence"]
              else (samples, y["size"]) for y in outputs]  # fmt: skip
    return [p.reshape(s) for p, s in zip(parts, shapes, strict=True)]


def run_graph_qemu(
    out_dir: str | Path,
    board: str,
    inputs: dict[str, Any],
    floats: bool = False,
    timeout: float = fw.QEMU_TIMEOUT_S,
) -> dict[str, list[np.ndarray]]:
    """run() (and step() when the graph streams) of every sample in QEMU; with ``floats``,
    run_f32() and step_f32() on float inputs. Returns {entry: outputs shaped as
    ``graph_host.run_graph_host``'s for that entry}."""
    out_dir = Path(out_dir)
    report = graph_report(out_dir)
    b = get_board(board)
    fw.qemu_command(b, Path("firmware.elf"))  # refuse real boards before building
    arrays, steps = _arrays(report, inputs, floats)
    result = build_graph(out_dir, board, inputs, floats)
    cmd = fw.qemu_command(b, result.elf)
    log = result.elf.parent / "qemu.log"
    stdout = fw._run_firmware(cmd, timeout, log)
    run, step = ENTRIES[floats]
    entries = (run,) if report["run_only"] else (run, step)
    try:
        return {e: _parse(stdout, report, e, len(arrays[0]), steps) for e in entries}
    except ValueError as error:
        raise fw.FirmwareToolError(str(error), cmd, stdout, log=log) from error


def run_graph_on_board(
    out_dir: str | Path,
    board: str,
    inputs: dict[str, Any],
    port: str,
    timeout: float = fw.REAL_BOARD_TIMEOUT_S,
) -> dict[str, list[np.ndarray]]:
    """A real board: build with the float ``inputs`` compiled in (run_f32, and step_f32 where
    the graph streams), flash it, read its UART on ``port`` until it exits; the outputs as
    ``run_graph_qemu``'s with ``floats``."""
    from lstm_embed.targets import serial_port

    out_dir = Path(out_dir)
    b = get_board(board)
    if b.emulated:
        raise fw.FirmwareError(f"board {board} is emulated: run it without --port")
    serial_port.require_pyserial()
    report = graph_report(out_dir)
    arrays, steps = _arrays(report, inputs, True)
    result = build_graph(out_dir, board, inputs, floats=True)
    if result.console != "uart":
        raise fw.FirmwareError(f"{board} was built with semihosting; `run --port` reads its UART")
    done = serial_port.run_over_serial(
        port, lambda: fw.flash(out_dir, board, rebuild=False), timeout
    )
    if done.status != 0:
        raise fw.FirmwareError(
            f"the firmware on {board} ended with status {done.status}:\n{done.text[-500:]}"
        )
    entries = ENTRIES[True][:1] if report["run_only"] else ENTRIES[True]
    try:
        return {e: _parse(done.text, report, e, len(arrays[0]), steps) for e in entries}
    except ValueError as error:
        raise fw.FirmwareError(f"{board}: {error}\n{done.text[-500:]}") from error


def build_graph_bench(out_dir: Path, board: Board, bdir: Path) -> fw.BuildResult:
    """The profile build: one run() of a whole pseudo-random window, then (when the graph
    streams) one step() per timestep, each bracketed by the trace markers; the harness prints
    the arena's and the state's sizeof and the stack high-water mark."""
    report = graph_report(out_dir)
    arrays, steps = _arrays(report, default_inputs(report), False)
    buffers = report["buffers"]
    bdir.mkdir(parents=True, exist_ok=True)
    harness = fw._render(
        "firmware/graph_bench_harness.c.j2",
        name=report["name"],
        NAME=report["name"].upper(),
        board=board.name,
        timesteps=steps,
        streaming=not report["run_only"],
        has_arena=max(buffers["arena_bytes"], buffers["step_arena_bytes"]) > 0,
        paint_words=(board.stack_bytes - 512) // 4,
        **_io_context(report, arrays, steps, False),
    )
    return _link_and_size(out_dir, report, board, bdir, harness, False)


def parse_bench(stdout: str) -> dict[str, int]:
    """{"arena", "state", "stack"} bytes from the graph profile harness's lines."""
    found = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in ("arena", "state", "stack", "done") and value.strip().isdigit():
            found[key] = int(value)
    if len(found) != 4:
        raise fw.FirmwareError(f"graph profile harness output incomplete:\n{stdout[-400:]}")
    del found["done"]
    return found
