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
    assert "not checked against silicon" in capsys.readouterr().out
    # the estimate from the same trace: every instruction costs at least a cycle but the
    # folded IT, so on these kernels cycles exceed instructions; time = cycles / clock
    b = get_board(board)
    assert row["clock_hz"] == b.clock_hz
    assert row["estimated_cycles_per_step"] > row["instructions_per_step"]
    assert row["estimated_us_per_step"] == pytest.approx(
        1e6 * row["estimated_cycles_per_step"] / b.clock_hz, abs=1e-3
    )


def test_profile_clock_override_and_a_real_board(converted, tmp_path):
    """A real board is traced on its core's QEMU machine and costed at its own clock, or at
    --clock-hz."""
    path = tmp_path / "p.json"
    argv = ["profile", str(converted), "--board", "nucleo-f411re", "--board", "qemu-m4"]
    assert cli.main([*argv, "--clock-hz", "50e6", "--json", str(path)]) == 0
    f411, m4 = json.loads(path.read_text())
    assert f411["traced_on"] == "qemu-m4" and f411["clock_hz"] == m4["clock_hz"] == 50_000_000
    assert f411["instructions_per_step"] == m4["instructions_per_step"]
    # 3 wait states on cache misses: never fewer cycles than the zero-wait-state machine
    assert f411["estimated_cycles_per_step"] >= m4["estimated_cycles_per_step"]
    # both figures are rounded (cycles to 0.1, us to 0.001): 0.1 / 50 + 0.0005 apart at most
    assert f411["estimated_us_per_step"] == pytest.approx(
        f411["estimated_cycles_per_step"] / 50, abs=0.1 / 50 + 5e-4
    )
    assert any("lstm" in name for name in f411["estimated_cycles_by_function"])


def test_profile_has_no_estimate_without_published_timings(converted, tmp_path):
    path = tmp_path / "p.json"
    assert cli.main(["profile", str(converted), "--board", "qemu-m55", "--json", str(path)]) == 0
    (row,) = json.loads(path.read_text())
    assert row["estimated_cycles_per_step"] is None and row["estimated_us_per_step"] is None


def test_profile_refuses_an_unknown_board(converted, capsys):
    assert cli.main(["profile", str(converted), "--board", "qemu-m99"]) == 2
    assert "not a board profile can trace" in capsys.readouterr().err


def test_bench_takes_its_own_options(capsys):
    """`lstm-embed bench --quick ...` used to fail with 'unrecognized arguments'."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--quick", "--boards", "no-such-board"])
    assert exit_info.value.code == 2  # bench's own parser saw both options
