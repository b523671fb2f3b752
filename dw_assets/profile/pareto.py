"""The cost/latency Pareto frontier: the configurations no other one beats on both (lower is better on both)."""
from __future__ import annotations

from typing import Hashable, Sequence


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """a is at least as good as b on both and strictly better on one."""
    return a[0] <= b[0] and a[1] <= b[1] and (a[0] < b[0] or a[1] < b[1])


def pareto_frontier(points: Sequence[tuple[Hashable, float, float]]) -> list[Hashable]:
    """Ids of the non-dominated (id, latency, cost) points, by rising latency. Exact ties are all kept: neither
    beats the other, and dropping one would hide an equally good choice."""
    front = [p for p in points if not any(dominates((q[1], q[2]), (p[1], p[2])) for q in points)]
    return [p[0] for p in sorted(front, key=lambda p: (p[1], p[2], str(p[0])))]
