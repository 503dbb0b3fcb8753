"""The cost model's predicted cold-start components per pipeline stage, as tidy rows.

For each stage of the scenario's plan: start-up, the uncontended load of the GPU's own slice (latency +
transfer), the first prefill through the stage's units (launch overhead + roofline) and the activation hop
to the next stage. These are the named components of :mod:`pipeboost.costs` (seconds) that calibration will
fit from executor traces; the simulator adds contention (shared switch uplinks) and queueing on top.
"""

from __future__ import annotations

from typing import Any

from pipeboost.costs import hop_cost, load_cost, unit_compute_cost
from pipeboost.policies import build_plan
from pipeboost.scenario_model import Scenario


def cost_breakdown_rows(scenario: Scenario, prompt_tokens: int = 256) -> list[dict[str, Any]]:
    """Rows ``stage, gpu, phase, component, seconds`` of a first request with ``prompt_tokens`` tokens."""
    plan = build_plan(scenario)
    params, model, part = scenario.params, scenario.model, plan.partition
    rows: list[dict[str, Any]] = []
    for stage in range(part.num_stages):
        gpu = plan.stage_gpus[stage]

        def add(phase: str, component: str, seconds: float) -> None:
            rows.append({"stage": stage, "gpu": gpu, "phase": phase, "component": component, "seconds": seconds})

        add("startup", "startup", params.startup_s)
        load = load_cost(params, scenario.topology, gpu, part.stage_bytes(model, stage), scenario.serving.source)
        add("load own slice", "latency", load.latency_s)
        add("load own slice", "transfer", load.transfer_s)
        costs = [unit_compute_cost(params, scenario.topology.gpu, model, u, prompt_tokens)
                 for u in part.units_of_stage(stage)]
        add("prefill", "overhead", sum(c.overhead_s for c in costs))
        add("prefill", "roofline", sum(c.roofline_s for c in costs))
        if stage < part.num_stages - 1:
            hop = hop_cost(params, model.activation_bytes(prompt_tokens))
            add("hop", "latency", hop.latency_s)
            add("hop", "transfer", hop.transfer_s)
    return rows


def predicted_first_token_s(rows: list[dict[str, Any]]) -> float:
    """A lower bound on the cold start: the slowest start-up + own-slice load, then every stage's prefill
    and hop in sequence (no contention, no queueing)."""
    ready = max(sum(r["seconds"] for r in rows if r["stage"] == s and r["phase"] in ("startup", "load own slice"))
                for s in {r["stage"] for r in rows})
    return ready + sum(r["seconds"] for r in rows if r["phase"] in ("prefill", "hop"))
