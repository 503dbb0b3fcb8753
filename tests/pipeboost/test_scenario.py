"""Strict scenario loading: examples, exact error messages, lossless round trips, fuzzing."""

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeboost.costs import CostParams
from pipeboost.errors import ScenarioError
from pipeboost.scenario import (dump_scenario_yaml, load_params_file, load_scenario, save_params_file,
                                scenario_from_dict, scenario_to_dict)

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((ROOT / "scenarios").rglob("*.yaml"))
NOT_SCENARIOS = {"params", "search"}  # cost-parameter files and search spaces live beside the scenarios
SCENARIO_FILES = [p for p in SCENARIOS if not NOT_SCENARIOS & set(p.relative_to(ROOT / "scenarios").parts)]

BASE = {
    "name": "t", "seed": 1,
    "model": {"preset": "opt-1.3b"},
    "cluster": {"preset": "4xa100-pcie4"},
    "serving": {"cold_start_gpus": 4},
    "workload": {"arrivals": {"kind": "poisson", "rate_per_s": 5}, "num_requests": 4},
}


def load(doc):
    return scenario_from_dict(doc, file="s.yaml")


def mutated(**changes):
    doc = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = doc
        keys = path.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return doc


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.name)
def test_every_example_scenario_loads_and_round_trips(path):
    scenario = load_scenario(path)
    again = scenario_from_dict(yaml.safe_load(dump_scenario_yaml(scenario)), file=str(path))
    assert again == scenario


@pytest.mark.parametrize("doc,message", [
    (mutated(cluster={"preset": "4xa100-pcie4", "links": [{"gpu": 0, "bandwidth_gbps": -1}]}),
     "s.yaml: cluster.links[0].bandwidth_gbps: must be greater than 0 (got -1.0)"),
    (mutated(serving__cold_start_gpus=9),
     "s.yaml: serving.cold_start_gpus: 9 cold-start GPUs but the cluster has 4; use at most 4"),
    (mutated(policies={"num_stages": 3}, serving__cold_start_gpus=2),
     "s.yaml: policies.num_stages: 3 stages but only 2 cold-start GPUs; use at most one stage per GPU, "
     "or raise serving.cold_start_gpus"),
    (mutated(faults=[{"gpu": 4, "at_s": 1.0}]), "s.yaml: faults[0].gpu: must be between 0 and 3 (got 4)"),
    (mutated(faults=[{"gpu": 1, "at_s": 1.0, "decode_step": 2}]),
     "s.yaml: faults[0]: needs exactly one trigger, got 2; give one of at_s, loading_layer (-1 embedding .. L head), "
     "prefill: true, decode_step"),
    (mutated(policies={"partition": "evenly"}),
     "s.yaml: policies.partition: unknown value 'evenly'; use one of: balanced_bytes, balanced_compute, even_layers"),
    (mutated(workload__num_requests="many"), "s.yaml: workload.num_requests: must be an integer, got str 'many'"),
    (mutated(cluster={"preset": "4xa100-pcie4", "links": [{"gpu": 0, "bandwidth_gbps": 1, "upstream": "sw9"}]}),
     "s.yaml: cluster.links[0].upstream: upstream 'sw9' is not a switch; use one of: sw0, sw1"),
])
def test_bad_values_name_file_key_and_fix(doc, message):
    with pytest.raises(ScenarioError) as err:
        load(doc)
    assert str(err.value) == message


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ScenarioError, match=r"s.yaml: serving.keepalive_s: unknown key 'keepalive_s'; valid keys "
                                            r"here: adapter_epoch_s, adapter_mode, adapter_placement, adapter_preload, "
                                            r"cold_start_gpus, keep_alive_s, max_batch_size, pipeline_max_in_flight, "
                                            r"pipeline_micro_batch_size, replica_dispatch, replica_prefill, source, "
                                            r"weight_memory_fraction"):
        load(mutated(serving__keepalive_s=3))


def test_pipeline_micro_batch_keys_are_strict_and_round_trip():
    with pytest.raises(ScenarioError, match=r"serving.pipeline_micro_batch_size: must be at least 1 \(got 0\)$"):
        load(mutated(serving__pipeline_micro_batch_size=0))
    with pytest.raises(ScenarioError, match=r"serving.pipeline_max_in_flight: must be an integer"):
        load(mutated(serving__pipeline_max_in_flight="all"))
    scenario = load(mutated(serving__pipeline_micro_batch_size=1, serving__pipeline_max_in_flight=64))
    assert (scenario.serving.pipeline_micro_batch_size, scenario.serving.pipeline_max_in_flight) == (1, 64)
    assert scenario_from_dict(yaml.safe_load(dump_scenario_yaml(scenario)), file="s.yaml") == scenario
    default = load(BASE).serving
    assert (default.pipeline_micro_batch_size, default.pipeline_max_in_flight) == (None, None)


def test_replica_prefill_is_strict_and_round_trips():
    with pytest.raises(ScenarioError) as err:
        load(mutated(serving__replica_prefill="interleaved"))
    assert str(err.value) == ("s.yaml: serving.replica_prefill: unknown value 'interleaved'; "
                              "use one of: batched, sequential")
    assert load(BASE).serving.replica_prefill == "batched"
    scenario = load(mutated(serving__replica_prefill="sequential"))
    assert scenario.serving.replica_prefill == "sequential"
    assert scenario_from_dict(yaml.safe_load(dump_scenario_yaml(scenario)), file="s.yaml") == scenario


