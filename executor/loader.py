"""The per-device loader thread: copies units from the host source into the device arena, in plan order.

A load is a real copy: tensors are read by name from the memory-mapped safetensors files (page cache)
and copied chunk by chunk into arena views. On CPU virtual devices an optional per-link bandwidth cap
(bytes/s) paces the copy (sleep until ``bytes_done / bandwidth`` has elapsed) to emulate a PCIe link. On
CUDA the chunks go through a bounded pool of pinned staging buffers and ``non_blocking`` copies on the
device's copy stream; a CUDA event recorded after the unit's last copy marks it ready for compute.

The queue of units is dynamic: recovery can move units to the front (:meth:`Loader.prepend`).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

import torch
from transformers import PretrainedConfig

from executor.checkpoint import CheckpointReader
from executor.devices import Device
from executor.tracer import Tracer
from executor.units import build_unit, materialise, unit_tensor_names
from pipeboost.errors import CheckpointError, DeviceFailure
from pipeboost.trace import TraceKind

log = logging.getLogger(__name__)

CHUNK_BYTES = 4 << 20
"""Pinned staging chunk on CUDA."""
CPU_CHUNK_BYTES = 16 << 20
"""Chunk of a host-to-arena copy on CPU (pacing granularity; large enough to run at memcpy speed)."""
STAGING_BUFFERS_PER_LINK = 2
IDLE_POLL_S = 0.02


class LinkPacer:
    """Emulates one link of ``bandwidth_bytes_per_s`` (``None``: unthrottled) with a continuous link clock.

    :meth:`reserve` books ``nbytes`` on the link right after what it already carries (or now, if the link
    is idle) and returns when the link will have delivered them; the copy itself runs meanwhile. The caller
    waits with :meth:`wait_until` as late as it can (after preparing the next work), so per-unit software
    overheads overlap the link time as they do behind a real DMA engine, and a busy link runs at its rate.
    """

    def __init__(self, bandwidth_bytes_per_s: float | None) -> None:
        self.bandwidth_bytes_per_s = bandwidth_bytes_per_s
        self._t_free = 0.0

    def reserve(self, nbytes: int) -> float:
        """Book ``nbytes``; return the ``perf_counter`` time at which the link has delivered them."""
        now = time.perf_counter()
        if not self.bandwidth_bytes_per_s:
            return now
        self._t_free = max(self._t_free, now) + nbytes / self.bandwidth_bytes_per_s
        return self._t_free

    @staticmethod
    def wait_until(t_s: float) -> None:
        wait_s = t_s - time.perf_counter()
        if wait_s > 0:
            time.sleep(wait_s)

    def pace(self, nbytes: int) -> None:
        """Book ``nbytes`` and wait until the link has delivered them."""
        self.wait_until(self.reserve(nbytes))


class CudaStaging:
    """Pinned staging buffers and a copy stream for host -> GPU copies of one device."""

    def __init__(self, device: torch.device, chunk_bytes: int = CHUNK_BYTES,
                 buffers: int = STAGING_BUFFERS_PER_LINK) -> None:
        self.stream = torch.cuda.Stream(device)
        self.buffers = [torch.empty(chunk_bytes, dtype=torch.uint8, pin_memory=True) for _ in range(buffers)]
        self.events: list[torch.cuda.Event | None] = [None] * buffers
        self._next = 0

    def copy(self, src: torch.Tensor, dst: torch.Tensor, pacer: LinkPacer, failed: threading.Event) -> None:
        """Copy flat uint8 ``src`` (host) into ``dst`` (GPU) through the staging buffers."""
        chunk = self.buffers[0].numel()
        for off in range(0, src.numel(), chunk):
            if failed.is_set():
                return
            i = self._next
            self._next = (i + 1) % len(self.buffers)
            if self.events[i] is not None:
                self.events[i].synchronize()  # buffer i's previous copy has left it
            n = min(chunk, src.numel() - off)
            staged = self.buffers[i][:n]
            staged.copy_(src[off:off + n])
            with torch.cuda.stream(self.stream):
                dst[off:off + n].copy_(staged, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
            self.events[i] = event
            pacer.pace(n)

    def unit_done(self) -> torch.cuda.Event:
        event = torch.cuda.Event()
        event.record(self.stream)
        return event


def _copy_cpu(src: torch.Tensor, dst: torch.Tensor, pacer: LinkPacer, failed: threading.Event) -> float:
    """Chunked copy of flat uint8 ``src`` into ``dst`` (both host memory), paced by ``pacer``.

    Returns the time the link delivers the last chunk; the caller waits for it (see :class:`LinkPacer`).
    """
    done_s = time.perf_counter()
    for off in range(0, src.numel(), CPU_CHUNK_BYTES):
        if failed.is_set():
            return done_s
        pacer.wait_until(done_s)  # the previous chunk has left the link
        end = min(off + CPU_CHUNK_BYTES, src.numel())
        done_s = pacer.reserve(end - off)
        dst[off:end].copy_(src[off:end])
    return done_s


def _flat_bytes(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1).view(torch.uint8)


class Loader(threading.Thread):
    """Loads ``units`` onto ``device`` in order; recovery may prepend units while it runs.

    ``before_unit(gpu, unit)`` is called as a unit's load begins (fault injection hook) and
    ``after_unit(gpu, unit)`` once it is resident. The thread exits when the device fails or ``stop`` is set.
    """

    def __init__(self, device: Device, reader: CheckpointReader, config: PretrainedConfig,
                 units: tuple[int, ...], tracer: Tracer, stop: threading.Event,
                 bandwidth_bytes_per_s: float | None = None,
                 before_unit: Callable[[int, int], None] | None = None,
                 after_unit: Callable[[int, int], None] | None = None) -> None:
        super().__init__(name=f"loader-{device.index}", daemon=True)
        self.device, self.reader, self.config, self.tracer, self.stop = device, reader, config, tracer, stop
        self.pacer = LinkPacer(bandwidth_bytes_per_s)
        self.before_unit = before_unit or (lambda gpu, unit: None)
        self.after_unit = after_unit or (lambda gpu, unit: None)
        self._queue: collections.deque[int] = collections.deque(units)
        self._cond = threading.Condition()
        self._staging = CudaStaging(device.torch_device) if device.is_cuda else None
        # Before time zero, every planned unit gets its module with parameters already assigned to their
        # arena views: a load is then only the copies (as a DMA into preallocated weights would be).
        self._prepared = {u: self._prepare(u) for u in units}
        self.error: BaseException | None = None
        self.on_error: Callable[[BaseException], None] = lambda exc: None

    def prepend(self, units: tuple[int, ...]) -> None:
        """Load ``units`` (in this order) before anything else still queued; resident units are skipped."""
        with self._cond:
            rest = [u for u in self._queue if u not in units]
            todo = [u for u in units if not self.device.ready_event(u).is_set()]
            self._queue = collections.deque(todo + rest)
            self._cond.notify()

    def pending(self) -> tuple[int, ...]:
        with self._cond:
            return tuple(self._queue)

    def _next_unit(self) -> int | None:
        with self._cond:
            while not self._queue:
                if self.stop.is_set() or self.device.failed.is_set():
                    return None
                self._cond.wait(IDLE_POLL_S)
            return self._queue.popleft()

    def run(self) -> None:
        if self.device.is_cuda:
            torch.cuda.set_device(self.device.torch_device)
        try:
            while not (self.stop.is_set() or self.device.failed.is_set()):
                unit = self._next_unit()
                if unit is None:
                    break
                if not self.device.ready_event(unit).is_set():
                    self._load(unit)
        except (CheckpointError, DeviceFailure) as exc:
            self.error = exc
            log.error("loader of device %d stopped: %s", self.device.index, exc)
            if isinstance(exc, CheckpointError):
                self.on_error(exc)

    def _prepare(self, unit: int) -> tuple[torch.nn.Module, list[tuple[str, torch.Tensor]], int]:
        """The unit's module with every parameter assigned to its (still empty) arena view.

        Returns ``(module, [(checkpoint tensor name, flat byte view of its arena memory)], bytes)``; shapes and
        dtypes come from the checkpoint header, which :func:`executor.engine.validate_checkpoint` checked
        against the module.
        """
        module = build_unit(self.config, unit)
        expected = module.state_dict()
        views: dict[str, torch.Tensor] = {}
        targets: list[tuple[str, torch.Tensor]] = []
        for local, name in unit_tensor_names(self.config, unit, module).items():
            info = self.reader.tensors.get(name)
            if info is None:
                raise CheckpointError(f"{self.reader.model_dir}: tensor {name!r} is missing from the checkpoint")
            info = self.reader.check(name, info.dtype, tuple(expected[local].shape))  # shape as the module's
            views[local] = self.device.arena.alloc(tuple(info.shape), info.dtype)
            targets.append((name, _flat_bytes(views[local])))
        module = materialise(module, views, self.config, self.device.torch_device)
        return module, targets, sum(v.numel() * v.element_size() for v in views.values())

    def _load(self, unit: int) -> None:
        dev = self.device
        t_start = self.tracer.now_s()
        self.before_unit(dev.index, unit)
        prepared = self._prepared.pop(unit, None)
        module, targets, nbytes = prepared if prepared is not None else self._prepare(unit)
        delivered_s = time.perf_counter()
        for name, dst in targets:
            src = _flat_bytes(self.reader.get(name))
            if self._staging is not None:
                self._staging.copy(src, dst, self.pacer, dev.failed)
            elif src.numel() <= CPU_CHUNK_BYTES and not self.pacer.bandwidth_bytes_per_s:
                dst.copy_(src)  # small, unpaced: one copy, no chunk loop
            else:
                delivered_s = _copy_cpu(src, dst, self.pacer, dev.failed)
            if dev.failed.is_set():
                return  # half-loaded: discarded with the arena
        self._publish(unit, module, nbytes, t_start, delivered_s)

    def _publish(self, unit: int, module: torch.nn.Module, nbytes: int, t_start: float, delivered_s: float) -> None:
        dev = self.device
        self.pacer.wait_until(delivered_s)  # the emulated link has delivered the unit's last bytes
        if self._staging is not None:
            dev.cuda_events[unit] = self._staging.unit_done()
            dev.cuda_events[unit].synchronize()  # LOAD ends when the bytes are on the device
        if dev.failed.is_set():
            return
        dev.units[unit] = module
        self.tracer.add(t_start, self.tracer.now_s(), TraceKind.LOAD, gpu=dev.index, layer=unit, nbytes=nbytes)
        dev.ready_event(unit).set()
        self.after_unit(dev.index, unit)
