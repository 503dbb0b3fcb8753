"""Replica serving with continuous batching, at iteration granularity.

One server process per full replica (one GPU), or one per tensor-parallel group (all its GPUs). Each
iteration admits queued requests up to ``max_batch_size`` running sequences, then costs one step:
whole-model prefill of the newly admitted sequences (prompt plus tokens generated before a failure) plus
one decode step of the sequences already running (:class:`sim.stepcost.StepCosts`, derived from
``pipeboost.costs``). Newly admitted sequences get their first (or next) token at the end of the step, the
others one more token. One SimPy timeout per iteration keeps 100k-request runs fast.

The GPU's compute resource is requested only while pipeline micro-batches of the same instance are still
in flight (they share the GPU); afterwards the replica owns the GPU.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Generator

import simpy

from pipeboost.errors import DeviceFailure
from pipeboost.trace import TraceKind
from sim.hostcpu import compute
from sim.pool import RELEASE
from sim.state import ReqState
from sim.stepcost import StepCosts

if TYPE_CHECKING:
    from sim.instance import Instance

logger = logging.getLogger(__name__)


def _step_s(inst: "Instance", gpus: tuple[int, ...], costs: StepCosts, new: list[ReqState],
            old_batch: int, old_context: int) -> float:
    """Duration of one iteration; checks prefill / decode-step fault triggers on the GPUs."""
    ctx = inst.ctx
    duration = 0.0
    if new:
        duration += sum(costs.model_prefill_s(r.prefill_tokens) for r in new)
        for g in gpus:
            ctx.start_prefill(g)
    if old_batch:
        duration += costs.model_decode_s(old_batch, old_context)
        for g in gpus:
            ctx.start_decode(g)
    return duration


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
        if fast and 1 < nxt < r.output:
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


def run_server(inst: "Instance", gpus: tuple[int, ...], costs: StepCosts) -> Generator[simpy.Event, object, None]:
    """Continuous-batching loop of one replica (``gpus`` has one GPU, or all GPUs of a TP group)."""
    ctx = inst.ctx
    env = ctx.env
    pool = ctx.pool
    owner = ("replica", inst.iid, gpus[0])
    limit = ctx.scenario.serving.max_batch_size
    lead = ctx.gpus[gpus[0]]
    running: list[ReqState] = []
    context = 0
    busy = False
    lora = ctx.lora
    kv = ctx.kv
    per_gpu = [(g, kv.token_bytes(inst.partition.num_layers, costs.tp)) for g in gpus]
    held = 0  # KV tokens reserved for ``running``
    cpus = None if ctx.host_cpus is None else [ctx.host_cpus[g] for g in gpus]
    try:
        while True:
            if lora is None:
                new = pool.take(limit - len(running)) if len(running) < limit else []
            else:
                new = lora.take(inst, gpus[0], limit - len(running), len(running))
                target = lora.wants_switch(inst, gpus[0]) if not running and not new else False
                if target is not False:
                    yield from lora.switch(inst, gpus[0], target)  # epoch boundary: nothing in flight
                    continue
            waiting = False
            if new:
                new, tokens, waiting = kv.admit(inst, pool, new, per_gpu)
                held += tokens
            if not running and not new:
                if busy:
                    busy = False
                    inst.work_ended()
                if waiting:  # the head waits for memory that others hold on these GPUs
                    yield kv.freed(gpus)
                elif (yield pool.wait_work(owner)) == RELEASE:
                    return
                continue
            if not busy:
                busy = True
                inst.work_started()
            old = running
            running = old + new if new else old
            duration = _step_s(inst, gpus, costs, new, len(old), context)
            if lora is not None:
                for r in new:
                    yield from lora.ensure(inst, gpus[0], r.adapter)
                duration += lora.step_overhead_s(new, old)
            if inst.inflight:
                with lead.compute.request() as req:
                    yield req
                    t0 = env.now
                    if cpus is None:
                        yield env.timeout(duration)
                    else:  # host cores shared (sim.hostcpu): the step may take longer
                        yield from compute(cpus, duration)
            else:
                t0 = env.now
                if cpus is None:
                    yield env.timeout(duration)
                else:
                    yield from compute(cpus, duration)
            _record_step(inst, gpus, t0, new, old)
            running, context, freed = _emit(inst, running, gpus[0])
            if freed:
                held -= freed
                for g, per in per_gpu:
                    kv.release(g, freed * per)
    except (simpy.Interrupt, DeviceFailure):
        pool.forget(owner)
        for g, per in per_gpu:
            kv.release(g, held * per)
        inst.orphan(running)
        if busy:
            inst.work_ended()
