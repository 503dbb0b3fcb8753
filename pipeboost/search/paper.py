"""The paper's headline comparison in simulation: PipeBoost against its baselines, one row per scenario.

PipeBoost (arXiv 2503.17707) reports 31%-49.8% lower inference latency than state-of-the-art low-latency
serving (ServerlessLLM-style load-then-run) and sub-second cold starts for OPT-1.3B. :func:`paper_row` runs
a scenario in every serving mode with the same workload and cost model (via :func:`sim.compare.compare_modes`)
and reports the reductions with the same sign convention: ``1 - pipeboost / load_then_run``.
"""

from __future__ import annotations

from typing import Any, Iterable

from pipeboost.scenario_model import Scenario

PAPER_REDUCTION_RANGE = (0.31, 0.498)  # fraction of latency saved vs the best low-latency baseline
PAPER_COLD_START_OPT_1_3B_S = 1.0      # "sub-second" cold start for OPT-1.3B
MODES = ("pipeboost", "load_then_run", "pipeline_only", "tensor_parallel")
_KEYS = ("cold_start_s", "ttft_mean_s", "ttft_p99_s", "gpu_seconds")


def paper_row(scenario: Scenario, modes: Iterable[str] = MODES) -> dict[str, Any]:
    """One wide tidy row: ``{mode}_{metric}`` for every mode (seconds; GPU-seconds allocated) plus
    ``reduction_ttft_mean`` / ``reduction_cold_start`` (fraction saved by PipeBoost vs load-then-run)."""
    from sim.compare import compare_modes

    row: dict[str, Any] = {"scenario": scenario.name, "model": scenario.model.name,
                           "gpus": scenario.serving.cold_start_gpus, "gpu_type": scenario.topology.gpu.name}
    for mode_row in compare_modes(scenario, tuple(modes)):
        for key in _KEYS:
            row[f"{mode_row['mode']}_{key}"] = mode_row.get(key)
        if "error" in mode_row:
            row[f"{mode_row['mode']}_error"] = mode_row["error"]
    for metric, key in (("ttft_mean", "ttft_mean_s"), ("cold_start", "cold_start_s"), ("ttft_p99", "ttft_p99_s")):
        ours, base = row.get(f"pipeboost_{key}"), row.get(f"load_then_run_{key}")
        row[f"reduction_{metric}"] = 1.0 - ours / base if ours is not None and base else None
    low, high = PAPER_REDUCTION_RANGE
    red = row["reduction_ttft_mean"]
    row["ttft_mean_vs_paper"] = None if red is None else ("below" if red < low else "above" if red > high else "within")
    return row


def format_paper_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: per model, each system's cold start / mean TTFT (ms) and our reductions."""
    systems = [m for m in MODES if any(f"{m}_ttft_mean_s" in r for r in rows)]
    head = ["model", "GPUs", *(f"{m} cold / mean TTFT ms" for m in systems),
            "TTFT mean reduction vs load_then_run", "cold-start reduction", "paper: 31%-49.8% lower latency"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], str(r["gpus"])]
        for m in systems:
            cold, mean = r.get(f"{m}_cold_start_s"), r.get(f"{m}_ttft_mean_s")
            cells.append("error" if cold is None or mean is None else f"{cold * 1e3:.0f} / {mean * 1e3:.0f}")
        cells += [_pct(r["reduction_ttft_mean"]), _pct(r["reduction_cold_start"]), r["ttft_mean_vs_paper"] or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"
