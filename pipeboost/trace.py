"""The one trace schema both engines write, its JSONL form and a Chrome/Perfetto export.

A trace is a list of :class:`TraceRecord`. Intervals (loads, compute, hops) have ``t_end_s > t_start_s``;
instants (arrival, first token, failure, mode switch) have ``t_end_s == t_start_s``. Times are seconds
since the scenario's time zero (the first event the engine sees). Unused fields are ``None``.

JSONL lines are written with sorted keys and ``repr``-exact floats, so the same run gives the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Iterator


class TraceKind(str, Enum):
    """What a record describes. Interval kinds first, then instants."""

    STARTUP = "startup"            # process / context start on a GPU before its first load
    LOAD = "load"                  # one unit copied host -> GPU (nbytes)
    PREFILL = "prefill"            # one unit's prefill compute for a request or micro-batch
    DECODE = "decode"              # one unit's decode step
    HOP = "hop"                    # activation transfer between stages (nbytes)
    ARRIVAL = "arrival"            # request arrives
    FIRST_TOKEN = "first_token"    # request's first output token is ready
    TOKEN = "token"                # a later output token (attrs.index)
    FINISH = "finish"              # request has all its tokens (attrs.tokens: output token count)
    REQUEST_ERROR = "request_error"  # request ended with an explicit error (attrs.reason)
    FAILURE = "failure"            # GPU fails (attrs.cause)
    DETECT = "detect"              # the failure is detected
    REPLAN = "replan"              # a recovery plan is made (attrs.plan)
    RECOVERY = "recovery"          # interval from failure to service resumed
    REPLICA_READY = "replica_ready"  # GPU holds a full replica
    MODE_SWITCH = "mode_switch"    # pipeline -> replica serving (attrs.from, attrs.to)
    RELEASE = "release"            # GPU released (keep-alive expired)


INSTANT_KINDS = frozenset({TraceKind.ARRIVAL, TraceKind.FIRST_TOKEN, TraceKind.TOKEN, TraceKind.FINISH,
                           TraceKind.REQUEST_ERROR, TraceKind.FAILURE, TraceKind.DETECT, TraceKind.REPLAN,
                           TraceKind.REPLICA_READY, TraceKind.MODE_SWITCH, TraceKind.RELEASE})


@dataclass(frozen=True)
class TraceRecord:
    """One event or interval. ``layer`` is a unit index (-1 embed, L head); ``nbytes`` for loads and hops."""

    t_start_s: float
    t_end_s: float
    kind: TraceKind
    gpu: int | None = None
    stage: int | None = None
    layer: int | None = None
    request: int | None = None
    nbytes: int | None = None
    attrs: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def duration_s(self) -> float:
        return self.t_end_s - self.t_start_s

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"t_start_s": self.t_start_s, "t_end_s": self.t_end_s, "kind": self.kind.value}
        for name in ("gpu", "stage", "layer", "request", "nbytes"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.attrs:
            data["attrs"] = self.attrs
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TraceRecord":
        return cls(float(data["t_start_s"]), float(data["t_end_s"]), TraceKind(data["kind"]), data.get("gpu"),
                   data.get("stage"), data.get("layer"), data.get("request"), data.get("nbytes"),
                   dict(data.get("attrs", {})))


def instant(t_s: float, kind: TraceKind, **fields: Any) -> TraceRecord:
    """A zero-length record at ``t_s``."""
    return TraceRecord(t_s, t_s, kind, **fields)


def write_jsonl(records: Iterable[TraceRecord], path: Path) -> None:
    """Write records one JSON object per line (sorted keys: byte-identical for identical runs)."""
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec.to_dict(), sort_keys=True, separators=(",", ":")))
            fh.write("\n")


def read_jsonl(path: Path) -> list[TraceRecord]:
    """Read a trace written by :func:`write_jsonl`."""
    with open(path, encoding="utf-8") as fh:
        return [TraceRecord.from_dict(json.loads(line)) for line in fh if line.strip()]


def sorted_records(records: Iterable[TraceRecord]) -> list[TraceRecord]:
    """Records ordered by start time, then end time, kind, GPU, layer, request (a total order)."""
    def key(r: TraceRecord) -> tuple:
        return (r.t_start_s, r.t_end_s, r.kind.value, -1 if r.gpu is None else r.gpu,
                -2 if r.layer is None else r.layer, -1 if r.request is None else r.request)
    return sorted(records, key=key)


_LANES = {TraceKind.STARTUP: 0, TraceKind.LOAD: 0, TraceKind.PREFILL: 1, TraceKind.DECODE: 1, TraceKind.HOP: 2}
_LANE_NAMES = {0: "copy", 1: "compute", 2: "hop", 3: "events"}


def _chrome_events(records: Iterable[TraceRecord]) -> Iterator[dict[str, Any]]:
    for rec in records:
        pid = -1 if rec.gpu is None else rec.gpu
        args = {k: v for k, v in rec.to_dict().items() if k not in ("t_start_s", "t_end_s", "kind")}
        name = rec.kind.value if rec.layer is None else f"{rec.kind.value} u{rec.layer}"
        if rec.request is not None:
            name += f" r{rec.request}"
        if rec.kind in INSTANT_KINDS:
            yield {"name": name, "ph": "i", "s": "p", "ts": rec.t_start_s * 1e6, "pid": pid, "tid": 3, "args": args}
        else:
            yield {"name": name, "ph": "X", "ts": rec.t_start_s * 1e6, "dur": rec.duration_s * 1e6,
                   "pid": pid, "tid": _LANES.get(rec.kind, 3), "args": args}


def to_chrome_trace(records: list[TraceRecord]) -> dict[str, Any]:
    """A Chrome trace (``chrome://tracing``, Perfetto): one process per GPU, lanes copy/compute/hop/events."""
    events = list(_chrome_events(records))
    gpus = sorted({e["pid"] for e in events})
    meta = []
    for pid in gpus:
        meta.append({"name": "process_name", "ph": "M", "pid": pid,
                     "args": {"name": "requests" if pid == -1 else f"GPU {pid}"}})
        for tid, lane in _LANE_NAMES.items():
            meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": lane}})
    return {"traceEvents": meta + events, "displayTimeUnit": "ms"}


def write_chrome_trace(records: list[TraceRecord], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(to_chrome_trace(records), fh, sort_keys=True)
