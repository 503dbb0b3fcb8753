"""LoRA adapters in the simulator: adapter loads, per-request compute overhead, merged-mode epochs.

Mechanism only; the choices come from the scenario (``serving.adapter_*``):

* **Loads.** An adapter's bytes on a GPU are ``sum over target modules of r (in + out) dtype`` per decoder
  layer (:mod:`pipeboost.lora`). A GPU loads them in two parts over its own fluid link, as it loads layers:
  its own stage's layers first (``part = "stage"``), then the rest (``"rest"``). Each part is one LOAD
  record with ``attrs = {"adapter": name, "part": ...}``. Placement ``all`` preloads every adapter after
  the GPU's base units; ``popular`` preloads the ``adapter_preload`` most popular ones (workload order is
  Zipf rank order); anything else loads on first use, and the step waits for it.
* **Unmerged compute.** Each step adds :func:`pipeboost.costs.adapter_compute_s` for the tokens of
  adapter requests, with one launch overhead per distinct adapter in the batch (mixed batches allowed).
* **Merged replicas and epochs.** A replica serves one adapter at a time (``None`` = the base model). It
  admits only requests for its current adapter; once ``adapter_epoch_s`` has passed since its last switch
  and other adapters wait, it stops admitting, lets in-flight requests finish on their weights, then
  switches to the adapter with most waiting requests: load if needed, then unmerge the old and merge the
  new (:func:`pipeboost.costs.adapter_merge_s` each), recorded as a LOAD interval with ``nbytes = 0`` and
  ``attrs.op = "merge"``. Pipeline micro-batches (cold start, weights still loading) always run unmerged.

Adapter bytes are not counted against the GPU weight budget (they are a fraction of a percent).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Generator, Sequence

import simpy

from pipeboost.costs import adapter_compute_s, adapter_merge_s
from pipeboost.lora import adapter_bytes
from pipeboost.scenario_model import Scenario
from pipeboost.trace import TraceKind
from pipeboost.workload import AdapterSpec
from sim.state import ReqState

if TYPE_CHECKING:
    from sim.engine import Simulation
    from sim.instance import Instance

logger = logging.getLogger(__name__)

PARTS = ("stage", "rest")


class AdapterBook:
    """Adapter state of one simulation: specs, per-replica merged adapter and epoch start."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.specs: dict[str, AdapterSpec] = {a.name: a for a in scenario.workload.adapters}
        serving = scenario.serving
        self.merged = serving.adapter_mode == "merged"
        self.epoch_s = serving.adapter_epoch_s
        names = list(self.specs)
        self.preload = names if serving.adapter_placement == "all" else names[:serving.adapter_preload]
        self.current: dict[int, str | None] = {}
        self.epoch_start_s: dict[int, float] = {}
        self.switches = 0

    # ---- bytes and costs -------------------------------------------------------------------------
    def part_units(self, inst: "Instance", g: int, part: str) -> list[int]:
        """Units of ``part`` on GPU ``g``: its own stage's units, or every other unit."""
        own: set[int] = set()
        if g in inst.stage_gpus:
            own = set(inst.partition.units_of_stage(inst.stage_gpus.index(g)))
        units = self.scenario.model.units()
        return [u for u in units if (u in own) == (part == "stage")]

    def part_bytes(self, inst: "Instance", g: int, name: str, part: str) -> int:
        return adapter_bytes(self.scenario.model, self.specs[name], self.part_units(inst, g, part))

    def overhead_s(self, reqs: Sequence[ReqState], tokens_of: Sequence[int], layers: int | None = None) -> float:
        """Unmerged adapter compute for ``reqs`` processing ``tokens_of[i]`` tokens each, over ``layers``."""
        by_adapter: dict[str, int] = {}
        for r, t in zip(reqs, tokens_of):
            if r.adapter is not None:
                by_adapter[r.adapter] = by_adapter.get(r.adapter, 0) + t
        sc = self.scenario
        total = 0.0
        for name, tokens in by_adapter.items():
            spec = self.specs[name]
            total += adapter_compute_s(sc.params, sc.topology.gpu, sc.model, spec.rank, spec.target_modules,
                                       tokens, layers)
        return total

    def step_overhead_s(self, new: Sequence[ReqState], old: Sequence[ReqState]) -> float:
        """Extra seconds of one replica step: zero when merged (the weights carry the adapter)."""
        if self.merged:
            return 0.0
        reqs = list(new) + list(old)
        return self.overhead_s(reqs, [r.prefill_tokens for r in new] + [1] * len(old))

    # ---- loads ----------------------------------------------------------------------------------
    def ensure(self, inst: "Instance", g: int, name: str | None,
               parts: Sequence[str] = PARTS) -> Generator[simpy.Event, object, None]:
        """Make ``parts`` of adapter ``name`` resident on GPU ``g`` (loading or waiting for them)."""
        if name is None:
            return
        gpu = inst.ctx.gpus[g]
        for part in parts:
            key = (name, part)
            ev = gpu.adapters.get(key)
            if ev is None:
                ev = gpu.adapters[key] = inst.env.event()
                yield from self._copy(inst, g, name, part)
                ev.succeed()
            elif not ev.triggered:
                yield ev

    def _copy(self, inst: "Instance", g: int, name: str, part: str) -> Generator[simpy.Event, object, None]:
        ctx: "Simulation" = inst.ctx
        nbytes = self.part_bytes(inst, g, name, part)
        if nbytes == 0:
            return
        t0 = inst.env.now
        net, done = ctx.start_copy(g, nbytes)
        try:
            yield done
        except simpy.Interrupt:
            net.cancel(done)
            raise
        ctx.tracer.interval(TraceKind.LOAD, t0, inst.env.now, gpu=g, nbytes=nbytes,
                            attrs={"instance": inst.iid, "adapter": name, "part": part})

    def preload_process(self, inst: "Instance", g: int) -> Generator[simpy.Event, object, None]:
        """After GPU ``g``'s base units: the own-stage part of every preloaded adapter, then the rest."""
        loader = inst.loaders.get(g)
        try:
            if loader is not None and loader.is_alive:
                yield loader
            for part in PARTS:
                for name in self.preload:
                    yield from self.ensure(inst, g, name, (part,))
        except simpy.Interrupt:
            return

    # ---- merged replicas ------------------------------------------------------------------------
    def take(self, inst: "Instance", g: int, limit: int, running: int) -> list[ReqState]:
        """Admit up to ``limit`` queued requests a replica on ``g`` may run now (see module docstring)."""
        pool = inst.ctx.pool
        if not self.merged:
            return pool.take(limit)
        cur = self.current.get(g)
        waiting_other = any(r.adapter != cur for r in pool.queue)
        epoch_over = inst.env.now - self.epoch_start_s.get(g, 0.0) >= self.epoch_s
        if limit <= 0 or (waiting_other and epoch_over):
            return []
        picked = [r for r in pool.queue if r.adapter == cur][:limit]
        for r in picked:
            pool.queue.remove(r)
        return picked

    def wants_switch(self, inst: "Instance", g: int) -> str | None | bool:
        """The adapter an idle merged replica should switch to (maybe its current one, which only starts a
        new epoch), or False to stay: nothing waits, or the epoch runs and its adapter has requests."""
        if not self.merged or not inst.ctx.pool.queue:
            return False
        cur = self.current.get(g)
        counts: dict[str | None, int] = {}
        for r in inst.ctx.pool.queue:
            counts[r.adapter] = counts.get(r.adapter, 0) + 1
        if cur in counts and inst.env.now - self.epoch_start_s.get(g, 0.0) < self.epoch_s:
            return False
        return max(counts, key=lambda name: counts[name])

    def switch(self, inst: "Instance", g: int, target: str | None) -> Generator[simpy.Event, object, None]:
        """Epoch boundary on an idle replica: load ``target`` if needed, unmerge the old, merge the new."""
        sc = self.scenario
        if target == self.current.get(g):
            self.epoch_start_s[g] = inst.env.now
            return
        yield from self.ensure(inst, g, target)
        t0 = inst.env.now
        cost = 0.0
        for name in (self.current.get(g), target):
            if name is not None:
                spec = self.specs[name]
                cost += adapter_merge_s(sc.params, sc.topology.gpu, sc.model, spec.rank, spec.target_modules)
        yield inst.env.timeout(cost)
        inst.ctx.tracer.interval(TraceKind.LOAD, t0, inst.env.now, gpu=g, nbytes=0,
                                 attrs={"instance": inst.iid, "adapter": target, "op": "merge",
                                        "from": self.current.get(g)})
        self.current[g] = target
        self.epoch_start_s[g] = inst.env.now
        self.switches += 1
