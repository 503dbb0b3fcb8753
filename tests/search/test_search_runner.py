"""The search loop with fake evaluators (no simulator): grid optimum, Pareto marking, constraints, resume."""

import pytest

from pipeboost.errors import PipeBoostError, ScenarioError
from pipeboost.search.runner import SearchConfig, run_search
from pipeboost.search.space import space_from_dict
from pipeboost.search.tidy import pareto_mask

PARTITION_COST = {"even_layers": 3.0, "balanced_bytes": 1.0, "balanced_compute": 2.0}


def fake_latency(scenario, params):
    """TTFT falls with GPUs (1/n) and depends on the partition; GPU cost grows with GPUs."""
    gpus = params.get("serving.cold_start_gpus", 1)
    if params.get("policies.recovery") == "reload_on_survivors" and gpus == 3:
        raise ScenarioError("three GPUs cannot reload", key_path="serving.cold_start_gpus")
    return {"ttft_p99_s": PARTITION_COST[params["policies.partition"]] / gpus, "gpu_seconds": 10.0 * gpus,
            "unserved": 0}


def _space(objectives=("ttft_p99_s",), constraints=(), **extra):
    params = {"policies.partition": list(PARTITION_COST), "serving.cold_start_gpus": {"int": [1, 4]}, **extra}
    return space_from_dict({"params": params, "objectives": [{"metric": m} for m in objectives],
                            "constraints": list(constraints)})


def test_grid_search_finds_the_known_best(base_scenario):
    result = run_search(base_scenario, _space(), SearchConfig(trials=100), evaluate=fake_latency)
    assert result.sampler == "grid"
    assert len(result.rows) == 12  # the grid is exhausted, not sampled 100 times
    assert {(r["policies.partition"], r["serving.cold_start_gpus"]) for r in result.rows} == \
        {(p, g) for p in PARTITION_COST for g in range(1, 5)}
    [best] = result.front
    assert (best["policies.partition"], best["serving.cold_start_gpus"], best["ttft_p99_s"]) == \
        ("balanced_bytes", 4, 0.25)


def test_two_objectives_mark_the_pareto_front_and_constraints_exclude(base_scenario):
    space = _space(("ttft_p99_s", "gpu_seconds"), [{"metric": "ttft_p99_s", "max": 1.0}])
    result = run_search(base_scenario, space, SearchConfig(trials=12, sampler="grid", jobs=2),
                        evaluate=fake_latency)
    front = {(r["policies.partition"], r["serving.cold_start_gpus"]) for r in result.front}
    # balanced_bytes dominates the other partitions at every GPU count; 1 GPU breaks the SLO (1.0 s is allowed)
    assert front == {("balanced_bytes", g) for g in (1, 2, 3, 4)}
    infeasible = [r for r in result.rows if not r["feasible"]]
    assert {(r["policies.partition"], r["serving.cold_start_gpus"]) for r in infeasible} == \
        {("even_layers", 1), ("even_layers", 2), ("balanced_compute", 1)}


def test_invalid_combination_is_a_failed_trial_with_its_reason(base_scenario):
    space = _space(**{"policies.recovery": ["reload_on_survivors"]})
    result = run_search(base_scenario, space, SearchConfig(trials=12), evaluate=fake_latency)
    failed = [r for r in result.rows if r["state"] == "FAIL"]
    assert len(failed) == 3 and all(r["serving.cold_start_gpus"] == 3 for r in failed)
    assert failed[0]["error"] == "ScenarioError: serving.cold_start_gpus: three GPUs cannot reload"
    assert not any(r["pareto"] for r in failed)


def test_resume_from_sqlite_runs_only_the_missing_trials(base_scenario, tmp_path):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    space = _space(("ttft_p99_s", "gpu_seconds"))
    first = run_search(base_scenario, space, SearchConfig(trials=5, sampler="tpe", storage=storage,
                                                          study_name="s", seed=1), evaluate=fake_latency)
    assert len(first.rows) == 5
    again = run_search(base_scenario, space, SearchConfig(trials=9, sampler="tpe", storage=storage,
                                                          study_name="s", seed=1), evaluate=fake_latency)
    assert [r["trial"] for r in again.rows] == list(range(9))
    drop_front = [{k: v for k, v in r.items() if k != "pareto"} for r in first.rows]
    assert [{k: v for k, v in r.items() if k != "pareto"} for r in again.rows[:5]] == drop_front


def test_pareto_mask_ignores_ineligible_and_handles_maximize():
    values = [[1.0, 5.0], [2.0, 4.0], [2.0, 6.0], [0.5, 9.0], [0.1, 0.1]]
    assert pareto_mask(values, ["minimize", "minimize"], [True, True, True, True, False]) == \
        [True, True, False, True, False]
    assert pareto_mask([[1.0], [3.0], [3.0]], ["maximize"]) == [False, True, True]


def test_ray_without_ray_installed_says_how_to_fix(base_scenario):
    pytest.importorskip("optuna")
    try:
        import ray  # noqa: F401
        pytest.skip("ray is installed")
    except ImportError:
        pass
    with pytest.raises(PipeBoostError, match="install ray to use --ray"):
        run_search(base_scenario, _space(), SearchConfig(trials=2, ray_address="auto"), evaluate=fake_latency)


def test_grid_sampler_rejects_float_ranges(base_scenario):
    space = _space(**{"serving.keep_alive_s": {"float": [1.0, 10.0]}})
    with pytest.raises(PipeBoostError, match="--sampler grid needs discrete parameters; serving.keep_alive_s"):
        run_search(base_scenario, space, SearchConfig(trials=2, sampler="grid"), evaluate=fake_latency)
