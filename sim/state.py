"""Mutable simulation state: GPUs (compute, memory, resident units), requests and the trace recorder.

A :class:`GPUState` owns one compute resource (capacity 1; the copy engine is separate, so loads overlap
compute), the set of resident units with one readiness event per unit, and the bytes of weights it holds.
Processes that run on a GPU register there so a failure can interrupt them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import simpy

from pipeboost.trace import TraceKind, TraceRecord

logger = logging.getLogger(__name__)


class GPUState:
    """One GPU: liveness, compute resource, resident units (with readiness events) and weight bytes."""

    def __init__(self, env: simpy.Environment, gid: int, budget_bytes: int) -> None:
        self.env = env
        self.gid = gid
        self.alive = True
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.compute = simpy.Resource(env, capacity=1)
        self.resident: set[int] = set()
        self._ready: dict[int, simpy.Event] = {}
        self.procs: dict[simpy.Process, None] = {}  # ordered set: deterministic interrupts
        self.instance: Any = None
        self.first_prefill_done = False
        self.decode_iters = 0
        self.transfer: tuple[Any, simpy.Event, int, int] | None = None  # (network, done, unit, nbytes)
        self.adapters: dict[tuple[str, str], simpy.Event] = {}  # (adapter, part) -> resident (sim.lora)
        self.worker_busy: tuple[float, object] = (0.0, None)
        """(time, owner): the device's worker is busy until ``time`` with ``owner``'s hand-off or token
        (``worker_after_hop_s``, ``worker_after_token_s``); another micro-batch starts its units after it."""

    def ready_event(self, unit: int) -> simpy.Event:
        """Event that fires when ``unit`` becomes resident (already triggered if it is)."""
        ev = self._ready.get(unit)
        if ev is None:
            ev = self.env.event()
            if unit in self.resident:
                ev.succeed()
            self._ready[unit] = ev
        return ev

    def make_resident(self, unit: int, nbytes: int) -> None:
        self.resident.add(unit)
        self.used_bytes += nbytes
        ev = self._ready.get(unit)
        if ev is not None and not ev.triggered:
            ev.succeed()

    def wipe(self) -> None:
        """Memory lost or released: no unit is resident any more; pending readiness events never fire."""
        self.resident = set()
        self._ready = {}
        self.used_bytes = 0
        self.adapters = {}
        self.first_prefill_done = False
        self.decode_iters = 0


class ReqState:
    """Progress of one request: ``generated`` output tokens so far (0 before the first token)."""

    __slots__ = ("id", "arrival_s", "prompt", "output", "generated", "done", "adapter", "watch")

    def __init__(self, rid: int, arrival_s: float, prompt: int, output: int, adapter: str | None = None) -> None:
        self.id = rid
        self.arrival_s = arrival_s
        self.prompt = prompt
        self.output = output
        self.generated = 0
        self.done = False
        self.adapter = adapter
        self.watch: object = None
        """A simpy event to succeed at this request's next token (recovery waits for moved requests)."""

    @property
    def prefill_tokens(self) -> int:
        """Tokens a (re-)prefill must process: the prompt plus tokens generated before a failure."""
        return self.prompt + self.generated

    @property
    def context(self) -> int:
        """Cached tokens a decode step attends to (the step's own new token is counted by the cost model)."""
        return self.prompt + self.generated - 1


@dataclass
class Tracer:
    """Collects trace records. ``token_records`` adds per-token TOKEN records; ``step_records`` adds
    replica decode-step and per-unit pipeline compute records (off for very large runs)."""

    token_records: bool = True
    step_records: bool = True
    records: list[TraceRecord] = field(default_factory=list)

    def interval(self, kind: TraceKind, t0: float, t1: float, **fields: Any) -> None:
        self.records.append(TraceRecord(t0, t1, kind, **fields))

    def instant(self, kind: TraceKind, t: float, **fields: Any) -> None:
        self.records.append(TraceRecord(t, t, kind, **fields))
