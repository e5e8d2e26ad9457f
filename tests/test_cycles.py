"""The cycle estimator against hand-counted instruction sequences.

Each expected total below is counted by hand from Arm's Technical Reference Manuals, written
out term by term in the test (not read from lstm_embed.cycles):
- Cortex-M4 TRM (DDI 0439B) Table 3-1 and section 3.3.2: data processing and MUL 1 cycle,
  LDR/STR 2, a load or store single right after one 1 (pipelined; not after a register-offset
  STR), PUSH/POP 1+N, POP with PC 1+N+P, B/BX taken 1+P, not taken 1, IT folded (0 cycles)
  after a 16-bit instruction; P, the refill, 1 to 3 cycles: the estimator counts 2.
- Cortex-M0 TRM (DDI 0432C) Table 3-1: loads and stores 2, PUSH 1+N, POP {.., PC} 4+N, B<cond>
  3 taken / 1 not, MULS 1 (single-cycle multiplier).
- Cortex-M0+ TRM (DDI 0484C) Table 3-1: the same but B<cond> 2 taken, POP {.., PC} 3+N.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lstm_embed.targets import cycles
from lstm_embed.targets.boards import FlashCache

P = 2  # the refill the estimator assumes (M3/M4 TRMs: 1 to 3)
RETURN = 0x100  # where the sequences' final branch goes

# objdump -d text, as arm-none-eabi-objdump prints it
M4_LOOP = """
   0:\tb530      \tpush\t{r4, r5, lr}
   2:\t6803      \tldr\tr3, [r0, #0]
   4:\t684c      \tldr\tr4, [r1, #4]
   6:\tfb03 f304 \tmul.w\tr3, r3, r4
   a:\t3a01      \tsubs\tr2, #1
   c:\td1f9      \tbne.n\t2 <loop>
   e:\tbd30      \tpop\t{r4, r5, pc}
"""
M0_LOOP = """
   0:\tb530      \tpush\t{r4, r5, lr}
   2:\t6803      \tldr\tr3, [r0, #0]
   4:\t684c      \tldr\tr4, [r1, #4]
   6:\t4363      \tmuls\tr3, r4
   8:\t3a01      \tsubs\tr2, #1
   a:\td1fa      \tbne.n\t2 <loop>
   c:\tbd30      \tpop\t{r4, r5, pc}
"""


def run(core: str, listing: str, pcs: list[int], next_pc: int = RETURN) -> int:
    program = cycles.parse_objdump(listing)
    timing = cycles.Timing(core, clock_hz=1_000_000)
    return cycles.estimate_step(timing, program, np.array(pcs), next_pc).cycles


def test_m4_loop_two_passes() -> None:
    pcs = [0x0, 0x2, 0x4, 0x6, 0xA, 0xC, 0x2, 0x4, 0x6, 0xA, 0xC, 0xE]
    push = 1 + 3
    first_pass = 2 + 1 + 1 + 1 + (1 + P)  # second LDR pipelined; BNE taken
    second_pass = 2 + 1 + 1 + 1 + 1  # after a taken branch no pipelining; BNE falls through
    pop_pc = 1 + 3 + P
    assert run("m4", M4_LOOP, pcs) == push + first_pass + second_pass + pop_pc  # 24


def test_m0_and_m0plus_loop_two_passes() -> None:
    pcs = [0x0, 0x2, 0x4, 0x6, 0x8, 0xA, 0x2, 0x4, 0x6, 0x8, 0xA, 0xC]
    push = 1 + 3
    loads_mul_sub = 2 + 2 + 1 + 1
    m0 = push + (loads_mul_sub + 3) + (loads_mul_sub + 1) + (4 + 2)  # POP {r4, r5, pc}: 4+N
    m0plus = push + (loads_mul_sub + 2) + (loads_mul_sub + 1) + (3 + 2)
    assert run("m0", M0_LOOP, pcs) == m0 == 26
    assert run("m0plus", M0_LOOP, pcs) == m0plus == 24


def test_m4_it_folds_only_after_a_16_bit_instruction() -> None:
    short = """
   0:\t2800      \tcmp\tr0, #0
   2:\tbf08      \tit\teq
   4:\t2001      \tmoveq\tr0, #1
   6:\t4770      \tbx\tlr
"""
    wide = """
   0:\tf1b0 0f00 \tcmp.w\tr0, #0
   4:\tbf08      \tit\teq
   6:\t2001      \tmoveq\tr0, #1
   8:\t4770      \tbx\tlr
"""
    assert run("m4", short, [0x0, 0x2, 0x4, 0x6]) == 1 + 0 + 1 + (1 + P)
    assert run("m4", wide, [0x0, 0x4, 0x6, 0x8]) == 1 + 1 + 1 + (1 + P)


def test_m4_nothing_pipelines_after_a_register_offset_store() -> None:
    listing = """
   0:\t5053      \tstr\tr3, [r2, r1]
   2:\t6804      \tldr\tr4, [r0, #0]
   4:\t6845      \tldr\tr5, [r0, #4]
   6:\t6086      \tstr\tr6, [r0, #8]
   8:\t4770      \tbx\tlr
"""
    expected = 2 + 2 + 1 + 1 + (1 + P)
    assert run("m4", listing, [0x0, 0x2, 0x4, 0x6, 0x8]) == expected


def test_m3_long_multiply_costs_more_than_on_m4() -> None:
    listing = "   0:\tfb82 0103 \tsmull\tr0, r1, r2, r3\n   4:\tfb02 f003 \tmla\tr0, r2, r3, r0\n"
    m4 = run("m4", listing, [0x0, 0x4], next_pc=0x8)
    m3 = run("m3", listing, [0x0, 0x4], next_pc=0x8)
    assert m4 == 1 + 1
    assert 3 + 2 <= m3 <= 5 + 2  # SMULL 3-5 (early termination), MLA 2 on the M3


def test_cores_without_published_timing_are_refused() -> None:
    insn = cycles.Instruction(0, 2, "adds", "r0, #1")
    with pytest.raises(ValueError, match="no cycle table for core 'm7'"):
        cycles.cost("m7", insn)


def test_flash_wait_states_on_non_sequential_cache_misses() -> None:
    timing = cycles.Timing(
        "m4", 100_000_000, flash_wait_states=3, flash_cache=FlashCache(lines=2, line_bytes=16),
        flash_start=0, flash_size=1 << 20,
    )  # fmt: skip
    fetch = cycles.FetchModel(timing)
    pcs = np.array([0x00, 0x0E, 0x10, 0x40, 0x02, 0x80, 0x40, 0x20000000])
    # 0x00 first fetch: miss, not after the previous line -> 3; 0x0E same line -> 0;
    # 0x10 next line: the prefetch covers it -> 0; 0x40 miss after a jump -> 3 (cache of 2
    # lines now holds 0x10 and 0x40; 0x00 was evicted); 0x02 miss again -> 3; 0x80 miss ->
    # 3 (evicts 0x40); 0x40 miss -> 3; SRAM is not flash -> 0
    assert fetch.stalls(pcs).tolist() == [3, 0, 0, 3, 3, 3, 3, 0]


def test_per_function_cycles_add_up() -> None:
    program = cycles.parse_objdump(M4_LOOP)
    pcs = np.array([0x0, 0x2, 0x4, 0x6, 0xA, 0xC, 0xE])
    table = [(0x0, 0x2, "prologue"), (0x2, 0xE, "loop")]
    timing = cycles.Timing("m4", 1_000_000)
    step = cycles.estimate_step(timing, program, pcs, RETURN, None, table)
    assert step.by_function == {"prologue": 4, "loop": step.cycles - 4}


def test_step_windows_match_the_bench_count() -> None:
    begin, end = 0x100, 0x200
    pcs = np.array([1, begin, 5, 6, 7, end, 9, begin, 5, end])
    assert cycles.step_windows(pcs, begin, end) == [(2, 5), (8, 9)]


@pytest.mark.skipif(shutil.which("arm-none-eabi-as") is None, reason="no arm-none-eabi-as")
def test_real_objdump_output_parses_as_the_listing(tmp_path: Path) -> None:
    """The same loop assembled and disassembled by binutils gives the same program."""
    source = tmp_path / "loop.s"
    source.write_text(
        ".syntax unified\n.thumb\n.text\n"
        "push {r4, r5, lr}\nloop:\nldr r3, [r0, #0]\nldr r4, [r1, #4]\nmul.w r3, r3, r4\n"
        "subs r2, #1\nbne.n loop\npop {r4, r5, pc}\n"
    )
    obj = tmp_path / "loop.o"
    subprocess.run(
        ["arm-none-eabi-as", "-mcpu=cortex-m4", "-mthumb", str(source), "-o", str(obj)],
        check=True,
    )
    program = cycles.disassemble(obj)
    expected = cycles.parse_objdump(M4_LOOP)
    assert [(i.address, i.size, i.base) for i in program.values()] == [
        (i.address, i.size, i.base) for i in expected.values()
    ]
