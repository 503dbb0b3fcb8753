"""Metrics from a trace: per request, per GPU, and a summary with percentiles.

Definitions (all seconds):

* TTFT = FIRST_TOKEN - ARRIVAL; TPOT = (FINISH - FIRST_TOKEN) / (tokens - 1); latency = FINISH - ARRIVAL.
* cold start = first FIRST_TOKEN of the run - first ARRIVAL (the first cold start's user-visible delay).
* time to full replica (per GPU) = its REPLICA_READY - first ARRIVAL.
* recovery time = length of each RECOVERY interval (failure to service resumed).
* GPU-seconds = sum over GPUs of the time they are held: each STARTUP to the next RELEASE or FAILURE (or
  the end of the trace); a GPU without STARTUP records counts from its first to its last record.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from pipeboost.trace import TraceKind, TraceRecord


@dataclass(frozen=True)
class RequestMetrics:
    request: int
    arrival_s: float
    ttft_s: float | None
    tpot_s: float | None
    latency_s: float | None
    tokens: int
    error: str | None = None


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile ``q`` in [0, 100]; ``None`` for no values."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def request_metrics(trace: Iterable[TraceRecord]) -> list[RequestMetrics]:
    """One row per request that arrived, in request id order."""
    arrival: dict[int, float] = {}
    first: dict[int, float] = {}
    finish: dict[int, tuple[float, int]] = {}
    errors: dict[int, str] = {}
    counted: dict[int, int] = {}
    for rec in trace:
        if rec.request is None:
            continue
        if rec.kind is TraceKind.ARRIVAL:
            arrival[rec.request] = rec.t_start_s
        elif rec.kind is TraceKind.FIRST_TOKEN:
            first.setdefault(rec.request, rec.t_start_s)
            counted[rec.request] = counted.get(rec.request, 0) + 1
        elif rec.kind is TraceKind.TOKEN:
            counted[rec.request] = counted.get(rec.request, 0) + 1
        elif rec.kind is TraceKind.FINISH:
            finish[rec.request] = (rec.t_start_s, int(rec.attrs.get("tokens", -1)))
        elif rec.kind is TraceKind.REQUEST_ERROR:
            errors[rec.request] = str(rec.attrs.get("reason", "error"))
    rows = []
    for rid in sorted(arrival):
        t0 = arrival[rid]
        ttft = first[rid] - t0 if rid in first else None
        done, tokens = finish.get(rid, (None, -1))
        if tokens < 0:  # FINISH without attrs.tokens: count FIRST_TOKEN + TOKEN records
            tokens = counted.get(rid, 0)
        latency = done - t0 if done is not None else None
        tpot = (done - first[rid]) / (tokens - 1) if done is not None and rid in first and tokens > 1 else None
        rows.append(RequestMetrics(rid, t0, ttft, tpot, latency, tokens, errors.get(rid)))
    return rows


def gpu_metrics(trace: list[TraceRecord]) -> dict[int, dict[str, Any]]:
    """Per GPU: busy interval, GPU-seconds, bytes loaded, time to full replica, failed flag."""
    first_arrival = min((r.t_start_s for r in trace if r.kind is TraceKind.ARRIVAL), default=0.0)
    per: dict[int, dict[str, Any]] = {}
    for rec in trace:
        if rec.gpu is None:
            continue
        g = per.setdefault(rec.gpu, {"start_s": rec.t_start_s, "end_s": rec.t_end_s, "loaded_bytes": 0,
                                     "time_to_replica_s": None, "failed": False, "released_s": None,
                                     "compute_s": 0.0, "load_s": 0.0})
        g["start_s"] = min(g["start_s"], rec.t_start_s)
        g["end_s"] = max(g["end_s"], rec.t_end_s)
        if rec.kind is TraceKind.LOAD:
            g["loaded_bytes"] += rec.nbytes or 0
            g["load_s"] += rec.duration_s
        elif rec.kind in (TraceKind.PREFILL, TraceKind.DECODE):
            g["compute_s"] += rec.duration_s
        elif rec.kind is TraceKind.REPLICA_READY and g["time_to_replica_s"] is None:
            g["time_to_replica_s"] = rec.t_start_s - first_arrival
        elif rec.kind is TraceKind.FAILURE:
            g["failed"] = True
        elif rec.kind is TraceKind.RELEASE:
            g["released_s"] = rec.t_start_s
    allocated = allocated_seconds_per_gpu(trace)
    for gpu, g in per.items():
        g["gpu_seconds"] = allocated.get(gpu, g["end_s"] - g["start_s"])
    return dict(sorted(per.items()))


def allocated_seconds_per_gpu(trace: Iterable[TraceRecord]) -> dict[int, float]:
    """Per GPU, the summed intervals from each STARTUP to the next RELEASE or FAILURE (or the trace end).

    Only GPUs with STARTUP records appear; keep-alive time counts (the GPU is held), idle gaps between
    instances do not.
    """
    trace = list(trace)
    end_of_trace = max((r.t_end_s for r in trace), default=0.0)
    opened: dict[int, float] = {}
    total: dict[int, float] = {}
    for rec in sorted(trace, key=lambda r: (r.t_start_s, r.kind is not TraceKind.STARTUP)):
        if rec.gpu is None:
            continue
        if rec.kind is TraceKind.STARTUP and rec.gpu not in opened:
            opened[rec.gpu] = rec.t_start_s
        elif rec.kind in (TraceKind.RELEASE, TraceKind.FAILURE) and rec.gpu in opened:
            total[rec.gpu] = total.get(rec.gpu, 0.0) + rec.t_start_s - opened.pop(rec.gpu)
    for gpu, start in opened.items():
        total[gpu] = total.get(gpu, 0.0) + end_of_trace - start
    return total


def _stats(values: list[float]) -> dict[str, float | None]:
    return {"mean": sum(values) / len(values) if values else None, "p50": percentile(values, 50),
            "p90": percentile(values, 90), "p99": percentile(values, 99), "max": max(values) if values else None}


def summarize(trace: list[TraceRecord]) -> dict[str, Any]:
    """Run-level metrics (see the module docstring for definitions)."""
    reqs = request_metrics(trace)
    gpus = gpu_metrics(trace)
    arrivals = [r.t_start_s for r in trace if r.kind is TraceKind.ARRIVAL]
    firsts = [r.t_start_s for r in trace if r.kind is TraceKind.FIRST_TOKEN]
    recoveries = [r.duration_s for r in trace if r.kind is TraceKind.RECOVERY]
    replica = [g["time_to_replica_s"] for g in gpus.values() if g["time_to_replica_s"] is not None]
    switches = [r.t_start_s for r in trace if r.kind is TraceKind.MODE_SWITCH]
    end = max((r.t_end_s for r in trace), default=0.0)
    tokens = sum(r.tokens for r in reqs)
    return {
        "requests": len(reqs),
        "finished": sum(1 for r in reqs if r.latency_s is not None),
        "errors": sum(1 for r in reqs if r.error is not None),
        "lost": sum(1 for r in reqs if r.latency_s is None and r.error is None),
        "cold_start_s": (min(firsts) - min(arrivals)) if firsts and arrivals else None,
        "ttft_s": _stats([r.ttft_s for r in reqs if r.ttft_s is not None]),
        "tpot_s": _stats([r.tpot_s for r in reqs if r.tpot_s is not None]),
        "latency_s": _stats([r.latency_s for r in reqs if r.latency_s is not None]),
        "time_to_full_replica_s": _stats(replica),
        "first_mode_switch_s": (min(switches) - min(arrivals)) if switches and arrivals else None,
        "recovery_s": _stats(recoveries),
        "failures": sum(1 for r in trace if r.kind is TraceKind.FAILURE),
        "gpu_seconds": sum(g["gpu_seconds"] for g in gpus.values()),
        "gpus_used": len(gpus),
        "tokens": tokens,
        "makespan_s": end,
    }


def write_metrics(trace: list[TraceRecord], out_dir: Path) -> dict[str, Any]:
    """Write ``metrics.json`` (summary + per GPU) and ``requests.csv``; return the summary."""
    summary = summarize(trace)
    per_gpu = {str(k): v for k, v in gpu_metrics(trace).items()}
    with open(out_dir / "metrics.json", "w", encoding="utf-8") as fh:
        json.dump({"summary": summary, "per_gpu": per_gpu}, fh, indent=2, sort_keys=True)
    rows = request_metrics(trace)
    with open(out_dir / "requests.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(RequestMetrics.__dataclass_fields__))
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))
    return summary
