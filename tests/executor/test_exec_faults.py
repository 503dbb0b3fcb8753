"""Fault injection: a device fails at a time, while loading, in prefill or at a decode step.

After recovery every request still gets exactly the fault-free tokens, and the trace tells the story:
FAILURE, DETECT, REPLAN, the survivors' loads, RECOVERY.
"""

from __future__ import annotations

import pytest

from executor.engine import run_executor
from executor.faults import ExecutorFault
from pipeboost.policies.recovery import reroute_to_holder
from executor_helpers import Req, assert_compute_after_load, assert_request_lifecycle, make_plan
from pipeboost.plan import RecoveryPlan
from pipeboost.trace import TraceKind

LINK_BYTES_PER_S = 2e6  # opt-tiny stage ~0.3 s, full replica ~0.55 s


def _run(model_dirs, faults, requests=None, devices=2, boundaries=(0, 2, 4), **kwargs):
    model_dir = model_dirs("opt-tiny")
    requests = requests or [Req(0, 0.0, 7, 6), Req(1, 0.01, 5, 5)]
    plan = make_plan(4, boundaries)
    result = run_executor(plan, model_dir, requests, faults, devices=f"cpu:{devices}", seed=5,
                          link_bandwidth_bytes_per_s=LINK_BYTES_PER_S, **kwargs)
    return model_dir, requests, result


def _assert_recovered(result, model_dir, requests, reference_tokens, failed_gpu):
    trace = result.trace
    for req in requests:
        assert result.tokens[req.id] == reference_tokens(model_dir, result.prompts[req.id], req.output_tokens)
    assert_request_lifecycle(trace, requests)
    assert_compute_after_load(trace)
    kinds = {k: [r for r in trace if r.kind == k] for k in TraceKind}
    (failure,) = kinds[TraceKind.FAILURE]
    (detect,) = kinds[TraceKind.DETECT]
    (replan,) = kinds[TraceKind.REPLAN]
    (recovery,) = kinds[TraceKind.RECOVERY]
    assert failure.gpu == detect.gpu == replan.gpu == recovery.gpu == failed_gpu
    assert failure.t_start_s <= detect.t_start_s <= replan.t_start_s <= recovery.t_end_s
    assert recovery.t_start_s == failure.t_start_s
    plan = RecoveryPlan.from_dict(replan.attrs["plan"])
    assert failed_gpu not in plan.stage_gpus
    late = [r for r in trace if r.gpu == failed_gpu and r.t_start_s > failure.t_start_s
            and r.kind in (TraceKind.LOAD, TraceKind.PREFILL, TraceKind.DECODE)]
    assert not late, "a failed device does no more work"
    for stage, gpu in enumerate(plan.stage_gpus):  # the new server of each stage loaded it
        loaded = {r.layer for r in trace if r.kind == TraceKind.LOAD and r.gpu == gpu}
        assert set(make_plan(4, (0, 2, 4)).partition.units_of_stage(stage)) <= loaded
    return plan


def test_fault_at_time_during_cold_start(model_dirs, reference_tokens):
    model_dir, requests, result = _run(model_dirs, [ExecutorFault(gpu=1, at_s=0.15)])
    plan = _assert_recovered(result, model_dir, requests, reference_tokens, failed_gpu=1)
    assert plan.stage_gpus == (0, 0)


def test_fault_while_loading_unit(model_dirs, reference_tokens):
    model_dir, requests, result = _run(model_dirs, [ExecutorFault(gpu=1, loading_unit=3)])
    _assert_recovered(result, model_dir, requests, reference_tokens, failed_gpu=1)
    assert not [r for r in result.trace if r.kind == TraceKind.LOAD and r.gpu == 1 and r.layer == 3]


def test_fault_in_prefill_of_first_stage(model_dirs, reference_tokens):
    model_dir, requests, result = _run(model_dirs, [ExecutorFault(gpu=0, prefill=True)])
    plan = _assert_recovered(result, model_dir, requests, reference_tokens, failed_gpu=0)
    assert plan.stage_gpus == (1, 1)


