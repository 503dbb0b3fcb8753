"""The per-device compute worker: runs stage tasks of requests; batches replica decode steps.

A :class:`StageTask` asks a device to run one stage of one step (prefill or one decode step) of one
request. The worker waits for each unit to be resident (execute-while-load), runs it with the request's
KV cache on this device, records a PREFILL/DECODE interval per unit, then either continues with the next
stage inline (same device, e.g. a replica) or hands the hidden state to the next stage's device (HOP).
The last stage hands the logits to the runtime, which picks the greedy token.

At each step boundary the worker takes every queued task: prefills and pipeline stages run one request at
a time, in order; decode steps of requests served wholly by this device run together in batches of up to
``runtime.max_batch_size`` (:mod:`executor.batching`).

Hand-offs block rather than poll: an idle worker sleeps in ``tasks.get()`` with no timeout and is woken by
the next task (or by :meth:`ComputeWorker.wake` at shutdown), so a hand-off costs one thread wake-up. Each
worker warms its thread up before engine time zero (:func:`warm_thread`): the first torch calls of a fresh
thread cost milliseconds (per-thread runtime state), which used to land on the first request's step.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from executor.batching import run_batch, split_batches
from executor.devices import Device
from executor.lora_runtime import request_scope, rows_scope
from pipeboost.errors import DeviceFailure
from pipeboost.trace import TraceKind

if TYPE_CHECKING:
    from executor.pipeline import Runtime, RequestState

log = logging.getLogger(__name__)

_WAKE = None  # queued by ComputeWorker.wake: re-check stop / failure


def warm_thread(device: torch.device, threads: int) -> None:
    """Set the thread's torch thread count and run a few small ops of the kinds a unit runs.

    Throwaway tensors only: nothing a request computes depends on it. Done before engine time zero.
    """
    torch.set_num_threads(threads)
    with torch.inference_mode():
        x = torch.randn(2, 4, 16, device=device)
        w = torch.randn(16, 16, device=device)
        ids = torch.arange(4, device=device).unsqueeze(0)
        h = torch.nn.functional.embedding(ids, w) + torch.nn.functional.linear(x, w)[:1]
        h = torch.nn.functional.layer_norm(h, (16,)) * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        q = torch.nn.functional.silu(h).view(1, 4, 2, 8).transpose(1, 2)
        a = torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
        out = torch.cat([a, a], dim=2).softmax(-1).argmax()
        int(out.item())


@dataclass
class StageTask:
    """One stage of one step of one request.

    ``data`` is token ids ``(1, T)`` for stage 0, else the hidden state ``(1, T, H)``; ``positions`` the
    absolute positions ``(1, T)``; ``step`` the index of the output token this step produces; ``epoch``
    the request's routing epoch when the step began (a rerouted request ignores older tasks).
    """

    request: "RequestState"
    epoch: int
    stage: int
    data: torch.Tensor
    positions: torch.Tensor
    prefill: bool
    step: int

    def is_stale(self) -> bool:
        return self.epoch != self.request.epoch or self.request.finished


class ComputeWorker(threading.Thread):
    """Runs the stage tasks queued for one device (see module docstring)."""

    def __init__(self, device: Device, runtime: "Runtime", threads: int = 1) -> None:
        super().__init__(name=f"compute-{device.index}", daemon=True)
        self.device = device
        self.runtime = runtime
        self.threads = threads
        self.tasks: queue.Queue[StageTask | None] = queue.Queue()
        self.warm = threading.Event()

    def submit(self, task: StageTask) -> None:
        """Queue a task; tasks for a failed device are dropped (recovery reroutes their request)."""
        if not self.device.failed.is_set():
            self.tasks.put(task)

    def wake(self) -> None:
        """Wake the worker so it re-checks ``stop`` and its device's failure (used at shutdown)."""
        self.tasks.put(_WAKE)

    def run(self) -> None:
        if self.device.is_cuda:
            torch.cuda.set_device(self.device.torch_device)
        try:
            warm_thread(self.device.torch_device, self.threads)
        finally:
            self.warm.set()
        stop = self.runtime.stop
        while not (stop.is_set() or self.device.failed.is_set()):
            first = self.tasks.get()  # blocks until a task (or a wake-up) arrives: no polling
            if first is _WAKE:
                continue
            try:
                self._run_boundary(first)
            except (DeviceFailure, InterruptedError):
                break

    def _drain(self, first: StageTask) -> list[StageTask]:
        """``first`` and every task queued now (a step boundary), stale ones dropped."""
        tasks = [first]
        while True:
            try:
                task = self.tasks.get_nowait()
            except queue.Empty:
                return [t for t in tasks if not t.is_stale()]
            if task is not _WAKE:
                tasks.append(task)

    def _run_boundary(self, first: StageTask) -> None:
        """Run the tasks queued at this step boundary: singles in order, then the decode batches."""
        singles, batches = split_batches(self._drain(first), self.device.index, self.runtime.max_batch_size)
        for task in singles + [b[0] for b in batches if len(b) == 1]:
            if not task.is_stale():
                with torch.inference_mode(), request_scope(task.request):
                    self._run(task)
        for batch in batches:
            live = [t for t in batch if not t.is_stale()]
            if len(batch) > 1 and live:
                with torch.inference_mode(), rows_scope([t.request for t in live]):
                    run_batch(self.runtime, self.device, live)

    def _run(self, task: StageTask) -> None:
        """Run ``task``'s stage and any following stages routed to this device, then hand off."""
        rt = self.runtime
        hidden = task.data
        stage = task.stage
        while True:
            rt.faults.before_compute(self.device.index, task.prefill, task.step)
            if self.device.failed.is_set():
                raise DeviceFailure(self.device.index, self.device.failure_cause)
            hidden = self._run_stage(task, stage, hidden)
            if hidden is None:  # rerouted meanwhile: the new route's task redoes the step
                return
            if stage == rt.partition.num_stages - 1:
                rt.emit(task, hidden)
                return
            stage += 1
            next_gpu = task.request.route[stage]
            if next_gpu != self.device.index:
                rt.hop(task, stage, hidden, self.device.index, next_gpu)
                return

    def _wait_units(self, units: tuple[int, ...]) -> None:
        for unit in units:
            self.device.wait_resident(unit, self.runtime.stop)

    def _run_stage(self, task: StageTask, stage: int, data: torch.Tensor) -> torch.Tensor | None:
        """The stage's units on ``data``; None when the task went stale (its request was rerouted after a
        failure) while it waited for a unit: the old route's work stops there instead of running on."""
        rt = self.runtime
        units = rt.units_of_stage(stage)
        if not rt.execute_while_load:
            self._wait_units(rt.wait_set(self.device.index, stage))
        cache = self.device.cache_of((task.request.id, task.epoch))
        kind = TraceKind.PREFILL if task.prefill else TraceKind.DECODE
        lora = rt.lora
        for unit in units:
            module = self.device.wait_resident(unit, rt.stop)
            if task.is_stale():
                return None
            if lora is not None:
                lora.before_unit(self.device, unit, module)
            t_start = rt.tracer.now_s()
            data = rt.run_unit(module, unit, data, task, cache)
            if self.device.is_cuda:
                torch.cuda.current_stream(self.device.torch_device).synchronize()
            rt.tracer.add(t_start, rt.tracer.now_s(), kind, gpu=self.device.index, stage=stage, layer=unit,
                          request=task.request.id, attrs={"step": task.step})
        return data
