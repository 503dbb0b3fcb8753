"""Evaluating one trial: apply searched parameters to a scenario, simulate it, return flat metrics.

Everything here is a top-level function so that it pickles into worker processes (or Ray tasks). An
evaluator has the signature ``evaluate(scenario, params) -> {metric_name: value}`` and raises
:class:`~pipeboost.errors.PipeBoostError` for a parameter combination that describes no valid run
(for example more stages than cold-start GPUs); the search records such a trial as failed with the reason.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable, Mapping

from pipeboost.errors import PipeBoostError
from pipeboost.scenario import scenario_from_dict, scenario_to_dict
from pipeboost.scenario_model import Scenario

Evaluator = Callable[[Scenario, Mapping[str, Any]], Mapping[str, float | None]]


def apply_params(scenario: Scenario, params: Mapping[str, Any]) -> Scenario:
    """The scenario with ``params`` (``policies.*`` / ``serving.*`` names) replaced, validated.

    When ``serving.cold_start_gpus`` is searched but ``policies.num_stages`` is not, the number of stages
    follows the number of GPUs (one stage per GPU). The variant is checked by the scenario loader's own
    validator (a dict round trip, about 1 ms), so an impossible combination raises the same
    :class:`~pipeboost.errors.ScenarioError` a YAML file would.
    """
    sections: dict[str, dict[str, Any]] = {"policies": {}, "serving": {}}
    for name, value in params.items():
        section, field = name.split(".", 1)
        sections[section][field] = value
    if "cold_start_gpus" in sections["serving"] and "num_stages" not in sections["policies"]:
        sections["policies"]["num_stages"] = None
    variant = replace(scenario, policies=replace(scenario.policies, **sections["policies"]),
                      serving=replace(scenario.serving, **sections["serving"]))
    return scenario_from_dict(scenario_to_dict(variant), file=scenario.source_file)


def simulate(scenario: Scenario, detail: bool = False) -> list:
    """The trace of one simulated run (imports the simulator lazily). Without ``detail`` the trace has no
    per-token and per-step records: the metrics are the same and a run is about 4x faster."""
    from sim import run_simulation

    return run_simulation(scenario, token_records=detail, step_records=detail).trace


def simulate_metrics(scenario: Scenario, params: Mapping[str, Any]) -> dict[str, float | None]:
    """The default evaluator: flat metrics (see :func:`pipeboost.search.tidy.flat_metrics`) of a simulated run."""
    from pipeboost.metrics import summarize
    from pipeboost.search.tidy import flat_metrics

    return flat_metrics(summarize(simulate(apply_params(scenario, params))))


def timed_call(evaluate: Evaluator, scenario: Scenario, params: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``evaluate`` and package the outcome: ``metrics``, ``error`` (text of a PipeBoostError or None)
    and ``eval_s`` (wall-clock seconds of this evaluation)."""
    t0 = time.perf_counter()
    try:
        metrics, error = dict(evaluate(scenario, params)), None
    except PipeBoostError as exc:
        metrics, error = {}, f"{type(exc).__name__}: {exc}"
    return {"metrics": metrics, "error": error, "eval_s": time.perf_counter() - t0}
