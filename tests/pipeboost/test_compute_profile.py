"""Compute profiles: interpolation, the cost model and simulator using them, strict loading, round trips."""

import dataclasses

import pytest

from pipeboost.compute_profile import ComputeProfile, KindProfile, ProfileError, shape_key
from pipeboost.costs import CostParams, unit_compute_cost, unit_compute_s
from pipeboost.errors import ScenarioError
from pipeboost.hardware import GPU_PRESETS
from pipeboost.model_config import model_spec_from_hf_config, preset_config
from pipeboost.scenario import load_params_file, save_params_file
from sim.stepcost import StepCosts

MODEL = model_spec_from_hf_config(preset_config("opt-tiny"), "opt-tiny", dtype="float32")
GPU = GPU_PRESETS["cpu-virtual"]


def _kind(scale: float) -> KindProfile:
    return KindProfile((1, 16, 64), (1e-4 * scale, 2e-4 * scale, 6e-4 * scale),
                       (1, 2, 4), (1e-4 * scale, 3e-4 * scale, 4e-4 * scale), 1e-8 * scale)


def _profile(overhead_s: float = 5e-5) -> ComputeProfile:
    return ComputeProfile(shape_key(MODEL), _kind(0.1), _kind(1.0), _kind(0.5), overhead_s, {"model": "opt-tiny"})


def test_prefill_interpolates_and_extrapolates_with_the_last_segment():
    k = _kind(1.0)
    assert k.prefill_at(1) == pytest.approx(1e-4)
    assert k.prefill_at(0.5) == pytest.approx(1e-4)  # flat below the smallest count
    assert k.prefill_at(8.5) == pytest.approx(1.5e-4)  # halfway between 1 and 16
    assert k.prefill_at(40) == pytest.approx(4e-4)
    assert k.prefill_at(112) == pytest.approx(6e-4 + 48 * (4e-4 / 48))  # slope of 16..64


def test_decode_is_a_batch_table_plus_context_and_extrapolates_with_the_average_slope():
    k = _kind(1.0)
    assert k.decode_at(1, 0) == pytest.approx(1e-4)
    assert k.decode_at(3, 0) == pytest.approx(3.5e-4)
    assert k.decode_at(3, 1000) == pytest.approx(3.5e-4 + 1e-5)
    assert k.decode_at(7, 0) == pytest.approx(4e-4 + 3 * (3e-4 / 3))  # (4e-4 - 1e-4) / (4 - 1) per sequence


def test_cost_model_uses_the_profile_of_the_same_shape_only():
    params = CostParams(compute_profiles=(_profile(),))
    cost = unit_compute_cost(params, GPU, MODEL, 0, 16)
    assert (cost.overhead_s, cost.flop_s, cost.memory_s, cost.profiled_s) == (5e-5, 0.0, 0.0, pytest.approx(2e-4))
    assert unit_compute_s(params, GPU, MODEL, MODEL.head_unit, 1, 2, 100) == pytest.approx(5e-5 + 1.5e-4 + 1e-6)
    assert unit_compute_s(params, GPU, MODEL, -1, 16) == pytest.approx(5e-5 + 2e-5)
    other = model_spec_from_hf_config(preset_config("llama-tiny"), "llama-tiny", dtype="float32")
    assert params.profile_for(other) is None
    assert unit_compute_s(params, GPU, other, 0, 16) == unit_compute_s(CostParams(), GPU, other, 0, 16)
    fp16 = model_spec_from_hf_config(preset_config("opt-tiny"), "opt-tiny", dtype="float16")
    assert params.profile_for(fp16) is None  # dtype is part of the shape


