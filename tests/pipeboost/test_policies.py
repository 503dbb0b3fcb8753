"""Plan invariants for every policy over many generated scenarios, and policy-specific behaviour."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeboost.errors import PlanError
from pipeboost.hardware import TOPOLOGY_PRESETS
from pipeboost.model_config import MODEL_PRESETS, model_spec_from_hf_config, preset_config
from pipeboost.plan import LoadPlan, Plan, PartitionPlan, relabel_plan, validate_plan
from pipeboost.policies import build_plan, get_policy, policy_names, recovery_policy
from pipeboost.scenario_model import PolicySpec, Scenario, ServingSpec


def make_scenario(model="opt-1.3b", cluster="4xa100-pcie4", gpus=4, mode="pipeboost", partition="even_layers",
                  loading="own_stage_first_then_next", stages=None):
    config = preset_config(model)
    return Scenario("t", 0, model_spec_from_hf_config(config, model), config, TOPOLOGY_PRESETS[cluster],
                    policies=PolicySpec(mode, partition, loading, "reroute_to_holder", stages),
                    serving=ServingSpec(cold_start_gpus=gpus))


LOADING = [n for n in policy_names("loading_order") if n != "full_model_each"]


@settings(max_examples=200, deadline=None)
@given(model=st.sampled_from(sorted(MODEL_PRESETS)), cluster=st.sampled_from(["8xa100-pcie4", "8xh100-pcie5"]),
       gpus=st.integers(1, 8), stages_less=st.integers(0, 3), mode=st.sampled_from(
           ["pipeboost", "pipeline_only", "load_then_run", "tensor_parallel"]),
       partition=st.sampled_from(policy_names("partition")), loading=st.sampled_from(LOADING))
def test_every_policy_combination_gives_a_valid_plan(model, cluster, gpus, stages_less, mode, partition, loading):
    stages = max(1, gpus - stages_less)
    scenario = make_scenario(model, cluster, gpus, mode, partition, loading, stages)
    try:
        plan = build_plan(scenario)
    except PlanError as exc:
        assert "GB of weights fit" in str(exc) or "stages" in str(exc)
        return
    validate_plan(plan, scenario.model, scenario.memory_budget_bytes * (gpus if mode == "tensor_parallel" else 1))
    part = plan.partition
    covered = [layer for s in range(part.num_stages) for layer in part.layer_range(s)]
    assert covered == list(range(scenario.model.num_layers))
    all_units = [u for s in range(part.num_stages) for u in part.units_of_stage(s)]
    assert all_units == list(scenario.model.units())
    for gpu, order in zip(plan.load.gpus, plan.load.orders):
        assert len(set(order)) == len(order)
        if mode == "pipeboost" and gpu in plan.stage_gpus:
            assert order[0] == plan.stage_gpus.index(gpu)
        if mode == "pipeline_only":
            assert len(order) == 1


def test_balanced_bytes_never_heavier_than_even_layers():
    for name in ("opt-125m", "opt-1.3b", "llama-3-8b"):
        for stages in (2, 3, 4, 8):
            s_even = make_scenario(name, "8xh100-pcie5", 8, stages=stages)
            s_bal = make_scenario(name, "8xh100-pcie5", 8, partition="balanced_bytes", stages=stages)
            heaviest = lambda sc: max(build_plan(sc).partition.stage_bytes(sc.model, s) for s in range(stages))
            assert heaviest(s_bal) <= heaviest(s_even)


def test_balanced_bytes_moves_layers_away_from_heavy_embedding_stage():
    plan = build_plan(make_scenario("opt-125m", "4xa100-pcie4", 4, partition="balanced_bytes"))
    # OPT-125M's embedding (and the head) weigh ~5 layers each, so the end stages get fewer layers.
    sizes = [len(plan.partition.layer_range(s)) for s in range(4)]
    assert sizes[0] < sizes[1] and sizes[3] < sizes[2] and sum(sizes) == 12


def test_then_next_order_is_cyclic():
    plan = build_plan(make_scenario(gpus=4))
    assert plan.load.orders == ((0, 1, 2, 3), (1, 2, 3, 0), (2, 3, 0, 1), (3, 0, 1, 2))


def test_failure_cover_gives_every_stage_a_second_holder_on_another_switch_after_two_slices():
    scenario = make_scenario(loading="own_stage_first_then_nearest_failure_cover", gpus=4)
    plan = build_plan(scenario)
    second = {order[1]: gpu for gpu, order in zip(plan.load.gpus, plan.load.orders)}
    assert sorted(second) == [0, 1, 2, 3]
    for stage, cover in second.items():
        owner = plan.stage_gpus[stage]
        assert scenario.topology.failure_domain(cover) != scenario.topology.failure_domain(owner)


def test_memory_budget_trims_orders_to_a_partial_replica():
    scenario = make_scenario("llama-2-70b", "8xh100-pcie5", 8)
    plan = build_plan(scenario)
    for order in plan.load.orders:
        assert 1 <= len(order) < 8
        assert sum(plan.partition.stage_bytes(scenario.model, s) for s in order) <= scenario.memory_budget_bytes


def test_full_model_each_with_pipeboost_mode_is_refused_with_advice():
    with pytest.raises(PlanError, match="set policies.mode: load_then_run"):
        build_plan(make_scenario(loading="full_model_each"))


def test_unknown_policy_lists_valid_names():
    with pytest.raises(PlanError, match="unknown recovery policy 'retry'; valid: reload_on_survivors, reroute_to_holder"):
        get_policy("recovery", "retry")


def test_validate_plan_rejects_broken_invariants():
    scenario = make_scenario(gpus=2)
    model = scenario.model
    good = build_plan(scenario)
    with pytest.raises(PlanError, match="strictly increase"):
        validate_plan(Plan("pipeboost", PartitionPlan(24, (0, 12, 12, 24)), (0, 1, 1), good.load), model)
    with pytest.raises(PlanError, match="distinct stages"):
        validate_plan(Plan("pipeboost", good.partition, (0, 1), LoadPlan((0, 1), ((0, 0), (1, 0)))), model)
    with pytest.raises(PlanError, match="must load its own stage first"):
        validate_plan(Plan("pipeboost", good.partition, (0, 1), LoadPlan((0, 1), ((1, 0), (1, 0)))), model)
    with pytest.raises(PlanError, match="weight budget"):
        validate_plan(good, model, memory_budget_bytes=10**6)


def test_plans_round_trip_through_dicts_and_relabel():
    plan = build_plan(make_scenario(gpus=4, loading="own_stage_first_then_nearest_failure_cover"))
    assert Plan.from_dict(plan.to_dict()) == plan
    moved = relabel_plan(plan, (4, 5, 6, 7))
    assert moved.stage_gpus == (4, 5, 6, 7) and moved.load.orders == plan.load.orders


@pytest.mark.parametrize("policy", policy_names("recovery"))
def test_recovery_moves_only_the_failed_stage_onto_a_survivor(policy):
    plan = build_plan(make_scenario(gpus=4, stages=3))  # GPU 3 is a spare that serves no stage
    part = plan.partition
    resident = {0: set(part.units_of_stage(0)) | set(part.units_of_stage(1)), 1: set(part.units_of_stage(1)),
                2: set(part.units_of_stage(2)), 3: set()}
    rec = recovery_policy(policy)(part, plan.stage_gpus, 1, resident, (0, 2, 3))
    assert rec.stage_gpus[0] == 0 and rec.stage_gpus[2] == 2 and rec.failed_gpu == 1
    if policy == "reroute_to_holder":  # GPU 0 already holds stage 1: nothing to load
        assert rec.stage_gpus[1] == 0 and rec.load_first == ()
    else:  # the idle spare takes the stage and loads it first
        assert rec.stage_gpus[1] == 3 and rec.load_first == ((3, (1,)),)


def test_recovery_without_survivors_is_a_plan_error():
    plan = build_plan(make_scenario(gpus=1))
    with pytest.raises(PlanError, match="no GPU survives"):
        recovery_policy("reroute_to_holder")(plan.partition, plan.stage_gpus, 0, {}, (0,))
