"""What an instance does after one of its GPUs fails.

Timeline: FAILURE at ``t`` (the GPU's memory is lost and its processes are interrupted at once; the
pipeline pauses) -> DETECT at ``t + failure_detection_s`` -> REPLAN ``replan_overhead_s`` later, then:

* pipeline still serving (no full replica yet) and the failed GPU served a stage: the scenario's recovery
  policy maps the lost stages onto survivors (``reroute_to_holder`` prefers a GPU that already holds
  them; ``reload_on_survivors`` the least busy one). A survivor missing units of a stage it takes over
  loads them first (pushed to the front of its load queue; later replica loads are dropped if memory
  would not suffice);
* replicas serve, or the GPU was not a stage GPU: nothing to re-plan (``requeue``);
* tensor-parallel group, no survivor, or the policy cannot place the stages: the instance is abandoned
  (its survivors released) and the engine starts another instance if GPUs remain.

In every case the requests whose work was lost are requeued at the front of the queue at REPLAN and
re-prefilled (prompt plus generated tokens), so no request is lost. RECOVERY spans from the failure to the
first token one of those moved requests produces (after any reload of stages it needs), or to REPLAN when
no request was in flight: the executor's definition (:mod:`executor.recovery`), so both engines report
the same quantity.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Generator

import simpy

from pipeboost.errors import PlanError
from pipeboost.plan import RecoveryPlan
from pipeboost.trace import TraceKind

if TYPE_CHECKING:
    from sim.instance import Instance

logger = logging.getLogger(__name__)


def on_failure(inst: "Instance", g: int) -> None:
    """Called synchronously when GPU ``g`` of ``inst`` fails: pause the pipeline, schedule recovery."""
    if g in inst.replicas:
        inst.replicas.remove(g)
    inst.recovering += 1
    inst.env.process(_recover(inst, g, inst.env.now))


def _recover(inst: "Instance", g: int, t_fail: float) -> Generator[simpy.Event, object, None]:
    ctx = inst.ctx
    env = ctx.env
    yield env.timeout(ctx.scenario.params.failure_detection_s)
    ctx.tracer.instant(TraceKind.DETECT, env.now, attrs={"failed_gpu": g, "instance": inst.iid})
    if ctx.scenario.params.replan_overhead_s > 0.0:  # deciding the recovery plan takes time
        yield env.timeout(ctx.scenario.params.replan_overhead_s)
    alive = tuple(h for h in inst.gpus if ctx.gpus[h].alive)
    try:
        if not inst.live:
            _replan_record(inst, g, "none", {"reason": "instance already gone"})
        elif inst.mode == "tensor_parallel" or not alive:
            raise PlanError("tensor-parallel group broken" if alive else "no surviving GPU in the instance")
        elif inst.pipeline_open and g in inst.stage_gpus:
            _apply(inst, g, alive)
        else:
            _replan_record(inst, g, "requeue", {})
    except PlanError as err:
        logger.info("instance %d abandoned after GPU %d failed: %s", inst.iid, g, err)
        _replan_record(inst, g, "abandon", {"reason": str(err)})
        inst.recovering -= 1
        inst.release("abandoned")
        ctx.tracer.interval(TraceKind.RECOVERY, t_fail, env.now, attrs={"failed_gpu": g, "outcome": "abandoned"})
        ctx.autoscale()
        return
    inst.recovering -= 1
    moved = [r for r in inst.orphans if not r.done]
    for r in moved:
        if r.watch is None:  # (an earlier recovery may already wait for this request's next token)
            r.watch = env.event()
    watches = [r.watch for r in moved]
    inst.requeue_orphans()
    inst.kick()
    if watches:  # service resumes with the first token a moved request produces (after any reload)
        yield simpy.AnyOf(env, watches)
    ctx.tracer.interval(TraceKind.RECOVERY, t_fail, env.now,
                        attrs={"failed_gpu": g, "outcome": "resumed", "requests": sorted(r.id for r in moved)})


def _replan_record(inst: "Instance", g: int, policy: str, attrs: dict) -> None:
    inst.ctx.tracer.instant(TraceKind.REPLAN, inst.env.now,
                            attrs={"failed_gpu": g, "instance": inst.iid, "policy": policy, **attrs})


def _apply(inst: "Instance", g: int, alive: tuple[int, ...]) -> None:
    """Run the recovery policy and carry its plan out (survivors load the stages they take over first)."""
    ctx = inst.ctx
    resident = {h: set(ctx.gpus[h].resident) for h in alive}
    plan: RecoveryPlan = ctx.recovery_fn(inst.partition, tuple(inst.stage_gpus), g, resident, alive)
    if any(h not in alive for h in plan.stage_gpus):
        raise PlanError(f"recovery plan {plan} uses a GPU that is not alive")
    for h, stages in plan.load_first:
        _load_first(inst, h, stages)
    inst.stage_gpus = list(plan.stage_gpus)
    _replan_record(inst, g, plan.policy, {"plan": plan.to_dict()})


def _load_first(inst: "Instance", h: int, stages: tuple[int, ...]) -> None:
    """Put the missing units of ``stages`` at the front of GPU ``h``'s load queue, within its budget."""
    from sim.loader import run_loader
    ctx = inst.ctx
    gpu = ctx.gpus[h]
    model = ctx.scenario.model
    moving_unit, in_flight = (None, 0) if gpu.transfer is None else gpu.transfer[2:]
    wanted = [u for s in stages for u in inst.partition.units_of_stage(s)
              if u not in gpu.resident and u != moving_unit]
    queue = inst.loader_queues[h]
    rest = [(u, b) for u, b in queue if u not in wanted]
    need = gpu.used_bytes + in_flight + sum(model.unit_bytes(u) for u in wanted)
    while rest and need + sum(b for _, b in rest) > gpu.budget_bytes:
        rest.pop()
    if need > gpu.budget_bytes:
        raise PlanError(f"GPU {h} cannot hold stages {list(stages)} within its weight budget")
    queue.clear()
    queue.extend([(u, model.unit_bytes(u)) for u in wanted] + rest)
    loader = inst.loaders.get(h)
    if loader is None or not loader.is_alive:
        inst.loaders[h] = ctx.env.process(run_loader(inst, h))
