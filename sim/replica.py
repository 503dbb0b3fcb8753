"""Replica serving with continuous batching, at iteration granularity.

One server process per full replica (one GPU), or one per tensor-parallel group (all its GPUs). Each
iteration admits queued requests up to ``max_batch_size`` running sequences, then costs one step
(:class:`sim.stepcost.StepCosts`, derived from ``pipeboost.costs``) in one of two ways, chosen by
``serving.replica_prefill``:

* ``batched`` (default): whole-model prefill of the newly admitted sequences (prompt plus tokens
  generated before a failure) plus one decode step of the sequences already running, as one interval.
  Newly admitted sequences get their first (or next) token at the end of the step, the others one more
  token. One SimPy timeout per iteration keeps 100k-request runs fast.
* ``sequential`` (the executor's order, ``executor.worker``): each newly admitted sequence's prefill is
  its own interval, in admission order, and its token comes out at the end of that interval; then one
  decode step of the sequences that were already running. An iteration's LoRA adapter compute
  (``sim.lora.AdapterBook.step_overhead_s``) is added to its first prefill, so the iteration costs the
  same in total as in ``batched`` mode.

Before an iteration the server waits ``params.dispatch_s`` when it was idle (a request arriving at an idle
replica) and ``params.step_start_s`` otherwise (the runtime's work between two steps); both default to 0.

The GPU's compute resource is requested only while pipeline micro-batches of the same instance are still
in flight (they share the GPU); afterwards the replica owns the GPU.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Generator

import simpy

from pipeboost.errors import DeviceFailure
from pipeboost.trace import TraceKind
from sim.pool import RELEASE, ReplicaQueue
from sim.state import ReqState
from sim.stepcost import StepCosts

if TYPE_CHECKING:
    from sim.instance import Instance

logger = logging.getLogger(__name__)


def _step_s(inst: "Instance", gpus: tuple[int, ...], costs: StepCosts, new: list[ReqState],
            old_batch: int, old_context: int) -> tuple[float, float]:
    """Duration in seconds of one batched iteration and the part of it that is prefill; checks prefill /
    decode-step fault triggers."""
    ctx = inst.ctx
    prefill_s = decode_s = 0.0
    if new:
        prefill_s = sum(costs.model_prefill_s(r.prefill_tokens) for r in new)
        for g in gpus:
            ctx.start_prefill(g)
    if old_batch:
        decode_s = costs.model_decode_s(old_batch, old_context)
        for g in gpus:
            ctx.start_decode(g)
    return prefill_s + decode_s, prefill_s


def _emit(inst: "Instance", running: list[ReqState], gpu: int) -> tuple[list[ReqState], int, int]:
    """Give every running sequence one token; returns the unfinished ones, their total context and the
    KV tokens (prompt + output) of the finished ones.

    The common case (a middle token without per-token records) is handled inline for speed.
    """
    pool = inst.ctx.pool
    now = inst.env.now
    fast = not pool.tracer.token_records
    survivors: list[ReqState] = []
    keep = survivors.append
    context = 0
    freed = 0
    for r in running:
        nxt = r.generated + 1
        if fast and 1 < nxt < r.output and r.watch is None:
            r.generated = nxt
            keep(r)
            context += r.prompt + nxt - 1
            continue
        if pool.token(r, now, gpu):
            freed += r.prompt + r.output
            continue
        keep(r)
        context += r.prompt + r.generated - 1
    return survivors, context, freed


def _record_step(inst: "Instance", gpus: tuple[int, ...], t0: float, new: list[ReqState],
                 old: list[ReqState]) -> None:
    """PREFILL interval for ``new`` and DECODE interval for ``old``, from ``t0`` to now, on every GPU."""
    tracer = inst.ctx.tracer
    if not tracer.step_records:
        return
    now = inst.env.now
    for kind, reqs in ((TraceKind.PREFILL, new), (TraceKind.DECODE, old)):
        if not reqs:
            continue
        request = reqs[0].id if len(reqs) == 1 else None
        for g in gpus:
            attrs = {"replica": True} if request is not None else {"replica": True, "requests": [r.id for r in reqs]}
            tracer.interval(kind, t0, now, gpu=g, request=request, attrs=attrs)


class _Server:
    """State of one replica's continuous-batching loop.

    It lives on the object (not in locals of one generator) so that a failure in the middle of a
    sequential iteration releases exactly the KV tokens and requests still held at that moment.
    """

    def __init__(self, inst: "Instance", gpus: tuple[int, ...], costs: StepCosts) -> None:
        ctx = inst.ctx
        self.inst, self.gpus, self.costs, self.ctx = inst, gpus, costs, ctx
        self.env, self.pool, self.lora, self.kv = ctx.env, ctx.pool, ctx.lora, ctx.kv
        self.owner = ("replica", inst.iid, gpus[0])
        self.limit = ctx.scenario.serving.max_batch_size
        self.sequential = ctx.scenario.serving.replica_prefill == "sequential"
        self.lead = ctx.gpus[gpus[0]]
        self.per_gpu = [(g, self.kv.token_bytes(inst.partition.num_layers, costs.tp)) for g in gpus]
        self.running: list[ReqState] = []
        self.context = 0  # total cached context of ``running``, tokens
        self.held = 0  # KV tokens reserved for ``running``
        self.busy = False
        self.own: ReplicaQueue | None = None
        """This replica's queue under ``least_busy`` dispatch (``sim.pool``); None: the shared queue only."""
        if ctx.scenario.serving.replica_dispatch == "least_busy" and self.lora is None:
            self.own = ReplicaQueue(self.owner, gpus[0], lambda: len(self.running))

    def run(self) -> Generator[simpy.Event, object, None]:
        """Admit, run one iteration, repeat; idle while there is no work; return when released."""
        if self.own is not None:
            self.pool.attach(self.own)
        try:
            while True:
                new, target = self._take()
                if target is not False:  # epoch boundary: nothing in flight
                    yield from self.lora.switch(self.inst, self.gpus[0], target)
                    continue
                waiting = False
                if new:
                    new, tokens, waiting = self.kv.admit(self.inst, self.pool, new, self.per_gpu)
                    self.held += tokens
                if not self.running and not new:
                    if (yield from self._idle(waiting)):
                        self.pool.push_front(self.pool.detach(self.owner))  # released: hand back its queue
                        return
                    continue
                latency = self.costs.params.step_start_s
                if not self.busy:
                    self.busy = True
                    self.inst.work_started()
                    latency = self.costs.params.dispatch_s
                old = self.running
                self.running = old + new if new else old
                if latency > 0:  # the runtime's own latency before the iteration's first unit
                    yield self.env.timeout(latency)
                if new and self.sequential:
                    yield from self._sequential_step(new, old)
                else:
                    yield from self._batched_step(new, old)
        except (simpy.Interrupt, DeviceFailure):
            self._abandon()

    def _take(self) -> tuple[list[ReqState], object]:
        """Queued requests to admit now (before KV admission) and a LoRA switch target (``False``: none)."""
        running = len(self.running)
        if self.lora is None:
            if running >= self.limit:
                return [], False
            own = self.own.take(self.limit - running) if self.own is not None else []
            return own + self.pool.take(self.limit - running - len(own)), False
        new = self.lora.take(self.inst, self.gpus[0], self.limit - running, running)
        target = self.lora.wants_switch(self.inst, self.gpus[0]) if not running and not new else False
        return new, target

    def _idle(self, waiting: bool) -> Generator[simpy.Event, object, bool]:
        """Wait for memory (``waiting``: the queue's head does not fit yet) or for work; True on release."""
        if self.busy:
            self.busy = False
            self.inst.work_ended()
        if waiting:  # the head waits for memory that others hold on these GPUs
            yield self.kv.freed(self.gpus)
            return False
        return (yield self.pool.wait_work(self.owner)) == RELEASE

    def _batched_step(self, new: list[ReqState], old: list[ReqState]) -> Generator[simpy.Event, object, None]:
        """One interval: prefill of all of ``new`` plus one decode step of ``old``; then one token each."""
        inst, gpus, lora = self.inst, self.gpus, self.lora
        duration, prefill_s = _step_s(inst, gpus, self.costs, new, len(old), self.context)
        if lora is not None:
            for r in new:
                yield from lora.ensure(inst, gpus[0], r.adapter)
            duration += lora.step_overhead_s(new, old)
        tokens = round(sum(r.prefill_tokens for r in new) / len(new)) if new else None
        t0 = yield from self._compute(duration, prefill_s / duration if duration > 0 else 0.0, tokens)
        _record_step(inst, gpus, t0, new, old)
        self.running, self.context = self._tokens(self.running)

    def _sequential_step(self, new: list[ReqState], old: list[ReqState]) -> Generator[simpy.Event, object, None]:
        """Each of ``new`` prefills alone, in order, and gets its token at its end; then ``old`` decodes
        one step together (as ``executor.worker`` runs a step boundary)."""
        inst, gpus, ctx, lora = self.inst, self.gpus, self.ctx, self.lora
        old_context = self.context
        kept: list[ReqState] = []
        kept_context = 0
        for i, r in enumerate(new):
            for g in gpus:
                ctx.start_prefill(g)
            duration = self.costs.model_prefill_s(r.prefill_tokens)
            if lora is not None:
                yield from lora.ensure(inst, gpus[0], r.adapter)
                if i == 0:  # the whole iteration's adapter compute rides on its first prefill
                    duration += lora.step_overhead_s(new, old)
            t0 = yield from self._compute(duration, 1.0, r.prefill_tokens)
            _record_step(inst, gpus, t0, [r], [])
            survivors, context = self._tokens([r])
            if survivors:
                kept.append(r)
                kept_context += context
            else:  # finished (or ended): no longer held
                self.running = [q for q in self.running if q is not r]
        if old:
            for g in gpus:
                ctx.start_decode(g)
            t0 = yield from self._compute(self.costs.model_decode_s(len(old), old_context))
            _record_step(inst, gpus, t0, [], old)
            old, old_context = self._tokens(old)
        self.running = old + kept
        self.context = old_context + kept_context

    def _compute(self, duration: float, prefill_share: float = 0.0,
                 prefill_tokens: int | None = None) -> Generator[simpy.Event, object, float]:
        """Compute for ``duration`` seconds (cost model; ``prefill_share`` of it prefill of ``prefill_tokens``
        tokens per request, for the per-phase interference terms) on the replica's GPUs; returns the start
        time.

        The GPU is shared with pipeline micro-batches still in flight: the iteration queues for the GPU's
        stage turn (with exclusive micro-batches, :func:`sim.pipeline._through_stages`) and then its compute,
        so it runs after the stages queued before it, as the executor's worker runs its tasks in order.
        Host cores (``sim.hostcpu``), when modelled, may stretch the interval."""
        if self.inst.inflight:
            turns = self.inst.stage_turns.get(self.gpus[0])
            if turns is not None:
                with turns.request() as turn:
                    yield turn
                    return (yield from self._on_gpu(duration, prefill_share, prefill_tokens))
            return (yield from self._on_gpu(duration, prefill_share, prefill_tokens))
        return (yield from self._busy(duration, prefill_share, prefill_tokens))

    def _on_gpu(self, duration: float, prefill_share: float,
                prefill_tokens: int | None) -> Generator[simpy.Event, object, float]:
        with self.lead.compute.request() as req:
            yield req
            return (yield from self._busy(duration, prefill_share, prefill_tokens))

    def _busy(self, duration: float, prefill_share: float,
              prefill_tokens: int | None = None) -> Generator[simpy.Event, object, float]:
        t0 = self.env.now
        if self.ctx.plain_compute:
            yield self.env.timeout(duration)
        else:
            yield from self.ctx.shared_compute(self.gpus, duration, prefill_share, prefill_tokens)
        return t0

    def _tokens(self, reqs: list[ReqState]) -> tuple[list[ReqState], int]:
        """One token for each of ``reqs`` now; frees the KV of finished ones. Returns the unfinished ones
        and their total context (tokens)."""
        survivors, context, freed = _emit(self.inst, reqs, self.gpus[0])
        if freed:
            self.held -= freed
            for g, per in self.per_gpu:
                self.kv.release(g, freed * per)
        return survivors, context

    def _abandon(self) -> None:
        """After a failure or interrupt: release held KV and hand the running requests back."""
        self.pool.forget(self.owner)
        for g, per in self.per_gpu:
            self.kv.release(g, self.held * per)
        self.inst.orphan(self.running + self.pool.detach(self.owner))
        if self.busy:
            self.inst.work_ended()


def run_server(inst: "Instance", gpus: tuple[int, ...], costs: StepCosts) -> Generator[simpy.Event, object, None]:
    """Continuous-batching loop of one replica (``gpus`` has one GPU, or all GPUs of a TP group)."""
    yield from _Server(inst, gpus, costs).run()
