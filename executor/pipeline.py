"""The pipeline runtime: requests, routing (pipeline or replica), greedy tokens and hand-offs.

A request is routed when it arrives: to the least-busy full replica if one exists (``pipeboost`` mode),
else through the current pipeline (``stage_gpus``). Each step (the prefill, then one step per output
token) enters stage 0's device, flows stage by stage (:mod:`executor.worker`), and the last stage's
logits give the greedy token; the next step starts at once, so several requests flow through the stages
as independent micro-batches, each device keeping a KV cache per request. On a device that serves a
request's whole route (a replica), decode steps queued together run as one batch (:mod:`executor.batching`).

After a failure, :meth:`Runtime.reroute` moves every in-flight request whose route used the failed
device to the new routing and re-prefills its prompt plus the tokens generated so far (rebuilding the
lost KV cache); tasks of the old route are ignored through the request's ``epoch``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from transformers import PretrainedConfig

from executor.devices import Device
from executor.kvcache import RequestKVCache
from executor.tracer import Tracer
from executor.worker import ComputeWorker, StageTask
from pipeboost.plan import PartitionPlan, Plan
from pipeboost.spec import EMBED_UNIT
from pipeboost.trace import TraceKind

log = logging.getLogger(__name__)


@dataclass
class RequestState:
    """A request in flight: prompt ids, generated tokens, current route (device per stage), epoch."""

    id: int
    prompt: list[int]
    output_tokens: int
    route: tuple[int, ...] = ()
    tokens: list[int] = field(default_factory=list)
    epoch: int = 0
    finished: bool = False
    reprefill: bool = False
    adapter: str | None = None


class NullFaults:
    """Fault hooks that never fire (see :class:`executor.faults.FaultInjector`)."""

    def before_compute(self, gpu: int, prefill: bool, step: int) -> None:
        return None


class Runtime:
    """Carries out a plan's serving side on ``devices`` (indexed like the plan's GPUs)."""

    def __init__(self, plan: Plan, config: PretrainedConfig, devices: dict[int, Device], tracer: Tracer,
                 *, execute_while_load: bool = True, threads_per_device: int = 1, max_batch_size: int = 1) -> None:
        self.plan = plan
        self.partition: PartitionPlan = plan.partition
        self.config = config
        self.devices = devices
        self.tracer = tracer
        self.execute_while_load = execute_while_load and plan.mode != "load_then_run"
        self.stop = threading.Event()
        self.faults = NullFaults()
        self.stage_gpus: tuple[int, ...] = plan.stage_gpus
        self.replicas: list[int] = []
        self.requests: dict[int, RequestState] = {}
        self.lock = threading.RLock()
        self.all_done = threading.Event()
        self.expected_requests = 0
        self.unrecoverable: str | None = None
        self.on_token: Callable[[RequestState], None] = lambda req: None
        self.lora: Any = None  # executor.lora_runtime.AdapterManager when requests name adapters
        self.max_batch_size = max_batch_size  # decode rows per forward pass on a replica (1: no batching)
        self.workers = {g: ComputeWorker(d, self, threads_per_device) for g, d in devices.items()}

    # ---- structure ------------------------------------------------------------------------------
    def units_of_stage(self, stage: int) -> tuple[int, ...]:
        return self.partition.units_of_stage(stage)

    def wait_set(self, gpu: int, stage: int) -> tuple[int, ...]:
        """Units a stage waits for before computing when not executing while loading.

        ``load_then_run``: everything the device loads; otherwise the stage's own units.
        """
        if self.plan.mode == "load_then_run" and gpu in self.plan.load.gpus:
            return self.plan.load.units_of(gpu, self.partition)
        return self.units_of_stage(stage)

    def alive(self) -> tuple[int, ...]:
        return tuple(g for g, d in sorted(self.devices.items()) if not d.failed.is_set())

    # ---- routing --------------------------------------------------------------------------------
    def add_replica(self, gpu: int) -> None:
        """Record that ``gpu`` holds every unit; new requests go to replicas from now on."""
        with self.lock:
            if gpu in self.replicas or self.devices[gpu].failed.is_set():
                return
            self.replicas.append(gpu)
            self.tracer.instant(TraceKind.REPLICA_READY, gpu=gpu)
            if len(self.replicas) == 1:
                self.tracer.instant(TraceKind.MODE_SWITCH, gpu=gpu, attrs={"from": "pipeline", "to": "replica"})

    def _route(self) -> tuple[int, ...]:
        alive = [g for g in self.replicas if not self.devices[g].failed.is_set()]
        if alive:
            busy = {g: 0 for g in alive}
            for req in self.requests.values():
                if not req.finished and req.route and len(set(req.route)) == 1 and req.route[0] in busy:
                    busy[req.route[0]] += 1
            best = min(alive, key=lambda g: (busy[g], g))
            return (best,) * self.partition.num_stages
        return self.stage_gpus

    def submit(self, req: RequestState) -> None:
        """Route a newly arrived request and start its prefill."""
        with self.lock:
            self.requests[req.id] = req
            if self.unrecoverable is not None:
                req.finished = True
                self.tracer.instant(TraceKind.REQUEST_ERROR, request=req.id, attrs={"reason": self.unrecoverable})
                self._check_done()
                return
            req.route = self._route()
            self._start_step(req)

    def _start_step(self, req: RequestState) -> None:
        prefill = not req.tokens or req.reprefill
        if prefill:
            ids = req.prompt + req.tokens
            positions = torch.arange(len(ids)).unsqueeze(0)
        else:
            ids = req.tokens[-1:]
            positions = torch.tensor([[len(req.prompt) + len(req.tokens) - 1]])
        device = self.devices[req.route[0]]
        task = StageTask(req, req.epoch, 0, torch.tensor([ids], device=device.torch_device),
                         positions.to(device.torch_device), prefill, len(req.tokens))
        self.workers[req.route[0]].submit(task)

    # ---- compute hooks used by workers ------------------------------------------------------------
    def run_unit(self, module: nn.Module, unit: int, data: torch.Tensor, task: StageTask,
                 cache: RequestKVCache) -> torch.Tensor:
        """Run one unit of ``task``: embed ids, a decoder layer (with the request's cache), or the head."""
        if unit == EMBED_UNIT:
            return module(data, task.positions)
        if unit == self.partition.num_layers:
            return module(data)
        if task.prefill:
            cache.reset_layer(unit)
        return module(data, task.positions, cache)

    def hop(self, task: StageTask, stage: int, hidden: torch.Tensor, src: int, dst: int) -> None:
        """Copy the hidden state to ``dst`` (device-to-device; a host copy between virtual devices)."""
        t_start = self.tracer.now_s()
        target = self.devices[dst]
        moved = hidden.to(target.torch_device, copy=True)
        positions = task.positions.to(target.torch_device)
        if target.is_cuda:
            torch.cuda.current_stream(target.torch_device).synchronize()
        self.tracer.add(t_start, self.tracer.now_s(), TraceKind.HOP, gpu=src, stage=stage,
                        request=task.request.id, nbytes=moved.numel() * moved.element_size(),
                        attrs={"to": dst, "step": task.step})
        nxt = StageTask(task.request, task.epoch, stage, moved, positions, task.prefill, task.step)
        self.workers[dst].submit(nxt)

    def emit(self, task: StageTask, logits: torch.Tensor) -> None:
        """Greedy token from the last stage's logits; record it and start the next step."""
        token = int(torch.argmax(logits[0]).item())
        req = task.request
        with self.lock:
            if task.is_stale():
                return
            req.tokens.append(token)
            req.reprefill = False
            kind = TraceKind.FIRST_TOKEN if len(req.tokens) == 1 else TraceKind.TOKEN
            self.tracer.instant(kind, gpu=req.route[-1], request=req.id,
                                attrs={"index": len(req.tokens) - 1, "recomputed": task.prefill and task.step > 0})
            self.on_token(req)
            if len(req.tokens) >= req.output_tokens:
                self._finish(req)
            else:
                self._start_step(req)

    def _finish(self, req: RequestState) -> None:
        req.finished = True
        self.tracer.instant(TraceKind.FINISH, request=req.id, gpu=req.route[-1])
        for device in self.devices.values():
            for key in [k for k in list(device.kv) if k[0] == req.id]:
                device.kv.pop(key, None)
        self._check_done()

    def _check_done(self) -> None:
        if sum(r.finished for r in self.requests.values()) >= self.expected_requests:
            self.all_done.set()

    # ---- recovery ---------------------------------------------------------------------------------
    def reroute(self, failed_gpu: int, stage_gpus: tuple[int, ...]) -> list[int]:
        """Adopt ``stage_gpus``; move in-flight requests that used ``failed_gpu`` and re-prefill them.

        Returns the ids of the requests moved.
        """
        with self.lock:
            self.stage_gpus = stage_gpus
            self.replicas = [g for g in self.replicas if g != failed_gpu]
            moved = []
            for req in self.requests.values():
                if req.finished or failed_gpu not in req.route:
                    continue
                req.epoch += 1
                for device in self.devices.values():
                    for key in [k for k in list(device.kv) if k[0] == req.id]:
                        device.kv.pop(key, None)
                req.route = self._route()
                req.reprefill = True
                self._start_step(req)
                moved.append(req.id)
            return moved

    # ---- lifecycle --------------------------------------------------------------------------------
    def warm_up(self, timeout_s: float = 30.0) -> None:
        """Start the compute workers and wait until each has warmed its thread up (before time zero)."""
        self.start()
        for worker in self.workers.values():
            worker.warm.wait(timeout_s)

    def start(self) -> None:
        for worker in self.workers.values():
            if worker.ident is None:
                worker.start()

    def shutdown(self) -> None:
        self.stop.set()
        for worker in self.workers.values():
            worker.wake()
        for worker in self.workers.values():
            if worker.is_alive():
                worker.join(timeout=5)
