"""Fault injection for the executor: which device fails, and when.

A :class:`ExecutorFault` names a device and exactly one trigger:

* ``at_s``: at that engine time (seconds since time zero);
* ``loading_unit``: as the device begins loading that unit (the partial load is discarded);
* ``decode_step``: as the device begins its part of decode step ``n`` (the step producing output token
  ``n``, counted from 0 = the prefill's token, so ``decode_step >= 1``) of any request;
* ``prefill``: as the device begins its part of a prefill.

Each fault fires at most once. Firing calls ``fail(gpu, cause)`` (the engine marks the device failed:
its threads stop, arena and KV caches are dropped, and the recovery supervisor is told).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ExecutorFault:
    """A device failure to inject: ``gpu`` and exactly one trigger (see module docstring)."""

    gpu: int
    at_s: float | None = None
    loading_unit: int | None = None
    decode_step: int | None = None
    prefill: bool = False
    cause: str = "injected fault"

    def __post_init__(self) -> None:
        triggers = [self.at_s is not None, self.loading_unit is not None, self.decode_step is not None,
                    self.prefill]
        if sum(triggers) != 1:
            raise ValueError(f"fault on GPU {self.gpu} needs exactly one trigger "
                             f"(at_s, loading_unit, decode_step or prefill), got {sum(triggers)}")
        if self.decode_step is not None and self.decode_step < 1:
            raise ValueError(f"decode_step counts from 1 (token 0 comes from the prefill), got {self.decode_step}")

    @classmethod
    def from_obj(cls, obj: object) -> "ExecutorFault":
        """Adapt any object with the same attribute names (missing ones take the defaults)."""
        if isinstance(obj, cls):
            return obj
        return cls(gpu=int(getattr(obj, "gpu")), at_s=getattr(obj, "at_s", None),
                   loading_unit=getattr(obj, "loading_unit", None), decode_step=getattr(obj, "decode_step", None),
                   prefill=bool(getattr(obj, "prefill", False)), cause=str(getattr(obj, "cause", "injected fault")))


class FaultInjector:
    """Fires :class:`ExecutorFault` triggers from the loader and compute hooks (thread-safe, once each)."""

    def __init__(self, faults: list[ExecutorFault], fail: Callable[[int, str], None]) -> None:
        self.faults = list(faults)
        self._fail = fail
        self._fired: set[int] = set()
        self._lock = threading.Lock()

    def _fire(self, index: int) -> None:
        with self._lock:
            if index in self._fired:
                return
            self._fired.add(index)
        fault = self.faults[index]
        self._fail(fault.gpu, fault.cause)

    def timed(self) -> list[tuple[float, int]]:
        """``(at_s, index)`` of the time-triggered faults, earliest first."""
        return sorted((f.at_s, i) for i, f in enumerate(self.faults) if f.at_s is not None)

    def fire_timed(self, index: int) -> None:
        self._fire(index)

    def before_unit(self, gpu: int, unit: int) -> None:
        """Loader hook: a unit's load on ``gpu`` begins."""
        for i, f in enumerate(self.faults):
            if f.gpu == gpu and f.loading_unit == unit:
                self._fire(i)

    def before_compute(self, gpu: int, prefill: bool, step: int) -> None:
        """Compute hook: ``gpu`` begins its part of a prefill or of decode step ``step``."""
        for i, f in enumerate(self.faults):
            if f.gpu != gpu:
                continue
            if (prefill and f.prefill) or (not prefill and f.decode_step == step):
                self._fire(i)
