"""Every example scenario loads and runs briefly in the simulator, losing no request.

Workloads are shortened (at most 12 requests, arrivals kept) so the whole folder runs in seconds.
"""

import dataclasses
from pathlib import Path

import pytest

from pipeboost.scenario import load_scenario
from pipeboost.trace import TraceKind
from sim import run_simulation

ROOT = Path(__file__).resolve().parents[2]
NOT_SCENARIOS = {"params", "search", "validation", "validation-overhead"}
SCENARIOS = sorted(p for p in (ROOT / "scenarios").rglob("*.yaml")
                   if not NOT_SCENARIOS & set(p.relative_to(ROOT / "scenarios").parts[:-1]))


def shortened(scenario):
    workload = scenario.workload
    return dataclasses.replace(scenario, workload=dataclasses.replace(
        workload, num_requests=min(workload.num_requests or 12, 12)))


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: str(p.relative_to(ROOT / "scenarios")))
def test_example_scenario_runs_without_losing_requests(path):
    scenario = shortened(load_scenario(path))
    trace = run_simulation(scenario).trace
    arrived = {r.request for r in trace if r.kind is TraceKind.ARRIVAL}
    ended = {r.request for r in trace if r.kind in (TraceKind.FINISH, TraceKind.REQUEST_ERROR)}
    assert arrived and arrived == ended
    if any(f.trigger != "at_s" for f in scenario.faults):
        assert any(r.kind is TraceKind.FAILURE for r in trace)


def test_fault_examples_cover_loading_prefill_and_decode():
    triggers = {f.trigger for p in SCENARIOS for f in load_scenario(p).faults}
    assert {"loading_unit", "prefill", "decode_step"} <= triggers
    modes = {load_scenario(p).policies.mode for p in SCENARIOS}
    assert modes == {"pipeboost", "load_then_run", "pipeline_only", "tensor_parallel"}
