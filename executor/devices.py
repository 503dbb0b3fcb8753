"""Devices: CUDA GPUs or CPU "virtual devices", each with a preallocated weight arena and its own state.

A device owns

* an :class:`Arena`: one buffer allocated (and, on CPU, touched) once; unit tensors are aligned views
  into it, so a load is a real copy into memory the device owns and never allocates per tensor;
* the units resident on it (modules whose parameters are arena views) with one ready flag per unit
  (plus a CUDA event recorded on the copy stream on GPUs);
* the KV caches of the requests it serves;
* a ``failed`` flag: once set, its threads stop and its arena, units and caches are dropped.

Threads (the loader in :mod:`executor.loader`, the compute worker in :mod:`executor.pipeline`) are attached
by those modules; this module holds only the state they share.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import torch
from torch import nn

from executor.kvcache import RequestKVCache
from pipeboost.errors import DeviceFailure

log = logging.getLogger(__name__)

ALIGN_BYTES = 256
WAIT_POLL_S = 0.02


class Arena:
    """A per-device weight arena: a bump allocator over one preallocated byte buffer.

    ``capacity_bytes`` is reserved up front; an allocation beyond it adds an overflow segment (logged, as
    it costs fresh memory) so recovery can load stages outside the original plan.
    """

    def __init__(self, capacity_bytes: int, device: torch.device, owner: int = -1) -> None:
        self.device = device
        self.owner = owner
        self._segments: list[torch.Tensor] = []
        self._offset = 0
        self.released = False
        self._new_segment(max(int(capacity_bytes), ALIGN_BYTES))

    def _new_segment(self, nbytes: int) -> None:
        buf = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
        buf.zero_()  # touch every page once so later copies do not page-fault
        self._segments.append(buf)
        self._offset = 0

    @property
    def capacity_bytes(self) -> int:
        return sum(s.numel() for s in self._segments)

    def alloc(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor of ``shape``/``dtype`` that is a view into the arena.

        Raises :class:`DeviceFailure` once the arena was released (its device failed).
        """
        nbytes = int(torch.Size(shape).numel()) * dtype.itemsize
        segments = self._segments  # release() rebinds the list: this one stays consistent
        if self.released:
            raise DeviceFailure(self.owner, "arena released")
        if self._offset + nbytes > segments[-1].numel():
            log.warning("arena on %s full: adding an overflow segment of %d bytes", self.device, nbytes)
            self._new_segment(max(nbytes, ALIGN_BYTES))
            segments = self._segments
        view = segments[-1][self._offset:self._offset + nbytes].view(dtype).view(shape)
        self._offset += -(-nbytes // ALIGN_BYTES) * ALIGN_BYTES
        return view

    def release(self) -> None:
        """Drop the buffers (views still referenced elsewhere keep their memory until released)."""
        self.released = True
        self._segments = []


@dataclass
class Device:
    """State of one device shared by its loader and compute threads (see module docstring)."""

    index: int
    torch_device: torch.device
    arena: Arena
    units: dict[int, nn.Module] = field(default_factory=dict)
    ready: dict[int, threading.Event] = field(default_factory=dict)
    cuda_events: dict[int, object] = field(default_factory=dict)
    kv: dict[tuple[int, int], RequestKVCache] = field(default_factory=dict)
    failed: threading.Event = field(default_factory=threading.Event)
    failure_cause: str = ""

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.type == "cuda"

    def ready_event(self, unit: int) -> threading.Event:
        """The flag set when ``unit`` is resident (created on first use)."""
        return self.ready.setdefault(unit, threading.Event())

    def resident_units(self) -> set[int]:
        """Units whose weights are fully on this device."""
        return {u for u, ev in list(self.ready.items()) if ev.is_set()} if not self.failed.is_set() else set()

    def wait_resident(self, unit: int, stop: threading.Event) -> nn.Module:
        """Block until ``unit`` is resident and return its module.

        Raises :class:`DeviceFailure` if this device fails while waiting, ``InterruptedError`` on ``stop``.
        On CUDA, makes the current stream wait for the unit's copy event.
        """
        event = self.ready_event(unit)
        while not event.wait(WAIT_POLL_S):
            if self.failed.is_set():
                raise DeviceFailure(self.index, self.failure_cause)
            if stop.is_set():
                raise InterruptedError("engine stopped")
        if self.failed.is_set():
            raise DeviceFailure(self.index, self.failure_cause)
        cuda_event = self.cuda_events.get(unit)
        if cuda_event is not None:
            torch.cuda.current_stream(self.torch_device).wait_event(cuda_event)
        module = self.units.get(unit)
        if module is None:  # dropped by a concurrent failure
            raise DeviceFailure(self.index, self.failure_cause)
        return module

    def cache_of(self, key: tuple[int, int]) -> RequestKVCache:
        """The KV cache of ``(request, epoch)`` on this device (created empty on first use)."""
        return self.kv.setdefault(key, RequestKVCache())

    def mark_failed(self, cause: str) -> bool:
        """Set the failed flag and drop weights and caches; False if it had already failed."""
        if self.failed.is_set():
            return False
        self.failure_cause = cause
        self.failed.set()
        self.kv.clear()
        self.units.clear()
        self.arena.release()
        log.info("device %d failed: %s", self.index, cause)
        return True


def parse_devices(spec: str) -> list[torch.device]:
    """``"cpu:N"`` -> N virtual CPU devices; ``"cuda"`` -> all GPUs; ``"cuda:N"`` -> GPUs 0..N-1.

    Virtual device ``i`` is addressed as GPU ``i`` by plans.
    """
    kind, _, count = spec.partition(":")
    if kind == "cpu":
        n = int(count or 1)
        if n < 1:
            raise ValueError(f"device spec {spec!r}: need at least one device")
        return [torch.device("cpu")] * n
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device spec {spec!r}: CUDA is not available; use 'cpu:N'")
        n = int(count) if count else torch.cuda.device_count()
        if n > torch.cuda.device_count():
            raise ValueError(f"device spec {spec!r}: only {torch.cuda.device_count()} GPUs visible")
        return [torch.device("cuda", i) for i in range(n)]
    raise ValueError(f"device spec {spec!r} not understood; use 'cpu:N', 'cuda' or 'cuda:N'")
