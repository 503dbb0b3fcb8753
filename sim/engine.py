"""The simulation: cluster state, arrivals, autoscaling, failures, and :func:`run_simulation`.

:class:`Simulation` wires one scenario into SimPy: one :class:`sim.state.GPUState` per GPU, one fluid
network per node (nodes share no link), the request pool, fault triggers and the instances that cold
starts create. The serving policy is simple and deterministic:

* a request arrives -> it joins the queue; if no instance is live, or more than ``max_batch_size`` requests
  wait and no instance is still warming up, a new instance cold-starts on ``cold_start_gpus`` free GPUs
  (lowest node with enough free GPUs, lowest ids; the base plan is relabelled onto them);
* if fewer free GPUs remain and nothing is live, a smaller plan is built for what is left; if none is
  possible, waiting requests end with REQUEST_ERROR (``no_capacity``).

The plan is validated (memory budget included) before anything is simulated: loading more than fits
raises :class:`pipeboost.errors.PlanError`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Generator, Sequence

import simpy

from pipeboost.costs import link_bandwidth_bytes_per_s
from pipeboost.errors import DeviceFailure, PlanError
from pipeboost.plan import Plan, relabel_plan, validate_plan
from pipeboost.policies import build_plan, recovery_policy
from pipeboost.scenario_model import Scenario
from pipeboost.trace import TraceKind, TraceRecord, sorted_records
from pipeboost.workload import generate_requests
from sim.faults import FaultBook
from sim.hostcpu import HostCPU, compute, cpu_capacities, host_cpu, loader_work
from sim.interference import Interference
from sim.instance import Instance
from sim.lora import AdapterBook
from sim.memory import KVBook
from sim.network import FluidNetwork, path_links
from sim.pool import RequestPool
from sim.recovery import on_failure
from sim.state import GPUState, ReqState, Tracer
from sim.stepcost import StepCosts

logger = logging.getLogger(__name__)

DETAIL_LIMIT = 1000
"""Runs with at most this many requests record per-token and per-step records by default."""


@dataclass
class SimResult:
    """Outcome of one run: the sorted trace, the base plan and counters."""

    scenario: str
    plan: Plan
    trace: list[TraceRecord]
    events: int
    sim_time_s: float
    requests: int
    finished: int
    errors: int
    stalled: int
    failures: int
    instances: int
    rate_updates: int
    counters: dict[str, int] = field(default_factory=dict)
    kv_peak_bytes: dict[int, int] = field(default_factory=dict)
    """Peak KV-cache + activation bytes reserved per GPU (see :mod:`sim.memory`)."""
    kv_deferred: int = 0
    """Admissions postponed because the KV cache did not fit yet."""


def scenario_plan(scenario: Scenario) -> Plan:
    """The base plan, validated against the per-GPU weight budget (PlanError before simulating)."""
    plan = build_plan(scenario)
    budget = scenario.memory_budget_bytes
    if plan.mode == "tensor_parallel":
        budget *= len(plan.gpus)
    validate_plan(plan, scenario.model, budget)
    if len(plan.gpus) > scenario.topology.num_gpus:
        raise PlanError(f"plan needs {len(plan.gpus)} GPUs but the cluster has {scenario.topology.num_gpus}")
    return plan


class Simulation:
    """One run of one scenario (see module docstring). Use :func:`run_simulation`."""

    def __init__(self, scenario: Scenario, token_records: bool | None = None,
                 step_records: bool | None = None) -> None:
        self.scenario = scenario
        self.plan = scenario_plan(scenario)
        self.env = simpy.Environment()
        self.requests = generate_requests(scenario.workload, scenario.rng("arrivals"), scenario.base_dir)
        detail = len(self.requests) <= DETAIL_LIMIT
        self.tracer = Tracer(detail if token_records is None else token_records,
                             detail if step_records is None else step_records)
        self.pool = RequestPool(self.env, self.tracer, self._check_done)
        topo = scenario.topology
        self.gpus = [GPUState(self.env, g, scenario.memory_budget_bytes) for g in range(topo.num_gpus)]
        self.host_cpus: list[HostCPU] | None = None
        """Per GPU, its share of the node's host cores (``CostParams.host_cores``; None: not modelled)."""
        self._node_networks: list[FluidNetwork] = []
        self._routes = self._build_networks()
        self.interference: Interference | None = None
        """Compute slowed by concurrent activity (``CostParams.compute_interference_*``; None: off)."""
        profile = scenario.params.profile_for(scenario.model)
        if Interference.enabled(scenario.params, profile):
            self.interference = Interference(self.env, scenario.params, topo.gpus_per_node, self._node_networks,
                                             {g: route[1][-1] for g, route in enumerate(self._routes)},
                                             profile)
        self.costs = StepCosts(scenario.params, topo.gpu, scenario.model)
        self.tp_costs = StepCosts(scenario.params, topo.gpu, scenario.model, tp=len(self.plan.gpus))
        self.recovery_fn = recovery_policy(scenario.policies.recovery)
        self.faults = FaultBook(scenario.faults, scenario.random_failures, scenario.rng("failures"), topo.num_gpus)
        self.instances: list[Instance] = []
        self.live: list[Instance] = []
        self._plans: dict[int, Plan | None] = {len(self.plan.gpus): self.plan}
        self.arrivals_done = False
        self.done = self.env.event()
        self.failures = 0
        self.states: list[ReqState] = []
        self.lora = AdapterBook(scenario) if scenario.workload.adapters else None
        self.kv = KVBook(self.env, scenario.model, topo.gpu.memory_bytes, topo.num_gpus)

    # ---- topology ---------------------------------------------------------------------------
    def _build_networks(self) -> list[tuple[FluidNetwork, tuple[str, ...], float]]:
        topo, params = self.scenario.topology, self.scenario.params
        source = self.scenario.serving.source
        bandwidth = lambda name, bw: link_bandwidth_bytes_per_s(params, name, bw)  # noqa: E731
        routes = []
        cpus = []
        for node in range(topo.nodes):
            gpus = range(node * topo.gpus_per_node, (node + 1) * topo.gpus_per_node)
            paths = [path_links(topo.path(g, source), bandwidth) for g in gpus]
            caps: dict[str, float] = {}
            for _, c, _ in paths:
                caps.update(c)
            if params.host_cores is not None:
                caps.update(cpu_capacities(params, node, gpus))
            net = FluidNetwork(self.env, caps)
            self._node_networks.append(net)
            routes.extend((net, names, params.transfer_latency_s + lat) for names, _, lat in paths)
            cpus.extend(host_cpu(params, net, node, g) for g in gpus)
        if params.host_cores is not None:
            self.host_cpus = cpus
        return routes

    def route(self, g: int) -> tuple[FluidNetwork, tuple[str, ...], float]:
        """(network, link names, latency in s) of a weight copy to GPU ``g``."""
        return self._routes[g]

    def start_copy(self, g: int, nbytes: float) -> tuple[FluidNetwork, simpy.Event]:
        """Start a weight copy of ``nbytes`` to GPU ``g``; returns its network and completion event.
        With host cores modelled the copy also uses host CPU (:mod:`sim.hostcpu`)."""
        net, links, latency_s = self._routes[g]
        if self.host_cpus is None:
            return net, net.transfer(links, nbytes, latency_s)
        links, extra = self.host_cpus[g].copy_links(links)
        return net, net.transfer(links, nbytes, latency_s, **extra)

    def start_unit_load_work(self, g: int) -> tuple[FluidNetwork, simpy.Event] | None:
        """Start the loader's per-unit work (``unit_load_cpu_s``) for a unit load on GPU ``g``; None when 0.
        Returns the network the event belongs to (to cancel it) and the event."""
        seconds = self.scenario.params.unit_load_cpu_s
        if seconds <= 0.0:
            return None
        if self.host_cpus is None:
            return self._routes[g][0], self.env.timeout(seconds)
        cpu = self.host_cpus[g]
        return cpu.net, loader_work(cpu, seconds)

    def shared_compute(self, gpus: Sequence[int], seconds: float, prefill_share: float = 0.0,
                       prefill_tokens: int | None = None) -> Generator[simpy.Event, object, None]:
        """A compute job of ``seconds`` (cost model; ``prefill_share`` of it prefill, 0..1) on ``gpus`` when
        host cores or interference are modelled (it may take longer); callers use a plain timeout when
        :attr:`plain_compute`."""
        if self.interference is not None:
            yield from self.interference.compute(gpus, seconds, self.host_cpus, prefill_share, prefill_tokens)
        elif self.host_cpus is not None:
            yield from compute([self.host_cpus[g] for g in gpus], seconds)
        else:
            yield self.env.timeout(seconds)

    @property
    def plain_compute(self) -> bool:
        """True when compute takes exactly its cost-model time (no host cores, no interference)."""
        return self.host_cpus is None and self.interference is None

    # ---- processes on GPUs ------------------------------------------------------------------
    def spawn_on(self, gen: Generator, gpus: tuple[int, ...]) -> simpy.Process:
        """Start a process registered on ``gpus`` (a failure of any of them interrupts it)."""
        proc = self.env.process(gen)
        for g in gpus:
            self.gpus[g].procs[proc] = None
        proc.callbacks.append(lambda _ev: [self.gpus[g].procs.pop(proc, None) for g in gpus])
        return proc

    def stop_gpu_work(self, gpu: GPUState, active: simpy.Process | None, cause: object) -> None:
        """Cancel the GPU's copy and interrupt every process registered on it (except ``active``)."""
        if gpu.transfer is not None:
            net, ev = gpu.transfer[0], gpu.transfer[1]
            net.cancel(ev)
            gpu.transfer = None
        for proc in list(gpu.procs):
            if proc is not active and proc.is_alive:
                proc.interrupt(cause)
        gpu.procs.clear()

    def fail_gpu(self, g: int, cause: str) -> None:
        """GPU ``g`` fails now: FAILURE record, memory lost, its work interrupted, recovery scheduled."""
        gpu = self.gpus[g]
        if not gpu.alive:
            return
        gpu.alive = False
        self.failures += 1
        self.tracer.instant(TraceKind.FAILURE, self.env.now, gpu=g, attrs={"cause": cause})
        inst = gpu.instance
        self.stop_gpu_work(gpu, self.env.active_process, DeviceFailure(g, cause))
        gpu.wipe()
        if inst is not None and inst.live:
            on_failure(inst, g)

    def start_prefill(self, g: int) -> None:
        """GPU ``g`` starts a prefill compute: fire its ``prefill`` fault on the first one."""
        gpu = self.gpus[g]
        if not gpu.first_prefill_done:
            gpu.first_prefill_done = True
            if self.faults.on_prefill(g):
                self.fail_gpu(g, "fault: first prefill")
                raise DeviceFailure(g, "prefill")

    def start_decode(self, g: int) -> None:
        """GPU ``g`` starts a decode iteration: count it and fire a matching ``decode_step`` fault."""
        gpu = self.gpus[g]
        gpu.decode_iters += 1
        if self.faults.on_decode(g, gpu.decode_iters):
            self.fail_gpu(g, f"fault: decode step {gpu.decode_iters}")
            raise DeviceFailure(g, "decode")

    # ---- instances and autoscaling ----------------------------------------------------------
    def _plan_for(self, k: int) -> Plan | None:
        if k not in self._plans:
            sc = self.scenario
            smaller = dataclasses.replace(sc, serving=dataclasses.replace(sc.serving, cold_start_gpus=k),
                                          policies=dataclasses.replace(sc.policies, num_stages=None))
            try:
                self._plans[k] = scenario_plan(smaller)
            except PlanError:
                self._plans[k] = None
        return self._plans[k]

    def _pick(self, free: list[int], k: int) -> tuple[int, ...] | None:
        per_node = self.scenario.topology.gpus_per_node
        for node in sorted({g // per_node for g in free}):
            local = [g for g in free if g // per_node == node]
            if len(local) >= k:
                return tuple(local[:k])
        return tuple(free[:k]) if len(free) >= k else None

    def _start_instance(self, allow_smaller: bool) -> Instance | None:
        free = [gpu.gid for gpu in self.gpus if gpu.alive and gpu.instance is None]
        sizes = [len(self.plan.gpus)]
        if allow_smaller:
            sizes += list(range(min(len(free), sizes[0] - 1), 0, -1))
        for k in sizes:
            plan = self._plan_for(k)
            pick = self._pick(free, k) if plan is not None else None
            if pick is not None:
                inst = Instance(self, len(self.instances), relabel_plan(plan, pick))
                self.instances.append(inst)
                self.live.append(inst)
                inst.start()
                return inst
        return None

    def autoscale(self) -> None:
        """Start an instance when requests wait and capacity is short (see module docstring)."""
        waiting = len(self.pool.queue)
        if not waiting:
            return
        if self.live:
            if waiting <= self.scenario.serving.max_batch_size or any(i.state == "warming" for i in self.live):
                return
        if self._start_instance(allow_smaller=not self.live) is None and not self.live:
            self.pool.fail_all_queued("no_capacity")

    def instance_gone(self, inst: Instance) -> None:
        if inst in self.live:
            self.live.remove(inst)
        self.autoscale()
        self._check_done()

    # ---- arrivals and the run ---------------------------------------------------------------
    def _arrivals(self) -> Generator[simpy.Event, object, None]:
        env, pool, tracer = self.env, self.pool, self.tracer
        for r in self.requests:
            if r.arrival_s > env.now:
                yield env.timeout(r.arrival_s - env.now)
            tracer.instant(TraceKind.ARRIVAL, env.now, request=r.id,
                           attrs={"prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens})
            state = ReqState(r.id, env.now, r.prompt_tokens, r.output_tokens, r.adapter)
            self.states.append(state)
            pool.push(state)
            self.autoscale()
        self.arrivals_done = True
        self._check_done()

    def _check_done(self) -> None:
        if (self.arrivals_done and not self.live and self.pool.terminal >= len(self.requests)
                and not self.done.triggered):
            self.done.succeed()

    def run(self) -> SimResult:
        env = self.env
        for t, g, cause in self.faults.timed:
            env.timeout(t).callbacks.append(lambda _ev, g=g, cause=cause: self.fail_gpu(g, f"fault: {cause}"))
        env.process(self._arrivals())
        stalled = 0
        try:
            env.run(until=self.done)
        except RuntimeError:
            stalled = self._end_stalled()
        return self._result(stalled)

    def _end_stalled(self) -> int:
        """The schedule ran dry with requests unfinished (should not happen): end them explicitly."""
        pending = self.pool.terminal
        for state in self.states:
            self.pool.fail(state, "stalled")
        logger.warning("simulation stalled with %d requests unfinished", len(self.requests) - pending)
        return self.pool.terminal - pending

    def _result(self, stalled: int) -> SimResult:
        trace = sorted_records(self.tracer.records)
        kinds: dict[str, int] = {}
        for rec in trace:
            kinds[rec.kind.value] = kinds.get(rec.kind.value, 0) + 1
        eid = getattr(self.env, "_eid", None)
        events = next(eid) if eid is not None else 0
        networks = {id(net): net for net, _, _ in self._routes}.values()
        return SimResult(self.scenario.name, self.plan, trace, events, self.env.now, len(self.requests),
                         kinds.get("finish", 0), kinds.get("request_error", 0), stalled, self.failures,
                         len(self.instances), sum(net.rate_updates for net in networks), kinds,
                         self.kv.peaks(), self.kv.deferred)


def run_simulation(scenario: Scenario, token_records: bool | None = None,
                   step_records: bool | None = None) -> SimResult:
    """Simulate ``scenario``; same scenario and seed give a byte-identical trace.

    ``token_records`` / ``step_records`` default to on for runs with at most :data:`DETAIL_LIMIT` requests.
    Raises :class:`pipeboost.errors.PlanError` before simulating when the plan is invalid or does not fit.
    """
    return Simulation(scenario, token_records, step_records).run()
