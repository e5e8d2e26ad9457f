"""A graph's C on emulated Cortex-M boards: the model's NAME.c with a graph harness
(templates/firmware/graph_harness.c.j2, the samples' int16 inputs compiled in), built and run
in QEMU with the chain's firmware pieces (``firmware``: startup, semihosting, link script)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from lstm_embed.emit.cformat import c_int_array
from lstm_embed.targets import firmware as fw
from lstm_embed.targets.boards import get_board
from lstm_embed.targets.graph_host import graph_report


def run_graph_qemu(
    out_dir: str | Path,
    board: str,
    inputs_q: dict[str, np.ndarray],
    timeout: float = fw.QEMU_TIMEOUT_S,
) -> dict[str, list[np.ndarray]]:
    """run() (and step() when the graph streams) of every sample in QEMU: {"run": outputs
    shaped as ``graph_host.run_graph_host``'s, "step": likewise, a row per timestep}."""
    out_dir = Path(out_dir)
    report = graph_report(out_dir)
    graph, name = report["graph"], report["name"]
    b = get_board(board)
    fw.qemu_command(b, Path("firmware.elf"))  # refuse real boards before building
    arrays = [np.asarray(inputs_q[x["name"]], np.int16) for x in graph["inputs"]]
    samples, steps = len(arrays[0]), report["timesteps"]
    streaming = not report["run_only"]
    inputs = [
        {**x, "per_sample": int(a[0].size), "data": c_int_array(a.reshape(-1))}
        for x, a in zip(graph["inputs"], arrays, strict=True)
    ]
    outputs = [{**y, "per_run": ((y.get("timesteps") or steps) if y["sequence"] else 1)
                * y["size"]} for y in graph["outputs"]]  # fmt: skip
    bdir = fw.build_dir(out_dir, board)
    bdir.mkdir(parents=True, exist_ok=True)
    origin = {"flash_origin": f"0x{b.flash.origin:08X}", "ram_origin": f"0x{b.ram.origin:08X}"}
    fw._write_if_changed(bdir / "link.ld", fw._render("firmware/link.ld.j2", board=b, **origin))
    harness = fw._render(
        "firmware/graph_harness.c.j2",
        name=name,
        NAME=name.upper(),
        board=b.name,
        samples=samples,
        timesteps=steps,
        inputs=inputs,
        outputs=outputs,
        streaming=streaming,
    )
    fw._write_if_changed(bdir / "harness.c", harness)
    model = SimpleNamespace(name=name, flash_bytes="?", ram_bytes="?")
    sources = fw._sources(out_dir, model, b, bdir, False)  # the board's default console
    objs = fw._compile(sources, fw._compile_flags(b, out_dir, bdir), bdir, board)
    elf, _ = fw._link(objs, b, bdir, model)
    cmd = fw.qemu_command(b, elf)
    stdout = fw._run_firmware(cmd, timeout, elf.parent / "qemu.log")
    result = {}
    for entry in ("run", "step") if streaming else ("run",):
        rows = [line.split()[1:] for line in stdout.splitlines() if line.split(" ", 1)[0] == entry]
        if len(rows) != samples or "done " not in stdout:
            raise fw.FirmwareToolError(f"harness output incomplete ({entry})", cmd, stdout)
        values = np.array([[int(v) for v in row] for row in rows], np.int64).astype(np.int16)
        if entry == "run":
            sizes = [y["per_run"] for y in outputs]
            parts = np.split(values, np.cumsum(sizes)[:-1], axis=1)
            shapes = [(samples, steps, y["size"]) if y["sequence"] else (samples, y["size"])
                      for y in outputs]  # fmt: skip
            result[entry] = [p.reshape(s) for p, s in zip(parts, shapes, strict=True)]
        else:
            per_step = values.reshape(samples, steps, -1)
            sizes = [y["size"] for y in outputs]
            result[entry] = np.split(per_step, np.cumsum(sizes)[:-1], axis=2)
    return result