def test_step_costs_follow_the_profile_for_pipeline_and_replica_steps():
    params = CostParams(compute_profiles=(_profile(),))
    costs = StepCosts(params, GPU, MODEL)
    for batch, context in ((1, 0), (2, 40), (3, 300), (6, 10)):
        direct = sum(unit_compute_s(params, GPU, MODEL, u, 1, batch, context / batch) for u in MODEL.units())
        assert costs.model_decode_s(batch, context) == pytest.approx(direct)
        assert costs.unit_decode_s(0, batch, context) == pytest.approx(
            unit_compute_s(params, GPU, MODEL, 0, 1, batch, context / batch))
    assert costs.model_prefill_s(16) == pytest.approx(sum(unit_compute_s(params, GPU, MODEL, u, 16)
                                                          for u in MODEL.units()))


def test_params_file_round_trip_keeps_profiles(tmp_path):
    params = CostParams(compute_profiles=(_profile(),))
    save_params_file(params, tmp_path / "p.yaml")
    loaded = load_params_file(tmp_path / "p.yaml")
    assert loaded.compute_profiles == params.compute_profiles
    assert loaded.compute_profiles[0].info == {"model": "opt-tiny"}
    assert CostParams.from_dict(params.to_dict()).compute_profiles == params.compute_profiles


def test_bad_profiles_name_the_entry_and_the_problem(tmp_path):
    good = CostParams(compute_profiles=(_profile(),)).to_dict()
    bad = dict(good, compute_profiles=[dict(good["compute_profiles"][0], layer={"prefill": [[4, 1e-4], [4, 2e-4]],
                                                                               "decode": {"batches": [[1, 1e-4]]}})])
    path = tmp_path / "bad.yaml"
    import yaml
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ScenarioError, match=r"bad.yaml: compute_profiles\[0\]: layer: prefill counts must be "
                                            r"distinct, ascending"):
        load_params_file(path)
    twice = dict(good, compute_profiles=good["compute_profiles"] * 2)
    path.write_text(yaml.safe_dump(twice))
    with pytest.raises(ScenarioError, match="two profiles for shape"):
        load_params_file(path)
    with pytest.raises(ProfileError, match="unknown keys"):
        ComputeProfile.from_dict({**good["compute_profiles"][0], "layers": {}})
    with pytest.raises(ProfileError, match="decode: {batches"):
        KindProfile.from_dict({"prefill": [[1, 1e-4]], "decode": [1, 2, 3]})


def test_concurrency_slowdown_round_trips_and_a_bad_value_is_named():
    profile = dataclasses.replace(_profile(), concurrency_slowdown=0.13)
    assert ComputeProfile.from_dict(profile.to_dict()) == profile
    old_file = {k: v for k, v in profile.to_dict().items() if k != "concurrency_slowdown"}
    assert ComputeProfile.from_dict(old_file).concurrency_slowdown == 0.0  # files from before the field
    with pytest.raises(ProfileError, match="concurrency_slowdown must not be negative, got -0.1"):
        ComputeProfile.from_dict({**profile.to_dict(), "concurrency_slowdown": -0.1})
    with pytest.raises(ProfileError, match="concurrency_slowdown must be a number, got 'fast'"):
        ComputeProfile.from_dict({**profile.to_dict(), "concurrency_slowdown": "fast"})


def test_the_prefill_concurrency_slowdown_is_its_own_value_or_the_decode_one():
    both = dataclasses.replace(_profile(), concurrency_slowdown=0.2)
    assert both.prefill_concurrency_slowdown is None and "prefill_concurrency_slowdown" not in both.to_dict()
    assert both.concurrency_slowdown_for(1.0) == both.concurrency_slowdown_for(0.0) == 0.2
    split = dataclasses.replace(both, prefill_concurrency_slowdown=0.04)
    assert ComputeProfile.from_dict(split.to_dict()) == split
    assert split.concurrency_slowdown_for(1.0) == 0.04 and split.concurrency_slowdown_for(0.0) == 0.2
    assert split.concurrency_slowdown_for(0.5) == pytest.approx(0.12)
    with pytest.raises(ProfileError, match="prefill_concurrency_slowdown must not be negative, got -1.0"):
        ComputeProfile.from_dict({**split.to_dict(), "prefill_concurrency_slowdown": -1})
