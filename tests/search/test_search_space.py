"""Search-space files are parsed strictly: every mistake names the file, the key path and the fix."""

import pytest

from pipeboost.errors import ScenarioError
from pipeboost.search.space import Constraint, load_space, space_from_dict

OBJ = [{"metric": "ttft_p99_s", "direction": "minimize"}]


def _error(doc: dict) -> str:
    with pytest.raises(ScenarioError) as info:
        space_from_dict(doc, file="space.yaml")
    return str(info.value)


def test_valid_space_parses_all_parameter_forms():
    space = space_from_dict({
        "params": {"policies.partition": ["even_layers", "balanced_bytes"],
                   "serving.cold_start_gpus": {"int": [1, 4]},
                   "serving.keep_alive_s": {"float": [1, 100], "log": True}},
        "objectives": OBJ + [{"metric": "gpu_seconds"}],
        "constraints": [{"metric": "ttft_p99_s", "max": 2.0}]})
    assert [p.kind for p in space.params] == ["categorical", "int", "float"]
    assert space.directions == ("minimize", "minimize")
    assert space.metric_names == ("ttft_p99_s", "gpu_seconds")
    assert space.grid() is None


def test_int_ranges_expand_into_a_grid():
    space = space_from_dict({"params": {"policies.recovery": ["reroute_to_holder"],
                                        "serving.cold_start_gpus": {"int": [1, 4]}}, "objectives": OBJ})
    assert space.grid() == {"policies.recovery": ["reroute_to_holder"], "serving.cold_start_gpus": [1, 2, 3, 4]}
    assert space.grid_size() == 4


@pytest.mark.parametrize("doc, message", [
    ({"params": {"policies.partition": ["even_layers"]}, "objectives": OBJ, "sampler": "tpe"},
     "space.yaml: sampler: unknown key 'sampler'; valid keys here: constraints, objectives, params"),
    ({"params": {"policies.colour": ["red"]}, "objectives": OBJ},
     "space.yaml: params.policies.colour: unknown parameter 'policies.colour'; use one of: policies.mode, "
     "policies.partition, policies.loading_order, policies.recovery, policies.num_stages, "
     "serving.cold_start_gpus, serving.max_batch_size, serving.keep_alive_s, serving.weight_memory_fraction, "
     "serving.source"),
    ({"params": {"policies.partition": ["even_layers", "by_magic"]}, "objectives": OBJ},
     "space.yaml: params.policies.partition[1]: unknown value 'by_magic'; use one of: balanced_bytes, "
     "balanced_compute, even_layers"),
    ({"params": {"serving.cold_start_gpus": {"int": [4, 1]}}, "objectives": OBJ},
     "space.yaml: params.serving.cold_start_gpus.int: range must be [low, high] with int low <= high, "
     "got [4, 1]"),
    ({"params": {"serving.cold_start_gpus": {"int": [0, 4]}}, "objectives": OBJ},
     "space.yaml: params.serving.cold_start_gpus.int: value 0 out of range; use values at least 1"),
    ({"params": {"serving.cold_start_gpus": {"ints": [1, 4]}}, "objectives": OBJ},
     "space.yaml: params.serving.cold_start_gpus: must be a list or {int: [low, high]}; "
     "write serving.cold_start_gpus: {int: [low, high]}"),
    ({"params": {"policies.recovery": {"int": [1, 2]}}, "objectives": OBJ},
     "space.yaml: params.policies.recovery: must be a list of values; "
     "write policies.recovery: [reload_on_survivors, reroute_to_holder]"),
    ({"params": {"serving.keep_alive_s": {"float": [1, 10], "log": True, "step": 1.0}}, "objectives": OBJ},
     "space.yaml: params.serving.keep_alive_s.log: step and log cannot be combined; drop one of them"),
    ({"params": {"serving.max_batch_size": [1, 1.5]}, "objectives": OBJ},
     "space.yaml: params.serving.max_batch_size[1]: value 1.5 is not int"),
    ({"params": {"policies.partition": ["even_layers"]}},
     "space.yaml: objectives: is required; add objectives: [{metric: ttft_p99_s, direction: minimize}]"),
    ({"params": {"policies.partition": ["even_layers"]}, "objectives": [{"metric": "ttft_p99"}]},
     "space.yaml: objectives[0].metric: unknown value 'ttft_p99'; use one of: ttft_mean_s"),
    ({"params": {"policies.partition": ["even_layers"]}, "objectives": [{"metric": "gpu_seconds",
                                                                          "direction": "down"}]},
     "space.yaml: objectives[0].direction: unknown value 'down'; use one of: minimize, maximize"),
    ({"params": {"policies.partition": ["even_layers"]}, "objectives": OBJ,
      "constraints": [{"metric": "ttft_p99_s"}]},
     "space.yaml: constraints[0]: has no bound; add max: <number> and/or min: <number>"),
    ({"params": {"policies.partition": ["even_layers"]}, "objectives": OBJ,
      "constraints": [{"metric": "ttft_p99_s", "max": 2, "slo": 1}]},
     "space.yaml: constraints[0].slo: unknown key 'slo'; valid keys here: max, metric, min"),
    ({"params": {}, "objectives": OBJ},
     "space.yaml: params: is empty; add at least one parameter, e.g. policies.partition: [even_layers, "
     "balanced_bytes]"),
])
def test_mistakes_name_file_key_and_fix(doc, message):
    assert _error(doc).startswith(message)


def test_missing_file_is_a_scenario_error(tmp_path):
    with pytest.raises(ScenarioError, match="nope.yaml: file does not exist; check the path"):
        load_space(tmp_path / "nope.yaml")


def test_constraint_violation_sign_follows_optuna():
    con = Constraint("ttft_p99_s", max=2.0, min=0.5)
    assert con.violation(1.0) == -0.5
    assert con.violation(2.5) == 0.5
    assert con.violation(0.25) == 0.25
    assert con.violation(None) == float("inf")


def test_example_spaces_load():
    import pathlib

    for path in sorted(pathlib.Path(__file__).parents[2].joinpath("scenarios", "search").glob("space-*.yaml")):
        assert load_space(path).params
