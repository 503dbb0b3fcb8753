"""Decode steps of pipeline micro-batches whose whole route is one GPU run as one batch.

The executor's per-device worker batches the decode steps of every request served wholly by its device
that are queued at a step boundary (:mod:`executor.batching`, up to ``max_batch_size`` sequences). Such
routes arise in the pipeline itself when every stage sits on one GPU: a one-GPU cold start, or the
survivor of a two-GPU instance after a failure. Micro-batches of one request each (the executor-faithful
``serving.pipeline_micro_batch_size``) would otherwise decode one after another there, each paying a
whole step of weight reads: a model's time to finish came out 50-100% late in those scenarios.

:func:`decode_step` is one decode step of a micro-batch on such a route. The first micro-batch to arrive
opens a batch on the GPU and queues for the GPU's stage turn (behind work already queued there, as the
worker runs its tasks in order); micro-batches arriving while it waits join it, up to ``max_batch_size``
sequences in all. When the turn comes the batch closes and its stages run once for all its sequences
(one step of ``batch`` sequences and their summed context); every member then has its token. A failure
interrupts every micro-batch of the instance, the waiting members with the one computing.

Not modelled: a replica's own batched steps on the same GPU (after the mode switch) stay apart from these
(the executor would put both in one batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Generator, Sequence

import simpy

from sim.state import ReqState

if TYPE_CHECKING:
    from sim.instance import Instance


@dataclass
class OpenBatch:
    """A decode batch forming on one GPU: its members' sequences and the event that ends it."""

    done: simpy.Event
    reqs: list[ReqState] = field(default_factory=list)


def single_gpu_route(inst: "Instance") -> bool:
    """True when the instance's pipeline runs every stage on one GPU in the executor-faithful mode (one
    micro-batch's stage at a time, ``serving.pipeline_micro_batch_size`` set)."""
    return (inst.ctx.scenario.serving.pipeline_micro_batch_size is not None
            and len(set(inst.stage_gpus)) == 1)


def decode_step(inst: "Instance", live: Sequence[ReqState],
                run_step: Callable[[list[ReqState], Callable[[], None]], Generator[simpy.Event, object, None]]
                ) -> Generator[simpy.Event, object, None]:
    """One decode step of ``live`` (a micro-batch's unfinished sequences) on the instance's single GPU,
    batched with the micro-batches that queue meanwhile. ``run_step(reqs, on_turn)`` runs one step of
    ``reqs`` through the stages, calling ``on_turn()`` when the GPU's turn is granted (the batch closes
    then, so ``reqs`` and their cost must be read after it). Returns when the step that carried ``live``
    ended."""
    g = inst.stage_gpus[0]
    limit = inst.ctx.scenario.serving.max_batch_size
    forming = inst.decode_batches.get(g)
    if forming is not None and len(forming.reqs) + len(live) <= limit:
        forming.reqs.extend(live)
        yield forming.done
        return
    batch = OpenBatch(inst.env.event(), list(live))
    inst.decode_batches[g] = batch

    def close() -> None:
        if inst.decode_batches.get(g) is batch:
            del inst.decode_batches[g]
    try:
        yield from run_step(batch.reqs, close)
    finally:
        close()
    batch.done.succeed()