def test_model_that_fits_on_no_gpu_is_rejected():
    doc = mutated(model={"preset": "llama-2-70b"}, serving__cold_start_gpus=1,
                  cluster={"preset": "1xa100-pcie4"})
    with pytest.raises(ScenarioError, match=r"s.yaml: policies: no valid plan: GPU 0: stage 0 needs 137.95 GB but "
                                            r"only 38.65 GB of weights fit; use more stages or GPUs with more memory$"):
        load(doc)


def test_trace_file_is_checked_at_load(tmp_path):
    (tmp_path / "arr.csv").write_text("arrival_s\n0.0\nsoon\n")
    doc = mutated(workload={"arrivals": {"kind": "trace", "file": "arr.csv"}})
    with pytest.raises(ScenarioError, match=r"line 3: arrival_s 'soon' is not a non-negative number"):
        scenario_from_dict(doc, file=str(tmp_path / "s.yaml"))
    (tmp_path / "arr.csv").write_text("arrival_s,prompt_tokens\n0.0,12\n0.5,40\n")
    scenario = scenario_from_dict(doc, file=str(tmp_path / "s.yaml"))
    assert scenario.workload.arrivals.trace_file == "arr.csv"


def test_yaml_syntax_error_names_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  preset: [opt\n")
    with pytest.raises(ScenarioError, match=r"bad.yaml: not valid YAML at line \d+"):
        load_scenario(bad)


def test_units_can_be_given_in_si_or_friendly_form_but_not_both():
    si = load(mutated(cluster={"preset": "4xa100-pcie4", "host": {"memory_bandwidth_bytes_per_s": 5e10}}))
    friendly = load(mutated(cluster={"preset": "4xa100-pcie4", "host": {"memory_bandwidth_gbps": 50}}))
    assert si.topology.host == friendly.topology.host
    with pytest.raises(ScenarioError, match="both memory_bandwidth_bytes_per_s and memory_bandwidth_gbps given"):
        load(mutated(cluster={"preset": "4xa100-pcie4",
                              "host": {"memory_bandwidth_bytes_per_s": 5e10, "memory_bandwidth_gbps": 50}}))


def test_params_file_round_trip(tmp_path):
    scenario = load(BASE)
    params = scenario.params.with_(link_efficiency=0.7, provenance={"machine": "test"})
    save_params_file(params, tmp_path / "p.yaml")
    assert load_params_file(tmp_path / "p.yaml") == params
    doc = mutated(params={"file": "p.yaml"})
    assert scenario_from_dict(doc, file=str(tmp_path / "s.yaml")).params == params


def test_a_long_copy_term_measured_below_its_base_length_is_refused(tmp_path):
    params = CostParams(compute_interference_per_gbps=0.05, compute_interference_per_gbps_long=0.03,
                        compute_interference_long_tokens=16)
    save_params_file(params, tmp_path / "p.yaml")
    with pytest.raises(ScenarioError, match="p.yaml.*compute_interference_long_tokens.*must exceed"):
        load_params_file(tmp_path / "p.yaml")


# ---- property-based: any document gives a Scenario or a ScenarioError, nothing else -------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _load_ok_or_scenario_error(doc):
    try:
        scenario = scenario_from_dict(doc, file="fuzz.yaml")
    except ScenarioError as exc:
        assert str(exc).startswith("fuzz.yaml")
        return
    assert scenario_from_dict(yaml.safe_load(dump_scenario_yaml(scenario)), file="fuzz.yaml") == scenario


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_documents_only_raise_scenario_errors(doc):
    _load_ok_or_scenario_error(doc)


FULL = load_scenario(ROOT / "scenarios" / "llama-2-13b-8xh100-fault.yaml")
FULL_DOC = scenario_to_dict(FULL)
FULL_PATHS = [p for p in _paths(FULL_DOC) if p]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FULL_PATHS), json_values)
def test_mutated_documents_only_raise_scenario_errors(path, value):
    doc = copy.deepcopy(FULL_DOC)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    _load_ok_or_scenario_error(doc)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FULL_PATHS))
def test_documents_with_a_key_removed_only_raise_scenario_errors(path):
    doc = copy.deepcopy(FULL_DOC)
    node = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    _load_ok_or_scenario_error(doc)


HF_DOC = scenario_to_dict(load_scenario(ROOT / "scenarios" / "opt-1.3b-4xa100.yaml"))
HF_DOC["model"] = {"hf_config": {"model_type": "llama", "num_hidden_layers": 8, "hidden_size": 256,
                                 "num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 512,
                                 "vocab_size": 1000, "max_position_embeddings": 512}}
HF_PATHS = [p for p in _paths(HF_DOC["model"]) if p]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(HF_PATHS), json_values)
def test_mutated_model_configs_only_raise_scenario_errors(path, value):
    doc = copy.deepcopy(HF_DOC)
    node = doc["model"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    _load_ok_or_scenario_error(doc)


def test_replica_dispatch_is_strict_and_round_trips():
    with pytest.raises(ScenarioError) as err:
        load(mutated(serving__replica_dispatch="random"))
    assert str(err.value) == ("s.yaml: serving.replica_dispatch: unknown value 'random'; "
                              "use one of: shared_queue, least_busy")
    scenario = load(mutated(serving__replica_dispatch="least_busy"))
    assert scenario.serving.replica_dispatch == "least_busy"
    assert scenario_from_dict(yaml.safe_load(dump_scenario_yaml(scenario)), file="s.yaml") == scenario
    assert load(BASE).serving.replica_dispatch == "shared_queue"
