"""Bench rows of one layer inside a run-only model: instructions per MAC of that layer alone.

A layer such as a Conv2D cannot be a model by itself (a model has a recurrent core), and its
model has no step() when the layer reads several frames. So each row converts two
random-weight models with the same recurrent core: the layer followed by the core, and the core
alone on the layer's output shape. Each is traced over one ``run()`` of its window under QEMU
(``profile.profile_board``, the same trace as the bench), and the layer's instructions are the
difference of the two counts (exact, since both counts are; the core runs the same code on the
same number of timesteps). Divided by the layer's MACs over the window.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lstm_embed.ir.model import DenseLayer, Model
from lstm_embed.kinds.common import RecurrentOptions
from lstm_embed.kinds.conv2d import Conv2DLayer
from lstm_embed.kinds.gru import GRULayer
from lstm_embed.pipeline import convert_ir
from lstm_embed.quantize.calibration import CalibrationWarning
from lstm_embed.targets.boards import EMULATED_BOARDS
from lstm_embed.tools import profile
from lstm_embed.tools.bench import replace_sections

CORE_UNITS = 1  # the recurrent core is kept as small as a model allows
BOARDS = ("qemu-m0", "qemu-m4", "qemu-m55")


@dataclass(frozen=True)
class LayerRow:
    label: str
    steps: int  # the window's timesteps
    input_size: int
    layer: Callable[[np.random.Generator], Conv2DLayer]
    macs: int  # of the layer over the window
    out_steps: int
    out_size: int

    def models(self, seed: int = 0) -> tuple[Model, Model]:
        """(layer + core, core alone), the core's weights the same in both."""
        rng = np.random.default_rng(seed)
        layer = self.layer(rng)
        core = _core(np.random.default_rng(seed + 1), self.out_size)
        with_layer = Model("bench", self.input_size, self.steps, (layer, *core))
        alone = Model("bench", self.out_size, self.out_steps, core)
        return with_layer, alone


def _core(rng: np.random.Generator, width: int) -> tuple:
    n = CORE_UNITS
    gru = GRULayer(
        name="gru",
        input_size=width,
        units=n,
        kernel=rng.uniform(-0.1, 0.1, (width, 3 * n)),
        recurrent_kernel=rng.uniform(-0.5, 0.5, (n, 3 * n)),
        bias=rng.uniform(-0.1, 0.1, (2, 3 * n)),
    )
    backwards = RecurrentOptions(gru, go_backwards=True)
    return (backwards, DenseLayer("dense", n, 2, rng.uniform(-1, 1, (n, 2)), np.zeros(2)))


def _kws_conv(rng: np.random.Generator) -> Conv2DLayer:
    """The keyword spotter's Conv2D(8, 3x3, relu) on 49 x 40 x 1 (Glorot-uniform weights)."""
    limit = np.sqrt(6.0 / (9 + 72))
    kernel = rng.uniform(-limit, limit, (3, 3, 1, 8))
    return Conv2DLayer("conv2d", 40, (40, 1), 8, (3, 3), kernel, rng.uniform(-0.1, 0.1, 8), "relu")


# the keyword spotter's Conv2D over 9 of its 49 frames: the cost is per output frame (the
# same code for every frame), and behind a GRU reading backwards (no frame run) a 49-frame
# window's int16 output (28.6 KB) would not fit the M0 board's 16 KB of RAM
ROWS = (LayerRow("Conv2D 1->8 3x3 on 49x40", 9, 40, _kws_conv, 7 * 38 * 8 * 9, 7, 38 * 8),)

# (board, row label, instructions per MAC): the floor of the core's Conv2D loop (M0: the
# straight-line gather and one 9-MAC row per filter; M4, M55: positions in the lanes) plus a
# margin; the reasoning is in templates/bench.md.j2
TARGETS = (
    ("qemu-m4", "Conv2D 1->8 3x3 on 49x40", 3.5),
    ("qemu-m0", "Conv2D 1->8 3x3 on 49x40", 12.0),
    ("qemu-m55", "Conv2D 1->8 3x3 on 49x40", 1.2),
)


