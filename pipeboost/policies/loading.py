"""Loading-order policies: for each GPU, the ordered stages it loads.

Signature: ``(partition, stage_gpus, gpus, topology) -> tuple[tuple[int, ...], ...]`` giving one full order
per GPU in ``gpus`` (a permutation of all stages, own stage first); :func:`trim_to_budget` then cuts each
order where the GPU's weight budget ends. A GPU in ``gpus`` that serves no stage ("spare") starts with
stage ``index mod num_stages`` so spares become replicas of different stages first.
"""

from __future__ import annotations

from typing import Sequence

from pipeboost.errors import PlanError
from pipeboost.plan import PartitionPlan, stages_served_by
from pipeboost.policies.registry import register_policy
from pipeboost.spec import ModelSpec, Topology

Orders = tuple[tuple[int, ...], ...]


def _first_stage(stage_gpus: Sequence[int], gpus: Sequence[int], index: int, num_stages: int) -> int:
    served = stages_served_by(stage_gpus, gpus[index])
    return served[0] if served else index % num_stages


@register_policy("loading_order", "own_stage_first_then_next")
def own_stage_first_then_next(partition: PartitionPlan, stage_gpus: Sequence[int], gpus: Sequence[int],
                              topology: Topology | None = None) -> Orders:
    """Own stage, then the following stages cyclically (s, s+1, ..., s-1)."""
    n = partition.num_stages
    orders = []
    for i in range(len(gpus)):
        first = _first_stage(stage_gpus, gpus, i, n)
        orders.append(tuple((first + k) % n for k in range(n)))
    return tuple(orders)


@register_policy("loading_order", "own_stage_first_then_nearest_failure_cover")
def own_stage_first_then_nearest_failure_cover(partition: PartitionPlan, stage_gpus: Sequence[int],
                                               gpus: Sequence[int], topology: Topology | None = None) -> Orders:
    """Own stage, then round by round the least-held stage, so every stage soon has a second holder.

    In each round every GPU picks, among stages it has not loaded, the one with the fewest holders so far;
    ties prefer a stage whose serving GPU is farthest away in the PCIe tree (another switch: a cover that
    does not share the failed GPU's upstream path), then the next stage cyclically.
    """
    n = partition.num_stages
    orders = [[_first_stage(stage_gpus, gpus, i, n)] for i in range(len(gpus))]
    holders = [0] * n
    for order in orders:
        holders[order[0]] += 1
    for _ in range(n - 1):
        for i, gpu in enumerate(gpus):
            def rank(s: int, i: int = i, gpu: int = gpu) -> tuple:
                dist = topology.distance(gpu, stage_gpus[s]) if topology is not None and s < len(stage_gpus) else 0
                return (holders[s], -dist, (s - orders[i][0]) % n)
            pick = min((s for s in range(n) if s not in orders[i]), key=rank)
            orders[i].append(pick)
            holders[pick] += 1
    return tuple(tuple(o) for o in orders)


@register_policy("loading_order", "own_stage_only")
def own_stage_only(partition: PartitionPlan, stage_gpus: Sequence[int], gpus: Sequence[int],
                   topology: Topology | None = None) -> Orders:
    """Only the GPU's own stage: the split load-then-run baseline (no background load to replicas)."""
    n = partition.num_stages
    return tuple((_first_stage(stage_gpus, gpus, i, n),) for i in range(len(gpus)))


@register_policy("loading_order", "full_model_each")
def full_model_each(partition: PartitionPlan, stage_gpus: Sequence[int], gpus: Sequence[int],
                    topology: Topology | None = None) -> Orders:
    """Every GPU loads the whole model in execution order: the load-then-run baseline."""
    return tuple(tuple(range(partition.num_stages)) for _ in gpus)


def trim_to_budget(orders: Orders, gpus: Sequence[int], partition: PartitionPlan, model: ModelSpec,
                   budget_bytes: int) -> Orders:
    """Cut each order after the last stage that still fits ``budget_bytes``; the first stage must fit."""
    trimmed = []
    for gpu, order in zip(gpus, orders):
        used, kept = 0, []
        for s in order:
            need = partition.stage_bytes(model, s)
            if used + need > budget_bytes:
                break
            used += need
            kept.append(s)
        if not kept:
            need = partition.stage_bytes(model, order[0]) / 1e9
            raise PlanError(f"GPU {gpu}: stage {order[0]} needs {need:.2f} GB but only {budget_bytes / 1e9:.2f} GB "
                            "of weights fit; use more stages or GPUs with more memory")
        trimmed.append(tuple(kept))
    return tuple(trimmed)