def test_fault_at_decode_step_recomputes_kv_cache(model_dirs, reference_tokens):
    model_dir, requests, result = _run(model_dirs, [ExecutorFault(gpu=1, decode_step=2)])
    _assert_recovered(result, model_dir, requests, reference_tokens, failed_gpu=1)
    recomputed = [r for r in result.trace if r.kind == TraceKind.TOKEN and r.attrs.get("recomputed")]
    assert recomputed, "in-flight requests re-prefill prompt + generated tokens"
    redo = [r for r in result.trace if r.kind == TraceKind.PREFILL and r.attrs["step"] > 0]
    assert {r.gpu for r in redo} == {0}


def test_three_devices_middle_stage_fails_with_pluggable_policy(model_dirs, reference_tokens):
    calls = []

    def policy(partition, stage_gpus, failed_gpu, resident, alive) -> RecoveryPlan:
        calls.append((tuple(stage_gpus), failed_gpu, {g: set(u) for g, u in resident.items()}, tuple(alive)))
        return reroute_to_holder(partition, stage_gpus, failed_gpu, resident, alive)

    model_dir = model_dirs("opt-tiny")
    requests = [Req(0, 0.0, 7, 6), Req(1, 0.01, 5, 5), Req(2, 0.2, 6, 4)]
    plan = make_plan(4, (0, 1, 3, 4))
    result = run_executor(plan, model_dir, requests, [ExecutorFault(gpu=1, decode_step=1)], devices="cpu:3",
                          link_bandwidth_bytes_per_s=LINK_BYTES_PER_S, recovery_policy=policy, seed=2)
    for req in requests:
        assert result.tokens[req.id] == reference_tokens(model_dir, result.prompts[req.id], req.output_tokens)
    assert len(calls) == 1 and calls[0][1] == 1 and calls[0][3] == (0, 2)
    assert_request_lifecycle(result.trace, requests)


def test_pipeboost_policies_plug_in(model_dirs, reference_tokens):
    recovery = pytest.importorskip("pipeboost.policies.recovery")
    model_dir, requests, result = _run(model_dirs, [ExecutorFault(gpu=1, decode_step=1)],
                                       recovery_policy=recovery.reload_on_survivors)
    _assert_recovered(result, model_dir, requests, reference_tokens, failed_gpu=1)


def test_no_survivor_ends_requests_with_error(model_dirs):
    model_dir = model_dirs("opt-tiny")
    requests = [Req(0, 0.0, 5, 4), Req(1, 0.3, 5, 4)]
    result = run_executor(make_plan(4, (0, 4)), model_dir, requests, [ExecutorFault(gpu=0, prefill=True)],
                          devices="cpu:1", timeout_s=30)
    errors = [r for r in result.trace if r.kind == TraceKind.REQUEST_ERROR]
    assert sorted(r.request for r in errors) == [0, 1]


def test_fault_needs_exactly_one_trigger():
    with pytest.raises(ValueError):
        ExecutorFault(gpu=0)
    with pytest.raises(ValueError):
        ExecutorFault(gpu=0, at_s=1.0, prefill=True)


def test_rerouted_requests_stop_their_old_route_work(model_dirs, reference_tokens):
    """Device 1 fails while loading: requests waiting at stage 0 on device 0 are rerouted (new epoch). Their
    old-route tasks, blocked waiting for units, must not run on once the units land: every unit runs each
    request's prefill exactly once after the reroute (no duplicated, wasted prefill delaying recovery).

    Counted from the REPLAN record (the reroute follows it at once): a unit an old route started between the
    failure and its detection runs to its end, as a kernel in flight does, and is not old-route work that
    ran on (a full run of the suite on two busy cores once caught a request's embedding there)."""
    model_dir, requests, result = _run(model_dirs, [ExecutorFault(gpu=1, loading_unit=3)])
    _assert_recovered(result, model_dir, requests, reference_tokens, failed_gpu=1)
    (replan,) = [r for r in result.trace if r.kind is TraceKind.REPLAN]
    for req in requests:
        units = [r.layer for r in result.trace if r.kind is TraceKind.PREFILL and r.request == req.id
                 and r.t_start_s >= replan.t_start_s]
        assert sorted(units) == sorted(set(units)), f"request {req.id} prefilled a unit twice: {sorted(units)}"
