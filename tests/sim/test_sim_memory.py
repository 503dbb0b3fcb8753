"""KV-cache and activation memory: admission limited by memory, explicit errors, never over the limit."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeboost.plan import SERVING_MODES
from pipeboost.trace import TraceKind
from sim import run_simulation
from sim.memory import ACTIVATION_FACTOR, KV_ERROR
from sim.stepcost import StepCosts
from sim_scenarios import of_kind, tiny_scenario

EXACT = dict(rel=1e-12, abs=1e-15)


def _seq_bytes(sc, prompt: int, output: int) -> int:
    """Bytes one sequence reserves on a GPU that runs every layer (a replica)."""
    model = sc.model
    per_token = model.kv_bytes_per_token() * model.num_layers + ACTIVATION_FACTOR * model.activation_bytes(1)
    return (prompt + output) * per_token


def _with_memory(sc, memory_bytes: int, weight_fraction: float = 0.9):
    topo = replace(sc.topology, gpu=replace(sc.topology.gpu, memory_bytes=memory_bytes))
    return replace(sc, topology=topo, serving=replace(sc.serving, weight_memory_fraction=weight_fraction))


def test_batch_is_limited_by_memory_not_max_batch_size():
    sc = tiny_scenario("load_then_run", gpus=1, cold_start_gpus=1, requests=4, prompt=16, output=4, max_batch=4)
    need = _seq_bytes(sc, 16, 4)
    sc = _with_memory(sc, sc.model.replica_bytes + 2 * need + need // 2)  # room for two sequences
    res = run_simulation(sc)
    assert res.finished == 4 and res.errors == 0
    prefills = of_kind(res.trace, TraceKind.PREFILL)
    assert [p.attrs["requests"] for p in prefills] == [[0, 1], [2, 3]]
    first = {r.request: r.t_start_s for r in of_kind(res.trace, TraceKind.FIRST_TOKEN)}
    finish = {r.request: r.t_start_s for r in of_kind(res.trace, TraceKind.FINISH)}
    assert first[0] == first[1] and finish[0] == finish[1]
    # Requests 2 and 3 wait for 0 and 1 to free their KV cache, then prefill together.
    prefill_s = StepCosts(sc.params, sc.topology.gpu, sc.model).model_prefill_s(16)
    assert first[2] == pytest.approx(finish[0] + 2 * prefill_s, **EXACT)
    assert res.kv_peak_bytes == {0: 2 * need} and res.kv_deferred >= 1


def test_request_that_never_fits_ends_with_explicit_error():
    sc = tiny_scenario("load_then_run", gpus=1, cold_start_gpus=1, requests=3, prompt=16, output=4)
    sc = replace(sc, workload=replace(sc.workload, prompt_tokens=replace(sc.workload.prompt_tokens, value=64)))
    small = _seq_bytes(sc, 16, 4)
    sc = _with_memory(sc, sc.model.replica_bytes + 2 * small, weight_fraction=0.99)  # 64 + 4 tokens never fit
    res = run_simulation(sc)
    errors = of_kind(res.trace, TraceKind.REQUEST_ERROR)
    assert [e.attrs["reason"] for e in errors] == [KV_ERROR] * 3 and res.finished == 0 and res.stalled == 0


@st.composite
def tight_scenarios(draw):
    mode = draw(st.sampled_from(SERVING_MODES))
    gpus = draw(st.integers(1, 3))
    sc = tiny_scenario(mode, gpus=gpus, cold_start_gpus=draw(st.integers(1, gpus)),
                       requests=draw(st.integers(1, 10)), prompt=draw(st.integers(1, 64)),
                       output=draw(st.integers(1, 12)), max_batch=draw(st.integers(1, 6)),
                       rate_per_s=draw(st.sampled_from([10.0, 1000.0])), seed=draw(st.integers(0, 99)))
    per_seq = _seq_bytes(sc, 32, 6)
    return _with_memory(sc, sc.model.replica_bytes + draw(st.integers(1, 6)) * per_seq, weight_fraction=0.99)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tight_scenarios())
def test_kv_bytes_never_exceed_memory_left_by_weights(sc):
    res = run_simulation(sc)
    ends = defaultdict(int)
    for rec in res.trace:
        if rec.kind in (TraceKind.FINISH, TraceKind.REQUEST_ERROR):
            ends[rec.request] += 1
    assert res.stalled == 0 and dict(ends) == {r: 1 for r in range(res.requests)}
    weights: dict[tuple[int, int], int] = defaultdict(int)
    for rec in of_kind(res.trace, TraceKind.LOAD):
        weights[(rec.attrs["instance"], rec.gpu)] += rec.nbytes
    for gpu, peak in res.kv_peak_bytes.items():
        most = max((b for (_, g), b in weights.items() if g == gpu), default=0)
        assert peak + most <= sc.topology.gpu.memory_bytes
