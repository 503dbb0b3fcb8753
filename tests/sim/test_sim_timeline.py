"""Whole timelines of tiny runs, computed by hand from the cost functions."""

from __future__ import annotations

import pytest

from pipeboost.costs import hop_cost, unit_compute_s
from pipeboost.errors import PlanError
from pipeboost.trace import TraceKind
from sim import run_simulation
from sim.stepcost import StepCosts
from sim_scenarios import LINK_BYTES_PER_S, of_kind, tiny_scenario

EXACT = dict(rel=1e-12, abs=1e-15)


def _compute(sc, unit, tokens, context=0):
    return unit_compute_s(sc.params, sc.topology.gpu, sc.model, unit, tokens, 1, context)


def test_load_then_run_one_gpu_one_request():
    sc = tiny_scenario("load_then_run", gpus=1, cold_start_gpus=1, prompt=16, output=3)
    res = run_simulation(sc)
    model = sc.model
    t = 0.5  # startup
    for rec, unit in zip(of_kind(res.trace, TraceKind.LOAD), model.units()):
        assert rec.layer == unit and rec.nbytes == model.unit_bytes(unit)
        assert rec.t_start_s == pytest.approx(t, **EXACT)
        t += model.unit_bytes(unit) / LINK_BYTES_PER_S
        assert rec.t_end_s == pytest.approx(t, **EXACT)
    assert of_kind(res.trace, TraceKind.REPLICA_READY)[0].t_start_s == pytest.approx(t, **EXACT)
    t += sum(_compute(sc, u, 16) for u in model.units())
    assert of_kind(res.trace, TraceKind.FIRST_TOKEN, request=0)[0].t_start_s == pytest.approx(t, **EXACT)
    for step in (1, 2):  # decode steps attend to 16, then 17 cached tokens
        t += sum(_compute(sc, u, 1, 15 + step) for u in model.units())
    assert of_kind(res.trace, TraceKind.FINISH, request=0)[0].t_start_s == pytest.approx(t, **EXACT)
    assert of_kind(res.trace, TraceKind.RELEASE)[0].t_start_s == pytest.approx(t + 10.0, **EXACT)
    assert res.finished == 1 and res.stalled == 0


def test_pipeboost_first_token_runs_while_later_units_load():
    sc = tiny_scenario("pipeboost", gpus=2, cold_start_gpus=2, prompt=16, output=2)
    res = run_simulation(sc)
    model, part = sc.model, res.plan.partition
    loads = {(r.gpu, r.layer): r.t_end_s for r in of_kind(res.trace, TraceKind.LOAD)}
    t = 0.0
    for stage, gpu in enumerate(res.plan.stage_gpus):
        for unit in part.units_of_stage(stage):
            t = max(t, loads[(gpu, unit)]) + _compute(sc, unit, 16)
        if stage == 0:
            t += hop_cost(sc.params, model.activation_bytes(16)).total_s
    first = of_kind(res.trace, TraceKind.FIRST_TOKEN, request=0)[0].t_start_s
    assert first == pytest.approx(t, **EXACT)
    full = max(loads.values())
    assert first < full, "the first token must come out before any GPU holds the whole model"
    # Each GPU loads its own stage first, then the other one, all at 1 GiB/s on its own link.
    own0 = 0.5 + part.stage_bytes(model, 0) / LINK_BYTES_PER_S
    assert loads[(0, part.units_of_stage(0)[-1])] == pytest.approx(own0, **EXACT)
    switch = of_kind(res.trace, TraceKind.MODE_SWITCH)
    assert len(switch) == 1 and switch[0].t_start_s == pytest.approx(0.5 + model.replica_bytes / LINK_BYTES_PER_S)


def test_two_gpus_behind_one_uplink_share_it():
    sc = tiny_scenario("load_then_run", gpus=2, cold_start_gpus=2, switch=True)
    res = run_simulation(sc)
    last = max(r.t_end_s for r in of_kind(res.trace, TraceKind.LOAD))
    # The uplink is saturated throughout: both replicas' bytes cross it at 1 GiB/s.
    assert last == pytest.approx(0.5 + 2 * sc.model.replica_bytes / LINK_BYTES_PER_S, rel=1e-12)


def test_replica_decode_step_is_sum_of_unit_costs():
    sc = tiny_scenario()
    costs = StepCosts(sc.params, sc.topology.gpu, sc.model)
    for batch, contexts in ((1, [16]), (3, [5, 40, 100]), (8, [200] * 8)):
        direct = sum(unit_compute_s(sc.params, sc.topology.gpu, sc.model, u, 1, batch, sum(contexts) / batch)
                     for u in sc.model.units())
        assert costs.model_decode_s(batch, sum(contexts)) == pytest.approx(direct, rel=1e-12)
    tp = StepCosts(sc.params, sc.topology.gpu, sc.model, tp=2)
    assert tp.model_decode_s(3, 90) == pytest.approx(tp.units_decode_s(sc.model.units(), 3, 90), rel=1e-12)
    assert costs.model_prefill_s(77) == pytest.approx(sum(_compute(sc, u, 77) for u in sc.model.units()), rel=1e-12)


def test_plan_that_does_not_fit_raises_before_simulating():
    from dataclasses import replace
    sc = tiny_scenario("load_then_run", gpus=1, cold_start_gpus=1)
    tiny_gpu = replace(sc.topology.gpu, memory_bytes=sc.model.replica_bytes // 2)
    with pytest.raises(PlanError):
        run_simulation(replace(sc, topology=replace(sc.topology, gpu=tiny_gpu)))


def test_keep_alive_release_then_second_burst_cold_starts_again():
    from sim_scenarios import with_workload
    from pipeboost.workload import ArrivalSpec
    sc = with_workload(tiny_scenario(keep_alive_s=1.0, requests=6),
                       arrivals=ArrivalSpec("on_off", rate_per_s=100.0, on_s=0.02, off_s=30.0))
    res = run_simulation(sc)
    assert res.instances >= 2 and res.finished == 6
    assert len(of_kind(res.trace, TraceKind.STARTUP)) >= 4
    assert len(of_kind(res.trace, TraceKind.RELEASE)) >= 4
