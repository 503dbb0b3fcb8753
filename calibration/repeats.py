"""Executor repeats: one validation scenario measured several times, each quantity taken as the median.

The executor on CPU virtual devices is a measurement with noise (thread scheduling on shared cores,
memory-bandwidth bursts of the loaders): the same scenario measured twice can differ by 5-15% in a
request's TTFT. :func:`merge_repeats` combines the rows of ``K`` runs compared with one simulation: per
quantity (component and key) the executor value is the median over the runs that have it, and
``executor_spread = (max - min) / median`` says how much the runs disagreed — the noise floor against
which the simulator's error is read. :func:`split_halves` measures that floor as an error: the median of
the odd-numbered runs against the median of the even-numbered ones, compared as the simulator is.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

from calibration.align import Row

TRACE_GLOB = "trace*.jsonl"
"""Executor traces of one scenario: ``trace.jsonl`` (run 1), ``trace-2.jsonl``, ... (later repeats)."""


def trace_name(run: int) -> str:
    """File name of the executor trace of ``run`` (0-based)."""
    return "trace.jsonl" if run == 0 else f"trace-{run + 1}.jsonl"


def repeat_traces(folder: Path) -> list[Path]:
    """The executor traces an earlier run wrote into ``folder`` (run order)."""
    def run_of(path: Path) -> int:
        stem = path.stem
        return 0 if stem == "trace" else int(stem.rsplit("-", 1)[1]) - 1
    return sorted(Path(folder).glob(TRACE_GLOB), key=run_of)


def merge_repeats(runs: Sequence[Sequence[Row]]) -> list[Row]:
    """One row per (component, key) over ``runs`` (each: rows of one executor run against the simulation),
    in first-seen order; executor value = median of the runs that measured it, with its spread."""
    if len(runs) == 1:
        return list(runs[0])
    order: list[tuple[str, str]] = []
    sims: dict[tuple[str, str], float | None] = {}
    values: dict[tuple[str, str], list[float]] = {}
    for rows in runs:
        for row in rows:
            key = (row.component, row.key)
            if key not in sims:
                order.append(key)
                sims[key] = row.sim_s
                values[key] = []
            if row.executor_s is not None:
                values[key].append(row.executor_s)
    merged = []
    for key in order:
        got = values[key]
        median = statistics.median(got) if got else None
        spread = (max(got) - min(got)) / median if got and median else None
        merged.append(Row(key[0], key[1], sims[key], median, spread))
    return merged


def split_halves(runs: Sequence[Sequence[Row]]) -> list[Row]:
    """The executor against itself: one row per (component, key) measured by runs of both halves, with
    ``sim_s`` = the median over the even-indexed runs (0, 2, ...) and ``executor_s`` = the median over the
    odd-indexed ones (1, 3, ...), so that ``rel_error`` is their disagreement. Rounds alternate between the
    halves, so a slow stretch of the machine falls on both. Empty with fewer than two runs.

    A simulator that predicted the executor's typical value exactly would score about this against a median
    of half the runs (against the median of all of them, somewhat less: the noise of a median shrinks with
    the number of runs)."""
    if len(runs) < 2:
        return []
    even, odd = merge_repeats(runs[0::2]), merge_repeats(runs[1::2])
    odd_values = {(r.component, r.key): r.executor_s for r in odd}
    return [Row(r.component, r.key, r.executor_s, odd_values[(r.component, r.key)])
            for r in even if r.executor_s is not None and odd_values.get((r.component, r.key)) is not None]
