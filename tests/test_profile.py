"""`lstm-embed profile` on a user's model, against an independent count of the same trace;
`lstm-embed bench` takes its own options."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lstm_embed import cli
from lstm_embed.pipeline import convert
from lstm_embed.targets import firmware
from lstm_embed.targets.boards import get_board
from lstm_embed.targets.hostbuild import read_report
from lstm_embed.tools import bench
from lstm_embed.tools.profile import profile_input

FIXTURE = Path(__file__).parent / "fixtures" / "keras" / "lstm_dense.k3.keras"
PC = re.compile(r"\[[0-9a-f]+/([0-9a-f]{8})/")

pytestmark = pytest.mark.firmware


def independent_counts(elf: Path, board: str, log: Path) -> list[int]:
    """Instructions strictly between each entry of harness_mark_begin and harness_mark_end,
    from QEMU's one-line-per-instruction log, parsed line by line (not bench's chunked scan)."""
    begin = firmware._symbol_address(elf, "harness_mark_begin")
    end = firmware._symbol_address(elf, "harness_mark_end")
    extra = ("-singlestep", "-d", "exec,nochain", "-D", str(log))
    subprocess.run(firmware.qemu_command(get_board(board), elf, extra), check=True,
                   capture_output=True, stdin=subprocess.DEVNULL)  # fmt: skip
    pcs = [int(m[1], 16) for line in log.read_text().splitlines() if (m := PC.search(line))]
    starts = [i for i, pc in enumerate(pcs) if pc == begin]
    ends = [i for i, pc in enumerate(pcs) if pc == end]
    return [e - s - 1 for s, e in zip(starts, ends, strict=True)]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("profile") / "out"
    with np.load(FIXTURE.with_name("lstm_dense.k3.npz")) as data:
        convert(FIXTURE, data["x"], out)
    return out


@pytest.mark.parametrize("board", ["qemu-m0", "qemu-m4"])
def test_profile_counts_equal_an_independent_trace_count(converted, tmp_path, capsys, board):
    assert (
        cli.main(["profile", str(converted), "--board", board, "--json", str(tmp_path / "p.json")])
        == 0
    )
    (row,) = json.loads((tmp_path / "p.json").read_text())
    assert {"board", "instructions_per_step", "flash_bytes", "ram_bytes", "stack_bytes"} <= set(row)
    report = read_report(converted)
    elf, _ = bench.build_bench(converted, board, profile_input(report), False, tmp_path / "b",
                               name=report["name"])  # fmt: skip
    counts = independent_counts(elf, board, tmp_path / "exec.log")
    assert len(counts) == row["steps"]
    assert row["instructions_per_step"] == pytest.approx(np.mean(counts))
    assert (row["instructions_min"], row["instructions_max"]) == (min(counts), max(counts))
    assert row["ram_bytes"] == row["state_bytes"] + row["stack_bytes"] > 0
    assert "not cycles" in capsys.readouterr().out


def test_profile_refuses_a_real_board(converted, capsys):
    assert cli.main(["profile", str(converted), "--board", "nucleo-l476rg"]) == 2
    assert "not an emulated board" in capsys.readouterr().err


def test_bench_takes_its_own_options(capsys):
    """`lstm-embed bench --quick ...` used to fail with 'unrecognized arguments'."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--quick", "--boards", "no-such-board"])
    assert exit_info.value.code == 2  # bench's own parser saw both options
