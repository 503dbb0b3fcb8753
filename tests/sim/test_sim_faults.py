"""Failures during loading, prefill and decode: detection, re-planning, recovery, no request lost."""

from __future__ import annotations

import pytest

from pipeboost.faults import FaultSpec, RandomFailureSpec
from pipeboost.trace import TraceKind
from sim import run_simulation
from sim_scenarios import EXACT_PARAMS, of_kind, tiny_scenario


def _outcomes(res):
    ends = of_kind(res.trace, TraceKind.FINISH) + of_kind(res.trace, TraceKind.REQUEST_ERROR)
    return sorted(r.request for r in ends)


def _assert_nothing_after_failure(res):
    for fail in of_kind(res.trace, TraceKind.FAILURE):
        late = [r for r in res.trace if r.gpu == fail.gpu and r.t_start_s > fail.t_start_s]
        assert not late, f"records on failed GPU {fail.gpu}: {late[:3]}"


@pytest.mark.parametrize("recovery", ["reroute_to_holder", "reload_on_survivors"])
def test_failure_while_loading_other_stage_reroutes_to_holder(recovery):
    # GPU 1 fails as it starts loading unit 0 (stage 0, its background load); stage 1 moves to GPU 0.
    # Detection is quick so that the re-plan happens while the pipeline still serves.
    sc = tiny_scenario(gpus=2, requests=4, output=6, recovery=recovery, faults=(FaultSpec(gpu=1, loading_unit=0),),
                       params=EXACT_PARAMS.with_(failure_detection_s=1e-5))
    res = run_simulation(sc)
    assert _outcomes(res) == [0, 1, 2, 3] and res.errors == 0 and res.stalled == 0
    fail = of_kind(res.trace, TraceKind.FAILURE)[0]
    detect = of_kind(res.trace, TraceKind.DETECT)[0]
    assert detect.t_start_s == pytest.approx(fail.t_start_s + sc.params.failure_detection_s)
    replan = of_kind(res.trace, TraceKind.REPLAN)[0]
    assert replan.attrs["policy"] == recovery and replan.attrs["plan"]["stage_gpus"] == [0, 0]
    recovery_rec = of_kind(res.trace, TraceKind.RECOVERY)[0]
    assert recovery_rec.t_start_s == fail.t_start_s and recovery_rec.t_end_s >= detect.t_start_s
    # After recovery GPU 0 serves stage 1 itself.
    late = [r for r in of_kind(res.trace, TraceKind.PREFILL, gpu=0) if r.t_start_s > detect.t_start_s]
    assert all(r.gpu == 0 for r in late)
    _assert_nothing_after_failure(res)


def test_failure_at_first_prefill_requeues_and_reprefills():
    sc = tiny_scenario(gpus=2, requests=2, output=4, faults=(FaultSpec(gpu=1, prefill=True),))
    res = run_simulation(sc)
    assert _outcomes(res) == [0, 1] and res.errors == 0
    assert len(of_kind(res.trace, TraceKind.FAILURE, gpu=1)) == 1
    _assert_nothing_after_failure(res)


def test_failure_at_decode_step_keeps_generated_tokens():
    sc = tiny_scenario(gpus=2, requests=1, output=8, faults=(FaultSpec(gpu=0, decode_step=3),))
    res = run_simulation(sc)
    assert res.finished == 1
    finish = of_kind(res.trace, TraceKind.FINISH)[0]
    assert finish.attrs["tokens"] == 8
    # Exactly 8 token records: the re-prefill continues from the tokens already produced.
    tokens = of_kind(res.trace, TraceKind.FIRST_TOKEN) + of_kind(res.trace, TraceKind.TOKEN)
    assert len(tokens) == 8
    _assert_nothing_after_failure(res)


def test_replica_failure_requeues_onto_other_replica():
    sc = tiny_scenario("load_then_run", gpus=2, cold_start_gpus=2, requests=6, output=30,
                       faults=(FaultSpec(gpu=0, decode_step=5),))
    res = run_simulation(sc)
    assert res.finished == 6 and res.errors == 0
    assert of_kind(res.trace, TraceKind.REPLAN)[0].attrs["policy"] == "requeue"
    _assert_nothing_after_failure(res)


def test_all_gpus_fail_every_request_ends_with_error():
    sc = tiny_scenario(gpus=2, requests=3, output=5000,
                       faults=(FaultSpec(gpu=0, at_s=0.6), FaultSpec(gpu=1, at_s=0.6)))
    res = run_simulation(sc)
    assert _outcomes(res) == [0, 1, 2]
    assert res.errors >= 1 and res.stalled == 0
    assert all(r.attrs["reason"] == "no_capacity" for r in of_kind(res.trace, TraceKind.REQUEST_ERROR))


def test_tensor_parallel_failure_restarts_on_fresh_gpus():
    sc = tiny_scenario("tensor_parallel", gpus=4, cold_start_gpus=2, requests=3, output=20,
                       faults=(FaultSpec(gpu=1, decode_step=2),))
    res = run_simulation(sc)
    assert res.finished == 3 and res.instances == 2
    assert of_kind(res.trace, TraceKind.REPLAN)[0].attrs["policy"] == "abandon"
    _assert_nothing_after_failure(res)


def test_random_failures_are_seeded():
    sc = tiny_scenario(gpus=4, cold_start_gpus=2, requests=8, output=10, rate_per_s=20.0,
                       random_failures=RandomFailureSpec(mtbf_s=0.5, max_failures=2))
    a, b = run_simulation(sc), run_simulation(sc)
    assert a.failures == b.failures and a.trace == b.trace
    assert a.finished + a.errors == 8 and a.stalled == 0


# GPU 0 becomes ready at ~0.5005 s and prefills all six one by one (~0.19 ms each): 0.501 s falls during
# the third prefill, after two first tokens; decode_step=2 fails it after every first token.
@pytest.mark.parametrize("fault, served_before", [(FaultSpec(gpu=0, at_s=0.501), 2),
                                                  (FaultSpec(gpu=0, decode_step=2), 6)])
def test_sequential_replica_prefill_loses_no_request_or_token_on_failure(fault, served_before):
    """A failure in the middle of a sequential iteration (some newcomers already have their first token)
    hands exactly the unfinished requests back; every request still gets all its tokens once."""
    from dataclasses import replace

    sc = tiny_scenario("load_then_run", gpus=2, requests=6, output=4, max_batch=8, faults=(fault,))
    sc = replace(sc, serving=replace(sc.serving, replica_prefill="sequential"))
    res = run_simulation(sc)
    assert _outcomes(res) == list(range(6)) and res.errors == 0 and res.stalled == 0
    assert len(of_kind(res.trace, TraceKind.FAILURE, gpu=0)) == 1
    fail_s = of_kind(res.trace, TraceKind.FAILURE, gpu=0)[0].t_start_s
    served = [r for r in of_kind(res.trace, TraceKind.FIRST_TOKEN) if r.t_start_s <= fail_s]
    assert len(served) == served_before
    for i in range(6):
        assert of_kind(res.trace, TraceKind.FINISH, request=i)[0].attrs["tokens"] == 4
        assert len(of_kind(res.trace, TraceKind.FIRST_TOKEN, request=i)) == 1
        assert len(of_kind(res.trace, TraceKind.TOKEN, request=i)) == 3
    _assert_nothing_after_failure(res)
