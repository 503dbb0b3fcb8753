"""The global request queue, the idle-server registry that dispatches work, and request outcomes.

Servers (replica loops, pipeline schedulers) take requests from one FIFO queue. A server with nothing
to do registers an idle-wake event; each pushed request wakes at most one idle server: one of the most
recently idle *instance* (LIFO over instances concentrates load so that surplus instances go idle and reach
their keep-alive), and within that instance the server on the lowest GPU, as the executor routes a request
to the least-busy replica with ties to the lowest device index (``executor.pipeline.Runtime._route``).
Owners are ``(kind, instance id, *gpus)`` tuples (``("replica", 0, 1)``, ``("pipeline", 0)``).
Requests interrupted by a failure go back to the *front* of the queue in id order.

With ``serving.replica_dispatch = "least_busy"`` (the executor's routing), replica servers attach a
:class:`ReplicaQueue` of their own: a pushed request then goes at once to the attached replica with the
fewest unfinished requests (running plus queued), ties to the lowest GPU, and waits in that replica's queue
(waking it if idle); the shared queue keeps what arrived before any replica was attached and what a
failure or release hands back. Requests waiting in a replica's own queue are not counted by autoscaling.

Every request ends exactly once: :meth:`RequestPool.token` records FINISH when the last token is out, and
:meth:`RequestPool.fail` records REQUEST_ERROR with a reason when no capacity remains.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Hashable, Iterable

import simpy

from pipeboost.trace import TraceKind
from sim.state import ReqState, Tracer

RELEASE = "release"
"""Value of an idle-wake event telling the server to stop (its instance is released)."""


class ReplicaQueue:
    """The own queue of one replica server under ``least_busy`` dispatch (see the module docstring)."""

    def __init__(self, owner: Hashable, gpu: int, running: Callable[[], int]) -> None:
        self.owner, self.gpu, self._running = owner, gpu, running
        self.queue: deque[ReqState] = deque()

    def load(self) -> int:
        """Unfinished requests assigned to this replica: running plus queued."""
        return self._running() + len(self.queue)

    def take(self, limit: int) -> list[ReqState]:
        """Up to ``limit`` requests from the head of this replica's queue."""
        return _take_from(self.queue, limit)


