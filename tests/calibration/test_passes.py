"""Calibration passes merged by the median of each fitted value."""

from __future__ import annotations

import dataclasses

import pytest

from calibration.calibrate import CalibrationError, CalibrationRequest, calibrate, next_pass_budget_s
from calibration.passes import median_params
from pipeboost.compute_profile import ComputeProfile, KindProfile
from pipeboost.costs import CostParams


def _kind(scale: float, tokens=(1, 4, 16)) -> KindProfile:
    return KindProfile(tuple(tokens), tuple(scale * t for t in tokens), (1, 2), (scale, 2 * scale), 0.1 * scale)


def _params(k: float, tokens=(1, 4, 16), cores: float | None = 1.8) -> CostParams:
    profile = ComputeProfile("opt:h8", _kind(k, tokens), _kind(2 * k, tokens), _kind(3 * k, tokens),
                             runtime_overhead_s=k, concurrency_slowdown=0.1 * k,
                             prefill_concurrency_slowdown=0.01 * k, info={"model": "toy", "in_run_factors": {"layer/prefill": k}})
    return CostParams(dispatch_s=k, compute_interference_per_gbps=10 * k, host_cores=cores,
                      link_bandwidth_overrides_bytes_per_s={"host_mem": 1e9 * k, "only_here": 5.0},
                      compute_profiles=(profile,), provenance={"machine": "m", "k": k})


def test_every_value_is_the_median_of_the_passes():
    merged = median_params([_params(1.0), _params(3.0, tokens=(1, 4)), _params(2.0)])
    assert merged.dispatch_s == 2.0 and merged.compute_interference_per_gbps == 20.0 and merged.host_cores == 1.8
    assert merged.link_bandwidth_overrides_bytes_per_s == {"host_mem": 2e9, "only_here": 5.0}
    (profile,) = merged.compute_profiles
    assert profile.layer.prefill_tokens == (1, 4)  # the token counts every pass measured
    assert profile.layer.prefill_s == (4.0, 16.0) and profile.layer.decode_s == (4.0, 8.0)
    assert profile.head.decode_context_s == pytest.approx(0.6) and profile.runtime_overhead_s == 2.0
    assert profile.concurrency_slowdown == pytest.approx(0.2)
    assert profile.prefill_concurrency_slowdown == pytest.approx(0.02)
    assert profile.info["passes"] == 3 and [f["layer/prefill"] for f in profile.info["pass_in_run_factors"]] == [1, 3, 2]
    assert merged.provenance["passes"] == 3 and merged.provenance["pass_values"]["dispatch_s"] == [1.0, 3.0, 2.0]
    assert merged.provenance["machine"] == "m"


def test_a_missing_value_in_any_pass_stays_missing_and_one_pass_is_itself():
    assert median_params([_params(1.0), _params(2.0, cores=None)]).host_cores is None
    one = _params(1.0)
    assert median_params([one]) is one
    with pytest.raises(ValueError):
        median_params([])


def test_a_long_copy_term_is_the_median_of_the_passes_that_measured_it():
    passes = [_params(k).with_(compute_interference_per_gbps_long=v)
              for k, v in ((1.0, 0.03), (2.0, None), (3.0, 0.02))]
    assert median_params(passes).compute_interference_per_gbps_long == pytest.approx(0.025)
    assert median_params(passes[1:2] * 2).compute_interference_per_gbps_long is None  # none did


def test_zero_passes_is_refused_before_measuring(tmp_path):
    with pytest.raises(CalibrationError, match="--passes 0"):
        calibrate(CalibrationRequest(devices="cpu:2", preset="opt-tiny", passes=0), tmp_path / "p.yaml")


def test_later_passes_share_the_time_left_and_one_that_would_not_fit_is_skipped():
    assert next_pass_budget_s(300.0, 0.0, [], 3) == 100.0
    assert next_pass_budget_s(300.0, 120.0, [120.0], 3) == 90.0  # the first ran long: the others get less
    assert next_pass_budget_s(300.0, 221.0, [120.0, 101.0], 3) is None  # 79 s left < the shortest pass
    assert next_pass_budget_s(300.0, 190.0, [95.0, 95.0], 3) == 110.0  # a normal day: the third fits
    assert next_pass_budget_s(300.0, 290.0, [95.0, 95.0, 100.0], 3) is None  # all done


def test_calibrate_merges_the_passes_that_fit_the_budget(tmp_path, monkeypatch, caplog):
    import calibration.budget as budget_mod
    import calibration.calibrate as cal
    from pipeboost.scenario import load_params_file

    clock = {"now": 1000.0}
    monkeypatch.setattr(budget_mod.time, "perf_counter", lambda: clock["now"])
    walls, given = iter([120.0, 101.0, 95.0]), []

    def fake_measure(req, pass_index, budget_s):
        given.append(budget_s)
        clock["now"] += next(walls)
        return _params(float(pass_index + 1))
    monkeypatch.setattr(cal, "_measure", fake_measure)
    out = tmp_path / "p.yaml"
    params = calibrate(CalibrationRequest(devices="cpu:2", preset="opt-tiny", passes=3), out)
    assert given == [100.0, 90.0]
    prov = load_params_file(out).provenance
    assert prov["passes"] == 2 and prov["passes_requested"] == 3 and prov["pass_wall_s"] == [120.0, 101.0]
    assert prov["wall_s"] == 221.0 and params.dispatch_s == 1.5  # the median of the two passes
    assert "2 of 3 passes fit in the 300 s budget" in caplog.text


def test_params_files_pool_into_their_median(tmp_path, capsys):
    from calibration.passes import main
    from pipeboost.scenario import load_params_file, save_params_file

    files = []
    for k in (1.0, 3.0, 2.0):
        files.append(tmp_path / f"p{k}.yaml")
        save_params_file(_params(k), files[-1])
    out = tmp_path / "pooled.yaml"
    assert main(["--out", str(out), *map(str, files)]) == 0
    pooled = load_params_file(out)
    assert pooled.dispatch_s == 2.0 and pooled.compute_profiles[0].runtime_overhead_s == 2.0
    assert pooled.provenance["pooled_files"] == [str(f) for f in files]
    assert main(["--out", str(out), str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_passes_far_apart_on_a_coefficient_are_reported(caplog):
    """Two passes: the median is their mean, so one disturbed pass moves the value; calibrate says so."""
    import logging

    calm, disturbed = _params(1.0), _params(1.0)
    calm = dataclasses.replace(calm, copy_interference_per_job=0.023)
    disturbed = dataclasses.replace(disturbed, copy_interference_per_job=0.40)
    with caplog.at_level(logging.WARNING, logger="calibration.passes"):
        merged = median_params([calm, disturbed])
    assert merged.copy_interference_per_job == pytest.approx(0.2115)
    assert merged.provenance["passes_disagree"] == {"copy_interference_per_job": [0.023, 0.40]}
    assert "disagree on copy_interference_per_job (0.023, 0.4" in caplog.text
    agreeing = median_params([_params(1.0), _params(2.0)])  # 2x apart: within the ratio
    assert "passes_disagree" not in agreeing.provenance
    tiny = [dataclasses.replace(_params(1.0), transfer_latency_s=t) for t in (7.6e-11, 4.2e-20)]
    assert "passes_disagree" not in median_params(tiny).provenance  # a latency fitted near 0: not a contention term
