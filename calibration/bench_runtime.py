"""The executor runtime's own latencies outside the units' compute and the hop copies.

A step in the executor costs more than its units' forward passes: the worker threads of the devices hand
work to each other through queues (a thread wake-up, slow when the other core sleeps), a request's first
task is built and queued at its arrival, and the runtime does a little Python work between units and steps.
:func:`measure_runtime_overheads` runs a few synthetic requests, spaced so that each arrives at an idle
executor, through a ``pipeline_only`` plan over all devices and through a one-device plan, and reads from
the traces (:func:`runtime_gaps`):

* ``per_unit_s``: between two consecutive units of one step on one device (end to next start);
* ``handoff_s``: a HOP's end to the next stage's first unit on the other device, and a token to the next
  step's first unit when that runs on another device than the last stage;
* ``step_start_s``: a token to the next step's first unit on the same device (one device);
* ``dispatch_s``: a request's ARRIVAL to its first unit (the executor idle, the units resident).

Each is the median of its samples; they become ``CostParams.dispatch_s``, ``handoff_s``, ``step_start_s``
and the per-unit runtime overhead of the compute profiles and of ``unit_overhead_s``. These are
microbenchmarks of the runtime (synthetic requests), not validation scenarios.

:func:`worker_switch_gaps` reads a busy pipeline instead (requests queued at every stage, e.g. the
concurrency runs of :func:`calibration.bench_profile.concurrency_slowdown`): a device's worker, after it
hands a stage's output to another device (``after_hop_s``: HOP end) or emits a token from the last stage
(``after_token_s``), to the first unit of another request whose input was already there, the time the
worker spends on its own hand-off or token before it serves the next request
(``CostParams.worker_after_hop_s``, ``worker_after_token_s``; 0.1-0.2 ms on the 2-core VM, session 8).
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from executor.engine import run_executor
from pipeboost.policies import build_plan
from pipeboost.scenario import scenario_from_dict
from pipeboost.trace import TraceKind, TraceRecord
from pipeboost.workload import Request

log = logging.getLogger(__name__)

GAP_KINDS = ("per_unit_s", "handoff_s", "step_start_s", "dispatch_s")


def cluster_doc(n_devices: int, link_gbps: float = 2.0) -> dict:
    """Scenario ``cluster`` section of ``n_devices`` CPU virtual devices with ``link_gbps`` GB/s links."""
    return {"preset": "4xcpu-virtual",
            "links": [{"gpu": i, "bandwidth_gbps": link_gbps, "latency_us": 0} for i in range(n_devices)]}


def pipeline_plan(preset: str, dtype: str, n_devices: int, mode: str = "pipeline_only",
                  loading_order: str = "own_stage_only"):
    """A plan of ``preset`` over ``n_devices`` CPU virtual devices (default: a pipeline, each device loading
    its own stage only)."""
    doc = {"name": "calibrate-runtime", "model": {"preset": preset, "dtype": dtype},
           "cluster": cluster_doc(n_devices),
           "serving": {"cold_start_gpus": n_devices},
           "policies": {"mode": mode, "loading_order": loading_order}}
    return build_plan(scenario_from_dict(doc))


@dataclass(frozen=True)
class RuntimeOverheads:
    """Median seconds of each latency (see the module docstring; None: no sample) and the samples."""

    per_unit_s: float | None
    handoff_s: float | None
    step_start_s: float | None
    dispatch_s: float | None
    samples: dict[str, list[float]] = field(default_factory=dict, compare=False)


def _units_by_request(trace: list[TraceRecord]) -> dict[int, list[TraceRecord]]:
    units: dict[int, list[TraceRecord]] = {}
    for rec in sorted(trace, key=lambda r: r.t_start_s):
        if rec.kind in (TraceKind.PREFILL, TraceKind.DECODE) and rec.request is not None and rec.layer is not None:
            units.setdefault(int(rec.request), []).append(rec)
    return units


def _step_gaps(units: list[TraceRecord], tokens: list[float], out: dict[str, list[float]]) -> None:
    """Unit-to-unit gaps within a step, and token-to-next-step gaps, of one request."""
    by_step: dict[int, list[TraceRecord]] = {}
    for rec in units:
        by_step.setdefault(int(rec.attrs.get("step", 0)), []).append(rec)
    for recs in by_step.values():
        for a, b in zip(recs, recs[1:]):
            if a.gpu == b.gpu:
                out["per_unit_s"].append(b.t_start_s - a.t_end_s)
    for index, t_token in enumerate(sorted(tokens)):
        done, nxt = by_step.get(index), by_step.get(index + 1)
        if done and nxt:
            kind = "step_start_s" if nxt[0].gpu == done[-1].gpu else "handoff_s"
            out[kind].append(nxt[0].t_start_s - t_token)


def runtime_gaps(trace: list[TraceRecord]) -> dict[str, list[float]]:
    """Samples of each latency in ``trace`` (seconds; see the module docstring)."""
    out: dict[str, list[float]] = {k: [] for k in GAP_KINDS}
    units = _units_by_request(trace)
    arrivals = {int(r.request): r.t_start_s for r in trace if r.kind is TraceKind.ARRIVAL}
    tokens: dict[int, list[float]] = {}
    for rec in trace:
        if rec.kind in (TraceKind.FIRST_TOKEN, TraceKind.TOKEN):
            tokens.setdefault(int(rec.request), []).append(rec.t_start_s)
    for req, recs in units.items():
        if req in arrivals:
            out["dispatch_s"].append(recs[0].t_start_s - arrivals[req])
        _step_gaps(recs, tokens.get(req, []), out)
    for hop in (r for r in trace if r.kind is TraceKind.HOP and r.request is not None):
        step, dst = hop.attrs.get("step"), hop.attrs.get("to")
        nxt = [u for u in units.get(int(hop.request), []) if u.attrs.get("step") == step and u.gpu == dst
               and u.t_start_s >= hop.t_end_s]
        if nxt:
            out["handoff_s"].append(nxt[0].t_start_s - hop.t_end_s)
    return out


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def measure_runtime_overheads(model_dir: Path, preset: str, dtype: str, n_devices: int, device_kind: str = "cpu",
                              requests: int = 5, output_tokens: int = 8, first_arrival_s: float = 0.3,
                              spacing_s: float = 0.1) -> RuntimeOverheads:
    """Run ``requests`` spaced requests on ``n_devices`` (pipeline) and on one device; median latencies.

    ``spacing_s`` must exceed one request's run time so each request meets an idle executor (use a
    small model of the calibrated family)."""
    samples: dict[str, list[float]] = {k: [] for k in GAP_KINDS}
    for devices in dict.fromkeys((n_devices, 1)):
        plan = pipeline_plan(preset, dtype, devices)
        reqs = [Request(i, first_arrival_s + i * spacing_s, 8, output_tokens) for i in range(requests)]
        result = run_executor(plan, model_dir, reqs, devices=f"{device_kind}:{devices}", seed=0, timeout_s=120.0)
        for kind, values in runtime_gaps(result.trace).items():
            samples[kind] += [max(v, 0.0) for v in values]
    log.info("runtime latencies: %s", {k: _median(v) for k, v in samples.items()})
    return RuntimeOverheads(*(_median(samples[k]) for k in GAP_KINDS), samples=samples)


SWITCH_KINDS = ("after_hop_s", "after_token_s")
SWITCH_GAP_MAX_S = 0.005
"""A longer gap is not the worker's own work (it waited for a unit or a wake-up): not a sample."""


