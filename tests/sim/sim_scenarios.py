"""Tiny hand-checkable scenarios for simulator tests (built directly, no YAML)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipeboost.costs import CostParams
from pipeboost.model_config import model_spec_from_hf_config, preset_config
from pipeboost.scenario_model import PolicySpec, Scenario, ServingSpec
from pipeboost.spec import GPULinkSpec, GPUSpec, HostSpec, LinkSpec, Topology
from pipeboost.trace import TraceKind, TraceRecord
from pipeboost.workload import ArrivalSpec, LengthDist, WorkloadSpec

LINK_BYTES_PER_S = 2.0**30
"""Every GPU link (and a switch uplink when present) moves 1 GiB/s; the host side is never a bottleneck."""


def tiny_topology(gpus: int = 2, switch: bool = False, nodes: int = 1) -> Topology:
    gpu = GPUSpec("toy", 1 << 30, 1e13, 1e11)
    switches = (LinkSpec("sw0", LINK_BYTES_PER_S, 0.0),) if switch else ()
    links = tuple(GPULinkSpec(i, LINK_BYTES_PER_S, 0.0, "sw0" if switch else None) for i in range(gpus))
    return Topology(gpu, HostSpec(2.0**40), switches, links, nodes)


EXACT_PARAMS = CostParams(link_efficiency=1.0, transfer_latency_s=0.0, startup_s=0.5,
                          failure_detection_s=0.125)


def tiny_scenario(mode: str = "pipeboost", gpus: int = 2, cold_start_gpus: int = 2, requests: int = 1,
                  prompt: int = 16, output: int = 4, rate_per_s: float = 1000.0, max_batch: int = 4,
                  keep_alive_s: float = 10.0, switch: bool = False, params: CostParams = EXACT_PARAMS,
                  **extra: Any) -> Scenario:
    """opt-tiny on a toy cluster; all requests arrive at rate ``rate_per_s`` from t=0."""
    config = preset_config("opt-tiny")
    workload = WorkloadSpec(ArrivalSpec("poisson", rate_per_s), LengthDist("constant", value=prompt),
                            LengthDist("constant", value=output), num_requests=requests)
    return Scenario(name="tiny", seed=extra.pop("seed", 1), model=model_spec_from_hf_config(config, "opt-tiny"),
                    model_config=config, topology=tiny_topology(gpus, switch, extra.pop("nodes", 1)),
                    policies=PolicySpec(mode=mode, recovery=extra.pop("recovery", "reroute_to_holder")),
                    serving=ServingSpec(cold_start_gpus=cold_start_gpus, max_batch_size=max_batch,
                                        keep_alive_s=keep_alive_s),
                    workload=workload, params=params, **extra)


def with_workload(scenario: Scenario, **changes: Any) -> Scenario:
    return replace(scenario, workload=replace(scenario.workload, **changes))


def of_kind(trace: list[TraceRecord], kind: TraceKind, **match: Any) -> list[TraceRecord]:
    return [r for r in trace if r.kind is kind and all(getattr(r, k) == v for k, v in match.items())]
