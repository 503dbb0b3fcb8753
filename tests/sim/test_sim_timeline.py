"""Whole timelines of tiny runs, computed by hand from the cost functions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeboost.costs import hop_cost, unit_compute_s
from pipeboost.errors import PlanError
from pipeboost.trace import TraceKind
from pipeboost.workload import ArrivalSpec
from sim import run_simulation
from sim.stepcost import StepCosts
from sim_scenarios import LINK_BYTES_PER_S, of_kind, tiny_scenario, with_workload

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


def test_a_unit_waited_for_starts_unit_wake_s_after_it_lands():
    """Execute-while-load with ``unit_wake_s``: a unit the stage waited for starts that long after landing;
    resident units start at once."""
    base = tiny_scenario("pipeboost", gpus=2, cold_start_gpus=2, prompt=16, output=2)
    wake = 0.003
    sc = replace(base, params=replace(base.params, unit_wake_s=wake))
    res = run_simulation(sc)
    part = res.plan.partition
    loads = {(r.gpu, r.layer): r.t_end_s for r in of_kind(res.trace, TraceKind.LOAD)}
    t, waited = 0.0, 0
    for stage, gpu in enumerate(res.plan.stage_gpus):
        for unit in part.units_of_stage(stage):
            if loads[(gpu, unit)] > t:
                t, waited = loads[(gpu, unit)] + wake, waited + 1
            start = of_kind(res.trace, TraceKind.PREFILL, request=0, layer=unit)[0].t_start_s
            assert start == pytest.approx(t, **EXACT)
            t += _compute(sc, unit, 16)
        if stage == 0:
            t += hop_cost(sc.params, sc.model.activation_bytes(16)).total_s
    first = of_kind(res.trace, TraceKind.FIRST_TOKEN, request=0)[0].t_start_s
    assert waited >= 1 and first == pytest.approx(t, **EXACT)
    without = of_kind(run_simulation(base).trace, TraceKind.FIRST_TOKEN, request=0)[0].t_start_s
    assert first > without


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


def _two_together(tmp_path, **serving):
    (tmp_path / "arr.csv").write_text("arrival_s\n0.0\n0.0\n")
    sc = tiny_scenario("pipeline_only", gpus=2, cold_start_gpus=2, requests=2, prompt=16, output=1,
                       source_file=str(tmp_path / "s.yaml"))
    sc = with_workload(sc, arrivals=ArrivalSpec("trace", trace_file="arr.csv"))
    return replace(sc, serving=replace(sc.serving, **serving))


def test_micro_batch_size_one_sends_each_request_through_the_stages_back_to_back(tmp_path):
    """Executor routing: each request is its own micro-batch; request 1 enters a stage when request 0
    leaves it (after its hand-off), so stage 0 computes request 1 while stage 1 computes request 0."""
    sc = _two_together(tmp_path, pipeline_micro_batch_size=1, pipeline_max_in_flight=2)
    res = run_simulation(sc)
    model, part = sc.model, res.plan.partition
    g0, g1 = res.plan.stage_gpus
    loads = {(r.gpu, r.layer): r.t_end_s for r in of_kind(res.trace, TraceKind.LOAD)}
    hop = hop_cost(sc.params, model.activation_bytes(16)).total_s
    stage0, stage1 = part.units_of_stage(0), part.units_of_stage(1)
    # request 0: stage 0 computes each unit once it has landed, hands off, then stage 1 likewise
    t = 0.0
    for unit in stage0:
        t = max(t, loads[(g0, unit)]) + _compute(sc, unit, 16)
    leave0 = t + hop
    t = leave0
    for unit in stage1:
        t = max(t, loads[(g1, unit)]) + _compute(sc, unit, 16)
    first0 = t
    # request 1: enters stage 0 when request 0 leaves it (every unit resident by then)
    assert all(loads[(g0, u)] <= leave0 for u in stage0)
    leave1 = leave0 + sum(_compute(sc, u, 16) for u in stage0) + hop
    first1 = max(leave1, first0) + sum(_compute(sc, u, 16) for u in stage1)
    assert of_kind(res.trace, TraceKind.PREFILL, request=1, gpu=g0)[0].t_start_s == pytest.approx(leave0, **EXACT)
    assert of_kind(res.trace, TraceKind.PREFILL, request=1, gpu=g1)[0].t_start_s == pytest.approx(
        max(leave1, first0), **EXACT)
    assert of_kind(res.trace, TraceKind.FIRST_TOKEN, request=0)[0].t_start_s == pytest.approx(first0, **EXACT)
    assert of_kind(res.trace, TraceKind.FIRST_TOKEN, request=1)[0].t_start_s == pytest.approx(first1, **EXACT)
    assert res.finished == 2


def test_worker_busy_after_a_hop_or_a_token_delays_the_next_micro_batch_only(tmp_path):
    """worker_after_hop_s / worker_after_token_s: the GPU's worker hands request 0 off (or emits its token)
    and only then starts request 1, which was already waiting; request 0 itself goes on at once."""
    base = _two_together(tmp_path, pipeline_micro_batch_size=1, pipeline_max_in_flight=2)
    sc = replace(base, params=replace(base.params, worker_after_hop_s=0.003, worker_after_token_s=0.005))
    res, plain = run_simulation(sc), run_simulation(base)
    g0, g1 = res.plan.stage_gpus
    stage0 = res.plan.partition.units_of_stage(0)
    hop = hop_cost(sc.params, sc.model.activation_bytes(16)).total_s
    first0 = of_kind(plain.trace, TraceKind.FIRST_TOKEN, request=0)[0].t_start_s
    assert of_kind(res.trace, TraceKind.FIRST_TOKEN, request=0)[0].t_start_s == pytest.approx(first0, **EXACT)
    leave0 = of_kind(res.trace, TraceKind.HOP, gpu=g0)[0].t_end_s
    start1 = of_kind(res.trace, TraceKind.PREFILL, request=1, gpu=g0)[0].t_start_s
    assert start1 == pytest.approx(leave0 + 0.003, **EXACT)
    leave1 = start1 + sum(_compute(sc, u, 16) for u in stage0) + hop
    assert leave1 < first0 + 0.005  # request 1 reaches stage 1 while its worker finishes request 0's token
    assert of_kind(res.trace, TraceKind.PREFILL, request=1, gpu=g1)[0].t_start_s == pytest.approx(
        first0 + 0.005, **EXACT)


def test_default_pipeline_groups_requests_into_one_micro_batch(tmp_path):
    res = run_simulation(_two_together(tmp_path))
    firsts = [of_kind(res.trace, TraceKind.FIRST_TOKEN, request=i)[0].t_start_s for i in (0, 1)]
    assert firsts[0] == firsts[1]


def _burst_at_ready(tmp_path, outputs, replica_prefill, max_batch=8, prompt=16, **extra):
    """One GPU, load_then_run: every request arrives at 0 s and waits for the replica to become ready."""
    rows = "".join(f"0.0,{prompt},{n}\n" for n in outputs)
    (tmp_path / "arr.csv").write_text("arrival_s,prompt_tokens,output_tokens\n" + rows)
    sc = tiny_scenario("load_then_run", gpus=1, cold_start_gpus=1, requests=len(outputs), prompt=prompt,
                       max_batch=max_batch, source_file=str(tmp_path / "s.yaml"), **extra)
    sc = with_workload(sc, arrivals=ArrivalSpec("trace", trace_file="arr.csv"))
    return replace(sc, serving=replace(sc.serving, replica_prefill=replica_prefill))


def _first_tokens(res, n):
    return [of_kind(res.trace, TraceKind.FIRST_TOKEN, request=i)[0].t_start_s for i in range(n)]


def test_sequential_replica_prefill_gives_each_queued_request_its_token_after_its_own_prefill(tmp_path):
    """Executor order: request i of a burst queued at the replica gets its first token after i+1 prefills."""
    sc = _burst_at_ready(tmp_path, [1] * 6, "sequential")
    res = run_simulation(sc)
    p = StepCosts(sc.params, sc.topology.gpu, sc.model).model_prefill_s(16)
    t = of_kind(res.trace, TraceKind.REPLICA_READY)[0].t_start_s
    expected = []
    for i in range(6):
        prefill = of_kind(res.trace, TraceKind.PREFILL, request=i)
        assert len(prefill) == 1 and prefill[0].t_start_s == pytest.approx(t, **EXACT)
        t += p
        assert prefill[0].t_end_s == pytest.approx(t, **EXACT)
        expected.append(t)
    assert _first_tokens(res, 6) == pytest.approx(expected, **EXACT)
    assert res.finished == 6 and not of_kind(res.trace, TraceKind.DECODE)


def test_batched_replica_prefill_gives_the_whole_burst_one_first_token_time(tmp_path):
    sc = _burst_at_ready(tmp_path, [1] * 6, "batched")
    res = run_simulation(sc)
    p = StepCosts(sc.params, sc.topology.gpu, sc.model).model_prefill_s(16)
    ready = of_kind(res.trace, TraceKind.REPLICA_READY)[0].t_start_s
    firsts = _first_tokens(res, 6)
    assert len(set(firsts)) == 1 and firsts[0] == pytest.approx(ready + 6 * p, **EXACT)
    assert len(of_kind(res.trace, TraceKind.PREFILL)) == 1 and res.finished == 6


def test_sequential_replica_prefill_then_decodes_the_requests_already_running(tmp_path):
    """Outputs 1,3,2,5,4,2 with at most 4 running: each iteration prefills its newcomers one by one, then
    decodes the previous batch one step (context = prompt + tokens so far - 1 per sequence)."""
    outputs = [1, 3, 2, 5, 4, 2]
    sc = _burst_at_ready(tmp_path, outputs, "sequential", max_batch=4)
    res = run_simulation(sc)
    costs = StepCosts(sc.params, sc.topology.gpu, sc.model)
    p, d = costs.model_prefill_s(16), costs.model_decode_s
    t0 = of_kind(res.trace, TraceKind.REPLICA_READY)[0].t_start_s
    t1 = t0 + p + p + p + p  # r0..r3 prefill one by one; r0 finishes at its prefill
    t2 = t1 + p + d(3, 48)   # r4 prefills, then r1 r2 r3 decode (r2 finishes)
    t3 = t2 + p + d(3, 50)   # r5 prefills, then r1 r3 r4 decode (r1 finishes)
    t4 = t3 + d(3, 51)       # r3 r4 r5 decode (r5 finishes)
    t5 = t4 + d(2, 37)       # r3 r4 decode: both finish
    assert _first_tokens(res, 6) == pytest.approx([t0 + p, t0 + 2 * p, t0 + 3 * p, t1, t1 + p, t2 + p], **EXACT)
    finish = {r.request: r for r in of_kind(res.trace, TraceKind.FINISH)}
    assert [finish[i].t_start_s for i in range(6)] == pytest.approx([t0 + p, t3, t2, t5, t5, t4], **EXACT)
    assert res.finished == 6 and res.errors == 0 and res.stalled == 0
    for i, n in enumerate(outputs):  # no token lost or duplicated
        assert finish[i].attrs["tokens"] == n
        assert len(of_kind(res.trace, TraceKind.TOKEN, request=i)) == n - 1
    decodes = of_kind(res.trace, TraceKind.DECODE)
    assert [r.attrs["requests"] for r in decodes[:2]] == [[1, 2, 3], [1, 3, 4]]


def test_runtime_latencies_delay_dispatch_handoffs_and_step_starts(tmp_path):
    """dispatch_s before a request's first unit, handoff_s after each cross-GPU hop and before each decode
    step (its last stage is on the other GPU), as the executor's workers pay them: the whole timeline of a
    request through a two-stage pipeline of resident units (request 1, long after request 0's cold start)."""
    (tmp_path / "arr.csv").write_text("arrival_s\n0.0\n5.0\n")
    base = tiny_scenario("pipeline_only", gpus=2, cold_start_gpus=2, requests=2, prompt=16, output=3,
                         source_file=str(tmp_path / "s.yaml"))
    params = replace(base.params, dispatch_s=0.004, handoff_s=0.0007, step_start_s=0.0003)
    sc = with_workload(replace(base, params=params, serving=replace(base.serving, pipeline_micro_batch_size=1)),
                       arrivals=ArrivalSpec("trace", trace_file="arr.csv"))
    res = run_simulation(sc)
    part, model = res.plan.partition, sc.model
    stage0, stage1 = part.units_of_stage(0), part.units_of_stage(1)
    arrival = of_kind(res.trace, TraceKind.ARRIVAL, request=1)[0].t_start_s
    assert arrival == 5.0 and of_kind(res.trace, TraceKind.FINISH, request=0)[0].t_start_s < arrival

    def step(t, tokens, context):
        t += sum(_compute(sc, u, tokens, context) for u in stage0)
        t += hop_cost(sc.params, model.activation_bytes(tokens)).total_s + 0.0007  # copy, then the hand-off
        return t + sum(_compute(sc, u, tokens, context) for u in stage1)

    t = step(arrival + 0.004, 16, 0)
    assert of_kind(res.trace, TraceKind.PREFILL, request=1)[0].t_start_s == pytest.approx(arrival + 0.004, **EXACT)
    assert of_kind(res.trace, TraceKind.FIRST_TOKEN, request=1)[0].t_start_s == pytest.approx(t, **EXACT)
    for context in (16, 17):  # the token goes back to stage 0's GPU: a hand-off, not a same-device step start
        t = step(t + 0.0007, 1, context)
    assert of_kind(res.trace, TraceKind.FINISH, request=1)[0].t_start_s == pytest.approx(t, **EXACT)


def test_replica_pays_dispatch_when_idle_and_step_start_between_iterations(tmp_path):
    sc = _burst_at_ready(tmp_path, [3], "sequential")
    sc = replace(sc, params=replace(sc.params, dispatch_s=0.004, step_start_s=0.0003))
    res = run_simulation(sc)
    costs = StepCosts(sc.params, sc.topology.gpu, sc.model)
    t = of_kind(res.trace, TraceKind.REPLICA_READY)[0].t_start_s + 0.004 + costs.model_prefill_s(16)
    assert _first_tokens(res, 1) == pytest.approx([t], **EXACT)
    t += 0.0003 + costs.model_decode_s(1, 16) + 0.0003 + costs.model_decode_s(1, 17)
    assert of_kind(res.trace, TraceKind.FINISH, request=0)[0].t_start_s == pytest.approx(t, **EXACT)


def test_stages_moved_onto_one_gpu_run_in_one_turn(tmp_path):
    """After GPU 1 fails early, both stages run on GPU 0: a request goes through stage 0 and then straight
    into stage 1 on the same GPU (as the executor's worker continues inline), so request 0's whole prefill
    precedes request 1's, instead of request 1's stage 0 cutting in between."""
    from pipeboost.faults import FaultSpec

    sc = _two_together(tmp_path, pipeline_micro_batch_size=1, pipeline_max_in_flight=2)
    sc = replace(sc, faults=(FaultSpec(gpu=1, at_s=0.01),))
    res = run_simulation(sc)
    prefills = sorted(of_kind(res.trace, TraceKind.PREFILL), key=lambda r: r.t_start_s)
    assert {r.gpu for r in prefills} == {0}
    order = [r.request for r in prefills]
    assert order == sorted(order), f"request 1 cut into request 0's stages: {order}"
    assert res.finished == 2


def _arrivals_at(tmp_path, arrivals, **serving):
    rows = "".join(f"{a!r},16,2\n" for a in arrivals)
    (tmp_path / "arr.csv").write_text("arrival_s,prompt_tokens,output_tokens\n" + rows)
    sc = tiny_scenario("pipeboost", requests=len(arrivals), source_file=str(tmp_path / "s.yaml"))
    sc = with_workload(sc, arrivals=ArrivalSpec("trace", trace_file="arr.csv"))
    return replace(sc, serving=replace(sc.serving, **serving))


def test_request_after_the_switch_waits_for_the_stage_queued_before_it_on_the_lowest_replica(tmp_path):
    """Executor order after the mode switch: a new request goes to the replica on the lowest GPU (both are
    idle) and its prefill runs after the pipeline stage already queued there, hop included (the worker
    runs its tasks in order); the pipeline scheduler stops at the switch instead of swallowing the wake-up."""
    serving = dict(replica_prefill="sequential", pipeline_micro_batch_size=1, pipeline_max_in_flight=4)
    ready = of_kind(run_simulation(_arrivals_at(tmp_path, [0.0], **serving)).trace,
                    TraceKind.REPLICA_READY)[0].t_start_s
    res = run_simulation(_arrivals_at(tmp_path, [0.0, ready - 2e-5, ready + 1e-5], **serving))
    g0, g1 = res.plan.stage_gpus
    late = of_kind(res.trace, TraceKind.PREFILL, request=2)
    assert [r.gpu for r in late] == [0] and g0 == 0
    hop = [r for r in of_kind(res.trace, TraceKind.HOP, gpu=g0) if r.t_start_s > ready][0]
    assert of_kind(res.trace, TraceKind.PREFILL, request=1, gpu=g0)[-1].t_end_s < late[0].t_start_s
    assert late[0].t_start_s == pytest.approx(hop.t_end_s, **EXACT)
    assert of_kind(res.trace, TraceKind.FIRST_TOKEN, request=2)[0].t_start_s == pytest.approx(late[0].t_end_s, **EXACT)
    assert res.finished == 3


@pytest.mark.parametrize("dispatch, gpus", [("least_busy", [0, 1, 0, 1]), ("shared_queue", [0, 0, 0, 0])])
def test_replica_dispatch_least_busy_spreads_a_burst_as_the_executor_routes_it(tmp_path, dispatch, gpus):
    """A burst after both replicas are ready: least_busy assigns each request on arrival to the replica
    with fewer unfinished requests (ties: lower GPU); the shared queue lets the first idle replica take
    up to its batch limit."""
    serving = dict(replica_prefill="sequential", pipeline_micro_batch_size=1, pipeline_max_in_flight=8)
    ready = of_kind(run_simulation(_arrivals_at(tmp_path, [0.0], **serving)).trace,
                    TraceKind.REPLICA_READY)[0].t_start_s
    burst = [0.0] + [ready + 0.01] * 4
    res = run_simulation(_arrivals_at(tmp_path, burst, replica_dispatch=dispatch, **serving))
    firsts = [of_kind(res.trace, TraceKind.FIRST_TOKEN, request=i)[0] for i in range(1, 5)]
    assert [r.gpu for r in firsts] == gpus and res.finished == 5


def _one_gpu_pipeline(tmp_path, arrivals_s: list[float], output: int, max_batch: int = 4):
    """A pipeline whose one stage is one GPU, with the executor's routing (one micro-batch per request);
    request 0 at t=0 cold-starts it, the others arrive at ``arrivals_s`` (all units resident by then)."""
    (tmp_path / "arr.csv").write_text("arrival_s\n0.0\n" + "".join(f"{t}\n" for t in arrivals_s))
    sc = tiny_scenario("pipeline_only", gpus=1, cold_start_gpus=1, requests=1 + len(arrivals_s), prompt=16,
                       output=output, max_batch=max_batch, source_file=str(tmp_path / "s.yaml"))
    sc = with_workload(sc, arrivals=ArrivalSpec("trace", trace_file="arr.csv"))
    return replace(sc, serving=replace(sc.serving, pipeline_micro_batch_size=1, pipeline_max_in_flight=8))


def test_decode_steps_of_micro_batches_on_one_gpu_run_as_one_batch(tmp_path):
    """As the executor's worker batches the queued decode steps of requests served wholly by its device:
    request 1's first decode step waits behind request 2's prefill and carries request 2's step with it;
    from then on both decode together, one step of a batch of two each time."""
    sc = _one_gpu_pipeline(tmp_path, [5.0, 5.0], output=3)
    res = run_simulation(sc)
    costs = StepCosts(sc.params, sc.topology.gpu, sc.model)
    p, d = costs.model_prefill_s(16), costs.model_decode_s
    a = 5.0
    first = {r.request: r.t_start_s for r in of_kind(res.trace, TraceKind.FIRST_TOKEN)}
    assert [first[1], first[2]] == pytest.approx([a + p, a + 2 * p], **EXACT)
    late = [r for r in of_kind(res.trace, TraceKind.DECODE) if r.t_start_s >= a]
    assert late and {tuple(r.attrs["requests"]) for r in late} == {(1, 2)}
    finish = {r.request: r.t_start_s for r in of_kind(res.trace, TraceKind.FINISH)}
    assert [finish[1], finish[2]] == pytest.approx([a + 2 * p + d(2, 32) + d(2, 34)] * 2, **EXACT)
    assert res.finished == 3 and res.errors == 0


def test_a_one_gpu_decode_batch_is_capped_at_max_batch_size(tmp_path):
    """Three requests at once, batches of at most two sequences: the third request's steps form their own
    batch, queued behind the first; every token still arrives (none lost or duplicated)."""
    sc = _one_gpu_pipeline(tmp_path, [5.0, 5.0, 5.0], output=4, max_batch=2)
    res = run_simulation(sc)
    batches = [tuple(r.attrs.get("requests", [r.request])) for r in of_kind(res.trace, TraceKind.DECODE)
               if r.layer == 0 and r.t_start_s >= 5.0]
    assert max(len(b) for b in batches) == 2 and (1, 2) in batches
    assert sum(len(b) for b in batches) == 3 * 3  # three decode steps per request
    finish = {r.request: r for r in of_kind(res.trace, TraceKind.FINISH)}
    assert res.finished == 4 and all(finish[i].attrs["tokens"] == 4 for i in range(4))
