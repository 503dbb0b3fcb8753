"""Simulator adapters: loads in the trace with exact bytes, and TTFT changes by exactly the modelled cost."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sim"))

from sim_scenarios import LINK_BYTES_PER_S, tiny_scenario, with_workload  # noqa: E402

from pipeboost.costs import adapter_compute_s, adapter_merge_s  # noqa: E402
from pipeboost.lora import adapter_bytes, adapter_layer_bytes  # noqa: E402
from pipeboost.scenario import scenario_from_dict, scenario_to_dict  # noqa: E402
from pipeboost.trace import TraceKind  # noqa: E402
from pipeboost.workload import AdapterSpec  # noqa: E402
from sim.engine import run_simulation  # noqa: E402

ADAPTER = AdapterSpec("a0", rank=8, alpha=16.0, target_modules=("q_proj", "v_proj"))


def _one_gpu(adapters=(ADAPTER,), mode: str = "unmerged", placement: str = "popular", preload: int = 0,
             requests: int = 1):
    sc = tiny_scenario(mode="load_then_run", gpus=1, cold_start_gpus=1, requests=requests, prompt=16, output=2)
    sc = with_workload(sc, adapters=tuple(adapters))
    return replace(sc, serving=replace(sc.serving, adapter_mode=mode, adapter_placement=placement,
                                       adapter_preload=preload))


def _ttft(trace) -> float:
    return [r.t_start_s for r in trace if r.kind is TraceKind.FIRST_TOKEN][0]


def _adapter_loads(trace):
    return [r for r in trace if r.kind is TraceKind.LOAD and "adapter" in r.attrs and r.attrs.get("op") != "merge"]


def test_adapter_bytes_are_rank_times_in_plus_out_per_layer():
    model = _one_gpu().model
    h = model.hidden_size
    per_layer = 2 * ADAPTER.rank * (h + h) * model.dtype_bytes  # q_proj and v_proj are h -> h
    assert adapter_layer_bytes(model, ADAPTER) == per_layer
    assert adapter_bytes(model, ADAPTER) == model.num_layers * per_layer


def test_on_demand_load_is_in_the_trace_and_adds_load_plus_compute_to_ttft():
    base = run_simulation(_one_gpu(adapters=()))
    sc = _one_gpu()
    res = run_simulation(sc)
    loads = _adapter_loads(res.trace)
    nbytes = adapter_bytes(sc.model, ADAPTER)
    assert [(r.gpu, r.nbytes, r.attrs["adapter"]) for r in loads] == [(0, nbytes, "a0")]
    assert loads[0].duration_s == pytest.approx(nbytes / LINK_BYTES_PER_S, rel=1e-12)
    extra = adapter_compute_s(sc.params, sc.topology.gpu, sc.model, 8, ("q_proj", "v_proj"), 16)
    assert _ttft(res.trace) - _ttft(base.trace) == pytest.approx(nbytes / LINK_BYTES_PER_S + extra, rel=1e-9)


def test_preloaded_adapter_costs_only_compute():
    base = run_simulation(_one_gpu(adapters=()))
    sc = _one_gpu(placement="all")
    res = run_simulation(sc)
    assert sum(r.nbytes for r in _adapter_loads(res.trace)) == adapter_bytes(sc.model, ADAPTER)
    extra = adapter_compute_s(sc.params, sc.topology.gpu, sc.model, 8, ("q_proj", "v_proj"), 16)
    # the preload runs right after the base units, so the first step waits for it, then pays the compute
    load_end = max(r.t_end_s for r in _adapter_loads(res.trace))
    prefill = _ttft(base.trace) - max(r.t_end_s for r in base.trace if r.kind is TraceKind.LOAD)
    assert _ttft(res.trace) == pytest.approx(load_end + prefill + extra, rel=1e-9)


def test_merged_replica_pays_load_and_merge_once_then_no_compute_overhead():
    base = run_simulation(_one_gpu(adapters=()))
    sc = _one_gpu(mode="merged")
    res = run_simulation(sc)
    nbytes = adapter_bytes(sc.model, ADAPTER)
    merges = [r for r in res.trace if r.kind is TraceKind.LOAD and r.attrs.get("op") == "merge"]
    assert [(m.attrs["from"], m.attrs["adapter"], m.nbytes) for m in merges] == [(None, "a0", 0)]
    merge = adapter_merge_s(sc.params, sc.topology.gpu, sc.model, 8, ("q_proj", "v_proj"))
    assert merges[0].duration_s == pytest.approx(merge, rel=1e-12)
    assert _ttft(res.trace) - _ttft(base.trace) == pytest.approx(nbytes / LINK_BYTES_PER_S + merge, rel=1e-9)


def test_merged_epochs_switch_between_adapters_and_every_request_finishes():
    adapters = tuple(AdapterSpec(f"a{i}") for i in range(3))
    res = run_simulation(_one_gpu(adapters=adapters, mode="merged", requests=12))
    assert res.finished == 12 and res.stalled == 0
    merges = [r for r in res.trace if r.kind is TraceKind.LOAD and r.attrs.get("op") == "merge"]
    assert len(merges) >= 2
    # no request computes across a switch: every merge starts after all earlier-admitted requests finished
    finishes = sorted(r.t_start_s for r in res.trace if r.kind is TraceKind.FINISH)
    firsts = sorted(r.t_start_s for r in res.trace if r.kind is TraceKind.FIRST_TOKEN)
    for m in merges:
        started = sum(t < m.t_start_s for t in firsts)
        assert sum(t <= m.t_start_s for t in finishes) == started


def test_pipeline_stages_load_their_own_stage_part_first():
    sc = tiny_scenario(mode="pipeline_only", gpus=2, cold_start_gpus=2, requests=1, prompt=16, output=2)
    sc = with_workload(sc, adapters=(ADAPTER,))
    sc = replace(sc, serving=replace(sc.serving, adapter_placement="popular", adapter_preload=0))
    res = run_simulation(sc)
    loads = _adapter_loads(res.trace)
    assert {(r.gpu, r.attrs["part"]) for r in loads} == {(0, "stage"), (1, "stage")}
    assert sum(r.nbytes for r in loads) == adapter_bytes(sc.model, ADAPTER)


def test_adapter_serving_keys_round_trip():
    sc = _one_gpu(mode="merged", placement="popular", preload=3)
    sc = replace(sc, serving=replace(sc.serving, adapter_epoch_s=0.25))
    again = scenario_from_dict(scenario_to_dict(sc))
    assert again.serving == sc.serving and again.workload.adapters == sc.workload.adapters
