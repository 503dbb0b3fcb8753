"""Per-step runtime overhead of the executor's pipeline, outside the units' own compute.

A decode step in the executor costs more than its units' forward passes: task objects, the hand-off of the
hidden state between per-device worker threads (a queue wake-up), the greedy token, trace records. The cost
model has only a per-unit launch overhead, so :func:`runtime_overhead_per_unit_s` measures the rest on the
executor itself — one request through a ``pipeline_only`` plan over all devices, arriving after the loads —
and spreads it over the units of a step:

    overhead per unit = median over decode steps of (token gap - DECODE time - HOP time) / units per step

This is a microbenchmark of the runtime (one synthetic request), not a validation scenario.
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

from executor.engine import run_executor
from pipeboost.policies import build_plan
from pipeboost.scenario import scenario_from_dict
from pipeboost.trace import TraceKind, TraceRecord
from pipeboost.workload import Request

log = logging.getLogger(__name__)


def cluster_doc(n_devices: int, link_gbps: float = 2.0) -> dict:
    """Scenario ``cluster`` section of ``n_devices`` CPU virtual devices with ``link_gbps`` GB/s links."""
    return {"preset": "4xcpu-virtual",
            "links": [{"gpu": i, "bandwidth_gbps": link_gbps, "latency_us": 0} for i in range(n_devices)]}


def _plan(preset: str, dtype: str, n_devices: int):
    doc = {"name": "calibrate-runtime", "model": {"preset": preset, "dtype": dtype},
           "cluster": cluster_doc(n_devices),
           "serving": {"cold_start_gpus": n_devices},
           "policies": {"mode": "pipeline_only", "loading_order": "own_stage_only"}}
    return build_plan(scenario_from_dict(doc))


def step_overheads_s(trace: list[TraceRecord], units_per_step: int) -> list[float]:
    """Per decode step: (gap between consecutive tokens - DECODE - HOP seconds) / ``units_per_step``."""
    tokens = sorted((r.t_start_s, int(r.attrs.get("index", 0))) for r in trace
                    if r.kind in (TraceKind.FIRST_TOKEN, TraceKind.TOKEN))
    busy: dict[int, float] = {}
    for rec in trace:
        if rec.kind in (TraceKind.DECODE, TraceKind.HOP) and rec.attrs.get("step") is not None:
            busy[int(rec.attrs["step"])] = busy.get(int(rec.attrs["step"]), 0.0) + rec.duration_s
    out = []
    for (t_prev, _), (t, index) in zip(tokens, tokens[1:]):
        out.append(max(0.0, (t - t_prev - busy.get(index, 0.0)) / units_per_step))
    return out


def runtime_overhead_per_unit_s(model_dir: Path, preset: str, dtype: str, devices: str, n_devices: int,
                                output_tokens: int = 24, arrival_s: float = 0.5) -> float | None:
    """Median per-unit share of the executor's step overhead (seconds), or None if no step was measured."""
    plan = _plan(preset, dtype, n_devices)
    request = Request(0, arrival_s, 8, output_tokens)
    result = run_executor(plan, model_dir, [request], devices=devices, seed=0, timeout_s=120.0)
    units = plan.partition.num_layers + 2
    values = step_overheads_s(result.trace, units)
    log.info("runtime overhead per unit: %s", values)
    return statistics.median(values) if values else None
