"""The per-GPU loader process: startup, then one unit at a time over the fluid network.

A GPU's copy engine moves one unit at a time, in the order of its load queue (the plan's
``LoadPlan.units_of``; recovery may push stages to the front). Each copy is a flow from the weight source
to the GPU through its PCIe path, so concurrent loads of GPUs behind one switch share the uplink. When a
unit lands (its bytes moved and, with ``unit_load_cpu_s``, the loader's per-unit work done) it becomes resident (its readiness event fires, so execute-while-load compute may start) and a
LOAD record with ``nbytes`` is written.

Contract: bytes loaded per GPU equal the sum of its queue items; a unit is never loaded twice on one GPU
while it stays resident.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Generator

import simpy

from pipeboost.errors import DeviceFailure
from pipeboost.trace import TraceKind

if TYPE_CHECKING:
    from sim.instance import Instance

logger = logging.getLogger(__name__)


def run_loader(inst: "Instance", g: int) -> Generator[simpy.Event, object, None]:
    """Load GPU ``g``'s queue for instance ``inst``; the first run on a GPU pays ``startup_s``."""
    ctx = inst.ctx
    env = ctx.env
    gpu = ctx.gpus[g]
    gpu.procs[env.active_process] = None
    try:
        if g not in inst.started:
            inst.started.add(g)
            t0 = env.now
            yield env.timeout(ctx.scenario.params.startup_s)
            ctx.tracer.interval(TraceKind.STARTUP, t0, env.now, gpu=g, attrs={"instance": inst.iid})
        queue = inst.loader_queues[g]
        tp = inst.mode == "tensor_parallel"
        while queue:
            unit, nbytes = queue.popleft()
            if unit in gpu.resident and not tp:
                continue
            if ctx.faults.on_loading(g, unit):
                ctx.fail_gpu(g, f"fault: loading unit {unit}")
                raise DeviceFailure(g, "loading")
            yield from _copy(ctx, inst, g, unit, nbytes)
        gpu.procs.pop(env.active_process, None)
        inst.loader_done(g)
    except (simpy.Interrupt, DeviceFailure):
        gpu.procs.pop(env.active_process, None)


def _copy(ctx, inst: "Instance", g: int, unit: int, nbytes: int) -> Generator[simpy.Event, object, None]:
    env = ctx.env
    gpu = ctx.gpus[g]
    t0 = env.now
    net, done = ctx.start_copy(g, nbytes)
    gpu.transfer = (net, done, unit, nbytes)
    work = ctx.start_unit_load_work(g)
    if work is None:
        yield done
    else:  # the loader's per-unit software work overlaps the link time
        try:
            yield simpy.AllOf(env, [done, work[1]])
        except (simpy.Interrupt, DeviceFailure):
            work[0].cancel(work[1])
            raise
    gpu.transfer = None
    gpu.make_resident(unit, nbytes)
    ctx.tracer.interval(TraceKind.LOAD, t0, env.now, gpu=g, layer=unit, nbytes=nbytes,
                        attrs={"instance": inst.iid})
    inst.unit_loaded(g)
