"""Pareto front, recommendation and hypervolume over measured points.

Objectives are oriented so that smaller is better for all of them: ``1 - quality``,
``latency_ratio``, ``size_ratio`` and ``memory_ratio`` (when measured).
"""

from __future__ import annotations

from collections.abc import Sequence

Vector = tuple[float, ...]


def dominates(a: Vector, b: Vector) -> bool:
    """``a`` is no worse than ``b`` everywhere and better somewhere (all objectives minimised)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def non_dominated(points: Sequence[Vector]) -> list[bool]:
    """For each point, whether no other point dominates it (duplicates all stay on the front)."""
    return [not any(dominates(q, p) for j, q in enumerate(points) if j != i) for i, p in enumerate(points)]


def hypervolume(points: Sequence[Vector], reference: Vector) -> float:
    """Exact hypervolume dominated by ``points`` inside the box below ``reference`` (minimisation).

    Recursive slicing over the first objective: fine for the few dozen points a search produces
    and 2-4 objectives. Points not strictly below the reference in every objective add nothing.
    """
    pts = [p for p in points if all(x < r for x, r in zip(p, reference, strict=True))]
    if not pts:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in pts)
    pts.sort(key=lambda p: p[0])
    volume = 0.0
    for i, p in enumerate(pts):
        upper = pts[i + 1][0] if i + 1 < len(pts) else reference[0]
        width = upper - p[0]
        if width <= 0:
            continue
        volume += width * hypervolume([q[1:] for q in pts[: i + 1]], reference[1:])
    return volume
