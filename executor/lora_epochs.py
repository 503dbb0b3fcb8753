"""Epoch-based adapter switching for merged serving (see :mod:`executor.lora_runtime`).

:class:`EpochGate` stands between request arrivals and :meth:`executor.pipeline.Runtime.submit`. It admits
requests for the adapter currently folded into the weights. When ``epoch_s`` seconds have passed since
the last switch and a request for another adapter waits, it stops admitting; when the last in-flight
request has its final token it switches :attr:`AdapterManager.current` to the adapter with the most waiting
requests (ties: the one waiting longest) and admits those. Devices fold the new adapter lazily before
their next forward of each unit, so in-flight requests always finish on the weights they started with.
An idle instance switches at once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from executor.lora_runtime import AdapterManager

if TYPE_CHECKING:
    from executor.pipeline import RequestState, Runtime

log = logging.getLogger(__name__)


class EpochGate:
    """Admission control for merged adapters (see module docstring); thread-safe through the runtime lock."""

    def __init__(self, runtime: "Runtime", manager: AdapterManager, epoch_s: float) -> None:
        self.runtime, self.manager, self.epoch_s = runtime, manager, epoch_s
        self.waiting: list["RequestState"] = []
        self.inflight: set[int] = set()
        self.epoch_start_s = 0.0
        self.switches: list[tuple[float, str | None]] = []
        self._next_on_token = runtime.on_token
        runtime.on_token = self._on_token

    def submit(self, req: "RequestState") -> None:
        """An arriving request: admitted now if it matches the current adapter and the epoch is open."""
        with self.runtime.lock:
            self.waiting.append(req)
            self._advance()

    def _epoch_over(self) -> bool:
        return self.runtime.tracer.now_s() - self.epoch_start_s >= self.epoch_s

    def _advance(self) -> None:
        cur = self.manager.current
        others = any(r.adapter != cur for r in self.waiting)
        if others and self._epoch_over():
            if self.inflight:
                return  # drain: in-flight requests finish on the current weights
            self._switch()
        elif not self.inflight and not any(r.adapter == cur for r in self.waiting) and self.waiting:
            self._switch()
        self._admit()

    def _admit(self) -> None:
        cur = self.manager.current
        admit = [r for r in self.waiting if r.adapter == cur]
        self.waiting = [r for r in self.waiting if r.adapter != cur]
        for req in admit:
            self.inflight.add(req.id)
            self.runtime.submit(req)

    def _switch(self) -> None:
        counts: dict[str | None, int] = {}
        for r in self.waiting:
            counts[r.adapter] = counts.get(r.adapter, 0) + 1
        target = max(counts, key=lambda name: counts[name])  # dicts keep first-waiting order for ties
        now = self.runtime.tracer.now_s()
        self.epoch_start_s = now
        if target != self.manager.current:
            log.info("adapter epoch switch %s -> %s at %.3f s", self.manager.current, target, now)
            self.manager.current = target
            self.switches.append((now, target))

    def _on_token(self, req: "RequestState") -> None:
        self._next_on_token(req)
        if len(req.tokens) >= req.output_tokens and req.id in self.inflight:
            self.inflight.discard(req.id)
            self._advance()


def attach_adapters(runtime: "Runtime", reader, plan, adapters: dict, tracer, *, mode: str = "unmerged",
                    epoch_s: float = 0.5, preload: tuple[str, ...] | None = None,
                    unmerge: str = "reload") -> "EpochGate | None":
    """Give ``runtime`` an :class:`AdapterManager` for ``adapters`` (name -> LoraAdapter) on its devices.

    Returns the :class:`EpochGate` requests must be submitted through in merged mode, else ``None``.
    ``preload`` defaults to every adapter.
    """
    own = {g: plan.partition.units_of_stage(s) for s, g in reversed(list(enumerate(plan.stage_gpus)))}
    load = {g: plan.load.units_of(g, plan.partition) for g in runtime.devices}
    names = tuple(adapters) if preload is None else tuple(preload)
    manager = AdapterManager(adapters, runtime.devices, tracer, reader, own, load, mode, unmerge, names)
    runtime.lora = manager
    return EpochGate(runtime, manager, epoch_s) if mode == "merged" else None


def load_adapters(runtime: "Runtime", reader, plan, model, folders: dict, states, tracer, mode: str,
                  epoch_s: float, preload, dtype) -> "EpochGate | None":
    """Read and validate every adapter folder (before time zero), check request adapter names, attach.

    Raises :class:`CheckpointError` for a bad adapter or a request naming an adapter without a folder.
    """
    from executor.lora import read_adapter
    from pipeboost.errors import CheckpointError
    adapters = {name: read_adapter(Path(path), model, name, dtype) for name, path in folders.items()}
    for state in states:
        if state.adapter is not None and state.adapter not in adapters:
            raise CheckpointError(f"request {state.id} names adapter {state.adapter!r} but no adapter folder "
                                  f"was given for it (given: {', '.join(sorted(adapters)) or 'none'})")
    return attach_adapters(runtime, reader, plan, adapters, tracer, mode=mode, epoch_s=epoch_s,
                           preload=None if preload is None else tuple(preload))
