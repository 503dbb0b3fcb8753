"""Partition policies: split a model's decoder layers into contiguous stages.

Signature: ``(model, num_stages, unit_weight) -> PartitionPlan`` where ``unit_weight(unit)`` is the cost
(bytes or seconds) the policy balances; :func:`pipeboost.policies.build.build_plan` supplies it.
Each stage gets at least one decoder layer, so ``num_stages <= num_layers``.
"""

from __future__ import annotations

from typing import Callable

from pipeboost.errors import PlanError
from pipeboost.plan import PartitionPlan
from pipeboost.policies.registry import register_policy
from pipeboost.spec import EMBED_UNIT, ModelSpec


def _check(model: ModelSpec, num_stages: int) -> None:
    if not 1 <= num_stages <= model.num_layers:
        raise PlanError(f"cannot split {model.num_layers} layers into {num_stages} stages; "
                        f"use 1..{model.num_layers} stages")


@register_policy("partition", "even_layers")
def even_layers(model: ModelSpec, num_stages: int, unit_weight: Callable[[int], float] | None = None) -> PartitionPlan:
    """Equal layer counts; earlier stages take the remainder (embedding and head ride along)."""
    _check(model, num_stages)
    base, extra = divmod(model.num_layers, num_stages)
    bounds = [0]
    for s in range(num_stages):
        bounds.append(bounds[-1] + base + (1 if s < extra else 0))
    return PartitionPlan(model.num_layers, tuple(bounds))


def balanced_partition(model: ModelSpec, num_stages: int, unit_weight: Callable[[int], float]) -> PartitionPlan:
    """Contiguous split minimising the heaviest stage (linear partition by dynamic programming).

    The embedding's weight counts towards stage 0 and the head's towards the last stage.
    """
    _check(model, num_stages)
    L = model.num_layers
    w = [unit_weight(u) for u in range(L)]
    w[0] += unit_weight(EMBED_UNIT)
    w[L - 1] += unit_weight(model.head_unit)
    prefix = [0.0]
    for x in w:
        prefix.append(prefix[-1] + x)
    inf = float("inf")
    # best[k][i]: minimal max-stage weight placing the first i layers into k stages.
    best = [[inf] * (L + 1) for _ in range(num_stages + 1)]
    cut = [[0] * (L + 1) for _ in range(num_stages + 1)]
    best[0][0] = 0.0
    for k in range(1, num_stages + 1):
        for i in range(k, L - (num_stages - k) + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost < best[k][i] - 1e-15:
                    best[k][i], cut[k][i] = cost, j
    bounds = [L]
    for k in range(num_stages, 0, -1):
        bounds.append(cut[k][bounds[-1]])
    return PartitionPlan(L, tuple(reversed(bounds)))


@register_policy("partition", "balanced_bytes")
def balanced_bytes(model: ModelSpec, num_stages: int, unit_weight: Callable[[int], float] | None = None) -> PartitionPlan:
    """Stages with near-equal weight bytes, so every GPU's own slice loads in about the same time."""
    return balanced_partition(model, num_stages, lambda u: float(model.unit_bytes(u)))


@register_policy("partition", "balanced_compute")
def balanced_compute(model: ModelSpec, num_stages: int, unit_weight: Callable[[int], float] | None = None) -> PartitionPlan:
    """Stages with near-equal prefill compute time (``unit_weight`` from the cost model)."""
    if unit_weight is None:
        raise PlanError("balanced_compute needs per-unit compute times")
    return balanced_partition(model, num_stages, unit_weight)
