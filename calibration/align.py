"""The workload both engines run in a validation, and the comparison of their traces.

:func:`validation_scenario` derives ONE scenario that both the simulator and the executor run:

* the requests are exactly the ones the executor replays (``executor.max_requests`` cap, arrival times
  times ``executor.time_scale``), written to a trace CSV, and shifted so the first arrives at 0 s. The
  executor starts loading at engine time zero while the simulator cold-starts at the first arrival, so a
  first arrival at 0 makes both start loading at the same instant; time-triggered faults are scaled the
  same way and stay relative to that instant;
* ``executor.time_scale = 1`` and ``max_requests = None`` (already applied), so the executor replays the
  CSV unchanged;
* ``serving.max_batch_size`` as the scenario says (both engines read it: the executor batches replica
  decode steps across requests, :mod:`executor.batching`); ``max_batch_size=`` overrides it;
* ``serving.pipeline_micro_batch_size = 1`` and ``pipeline_max_in_flight`` = the request count (no limit):
  during a cold start the executor sends each request through the pipeline stages as its own micro-batch
  as soon as it arrives (:mod:`executor.pipeline`), and the simulator then schedules the same way;
* ``serving.replica_prefill = "sequential"``: at each step boundary an executor replica runs every queued
  prefill alone, in order, each request's first token at the end of its own prefill, and only then one
  batched decode step of the requests already running (:mod:`executor.worker`); the simulator's replica
  server then does the same (:mod:`sim.replica`) instead of giving a whole burst one first-token time;
* ``serving.replica_dispatch = "least_busy"``: the executor assigns a request to a replica when it arrives
  (the fewest unfinished requests, ties to the lowest device) and that device serves its own queue in
  order; the simulator's pool then dispatches the same way (:mod:`sim.pool`) instead of letting whichever
  replica is idle first take it;
* ``keep_alive_s`` large (the executor never releases an instance), and the given ``params``.

:func:`compare_traces` lines the traces up by key (GPU, request, recovery index) and returns rows of
``component, key, sim_s, executor_s, rel_error`` (relative to the executor).
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeboost.costs import CostParams
from pipeboost.metrics import gpu_metrics, request_metrics
from pipeboost.scenario import scenario_from_dict, scenario_to_dict
from pipeboost.scenario_model import Scenario
from pipeboost.trace import TraceKind, TraceRecord

KEEP_ALIVE_S = 1e6
COMPONENTS = ("ttft", "load_gpu", "full_replica", "recovery")
"""Components that count towards the overall median (per-unit loads are reported separately)."""
REPORTED_COMPONENTS = ("latency",)
"""Compared and reported, not counted in the overall median: a request's end-to-end latency (arrival to
its last token), which the issue's goals do not name."""
ALL_COMPONENTS = (*COMPONENTS, *REPORTED_COMPONENTS, "load_unit")
"""Every component of a validation's tables, in the order they are printed."""


def executor_workload_rows(scenario: Scenario) -> list[dict[str, Any]]:
    """The executor's requests (capped, time-scaled), first arrival moved to 0 s."""
    from executor.replay import scenario_requests

    requests = scenario_requests(scenario)
    t0 = requests[0].arrival_s if requests else 0.0
    return [{"arrival_s": round(r.arrival_s - t0, 9), "prompt_tokens": r.prompt_tokens,
             "output_tokens": r.output_tokens} for r in requests]


def _abs_model_dir(scenario: Scenario) -> str | None:
    path = scenario.executor.model_dir
    if path and not Path(path).is_absolute() and scenario.base_dir is not None:
        return str((scenario.base_dir / path).resolve())
    return path


