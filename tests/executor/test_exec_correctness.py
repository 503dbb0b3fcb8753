"""Executor tokens equal ``transformers`` greedy ``generate`` for every partition, device count and timing."""

from __future__ import annotations

import pytest

from executor.engine import run_executor
from pipeboost.trace import TraceKind
from executor_helpers import Req, assert_compute_after_load, assert_request_lifecycle, make_plan

CASES = [
    # (preset, boundaries, devices)
    ("opt-tiny", (0, 4), 1),
    ("opt-tiny", (0, 1, 4), 2),
    ("opt-tiny", (0, 3, 4), 2),
    ("opt-tiny", (0, 1, 2, 4), 3),
    ("opt-tiny", (0, 1, 2, 3, 4), 4),
    ("llama-tiny", (0, 4), 1),
    ("llama-tiny", (0, 2, 4), 2),
    ("llama-tiny", (0, 1, 3, 4), 3),
    ("llama-tiny", (0, 1, 2, 3, 4), 4),
]


def _check_tokens(result, model_dir, requests, reference_tokens) -> None:
    for req in requests:
        expected = reference_tokens(model_dir, result.prompts[req.id], req.output_tokens)
        assert result.tokens[req.id] == expected, f"request {req.id}"


@pytest.mark.parametrize("preset,boundaries,n_devices", CASES)
def test_tokens_match_generate(preset, boundaries, n_devices, model_dirs, reference_tokens):
    model_dir = model_dirs(preset)
    plan = make_plan(4, boundaries)
    requests = [Req(0, 0.0, 9, 6), Req(1, 0.002, 5, 4), Req(2, 0.03, 12, 5)]
    result = run_executor(plan, model_dir, requests, [], devices=f"cpu:{n_devices}", seed=3)
    _check_tokens(result, model_dir, requests, reference_tokens)
    assert_compute_after_load(result.trace)
    assert_request_lifecycle(result.trace, requests)


@pytest.mark.parametrize("arrivals_s", [(0.0, 0.0, 0.0, 0.0), (0.0, 0.05, 0.1, 0.3), (0.25, 0.01, 0.12, 0.02)])
def test_arrival_timing_and_execute_while_load(arrivals_s, model_dirs, reference_tokens):
    """Requests arriving during and after the (paced) load all decode correctly."""
    model_dir = model_dirs("opt-tiny")
    plan = make_plan(4, (0, 2, 4))
    requests = [Req(i, t, 4 + 3 * i, 5) for i, t in enumerate(arrivals_s)]
    result = run_executor(plan, model_dir, requests, [], devices="cpu:2", seed=1,
                          link_bandwidth_bytes_per_s=4e6)
    _check_tokens(result, model_dir, requests, reference_tokens)
    assert_compute_after_load(result.trace)
    assert_request_lifecycle(result.trace, requests)
    # ARRIVAL is the scheduled time: a late wake-up of the arrival thread stays inside the request's TTFT
    arrived = {r.request: r.t_start_s for r in result.trace if r.kind is TraceKind.ARRIVAL}
    assert arrived == {i: t for i, t in enumerate(arrivals_s)}


def test_pipeline_starts_before_full_load_then_switches_to_replicas(model_dirs):
    """Own stage first: the first token precedes the end of loading; replicas then take new requests."""
    model_dir = model_dirs("opt-tiny")
    plan = make_plan(4, (0, 2, 4))
    requests = [Req(0, 0.0, 8, 3), Req(1, 0.9, 8, 3)]
    result = run_executor(plan, model_dir, requests, [], devices="cpu:2", link_bandwidth_bytes_per_s=2e6)
    trace = result.trace
    first = next(r for r in trace if r.kind == TraceKind.FIRST_TOKEN and r.request == 0)
    last_load = max(r.t_end_s for r in trace if r.kind == TraceKind.LOAD)
    assert first.t_start_s < last_load
    ready = [r for r in trace if r.kind == TraceKind.REPLICA_READY]
    assert sorted(r.gpu for r in ready) == [0, 1]
    switch = [r for r in trace if r.kind == TraceKind.MODE_SWITCH]
    first_ready = min(ready, key=lambda r: r.t_start_s)
    assert len(switch) == 1 and switch[0].gpu == first_ready.gpu and switch[0].t_start_s >= first_ready.t_start_s
    late = [r for r in trace if r.kind in (TraceKind.PREFILL, TraceKind.DECODE) and r.request == 1]
    assert len({r.gpu for r in late}) == 1, "a request after the mode switch runs on one replica"
    assert not [r for r in trace if r.kind == TraceKind.HOP and r.request == 1]
    # load order: each device loads its own stage first
    for gpu, own_units in ((0, {-1, 0, 1}), (1, {2, 3, 4})):
        loads = [r.layer for r in trace if r.kind == TraceKind.LOAD and r.gpu == gpu]
        assert set(loads[:3]) == own_units


def test_load_then_run_waits_for_full_load(model_dirs, reference_tokens):
    model_dir = model_dirs("llama-tiny")
    plan = make_plan(4, (0, 4), mode="load_then_run")
    requests = [Req(0, 0.0, 6, 4)]
    result = run_executor(plan, model_dir, requests, [], devices="cpu:1", link_bandwidth_bytes_per_s=4e6)
    _check_tokens(result, model_dir, requests, reference_tokens)
    last_load = max(r.t_end_s for r in result.trace if r.kind == TraceKind.LOAD)
    first_compute = min(r.t_start_s for r in result.trace if r.kind == TraceKind.PREFILL)
    assert first_compute >= last_load


def test_opt125m_sized_model_two_devices(model_dirs, reference_tokens):
    model_dir = model_dirs("opt-125m")
    plan = make_plan(12, (0, 5, 12))
    requests = [Req(0, 0.0, 6, 3), Req(1, 0.0, 4, 2)]
    result = run_executor(plan, model_dir, requests, [], devices="cpu:2")
    _check_tokens(result, model_dir, requests, reference_tokens)
    assert_compute_after_load(result.trace)


@pytest.mark.parametrize("host_pool,filled", [(None, True), (False, False), (True, True)])
def test_cpu_devices_load_from_a_host_pool_by_default(host_pool, filled, model_dirs, reference_tokens, monkeypatch):
    """On CPU virtual devices the checkpoint is copied into a host pool before time zero unless
    ``host_pool=False`` (the page-cache mapping is then the source); the tokens are the same either way."""
    from executor.checkpoint import CheckpointReader

    calls = []
    fill = CheckpointReader.fill_host_pool
    monkeypatch.setattr(CheckpointReader, "fill_host_pool",
                        lambda self, *a, **k: calls.append(k) or fill(self, *a, **k))
    model_dir = model_dirs("llama-tiny")
    requests = [Req(0, 0.0, 7, 4), Req(1, 0.001, 5, 3)]
    result = run_executor(make_plan(4, (0, 2, 4)), model_dir, requests, [], devices="cpu:2", seed=2,
                          host_pool=host_pool)
    assert calls == ([{"pin": False}] if filled else [])
    _check_tokens(result, model_dir, requests, reference_tokens)
