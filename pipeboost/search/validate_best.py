"""``pipeboost search --validate K``: re-run the best K policies on the executor, predicted vs measured.

The best trials are the feasible ones ranked by the first objective (ties: trial number). Each is applied
to the base scenario and handed to :func:`calibration.validate.validate_scenario`, which runs the simulator
and the executor on the executor's own workload; the rows compare the simulator's prediction with the
measurement for mean and p99 TTFT and mean time to full replica, and keep the error table folder.
The executor must be able to hold the scenario's model on its devices (``executor.devices``): validate
searches over CPU-sized models here, or over real models on a GPU server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeboost.costs import CostParams
from pipeboost.metrics import summarize
from pipeboost.scenario_model import Scenario
from pipeboost.search.evaluate import apply_params
from pipeboost.search.space import SearchSpace
from pipeboost.trace import read_jsonl

COMPARED = (("ttft_mean_s", "ttft_s", "mean"), ("ttft_p99_s", "ttft_s", "p99"),
            ("time_to_full_replica_s", "time_to_full_replica_s", "mean"))


def best_rows(rows: list[dict[str, Any]], space: SearchSpace, k: int) -> list[dict[str, Any]]:
    """The ``k`` best feasible trial rows by the first objective (its direction), then trial number."""
    objective = space.objectives[0]
    sign = 1.0 if objective.direction == "minimize" else -1.0
    feasible = [r for r in rows if r["feasible"] and r.get(objective.metric) is not None]
    return sorted(feasible, key=lambda r: (sign * r[objective.metric], r["trial"]))[:k]


def _metric(summary: dict[str, Any], key: str, stat: str) -> float | None:
    value = summary.get(key)
    return value.get(stat) if isinstance(value, dict) else value


def validate_best(scenario: Scenario, rows: list[dict[str, Any]], space: SearchSpace, k: int, out_dir: Path,
                  params: CostParams | None = None) -> list[dict[str, Any]]:
    """Validate the ``k`` best trials; one tidy row per (trial, metric) with predicted, measured and error."""
    from calibration.validate import validate_scenario

    results = []
    names = [p.name for p in space.params]
    for row in best_rows(rows, space, k):
        variant = apply_params(scenario, {n: row[n] for n in names if n in row})
        folder = Path(out_dir) / f"validate-trial-{row['trial']}"
        validate_scenario(variant, params or variant.params, folder)
        predicted = summarize(read_jsonl(folder / "sim" / "trace.jsonl"))
        measured = summarize(read_jsonl(folder / "executor" / "trace.jsonl"))
        for name, key, stat in COMPARED:
            sim_v, exe_v = _metric(predicted, key, stat), _metric(measured, key, stat)
            error = abs(sim_v - exe_v) / exe_v if sim_v is not None and exe_v else None
            results.append({"trial": row["trial"], **{n: row.get(n) for n in names}, "metric": name,
                             "predicted": sim_v, "measured": exe_v, "rel_error": error, "folder": str(folder)})
    return results
