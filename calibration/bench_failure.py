"""The executor's failure handling: detection delay, replan overhead, time to the first moved token.

One synthetic request runs through a PipeBoost plan over all devices (each device loads its own stage,
then the rest); the last stage's device fails at decode step ``decode_step``. From the trace:

* ``failure_detection_s`` = DETECT - FAILURE (the supervisor wakes on the failure report),
* ``replan_overhead_s``   = REPLAN - DETECT (asking the recovery policy, checking the plan),
* ``resume_s``            = end of RECOVERY - REPLAN (rerouting, reloading and re-prefill until the moved
  request's next token; reported only: the simulator derives it from its own cost model).

This is a microbenchmark of the executor's recovery path (a synthetic request, never a validation
scenario). Medians over ``repeats`` runs in which the fault fired (see :data:`MAX_ATTEMPTS_PER_RUN`).
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

from calibration.bench_runtime import cluster_doc
from executor.engine import run_executor
from executor.faults import ExecutorFault
from pipeboost.policies import build_plan
from pipeboost.scenario import scenario_from_dict
from pipeboost.trace import TraceKind, TraceRecord
from pipeboost.workload import Request

log = logging.getLogger(__name__)

MAX_ATTEMPTS_PER_RUN = 3
"""Runs tried per counted run. A small model on fast links can hold a full replica before the request's
arrival is processed on a loaded machine; the request then goes to the replica on another device, the
fault (a decode step on the last stage's device) never fires, and the run is discarded."""

@dataclass(frozen=True)
class FailureTiming:
    """Seconds of each recovery phase in one run (``None`` when the trace lacks the record)."""

    detection_s: float | None
    replan_s: float | None
    resume_s: float | None


def failure_timing(trace: list[TraceRecord]) -> FailureTiming:
    """Phases of the first failure in ``trace`` (FAILURE, DETECT, REPLAN instants; RECOVERY interval)."""
    first = {}
    for rec in sorted(trace, key=lambda r: r.t_start_s):
        first.setdefault(rec.kind, rec)
    fail, detect, replan = (first.get(k) for k in (TraceKind.FAILURE, TraceKind.DETECT, TraceKind.REPLAN))
    recovery = first.get(TraceKind.RECOVERY)
    detection = detect.t_start_s - fail.t_start_s if fail and detect else None
    replan_s = replan.t_start_s - detect.t_start_s if detect and replan else None
    resume = recovery.t_end_s - replan.t_start_s if recovery and replan else None
    return FailureTiming(detection, replan_s, resume)


def measure_failure(model_dir: Path, preset: str, dtype: str, devices: str, n_devices: int,
                    repeats: int = 3, decode_step: int = 4, link_gbps: float = 2.0) -> dict[str, float | None]:
    """Median recovery phases (seconds) over ``repeats`` runs; keys as in the params plus ``resume_s``."""
    if n_devices < 2:
        return {"failure_detection_s": None, "replan_overhead_s": None, "resume_s": None}
    doc = {"name": "calibrate-failure", "model": {"preset": preset, "dtype": dtype},
           "cluster": cluster_doc(n_devices, link_gbps), "serving": {"cold_start_gpus": n_devices},
           "policies": {"mode": "pipeboost"}}
    plan = build_plan(scenario_from_dict(doc))
    fault = ExecutorFault(gpu=plan.stage_gpus[-1], decode_step=decode_step, cause="calibration fault")
    timings = []
    for _ in range(repeats * MAX_ATTEMPTS_PER_RUN):
        result = run_executor(plan, model_dir, [Request(0, 0.0, 8, decode_step + 4)], [fault], devices=devices,
                              link_bandwidth_bytes_per_s=link_gbps * 1e9, seed=0, timeout_s=120.0)
        if any(r.kind is TraceKind.FAILURE for r in result.trace):
            timings.append(failure_timing(result.trace))
            if len(timings) == repeats:
                break
        else:  # the request arrived after a replica was ready and never used the faulted device
            log.info("failure run discarded: the fault's device never ran the request")
    log.info("failure timings: %s", timings)

    def median(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None
    return {"failure_detection_s": median([t.detection_s for t in timings]),
            "replan_overhead_s": median([t.replan_s for t in timings]),
            "resume_s": median([t.resume_s for t in timings])}
