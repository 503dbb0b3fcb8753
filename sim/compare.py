"""PipeBoost against its baselines on one scenario, with the same cost model and workload.

:func:`compare_modes` runs the scenario once per serving mode (``pipeboost``, ``load_then_run``,
``pipeline_only``, ``tensor_parallel``) and returns one row per mode: cold start (first token of the run
minus first arrival), TTFT statistics, and GPU-seconds *allocated* (per GPU, from its STARTUP to its
RELEASE or FAILURE, summed over instances), plus ratios to PipeBoost. :func:`format_rows` prints them.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterable, Sequence

from pipeboost.errors import PlanError
from pipeboost.metrics import allocated_seconds_per_gpu, summarize
from pipeboost.scenario_model import Scenario
from pipeboost.trace import TraceRecord
from sim.engine import run_simulation

logger = logging.getLogger(__name__)

COMPARED_MODES = ("pipeboost", "load_then_run", "pipeline_only", "tensor_parallel")


def allocated_gpu_seconds(trace: Iterable[TraceRecord]) -> float:
    """Sum over GPUs of the time between each STARTUP and the next RELEASE or FAILURE of that GPU."""
    return sum(allocated_seconds_per_gpu(trace).values())


def mode_row(scenario: Scenario, mode: str) -> dict[str, Any]:
    """Run ``scenario`` in serving ``mode``; one row of metrics (``error`` set if the plan is invalid)."""
    variant = dataclasses.replace(scenario, policies=dataclasses.replace(scenario.policies, mode=mode))
    try:
        result = run_simulation(variant, token_records=False, step_records=False)
    except PlanError as err:
        return {"mode": mode, "error": str(err)}
    summary = summarize(result.trace)
    ttft = summary["ttft_s"]
    return {"mode": mode, "finished": result.finished, "errors": result.errors,
            "cold_start_s": summary["cold_start_s"], "ttft_mean_s": ttft["mean"], "ttft_p50_s": ttft["p50"],
            "ttft_p99_s": ttft["p99"], "gpu_seconds": allocated_gpu_seconds(result.trace),
            "instances": result.instances}


_RATIOS = {"cold_start_s": "cold_start_vs_pipeboost", "ttft_mean_s": "ttft_mean_vs_pipeboost",
           "ttft_p99_s": "ttft_p99_vs_pipeboost", "gpu_seconds": "gpu_seconds_vs_pipeboost"}


def compare_modes(scenario: Scenario, modes: Sequence[str] = COMPARED_MODES) -> list[dict[str, Any]]:
    """One row per mode, with ``*_vs_pipeboost`` ratios (baseline / PipeBoost) when PipeBoost ran."""
    rows = [mode_row(scenario, m) for m in modes]
    base = next((r for r in rows if r["mode"] == "pipeboost" and "error" not in r), None)
    for row in rows:
        if base is None or "error" in row:
            continue
        for key, ratio in _RATIOS.items():
            if row[key] is not None and base[key]:
                row[ratio] = row[key] / base[key]
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of :func:`compare_modes` rows (times in ms, GPU-seconds in s)."""
    head = f"{'mode':<16}{'cold start ms':>14}{'TTFT mean ms':>14}{'TTFT p99 ms':>13}{'GPU-s':>10}{'TTFT x':>8}{'GPU-s x':>9}"
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['mode']:<16} error: {r['error']}")
            continue
        ms = lambda v: f"{v * 1e3:.2f}" if v is not None else "-"  # noqa: E731
        lines.append(f"{r['mode']:<16}{ms(r['cold_start_s']):>14}{ms(r['ttft_mean_s']):>14}{ms(r['ttft_p99_s']):>13}"
                     f"{r['gpu_seconds']:>10.2f}{r.get('ttft_mean_vs_pipeboost', 0):>8.2f}"
                     f"{r.get('gpu_seconds_vs_pipeboost', 0):>9.2f}")
    return "\n".join(lines)