def worker_switch_gaps(trace: list[TraceRecord]) -> dict[str, list[float]]:
    """Samples of ``after_hop_s`` and ``after_token_s`` in one executor trace (see the module docstring).

    Per device, over its unit calls, the HOPs it sent and the tokens it emitted in time order: a unit call of
    request B right after a HOP or token of another request A is a sample (B's start minus A's end, seconds)
    when B's input had arrived by A's end (B's latest HOP, token or ARRIVAL before its call), so the worker,
    not B, was what B waited for; gaps over :data:`SWITCH_GAP_MAX_S` are left out."""
    out: dict[str, list[float]] = {k: [] for k in SWITCH_KINDS}
    inputs: dict[int, list[float]] = {}
    for rec in trace:
        if rec.request is not None and rec.kind in (TraceKind.HOP, TraceKind.FIRST_TOKEN, TraceKind.TOKEN,
                                                    TraceKind.ARRIVAL):
            inputs.setdefault(int(rec.request), []).append(rec.t_end_s)
    events: dict[int, list[TraceRecord]] = {}
    for rec in trace:
        if rec.gpu is not None and rec.request is not None and (
                (rec.kind in (TraceKind.PREFILL, TraceKind.DECODE) and rec.layer is not None)
                or rec.kind in (TraceKind.HOP, TraceKind.FIRST_TOKEN, TraceKind.TOKEN)):
            events.setdefault(int(rec.gpu), []).append(rec)
    for recs in events.values():
        recs.sort(key=lambda r: (r.t_start_s, r.t_end_s))
        for a, b in zip(recs, recs[1:]):
            if b.kind not in (TraceKind.PREFILL, TraceKind.DECODE) or a.request == b.request:
                continue
            if a.kind is TraceKind.HOP:
                kind = "after_hop_s"
            elif a.kind in (TraceKind.FIRST_TOKEN, TraceKind.TOKEN):
                kind = "after_token_s"
            else:
                continue
            ready = max((t for t in inputs.get(int(b.request), []) if t <= b.t_start_s), default=None)
            gap = b.t_start_s - a.t_end_s
            if ready is not None and ready <= a.t_end_s and 0.0 <= gap <= SWITCH_GAP_MAX_S:
                out[kind].append(gap)
    return out


def worker_switch_s(traces: list[list[TraceRecord]]) -> dict[str, tuple[float, int]]:
    """Per kind of :data:`SWITCH_KINDS`: the median of its samples over ``traces`` and their number
    ``(0.0, 0)`` without one)."""
    samples: dict[str, list[float]] = {k: [] for k in SWITCH_KINDS}
    for trace in traces:
        for kind, values in worker_switch_gaps(trace).items():
            samples[kind] += values
    return {k: ((float(statistics.median(v)), len(v)) if v else (0.0, 0)) for k, v in samples.items()}
