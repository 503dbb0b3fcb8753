"""Fast compute durations derived from :mod:`pipeboost.costs` (the simulator never invents its own costs).

The simulator asks for the same durations millions of times, so this module turns the pure cost
functions into cheap closed forms:

* a unit's decode cost is ``overhead + max(flop_s, memory_s)`` where both terms are affine in the batch
  size ``B`` and the batch's total cached context ``S`` (sum over sequences). The coefficients are
  *probed* from :func:`pipeboost.costs.unit_compute_cost` at three points, so they follow the cost model
  exactly as long as it stays affine (a test checks it against direct calls);
* whole-model prefill of one sequence is cached per token count.

A profiled model shape (:mod:`pipeboost.compute_profile`) is not affine in the batch size (its decode
step interpolates a measured table), so its decode steps are costed by the profile directly, not probed.

Tensor parallelism over ``tp`` GPUs divides each unit's roofline by ``tp`` (the launch overhead stays) and
adds all-reduces of the activation: two per decoder layer, one for the embedding and one for the head.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from pipeboost.costs import CostParams, allreduce_cost, hop_cost, unit_compute_cost
from pipeboost.spec import EMBED_UNIT, GPUSpec, ModelSpec


@dataclass(frozen=True)
class AffineUnit:
    """``overhead + max(f0 + f1 B + f2 S, m0 + m1 B + m2 S)`` seconds for one unit's decode step."""

    overhead_s: float
    flop: tuple[float, float, float]
    mem: tuple[float, float, float]

    def at(self, batch: int, context_total: float) -> float:
        f0, f1, f2 = self.flop
        m0, m1, m2 = self.mem
        return self.overhead_s + max(f0 + f1 * batch + f2 * context_total, m0 + m1 * batch + m2 * context_total)


def _probe(params: CostParams, gpu: GPUSpec, model: ModelSpec, unit: int) -> AffineUnit:
    base = unit_compute_cost(params, gpu, model, unit, 1, 1, 0)
    two = unit_compute_cost(params, gpu, model, unit, 1, 2, 0)
    ctx = unit_compute_cost(params, gpu, model, unit, 1, 1, 1)
    f1, m1 = two.flop_s - base.flop_s, two.memory_s - base.memory_s
    f2, m2 = ctx.flop_s - base.flop_s, ctx.memory_s - base.memory_s
    return AffineUnit(base.overhead_s, (base.flop_s - f1, f1, f2), (base.memory_s - m1, m1, m2))


