"""Recovery policies: after a GPU fails, which survivor serves each of its stages.

Signature: ``(partition, stage_gpus, failed_gpu, resident, alive) -> RecoveryPlan`` where ``resident[g]``
is the set of units GPU ``g`` holds now and ``alive`` the surviving GPUs. Stages of the failed GPU move;
other stages stay. A survivor that does not hold all units of a stage it takes over loads that stage first
(``load_first``). With no survivor the policy raises :class:`PlanError` and the engine ends the affected
requests with an explicit error.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from pipeboost.errors import PlanError
from pipeboost.plan import PartitionPlan, RecoveryPlan
from pipeboost.policies.registry import register_policy

Chooser = Callable[[int, list[int], dict[int, int]], int]


def _held(partition: PartitionPlan, stage: int, resident: Mapping[int, set[int]], gpu: int) -> int:
    units = partition.units_of_stage(stage)
    return sum(1 for u in units if u in resident.get(gpu, set()))


def _recover(partition: PartitionPlan, stage_gpus: Sequence[int], failed_gpu: int,
             resident: Mapping[int, set[int]], alive: Sequence[int], choose: Chooser, name: str) -> RecoveryPlan:
    survivors = [g for g in alive if g != failed_gpu]
    if not survivors:
        raise PlanError(f"GPU {failed_gpu} failed and no GPU survives to take over its stages")
    new_stage_gpus = list(stage_gpus)
    load_first: dict[int, list[int]] = {}
    for stage, gpu in enumerate(stage_gpus):
        if gpu != failed_gpu:
            continue
        served = {g: sum(1 for h in new_stage_gpus if h == g) for g in survivors}
        target = choose(stage, survivors, served)
        new_stage_gpus[stage] = target
        if _held(partition, stage, resident, target) < len(partition.units_of_stage(stage)):
            load_first.setdefault(target, []).append(stage)
    return RecoveryPlan(failed_gpu, tuple(new_stage_gpus),
                        tuple((g, tuple(s)) for g, s in sorted(load_first.items())), name)


@register_policy("recovery", "reroute_to_holder")
def reroute_to_holder(partition: PartitionPlan, stage_gpus: Sequence[int], failed_gpu: int,
                      resident: Mapping[int, set[int]], alive: Sequence[int]) -> RecoveryPlan:
    """Give each lost stage to the survivor holding most of its units (ties: least busy, lowest id)."""
    def choose(stage: int, survivors: list[int], served: dict[int, int]) -> int:
        return min(survivors, key=lambda g: (-_held(partition, stage, resident, g), served[g], g))
    return _recover(partition, stage_gpus, failed_gpu, resident, alive, choose, "reroute_to_holder")


@register_policy("recovery", "reload_on_survivors")
def reload_on_survivors(partition: PartitionPlan, stage_gpus: Sequence[int], failed_gpu: int,
                        resident: Mapping[int, set[int]], alive: Sequence[int]) -> RecoveryPlan:
    """Give each lost stage to the least busy survivor, which reloads it first unless it holds it already."""
    def choose(stage: int, survivors: list[int], served: dict[int, int]) -> int:
        return min(survivors, key=lambda g: (served[g], -_held(partition, stage, resident, g), g))
    return _recover(partition, stage_gpus, failed_gpu, resident, alive, choose, "reload_on_survivors")
