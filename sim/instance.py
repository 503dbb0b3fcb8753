"""A model instance: the group of GPUs one cold start uses, from first load to release.

An instance carries out one (relabelled) :class:`pipeboost.plan.Plan`:

* every GPU pays ``startup_s`` and loads its units in plan order (:mod:`sim.loader`);
* in ``pipeboost`` and ``pipeline_only`` mode a pipeline scheduler (:mod:`sim.pipeline`) serves requests
  in micro-batches while units are still loading (execute-while-load);
* a GPU that holds every unit becomes a replica (``pipeboost``, ``load_then_run``) running continuous
  batching (:mod:`sim.replica`); in ``pipeboost`` mode the first one switches the instance from pipeline to
  replica serving (MODE_SWITCH) and the pipeline drains;
* ``tensor_parallel``: each GPU loads ``1/N`` of every unit, then one TP server spans all GPUs.

Keep-alive: when no work ran for ``keep_alive_s`` the instance is released (RELEASE per GPU), so a later
burst cold-starts again.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, Iterable

import simpy

from pipeboost.plan import Plan
from pipeboost.trace import TraceKind
from sim.decode_batch import OpenBatch
from sim.state import ReqState

if TYPE_CHECKING:
    from sim.engine import Simulation

logger = logging.getLogger(__name__)

PIPELINE_MODES = ("pipeboost", "pipeline_only")
REPLICA_MODES = ("pipeboost", "load_then_run")


def tp_shares(nbytes: int, ways: int) -> list[int]:
    """Split ``nbytes`` into ``ways`` integer shares that sum exactly to ``nbytes``."""
    base, extra = divmod(nbytes, ways)
    return [base + (1 if i < extra else 0) for i in range(ways)]


class Instance:
    """One cold-started group of GPUs serving the model (see module docstring)."""

    def __init__(self, ctx: "Simulation", iid: int, plan: Plan) -> None:
        self.ctx = ctx
        self.env: simpy.Environment = ctx.env
        self.iid = iid
        self.plan = plan
        self.mode = plan.mode
        self.partition = plan.partition
        self.gpus: tuple[int, ...] = plan.gpus
        self.stage_gpus: list[int] = list(plan.stage_gpus)
        self.stage_units = [self.partition.units_of_stage(s) for s in range(self.partition.num_stages)]
        self.state = "warming"          # warming -> serving -> released | dead
        self.replicas: list[int] = []
        self.switched = False
        self.inflight = 0               # pipeline micro-batches in flight
        self.stage_turns: dict[int, simpy.Resource] = {}  # per GPU, one micro-batch's stage at a time (see sim.pipeline)
        self.decode_batches: dict[int, OpenBatch] = {}  # per GPU, the decode batch forming (see sim.decode_batch)
        self.active = 0                 # work in progress (micro-batches + busy servers)
        self.recovering = 0             # failures detected-or-pending; pipeline paused while > 0
        self.orphans: list[ReqState] = []
        self.loader_queues: dict[int, deque[tuple[int, int]]] = {g: deque(self._load_items(g)) for g in self.gpus}
        self.loaders: dict[int, simpy.Process] = {}
        self.started: set[int] = set()
        self.scheduler: simpy.Process | None = None
        self._idle_generation = 0
        self._kick = self.env.event()

    # ---- set-up ---------------------------------------------------------------------------------
    def _load_items(self, gpu: int) -> list[tuple[int, int]]:
        model = self.ctx.scenario.model
        units = self.plan.load.units_of(gpu, self.partition)
        if self.mode != "tensor_parallel":
            return [(u, model.unit_bytes(u)) for u in units]
        idx = self.gpus.index(gpu)
        return [(u, tp_shares(model.unit_bytes(u), len(self.gpus))[idx]) for u in units]

    def start(self) -> None:
        """Claim the GPUs, start loaders and (pipeline modes) the pipeline scheduler."""
        from sim.loader import run_loader
        from sim.pipeline import run_scheduler
        for g in self.gpus:
            self.ctx.gpus[g].instance = self
            self.loaders[g] = self.env.process(run_loader(self, g))
            if self.ctx.lora is not None and self.ctx.lora.preload and self.mode != "tensor_parallel":
                self.ctx.spawn_on(self.ctx.lora.preload_process(self, g), (g,))
        if self.mode in PIPELINE_MODES:
            self.scheduler = self.env.process(run_scheduler(self))
        self._arm_keep_alive()

    @property
    def live(self) -> bool:
        return self.state in ("warming", "serving")

    @property
    def pipeline_open(self) -> bool:
        return self.live and self.mode in PIPELINE_MODES and not self.switched

    @property
    def unit_count(self) -> int:
        return self.partition.num_layers + 2

    def weights_committed(self, gpu: int) -> int:
        """Weight bytes GPU ``gpu`` holds or will hold: resident, in flight and still queued."""
        state = self.ctx.gpus[gpu]
        moving = state.transfer[3] if state.transfer is not None else 0
        return state.used_bytes + moving + sum(b for _, b in self.loader_queues[gpu])

    def stage_layers(self) -> list[tuple[int, int]]:
        """(GPU, decoder layers it runs) for each distinct stage GPU, in stage order."""
        layers: dict[int, int] = {}
        for s, g in enumerate(self.stage_gpus):
            layers[g] = layers.get(g, 0) + len(self.partition.layer_range(s))
        return list(layers.items())

    # ---- loading progress -----------------------------------------------------------------------
    def unit_loaded(self, gpu: int) -> None:
        """Called by a loader after each unit; promotes full replicas."""
        if self.mode in REPLICA_MODES and self.mode != "pipeline_only" and gpu not in self.replicas:
            if len(self.ctx.gpus[gpu].resident) == self.unit_count:
                self._replica_ready(gpu)

    def loader_done(self, gpu: int) -> None:
        """Called when a GPU's load queue is empty. When every surviving GPU is done loading the instance
        is serving; a tensor-parallel group starts its server only if none of its GPUs failed."""
        if self.state != "warming":
            return
        alive = [g for g in self.gpus if self.ctx.gpus[g].alive]
        if any(self.loader_queues[g] or self._loading(g) for g in alive):
            return
        if self.mode == "tensor_parallel":
            if len(alive) == len(self.gpus):
                self.state = "serving"
                self._start_tp_server()
        else:
            self.state = "serving"

    def _loading(self, gpu: int) -> bool:
        proc = self.loaders.get(gpu)
        return proc is not None and proc.is_alive and proc is not self.env.active_process

    def _replica_ready(self, gpu: int) -> None:
        from sim.replica import run_server
        now = self.env.now
        self.replicas.append(gpu)
        self.ctx.tracer.instant(TraceKind.REPLICA_READY, now, gpu=gpu, attrs={"instance": self.iid})
        if self.mode == "pipeboost" and not self.switched:
            self.switched = True
            self.ctx.tracer.instant(TraceKind.MODE_SWITCH, now, gpu=gpu,
                                    attrs={"from": "pipeline", "to": "replica", "instance": self.iid})
            self.ctx.pool.withdraw(("pipeline", self.iid))  # an idle scheduler stops, not woken by a request
            self.kick()
        self.state = "serving"
        self.ctx.spawn_on(run_server(self, (gpu,), self.ctx.costs), (gpu,))

    def _start_tp_server(self) -> None:
        from sim.replica import run_server
        alive = tuple(g for g in self.gpus if self.ctx.gpus[g].alive)
        self.replicas.extend(alive)
        self.ctx.tracer.instant(TraceKind.REPLICA_READY, self.env.now, gpu=alive[0],
                                attrs={"instance": self.iid, "gpus": list(alive)})
        self.ctx.spawn_on(run_server(self, alive, self.ctx.tp_costs), alive)

    # ---- work accounting and keep-alive ---------------------------------------------------------
    def kick(self) -> None:
        """Wake the pipeline scheduler (a micro-batch ended, recovery finished or the mode switched)."""
        ev, self._kick = self._kick, self.env.event()
        ev.succeed()

    @property
    def kicked(self) -> simpy.Event:
        return self._kick

    def work_started(self) -> None:
        self.active += 1
        self._idle_generation += 1

    def work_ended(self) -> None:
        self.active -= 1
        if self.active == 0:
            self._arm_keep_alive()

    def _arm_keep_alive(self) -> None:
        generation = self._idle_generation
        delay = self.ctx.scenario.serving.keep_alive_s
        self.env.timeout(delay).callbacks.append(lambda _ev: self._expire(generation))

    def _expire(self, generation: int) -> None:
        if generation != self._idle_generation or self.active or not self.live:
            return
        if self.recovering or (self.ctx.pool.queue and self.state == "warming"):
            self._arm_keep_alive()
            return
        self.release("keep_alive")

    # ---- orphans and end of life ----------------------------------------------------------------
    def orphan(self, reqs: Iterable[ReqState]) -> None:
        """Requests whose work was lost; requeued when the failure is detected, or now if the instance is gone."""
        self.orphans.extend(r for r in reqs if not r.done)
        if not self.live and self.orphans:
            self.requeue_orphans()
            self.ctx.autoscale()

    def requeue_orphans(self) -> None:
        orphans, self.orphans = self.orphans, []
        self.ctx.pool.push_front(orphans)

    def release(self, reason: str) -> None:
        """Free every surviving GPU (RELEASE), stop this instance's processes and requeue its requests."""
        if not self.live:
            return
        self.state = "released" if reason == "keep_alive" else "dead"
        now = self.env.now
        active = self.env.active_process
        for g in self.gpus:
            gpu = self.ctx.gpus[g]
            if gpu.instance is not self:
                continue
            gpu.instance = None
            if not gpu.alive:
                continue
            self.ctx.tracer.instant(TraceKind.RELEASE, now, gpu=g, attrs={"instance": self.iid, "reason": reason})
            self.ctx.stop_gpu_work(gpu, active, cause=reason)
            gpu.wipe()
        if self.scheduler is not None and self.scheduler.is_alive and self.scheduler is not active:
            self.scheduler.interrupt(reason)
        self.kick()
        self.requeue_orphans()
        self.ctx.instance_gone(self)