@dataclass(frozen=True)
class LayerResult:
    row: str
    board: str
    macs: int
    instructions: int  # the layer's, over the window
    run_with_layer: int
    run_core_alone: int
    flash_bytes: int  # the whole model with the layer

    @property
    def per_mac(self) -> float:
        return self.instructions / self.macs


def _calibration(model: Model, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (64, model.timesteps, model.input_size)).astype(np.float32)


def run_rows(
    boards: Sequence[str], rows: Sequence[LayerRow] = ROWS, work: Path | None = None
) -> list[LayerResult]:
    results = []
    with tempfile.TemporaryDirectory(prefix="lstm-embed-bench-layers-") as tmp:
        root = Path(work) if work is not None else Path(tmp)
        for k, row in enumerate(rows):
            folders = []
            for part, model in zip(("layer", "core"), row.models(), strict=True):
                calibration = _calibration(model, k)
                if part == "core":  # the core sees what the layer gives it
                    calibration = np.maximum(calibration[:, : row.out_steps], 0)
                out = root / f"row{k}-{part}"
                convert_ir(model, calibration, out, force=True)
                folders.append(out)
            for board in boards:
                with_layer, alone = (
                    profile.profile_board(f, board, root / f"row{k}-{i}-{board}")
                    for i, f in enumerate(folders)
                )
                full = int(with_layer.instructions_per_run or 0)
                core = int(alone.instructions_per_run or 0)
                results.append(
                    LayerResult(
                        row.label,
                        board,
                        row.macs,
                        full - core,
                        full,
                        core,
                        with_layer.flash_bytes,
                    )
                )
    return results


def target_rows(results: Sequence[LayerResult]) -> list[dict]:
    rows = []
    for board, label, limit in TARGETS:
        found = next((r for r in results if r.board == board and r.row == label), None)
        measured = None if found is None else round(found.per_mac, 3)
        status = "not run" if found is None else ("met" if found.per_mac <= limit else "MISSED")
        rows.append({"board": board, "shape": label, "metric": "per_mac", "target": limit,
                     "measured": measured, "status": status})  # fmt: skip
    return rows


def format_results(results: Sequence[LayerResult]) -> str:
    lines = [
        "| layer | core | MACs (window) | instr. (layer) | instr/MAC | run() with layer |"
        " run() core alone |",
        "|" + "---|" * 7,
    ]
    for r in results:
        lines.append(
            f"| {r.row} | {r.board.removeprefix('qemu-')} | {r.macs:,} | {r.instructions:,} |"
            f" {r.per_mac:.2f} | {r.run_with_layer:,} | {r.run_core_alone:,} |"
        )
    return "\n".join(lines)


def format_targets(rows: Sequence[dict]) -> str:
    lines = ["| core | layer | metric | target | measured | status |", "|" + "---|" * 6]
    for r in rows:
        measured = "-" if r["measured"] is None else f"{r['measured']:.3f}"
        lines.append(
            f"| {r['board']} | {r['shape']} | instr/MAC | {r['target']} | {measured} |"
            f" {r['status']} |"
        )
    return "\n".join(lines)


def rows_json(results: Sequence[LayerResult]) -> list[dict]:
    return [{**asdict(r), "per_mac": round(r.per_mac, 3)} for r in results]


def markdown_section(results: Sequence[LayerResult]) -> str:
    return format_targets(target_rows(results)) + "\n\n" + format_results(results)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lstm_embed.tools.bench_window_layers [--boards ...] [--markdown PATH]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="+", choices=EMULATED_BOARDS, default=list(BOARDS))
    parser.add_argument("--markdown", metavar="PATH", help="regenerate its bench:layers section")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--work-dir", metavar="DIR", help="keep the builds here")
    args = parser.parse_args(argv)
    with warnings.catch_warnings():  # random calibration: the trust warnings are beside the point
        warnings.simplefilter("ignore", CalibrationWarning)
        results = run_rows(args.boards, work=Path(args.work_dir) if args.work_dir else None)
    print(markdown_section(results))
    if args.json:
        payload = {"results": rows_json(results), "targets": target_rows(results)}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
    if args.markdown:
        page = Path(args.markdown)
        sections = {"layers": markdown_section(results)}
        page.write_text(replace_sections(page.read_text(), sections, args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
