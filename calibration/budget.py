"""A wall-clock budget shared by the microbenchmark phases, and a timing helper.

Each phase gets a share of the total (``Budget.phase(share)``); a sweep stops adding points once its
phase deadline passes, but always keeps the minimum number of points a fit needs.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class Budget:
    """``total_s`` seconds from construction; :meth:`phase` hands out deadlines."""

    total_s: float

    def __post_init__(self) -> None:
        self.t0_s = time.perf_counter()
        self._allotted_s = 0.0

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.t0_s

    def remaining_s(self) -> float:
        return max(0.0, self.total_s - self.elapsed_s())

    def phase(self, share: float) -> "Deadline":
        """A deadline ``share`` of the total budget after the later of now and the last phase's end."""
        start = max(self.elapsed_s(), self._allotted_s)
        self._allotted_s = start + share * self.total_s
        return Deadline(self.t0_s + self._allotted_s)


@dataclass(frozen=True)
class Deadline:
    """An absolute ``time.perf_counter()`` instant."""

    at: float

    def passed(self) -> bool:
        return time.perf_counter() >= self.at

    def left_s(self) -> float:
        return max(0.0, self.at - time.perf_counter())


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1,
              sync: Callable[[], None] = lambda: None) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls (``sync`` after each)."""
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return times


def median_s(times: list[float]) -> float:
    """Median of a list of seconds."""
    return float(statistics.median(times))
