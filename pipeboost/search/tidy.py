"""Tidy rows for searches and comparisons: flat metric names, Pareto marking, CSV output.

Every function returns plain lists of dicts (one row per trial or run) that ``pandas.DataFrame`` accepts
directly, so notebooks only plot. Metric names carry their unit suffix (``_s`` seconds).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

_STATS = ("mean", "p50", "p90", "p99", "max")
_NESTED = ("ttft_s", "tpot_s", "latency_s", "recovery_s", "time_to_full_replica_s")
_SCALARS = ("cold_start_s", "gpu_seconds", "makespan_s", "first_mode_switch_s", "failures", "gpus_used",
            "requests", "finished", "errors", "lost")
# Metrics that are absent when nothing happened (no failure -> no recovery): read as 0 s.
_ZERO_WHEN_ABSENT = ("recovery_mean_s", "recovery_p50_s", "recovery_p90_s", "recovery_p99_s", "recovery_max_s")

METRIC_NAMES: tuple[str, ...] = tuple(
    [f"{key[:-2]}_{q}_s" for key in _NESTED for q in _STATS] + list(_SCALARS) + ["unserved"])


def flat_metrics(summary: Mapping[str, Any]) -> dict[str, float | None]:
    """Flatten :func:`pipeboost.metrics.summarize` output: ``ttft_s.p99`` -> ``ttft_p99_s`` (seconds).

    ``unserved`` = requests that neither finished nor were answered with an error; recovery metrics of a
    run without failures are 0 s.
    """
    flat: dict[str, float | None] = {}
    for key in _NESTED:
        stats = summary.get(key) or {}
        for q in _STATS:
            flat[f"{key[:-2]}_{q}_s"] = stats.get(q)
    for key in _SCALARS:
        flat[key] = summary.get(key)
    flat["unserved"] = (summary.get("requests", 0) or 0) - (summary.get("finished", 0) or 0)
    for key in _ZERO_WHEN_ABSENT:
        if flat[key] is None:
            flat[key] = 0.0
    return flat


def pareto_mask(values: Sequence[Sequence[float]], directions: Sequence[str],
                eligible: Sequence[bool] | None = None) -> list[bool]:
    """For each point, whether no other eligible point dominates it (all objectives no worse, one better).

    ``directions`` are ``minimize``/``maximize`` per objective; ineligible points (infeasible, failed) are
    never on the front and never dominate.
    """
    sign = [1.0 if d == "minimize" else -1.0 for d in directions]
    ok = list(eligible) if eligible is not None else [True] * len(values)
    pts = [tuple(s * v for s, v in zip(sign, row)) for row in values]
    for i, p in enumerate(pts):
        if ok[i] and not all(math.isfinite(x) for x in p):
            ok[i] = False
    mask = []
    for i, p in enumerate(pts):
        if not ok[i]:
            mask.append(False)
            continue
        dominated = any(ok[j] and j != i and all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p))
                        for j, q in enumerate(pts))
        mask.append(not dominated)
    return mask


def write_rows_csv(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows (dicts) as CSV, columns in first-seen order; ``None`` as an empty cell."""
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return path