class StepCosts:
    """Durations in seconds for one GPU type, model and tensor-parallel degree ``tp``."""

    def __init__(self, params: CostParams, gpu: GPUSpec, model: ModelSpec, tp: int = 1) -> None:
        self.params, self.gpu, self.model, self.tp = params, gpu, model, tp
        self._embed = _probe(params, gpu, model, EMBED_UNIT)
        self._layer = _probe(params, gpu, model, 0)
        self._head = _probe(params, gpu, model, model.head_unit)
        self._profile = params.profile_for(model)
        self._prefill_cache: dict[tuple[int, int, int], float] = {}
        self._model_prefill_cache: dict[int, float] = {}
        self._hop_cache: dict[int, float] = {}
        self._decode_terms = self._model_decode_terms()

    def _model_decode_terms(self) -> tuple[tuple[float, ...], ...]:
        """Per unit kind: (count, fixed_s, per_batch_s, f0, f1, f2, m0, m1, m2) with TP already applied.

        ``fixed_s + per_batch_s * B`` is launch overhead plus all-reduces (affine in the batch size).
        """
        terms = []
        count_of = {EMBED_UNIT: 1, 0: self.model.num_layers, self.model.head_unit: 1}
        for unit, count in count_of.items():
            kind = self._kind(unit)
            a0, a1 = self._allreduce_s(unit, 0), self._allreduce_s(unit, 1)
            scale = 1.0 / self.tp
            terms.append((float(count), kind.overhead_s + a0, a1 - a0,
                          *(x * scale for x in kind.flop), *(x * scale for x in kind.mem)))
        return tuple(terms)

    def _kind(self, unit: int) -> AffineUnit:
        if unit == EMBED_UNIT:
            return self._embed
        return self._head if unit == self.model.head_unit else self._layer

    def _allreduce_s(self, unit: int, tokens_total: int) -> float:
        if self.tp <= 1:
            return 0.0
        count = 2 if 0 <= unit < self.model.num_layers else 1
        return count * allreduce_cost(self.params, self.model.activation_bytes(tokens_total), self.tp).total_s

    def _split(self, overhead_s: float, total_s: float) -> float:
        """Apply tensor parallelism to a unit time: overhead stays, roofline divides by ``tp``."""
        return overhead_s + (total_s - overhead_s) / self.tp

    # ---- per unit (pipeline stages) ----------------------------------------------------------
    def unit_decode_s(self, unit: int, batch: int, context_total: float) -> float:
        """One decode step of ``unit`` for ``batch`` sequences with ``context_total`` cached tokens in all."""
        if self._profile is not None:
            return (self._profile.runtime_overhead_s + self._allreduce_s(unit, batch)
                    + self._profile.decode_step_s(self.model, unit, batch, context_total) / self.tp)
        kind = self._kind(unit)
        return self._split(kind.overhead_s, kind.at(batch, context_total)) + self._allreduce_s(unit, batch)

    def unit_prefill_s(self, unit: int, tokens: Sequence[int]) -> float:
        """Prefill of ``unit`` for a micro-batch whose sequences have ``tokens[i]`` new tokens each.

        Sequences of equal length run as one batched call; different lengths as separate calls.
        """
        total = 0.0
        for length, count in sorted(Counter(tokens).items()):
            key = (0 if 0 <= unit < self.model.num_layers else unit, length, count)
            value = self._prefill_cache.get(key)
            if value is None:
                cost = unit_compute_cost(self.params, self.gpu, self.model, unit, length, count, 0)
                value = self._split(cost.overhead_s, cost.total_s) + self._allreduce_s(unit, length * count)
                self._prefill_cache[key] = value
            total += value
        return total

    def units_decode_s(self, units: Iterable[int], batch: int, context_total: float) -> float:
        return sum(self.unit_decode_s(u, batch, context_total) for u in units)

    # ---- whole model (replicas) --------------------------------------------------------------
    def model_decode_s(self, batch: int, context_total: float) -> float:
        """One continuous-batching decode step of the whole model (embed + layers + head)."""
        if batch == 0:
            return 0.0
        if self._profile is not None:
            return (self.unit_decode_s(EMBED_UNIT, batch, context_total)
                    + self.model.num_layers * self.unit_decode_s(0, batch, context_total)
                    + self.unit_decode_s(self.model.head_unit, batch, context_total))
        total = 0.0
        for count, fixed, per_batch, f0, f1, f2, m0, m1, m2 in self._decode_terms:
            flop = f0 + f1 * batch + f2 * context_total
            mem = m0 + m1 * batch + m2 * context_total
            total += count * (fixed + per_batch * batch + (flop if flop > mem else mem))
        return total

    def model_prefill_s(self, tokens: int) -> float:
        """Prefill of one sequence of ``tokens`` tokens through the whole model (cached per length)."""
        value = self._model_prefill_cache.get(tokens)
        if value is None:
            seq = [tokens]
            value = (self.unit_prefill_s(EMBED_UNIT, seq) + self.model.num_layers * self.unit_prefill_s(0, seq)
                     + self.unit_prefill_s(self.model.head_unit, seq))
            self._model_prefill_cache[tokens] = value
        return value

    def hop_s(self, tokens_total: int) -> float:
        """Activation hand-off between two stages for ``tokens_total`` tokens (cached per token count)."""
        value = self._hop_cache.get(tokens_total)
        if value is None:
            value = self._hop_cache[tokens_total] = hop_cost(self.params,
                                                             self.model.activation_bytes(tokens_total)).total_s
        return value
