"""Turn a scenario's policy names into a validated :class:`Plan` (the only place policies are combined)."""

from __future__ import annotations

from typing import Callable

from pipeboost.costs import unit_weights_for_partition
from pipeboost.errors import PlanError
from pipeboost.plan import LoadPlan, Plan, PartitionPlan, validate_plan
from pipeboost.policies.loading import trim_to_budget
from pipeboost.policies.registry import get_policy
from pipeboost.scenario_model import Scenario

# Serving modes that fix the loading order (baselines); others use the scenario's policy.
_MODE_LOADING = {"pipeline_only": "own_stage_only", "load_then_run": "full_model_each",
                 "tensor_parallel": "full_model_each"}


def build_partition(scenario: Scenario) -> PartitionPlan:
    """The partition for the scenario's mode: one stage for load-then-run and tensor-parallel."""
    if scenario.policies.mode in ("load_then_run", "tensor_parallel"):
        return get_policy("partition", "even_layers")(scenario.model, 1)
    weights = unit_weights_for_partition(scenario.params, scenario.topology.gpu, scenario.model)
    policy = get_policy("partition", scenario.policies.partition)
    return policy(scenario.model, scenario.num_stages, weights.__getitem__)


def build_plan(scenario: Scenario) -> Plan:
    """Partition, stage placement (stage s on GPU s) and load orders, trimmed to memory and validated."""
    mode = scenario.policies.mode
    gpus = tuple(range(scenario.serving.cold_start_gpus))
    partition = build_partition(scenario)
    stage_gpus = gpus[:partition.num_stages]
    loading = _MODE_LOADING.get(mode, scenario.policies.loading_order)
    if mode == "pipeboost" and loading == "full_model_each":
        raise PlanError("loading order full_model_each is the load-then-run baseline; "
                        "set policies.mode: load_then_run, or pick another loading order")
    orders = get_policy("loading_order", loading)(partition, stage_gpus, gpus, scenario.topology)
    budget = scenario.memory_budget_bytes
    if mode == "tensor_parallel":
        budget *= len(gpus)  # each GPU holds 1/N of every unit
    orders = trim_to_budget(orders, gpus, partition, scenario.model, budget)
    plan = Plan(mode, partition, stage_gpus, LoadPlan(gpus, orders))
    validate_plan(plan, scenario.model, budget)
    return plan


def recovery_policy(name: str) -> Callable:
    """The recovery policy callable ``(partition, stage_gpus, failed_gpu, resident, alive) -> RecoveryPlan``."""
    return get_policy("recovery", name)
