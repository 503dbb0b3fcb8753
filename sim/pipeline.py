"""Pipeline serving while the model loads: a scheduler forming micro-batches and their processes.

The scheduler of an instance takes up to ``max_batch_size`` queued requests as one micro-batch and
starts a process for it; at most ``num_stages`` micro-batches are in flight (the usual pipeline depth).
``serving.pipeline_micro_batch_size`` and ``serving.pipeline_max_in_flight`` override both: with 1 and a
limit of at least the request count, every request enters the pipeline as its own micro-batch as soon as it
is queued, which is how the executor routes requests during a cold start. With
``pipeline_micro_batch_size`` set, a stage GPU also serves one micro-batch's stage at a time, in arrival
order, including its waits for units still loading and its hand-off to the next stage, as the executor's
per-device worker does (:mod:`executor.worker`): the next micro-batch enters the stage when the previous one
leaves it, and consecutive stages on the same GPU (after a failure moved a stage) run in one turn, as the
worker continues inline with a stage routed to its own device. Without it (the default) a micro-batch
holds the GPU only while its resident units compute.
It pauses while a failure is being recovered and stops when the instance switches to replica serving
(in-flight micro-batches then drain).

A micro-batch runs prefill through every stage, then decode steps until all its requests finished
(static batching: the batch shrinks as requests finish). On stage ``s`` the stage GPU computes its units in
order; a unit that is not resident yet is waited for (execute-while-load), and the compute resource is
held only while resident units run. Between stages the activation is handed off (HOP, ``hop_cost``), and
the next stage's worker picks it up ``params.handoff_s`` later (outside the stage's turn); a micro-batch's
prefill starts ``params.dispatch_s`` after it is formed and each decode step ``handoff_s`` after the token
when the last stage's GPU is not stage 0's (else ``step_start_s``), and a unit that was waited for starts
``params.unit_wake_s`` after it landed: the serving runtime's own latencies, 0 by default. After a stage's
hop, or the last stage's token, the GPU's worker is busy for ``params.worker_after_hop_s`` or
``params.worker_after_token_s``: another micro-batch's units start on that GPU no earlier (the one that left
goes on at once).
A failure of any stage GPU interrupts every in-flight micro-batch of the instance: their requests are
requeued at detection and re-prefilled with prompt plus generated tokens.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Generator, Sequence

import simpy

from pipeboost.errors import DeviceFailure
from pipeboost.trace import TraceKind
from sim.decode_batch import decode_step, single_gpu_route
from sim.pool import RELEASE
from sim.state import ReqState

if TYPE_CHECKING:
    from sim.instance import Instance

logger = logging.getLogger(__name__)


def run_scheduler(inst: "Instance") -> Generator[simpy.Event, object, None]:
    """Form micro-batches from the queue while the instance serves in pipeline mode."""
    ctx = inst.ctx
    pool = ctx.pool
    owner = ("pipeline", inst.iid)
    serving = ctx.scenario.serving
    limit = serving.pipeline_max_in_flight or max(inst.partition.num_stages, 1)
    batch = serving.pipeline_micro_batch_size or serving.max_batch_size
    try:
        while inst.pipeline_open:
            if inst.recovering or inst.inflight >= limit:
                yield inst.kicked
                continue
            reqs = pool.take(batch)
            if not reqs:
                woke = yield pool.wait_work(owner)
                if woke == RELEASE:
                    return
                continue
            per_gpu = [(g, ctx.kv.token_bytes(layers)) for g, layers in inst.stage_layers()]
            reqs, tokens, waiting = ctx.kv.admit(inst, pool, reqs, per_gpu)
            if not reqs:
                if waiting:  # the head waits for memory held by in-flight micro-batches (or others)
                    yield simpy.AnyOf(ctx.env, [inst.kicked, ctx.kv.freed([g for g, _ in per_gpu])])
                continue
            inst.inflight += 1
            inst.work_started()
            held = [(g, tokens * per) for g, per in per_gpu]
            ctx.env.process(run_microbatch(inst, reqs, held))
    except simpy.Interrupt:
        pool.forget(owner)
        return
    pool.forget(owner)


def run_microbatch(inst: "Instance", reqs: list[ReqState],
                   held: Sequence[tuple[int, int]] = ()) -> Generator[simpy.Event, object, None]:
    """Prefill then decode ``reqs`` through the pipeline; on a failure their requests become orphans.
    ``held``: (GPU, bytes) of KV memory reserved for the micro-batch, returned when it ends."""
    ctx = inst.ctx
    env = ctx.env
    me = env.active_process
    stage_gpus = tuple(dict.fromkeys(inst.stage_gpus))
    for g in stage_gpus:
        ctx.gpus[g].procs[me] = None
    try:
        tokens = [r.prefill_tokens for r in reqs]
        costs = ctx.costs
        layers = inst.partition.num_layers
        extra = _adapter_extra(inst, reqs, tokens)
        yield from _runtime_latency(inst, costs.params.dispatch_s)
        yield from _through_stages(inst, reqs, "prefill",
                                   _per_kind(lambda u: costs.unit_prefill_s(u, tokens) + extra(u), layers),
                                   sum(tokens))
        _emit_tokens(inst, reqs)
        live = [r for r in reqs if not r.done]
        while live:
            yield from _runtime_latency(inst, _step_start_s(inst))
            if single_gpu_route(inst):  # batched with the other micro-batches' steps (sim.decode_batch)
                yield from decode_step(inst, live, lambda batch, on_turn: _decode_through_stages(inst, batch,
                                                                                                  on_turn))
            else:
                yield from _decode_through_stages(inst, live)
            _emit_tokens(inst, live)
            live = [r for r in live if not r.done]
    except (simpy.Interrupt, DeviceFailure):
        inst.orphan(reqs)
    finally:
        for g in stage_gpus:
            ctx.gpus[g].procs.pop(me, None)
        for g, nbytes in held:
            ctx.kv.release(g, nbytes)
        inst.inflight -= 1
        inst.work_ended()
        inst.kick()


def _decode_through_stages(inst: "Instance", reqs: Sequence[ReqState],
                           on_turn: Callable[[], None] | None = None) -> Generator[simpy.Event, object, None]:
    """One decode step of ``reqs`` (one batch) through every stage. Its cost is read when the first unit
    computes, after ``on_turn`` (:func:`_through_stages`), so sequences that join until then count."""
    costs = inst.ctx.costs
    step: list[Callable[[int], float]] = []

    def unit_cost(u: int) -> float:
        if not step:
            batch, context = len(reqs), sum(r.context for r in reqs)
            extra = _adapter_extra(inst, reqs, [1] * batch)
            step.append(_per_kind(lambda v: costs.unit_decode_s(v, batch, context) + extra(v),
                                  inst.partition.num_layers))
        return step[0](u)
    yield from _through_stages(inst, reqs, "decode", unit_cost, len(reqs), on_turn)


def _runtime_latency(inst: "Instance", seconds: float) -> Generator[simpy.Event, object, None]:
    """Wait out a latency of the serving runtime (``dispatch_s``, ``handoff_s``, ``step_start_s``)."""
    if seconds > 0:
        yield inst.env.timeout(seconds)


def _step_start_s(inst: "Instance") -> float:
    """Latency from a token to the next step's first unit: a hand-off when the last stage's GPU is not
    stage 0's, else the runtime's step start on the same device."""
    params = inst.ctx.costs.params
    return params.handoff_s if inst.stage_gpus[0] != inst.stage_gpus[-1] else params.step_start_s


def _per_kind(unit_cost: Callable[[int], float], layers: int) -> Callable[[int], float]:
    """``unit_cost`` evaluated once per unit kind (embedding, any decoder layer, head): every decoder layer
    has the same cost within one step, so the cached value is exactly the one a direct call returns."""
    cache: dict[int, float] = {}

    def cost(u: int) -> float:
        key = 0 if 0 <= u < layers else u
        value = cache.get(key)
        if value is None:
            value = cache[key] = unit_cost(u)
        return value
    return cost


def _adapter_extra(inst: "Instance", reqs: Sequence[ReqState], tokens: Sequence[int]) -> Callable[[int], float]:
    """Per-unit unmerged adapter seconds (decoder layers only; zero without adapters, see sim.lora)."""
    lora = inst.ctx.lora
    if lora is None:
        return lambda u: 0.0
    per_layer = lora.overhead_s(reqs, tokens, 1)
    layers = inst.partition.num_layers
    return lambda u: per_layer if 0 <= u < layers else 0.0


def _emit_tokens(inst: "Instance", reqs: Sequence[ReqState]) -> None:
    now = inst.env.now
    last_gpu = inst.stage_gpus[-1]
    for r in reqs:
        inst.ctx.pool.token(r, now, last_gpu)


def _through_stages(inst: "Instance", reqs: Sequence[ReqState], kind: str, unit_cost: Callable[[int], float],
                    tokens_total: int, on_turn: Callable[[], None] | None = None
                    ) -> Generator[simpy.Event, object, None]:
    """Run one step of ``reqs`` through every stage; ``on_turn`` is called when the first stage may start
    (its GPU's turn granted, with exclusive micro-batches; else at once)."""
    exclusive = inst.ctx.scenario.serving.pipeline_micro_batch_size is not None
    handoff_s = inst.ctx.costs.params.handoff_s
    n = inst.partition.num_stages
    s = 0
    while s < n:
        g = inst.stage_gpus[s]
        last = s
        while last + 1 < n and inst.stage_gpus[last + 1] == g:  # consecutive stages on one GPU (after a
            last += 1                                            # failure): one turn, as the worker runs them
        if not exclusive:
            if on_turn is not None and s == 0:
                on_turn()
            for t in range(s, last + 1):
                yield from _stage_and_hop(inst, t, kind, unit_cost, reqs, tokens_total)
        else:
            turns = inst.stage_turns.get(g)
            if turns is None:
                turns = inst.stage_turns[g] = simpy.Resource(inst.env, capacity=1)
            with turns.request() as turn:
                yield turn
                if on_turn is not None and s == 0:
                    on_turn()
                for t in range(s, last + 1):
                    yield from _stage_and_hop(inst, t, kind, unit_cost, reqs, tokens_total)
        if last + 1 < n:  # the next stage's worker (another GPU) picks the activation up
            yield from _runtime_latency(inst, handoff_s)
        s = last + 1


def _stage_and_hop(inst: "Instance", s: int, kind: str, unit_cost: Callable[[int], float],
                   reqs: Sequence[ReqState], tokens_total: int) -> Generator[simpy.Event, object, None]:
    env = inst.env
    n = inst.partition.num_stages
    g = inst.stage_gpus[s]
    yield from _run_stage(inst, g, s, kind, unit_cost, reqs)
    nxt = inst.stage_gpus[s + 1] if s + 1 < n else g
    params = inst.ctx.costs.params
    if nxt != g:
        t0 = env.now
        nbytes = inst.ctx.scenario.model.activation_bytes(tokens_total)
        yield env.timeout(inst.ctx.costs.hop_s(tokens_total))
        inst.ctx.tracer.interval(TraceKind.HOP, t0, env.now, gpu=g, stage=s, nbytes=nbytes,
                                 attrs={"to": nxt, "kind": kind})
        _worker_busy_after(inst, g, params.worker_after_hop_s)
    elif s == n - 1:  # the token is emitted now (the caller's _emit_tokens)
        _worker_busy_after(inst, g, params.worker_after_token_s)


def _worker_busy_after(inst: "Instance", g: int, seconds: float) -> None:
    """GPU ``g``'s worker spends ``seconds`` on the active micro-batch's hand-off or token from now on."""
    if seconds > 0:
        inst.ctx.gpus[g].worker_busy = (inst.env.now + seconds, inst.env.active_process)


def _wait_worker(inst: "Instance", g: int) -> Generator[simpy.Event, object, None]:
    """Wait until GPU ``g``'s worker is done with another micro-batch's hand-off or token."""
    until, owner = inst.ctx.gpus[g].worker_busy
    if owner is not inst.env.active_process and until > inst.env.now:
        yield inst.env.timeout(until - inst.env.now)


def _run_stage(inst: "Instance", g: int, s: int, kind: str, unit_cost: Callable[[int], float],
               reqs: Sequence[ReqState]) -> Generator[simpy.Event, object, None]:
    """Compute stage ``s``'s units on GPU ``g``, waiting for each non-resident unit to land."""
    env = inst.env
    gpu = inst.ctx.gpus[g]
    units = inst.stage_units[s]
    lora = inst.ctx.lora
    if lora is not None:
        parts = ("stage",) if inst.stage_gpus.index(g) == s else ("stage", "rest")
        for name in dict.fromkeys(r.adapter for r in reqs):
            yield from lora.ensure(inst, g, name, parts)
    yield from _wait_worker(inst, g)
    i = 0
    while i < len(units):
        if units[i] not in gpu.resident:
            yield gpu.ready_event(units[i])
            yield from _runtime_latency(inst, inst.ctx.costs.params.unit_wake_s)
        j = i + 1
        while j < len(units) and units[j] in gpu.resident:
            j += 1
        with gpu.compute.request() as req:
            yield req
            if kind == "prefill":
                inst.ctx.start_prefill(g)
            elif i == 0:
                inst.ctx.start_decode(g)
            durations = [unit_cost(u) for u in units[i:j]]
            t0 = env.now
            if inst.ctx.plain_compute:
                yield env.timeout(sum(durations))
            else:  # host cores shared or interference: the job may stretch; records stretch in proportion
                if kind == "prefill":
                    yield from inst.ctx.shared_compute((g,), sum(durations), 1.0, sum(r.prefill_tokens for r in reqs))
                else:
                    yield from inst.ctx.shared_compute((g,), sum(durations), 0.0)
                stretch = (env.now - t0) / sum(durations) if sum(durations) > 0 else 1.0
                durations = [d * stretch for d in durations]
            _record(inst, g, s, kind, units[i:j], durations, t0, reqs)
        i = j


def _record(inst: "Instance", g: int, s: int, kind: str, units: Sequence[int], durations: Sequence[float],
            t0: float, reqs: Sequence[ReqState]) -> None:
    tracer = inst.ctx.tracer
    trace_kind = TraceKind.PREFILL if kind == "prefill" else TraceKind.DECODE
    request = reqs[0].id if len(reqs) == 1 else None
    attrs = {} if len(reqs) == 1 else {"requests": [r.id for r in reqs]}
    if not tracer.step_records and kind == "decode":
        tracer.interval(trace_kind, t0, inst.env.now, gpu=g, stage=s, request=request,
                        attrs={**attrs, "units": [units[0], units[-1]]})
        return
    t = t0
    for u, d in zip(units, durations):
        end = t + d
        tracer.interval(trace_kind, t, end, gpu=g, stage=s, layer=u, request=request, attrs=dict(attrs))
        t = end
