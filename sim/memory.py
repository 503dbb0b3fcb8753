"""GPU memory for KV caches and activations, and admission control of requests into batches.

Weights are checked against the per-GPU budget before simulating (:func:`sim.engine.scenario_plan`). What
is left of a GPU's memory holds KV caches and activation working memory:

* **limit** of GPU ``g`` = ``topology.gpu.memory_bytes`` minus the weight bytes the GPU has *committed*: units
  resident, the unit in flight and the units still queued for it. Reserving for queued units as well means
  a load never has to wait for KV memory, and ``weights + KV <= memory`` holds at every instant.
* **need** of a sequence on a GPU = ``(prompt + output tokens) x per-token bytes``, reserved whole when the
  sequence is admitted and returned when it leaves (finishes, fails over or its micro-batch ends). The
  per-token bytes are ``kv_bytes_per_token`` (per layer) times the decoder layers that GPU runs for it
  (its stages in a pipeline, every layer on a replica, ``1/tp`` of every layer under tensor parallelism,
  rounded up) plus :data:`ACTIVATION_FACTOR` x ``hidden x dtype`` of activation working memory per token
  (an upper bound of the transient activations of any step the sequence takes part in).

A server admits queued requests in FIFO order while they fit; the first that does not fit waits at the
head of the queue (nothing overtakes it, nothing is lost). A request whose need exceeds the whole limit of
a server's GPU can never run there: it ends with REQUEST_ERROR ``kv_cache_exceeds_memory``.

Peak reserved bytes per GPU are reported in ``SimResult.kv_peak_bytes``; reserved bytes bound the KV
cache actually filled (which grows token by token up to the reservation).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import simpy

from pipeboost.spec import ModelSpec
from sim.state import ReqState

if TYPE_CHECKING:
    from sim.instance import Instance
    from sim.pool import RequestPool

logger = logging.getLogger(__name__)

ACTIVATION_FACTOR = 4
"""Activation working memory per token in units of ``hidden_size x dtype_bytes`` (hidden state, residual,
attention / FFN intermediates freed between layers)."""

KV_ERROR = "kv_cache_exceeds_memory"
"""REQUEST_ERROR reason of a request whose KV cache can never fit on the GPU(s) of the server taking it."""

Slot = tuple[int, int, int]
"""(GPU id, bytes per token of a sequence there, free bytes there now)."""


class KVBook:
    """Per-GPU reserved KV + activation bytes, their peaks, and events that fire when memory is freed."""

    def __init__(self, env: simpy.Environment, model: ModelSpec, memory_bytes: int, num_gpus: int) -> None:
        self.env = env
        self.model = model
        self.memory_bytes = memory_bytes
        self.kv_layer_token_bytes = model.kv_bytes_per_token()
        self.act_token_bytes = ACTIVATION_FACTOR * model.activation_bytes(1)
        self.reserved = [0] * num_gpus
        self.peak = [0] * num_gpus
        self.deferred = 0        # admissions postponed for memory
        self.rejected = 0        # requests ended with KV_ERROR
        self._freed: dict[int, simpy.Event] = {}

    # ---- sizes ------------------------------------------------------------------------------------
    def token_bytes(self, layers: int, tp: int = 1) -> int:
        """Bytes per token of one sequence on a GPU running ``layers`` decoder layers (``1/tp`` of each)."""
        kv = self.kv_layer_token_bytes * layers
        return -(-kv // tp) + self.act_token_bytes

    def limit_bytes(self, inst: "Instance", g: int) -> int:
        """Memory of GPU ``g`` not committed to weights of ``inst`` (see module docstring)."""
        return self.memory_bytes - inst.weights_committed(g)

    def slots(self, inst: "Instance", per_gpu: Sequence[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
        """(GPU, bytes per token, free bytes now, limit) for each ``(gpu, bytes per token)``."""
        out = []
        for g, per_token in per_gpu:
            limit = self.limit_bytes(inst, g)
            out.append((g, per_token, limit - self.reserved[g], limit))
        return out

    # ---- admission --------------------------------------------------------------------------------
    def admit(self, inst: "Instance", pool: "RequestPool", cands: list[ReqState],
              per_gpu: Sequence[tuple[int, int]]) -> tuple[list[ReqState], int, bool]:
        """Admit ``cands`` (taken from the head of the queue, in order) while they fit on every GPU of
        ``per_gpu``; reserve their bytes. Returns (admitted, tokens reserved, whether some wait). The first
        that does not fit and every later one go back to the head of the queue; one that never fits ends
        with KV_ERROR."""
        slots = self.slots(inst, per_gpu)
        admitted: list[ReqState] = []
        tokens = 0
        waiting = False
        for i, r in enumerate(cands):
            n = r.prompt + r.output
            if any(n * per > limit for _, per, _, limit in slots):
                self.rejected += 1
                pool.fail(r, KV_ERROR)
                continue
            if any((tokens + n) * per > free for _, per, free, _ in slots):
                self.deferred += 1
                pool.defer(cands[i:])
                waiting = True
                break
            tokens += n
            admitted.append(r)
        if tokens:
            for g, per, _, _ in slots:
                self.reserve(g, tokens * per)
        return admitted, tokens, waiting

    def reserve(self, g: int, nbytes: int) -> None:
        value = self.reserved[g] + nbytes
        self.reserved[g] = value
        if value > self.peak[g]:
            self.peak[g] = value

    def release(self, g: int, nbytes: int) -> None:
        """Return ``nbytes`` on GPU ``g`` and wake whoever waits for memory there."""
        if not nbytes:
            return
        self.reserved[g] -= nbytes
        ev = self._freed.pop(g, None)
        if ev is not None:
            ev.succeed()

    def freed(self, gpus: Sequence[int]) -> simpy.Event:
        """Event that fires when memory is next released on any of ``gpus``."""
        events = []
        for g in gpus:
            ev = self._freed.get(g)
            if ev is None:
                ev = self._freed[g] = self.env.event()
            events.append(ev)
        return events[0] if len(events) == 1 else simpy.AnyOf(self.env, events)

    def peaks(self) -> dict[int, int]:
        """Peak reserved bytes of every GPU that held any."""
        return {g: p for g, p in enumerate(self.peak) if p}
