"""The executor's clock and thread-safe trace recorder.

Times are seconds since engine time zero (``time.perf_counter`` at :meth:`Tracer.start_clock`, called
once devices, loaders and modules are prepared), the same
convention as :mod:`pipeboost.trace`. Many threads record concurrently; :meth:`Tracer.records` returns
them in the shared total order.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pipeboost.trace import TraceKind, TraceRecord, sorted_records


class Tracer:
    """Collects :class:`TraceRecord` objects from all executor threads."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self._records: list[TraceRecord] = []
        self._lock = threading.Lock()

    def start_clock(self) -> None:
        """Set engine time zero to now (call once everything is prepared, before any thread starts)."""
        self.t0 = time.perf_counter()

    def now_s(self) -> float:
        """Seconds since engine time zero."""
        return time.perf_counter() - self.t0

    def add(self, t_start_s: float, t_end_s: float, kind: TraceKind, **fields: Any) -> TraceRecord:
        """Record an interval (or an instant when ``t_end_s == t_start_s``) and return it."""
        rec = TraceRecord(t_start_s, t_end_s, kind, **fields)
        with self._lock:
            self._records.append(rec)
        return rec

    def instant(self, kind: TraceKind, **fields: Any) -> TraceRecord:
        """Record an instant at the current time."""
        t = self.now_s()
        return self.add(t, t, kind, **fields)

    def records(self) -> list[TraceRecord]:
        """All records so far, sorted (start, end, kind, gpu, layer, request)."""
        with self._lock:
            return sorted_records(self._records)