class RequestPool:
    """FIFO of waiting requests plus idle servers; counts terminal requests."""

    def __init__(self, env: simpy.Environment, tracer: Tracer, on_terminal: Callable[[], None]) -> None:
        self.env = env
        self.tracer = tracer
        self.queue: deque[ReqState] = deque()
        self._idle: dict[Hashable, simpy.Event] = {}
        self._replicas: dict[Hashable, ReplicaQueue] = {}
        """Attached replica queues (``least_busy`` dispatch), by owner."""
        self._idle_by_instance: dict[object, dict[Hashable, simpy.Event]] = {}
        """The idle owners per instance id, instances in the order they last had an owner turn idle."""
        self._on_terminal = on_terminal
        self.terminal = 0

    def __len__(self) -> int:
        return len(self.queue)

    # ---- queue ------------------------------------------------------------------------------
    def push(self, req: ReqState) -> None:
        if self._replicas:
            target = min(self._replicas.values(), key=lambda r: (r.load(), r.gpu))
            target.queue.append(req)
            ev = self._drop(target.owner)
            if ev is not None:
                ev.succeed(None)
            return
        self.queue.append(req)
        self._wake(1)

    def attach(self, replica: ReplicaQueue) -> None:
        """From now on, pushed requests may be assigned to ``replica`` (``least_busy`` dispatch)."""
        self._replicas[replica.owner] = replica

    def detach(self, owner: Hashable) -> list[ReqState]:
        """Stop assigning to ``owner``; returns the requests still in its own queue (the caller hands them
        back)."""
        replica = self._replicas.pop(owner, None)
        return list(replica.queue) if replica is not None else []

    def push_front(self, reqs: Iterable[ReqState]) -> None:
        """Return interrupted requests to the head of the queue (lowest id first)."""
        live = sorted((r for r in reqs if not r.done), key=lambda r: r.id)
        self.queue.extendleft(reversed(live))
        self._wake(len(live))

    def defer(self, reqs: list[ReqState]) -> None:
        """Put requests taken but not admitted (no memory yet) back at the head, in their order, and offer
        them to idle servers."""
        self.queue.extendleft(reversed(reqs))
        self._wake(len(reqs))

    def take(self, limit: int) -> list[ReqState]:
        """Up to ``limit`` requests from the head of the queue."""
        return _take_from(self.queue, limit)

    # ---- idle servers -----------------------------------------------------------------------
    def wait_work(self, owner: Hashable) -> simpy.Event:
        """Register ``owner`` as idle; the event fires with ``None`` on new work or :data:`RELEASE`."""
        ev = self.env.event()
        self._drop(owner)
        self._idle[owner] = ev
        inst = _instance_of(owner)
        owners = self._idle_by_instance.pop(inst, {})
        owners[owner] = ev
        self._idle_by_instance[inst] = owners  # now the most recently idle instance
        return ev

    def withdraw(self, owner: Hashable) -> None:
        """Tell an idle ``owner`` to stop (no-op if it is busy)."""
        ev = self._drop(owner)
        if ev is not None:
            ev.succeed(RELEASE)

    def forget(self, owner: Hashable) -> None:
        """Drop an idle registration without waking it (its process was interrupted)."""
        self._drop(owner)

    def _drop(self, owner: Hashable) -> simpy.Event | None:
        ev = self._idle.pop(owner, None)
        if ev is not None:
            inst = _instance_of(owner)
            owners = self._idle_by_instance[inst]
            del owners[owner]
            if not owners:
                del self._idle_by_instance[inst]
        return ev

    def _wake(self, count: int) -> None:
        for _ in range(min(count, len(self._idle))):
            owners = self._idle_by_instance[next(reversed(self._idle_by_instance))]
            owner = min(owners, key=_gpus_of)
            self._drop(owner).succeed(None)

    # ---- outcomes ---------------------------------------------------------------------------
    def token(self, req: ReqState, t_s: float, gpu: int | None) -> bool:
        """Record one output token of ``req`` at ``t_s``; returns True when the request finished."""
        req.generated += 1
        if req.watch is not None:  # a recovery waits for this request's next token
            watch, req.watch = req.watch, None
            watch.succeed(t_s)
        tracer = self.tracer
        if req.generated == 1:
            tracer.instant(TraceKind.FIRST_TOKEN, t_s, gpu=gpu, request=req.id)
        elif tracer.token_records:
            tracer.instant(TraceKind.TOKEN, t_s, gpu=gpu, request=req.id, attrs={"index": req.generated - 1})
        if req.generated >= req.output:
            req.done = True
            tracer.instant(TraceKind.FINISH, t_s, gpu=gpu, request=req.id, attrs={"tokens": req.generated})
            self._terminal()
            return True
        return False

    def fail(self, req: ReqState, reason: str) -> None:
        """End ``req`` with an explicit error (no capacity remains to serve it)."""
        if req.done:
            return
        req.done = True
        self.tracer.instant(TraceKind.REQUEST_ERROR, self.env.now, request=req.id, attrs={"reason": reason})
        self._terminal()

    def fail_all_queued(self, reason: str) -> None:
        while self.queue:
            self.fail(self.queue.popleft(), reason)

    def _terminal(self) -> None:
        self.terminal += 1
        self._on_terminal()


def _take_from(queue: deque[ReqState], limit: int) -> list[ReqState]:
    """Up to ``limit`` requests popped from the head of ``queue``, in order."""
    return [queue.popleft() for _ in range(min(limit, len(queue)))]


def _instance_of(owner: Hashable) -> object:
    """The instance id of an idle owner ``(kind, instance id, *gpus)`` (any other hashable: itself)."""
    return owner[1] if isinstance(owner, tuple) and len(owner) > 1 else owner


def _gpus_of(owner: Hashable) -> tuple:
    """The GPUs of an owner, the order idle servers of one instance are woken in (a pipeline: none, first)."""
    return tuple(owner[2:]) if isinstance(owner, tuple) else ()
