"""Buffer planning over a graph: where each intermediate tensor lives in one int16 arena.

A tensor is alive from the node that writes it to the last node that reads it (positions in
the topological order the C runs); two tensors alive at the same node never share memory, any
others may. Offsets are placed greedily, largest first, at the lowest offset that overlaps no
placed tensor alive at the same time. ``peak`` is the largest set alive at once (the least any
plan can use); the arena is at least that, equal when the placement packs perfectly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """One tensor to place: ``size`` int16 values alive over nodes ``first``..``last``."""

    name: str
    size: int
    first: int
    last: int

    def overlaps(self, other: Interval) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class Plan:
    offsets: dict[str, int]
    arena: int  # int16 values the arena holds
    peak: int  # int16 values of the largest set of tensors alive at once


def plan(intervals: list[Interval]) -> Plan:
    placed: list[tuple[Interval, int]] = []
    order = sorted(intervals, key=lambda i: (-i.size, i.first, i.name))
    for item in order:
        busy = sorted((off, off + other.size) for other, off in placed if other.overlaps(item))
        offset = 0
        for start, end in busy:
            if offset + item.size <= start:
                break
            offset = max(offset, end)
        placed.append((item, offset))
    offsets = {item.name: off for item, off in placed}
    arena = max((off + item.size for item, off in placed), default=0)
    points = {i.first for i in intervals} | {i.last for i in intervals}
    peak = max(
        (sum(i.size for i in intervals if i.first <= p <= i.last) for p in points), default=0
    )
    return Plan(offsets, arena, peak)