def validation_scenario(scenario: Scenario, params: CostParams, work_dir: Path,
                        max_batch_size: int | None = None) -> Scenario:
    """The scenario both engines run (see the module docstring); writes ``work_dir/workload.csv``."""
    if max_batch_size is None:
        max_batch_size = scenario.serving.max_batch_size
    work_dir.mkdir(parents=True, exist_ok=True)
    rows = executor_workload_rows(scenario)
    with open(work_dir / "workload.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["arrival_s", "prompt_tokens", "output_tokens"])
        writer.writeheader()
        writer.writerows(rows)
    doc = scenario_to_dict(scenario)
    doc["workload"] = {"arrivals": {"kind": "trace", "file": "workload.csv"}, "num_requests": len(rows)}
    doc["serving"] = {**doc["serving"], "max_batch_size": max_batch_size, "keep_alive_s": KEEP_ALIVE_S,
                      "pipeline_micro_batch_size": 1, "pipeline_max_in_flight": max(len(rows), 1),
                      "replica_prefill": "sequential", "replica_dispatch": "least_busy"}
    doc["executor"] = {**doc["executor"], "time_scale": 1.0, "max_requests": None,
                       "model_dir": _abs_model_dir(scenario)}
    scale = scenario.executor.time_scale
    for fault in doc["faults"]:
        if "at_s" in fault:
            fault["at_s"] = fault["at_s"] * scale
    doc["params"] = params.to_dict()
    doc.pop("random_failures", None)
    return scenario_from_dict(doc, file=str(work_dir / f"{scenario.name}.yaml"))


@dataclass(frozen=True)
class Row:
    """One compared quantity; ``rel_error = |sim - executor| / executor`` (None when one side is missing)."""

    component: str
    key: str
    sim_s: float | None
    executor_s: float | None
    executor_spread: float | None = None
    """With executor repeats: (max - min) / median of the runs' values (:mod:`calibration.repeats`)."""

    @property
    def rel_error(self) -> float | None:
        if self.sim_s is None or self.executor_s is None or self.executor_s <= 0:
            return None
        return abs(self.sim_s - self.executor_s) / self.executor_s

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "rel_error": self.rel_error}


def _loads(trace: list[TraceRecord]) -> dict[tuple[int, int, int], float]:
    """LOAD durations keyed by (gpu, unit, occurrence of that unit on that gpu)."""
    seen: dict[tuple[int, int], int] = {}
    out = {}
    for rec in sorted((r for r in trace if r.kind is TraceKind.LOAD), key=lambda r: r.t_start_s):
        k = (int(rec.gpu), int(rec.layer))
        seen[k] = seen.get(k, 0) + 1
        out[(k[0], k[1], seen[k])] = rec.duration_s
    return out


def unit_load_rows(sim: list[TraceRecord], exe: list[TraceRecord]) -> list[Row]:
    """Per-unit LOAD durations on both engines."""
    a, b = _loads(sim), _loads(exe)
    return [Row("load_unit", f"gpu{g}/unit{u}#{n}", a.get((g, u, n)), b.get((g, u, n)))
            for g, u, n in sorted(set(a) | set(b))]


def _load_end(trace: list[TraceRecord]) -> dict[int, float]:
    """Per GPU, the end of its last LOAD: the time its whole load order is resident (from time zero)."""
    ends: dict[int, float] = {}
    for rec in trace:
        if rec.kind is TraceKind.LOAD:
            ends[int(rec.gpu)] = max(ends.get(int(rec.gpu), 0.0), rec.t_end_s)
    return ends


def compare_traces(sim: list[TraceRecord], exe: list[TraceRecord]) -> list[Row]:
    """Rows per GPU (load time, time to full replica), per request (TTFT, end-to-end latency) and per
    recovery."""
    rows: list[Row] = []
    sl, el = _load_end(sim), _load_end(exe)
    rows += [Row("load_gpu", f"gpu{g}", sl.get(g), el.get(g)) for g in sorted(set(sl) | set(el))]
    sg, eg = gpu_metrics(sim), gpu_metrics(exe)
    for g in sorted(set(sg) | set(eg)):
        s, e = sg.get(g, {}).get("time_to_replica_s"), eg.get(g, {}).get("time_to_replica_s")
        if s is not None or e is not None:
            rows.append(Row("full_replica", f"gpu{g}", s, e))
    sm, em = request_metrics(sim), request_metrics(exe)
    for component, field in (("ttft", "ttft_s"), ("latency", "latency_s")):
        sr = {r.request: getattr(r, field) for r in sm}
        er = {r.request: getattr(r, field) for r in em}
        rows += [Row(component, f"req{i}", sr.get(i), er.get(i)) for i in sorted(set(sr) | set(er))]
    srec = [r.duration_s for r in sim if r.kind is TraceKind.RECOVERY]
    erec = [r.duration_s for r in exe if r.kind is TraceKind.RECOVERY]
    for i in range(max(len(srec), len(erec))):
        rows.append(Row("recovery", f"#{i}", srec[i] if i < len(srec) else None,
                        erec[i] if i < len(erec) else None))
    return rows
