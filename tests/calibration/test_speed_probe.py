"""``suite --speed-probe``: the machine's speed during a suite run, and the suite re-simulated with it."""

from __future__ import annotations

import json

import pytest

from calibration import speed_probe
from calibration.speed_probe import SpeedProbe, probed_models, speed_factors, with_speed
from pipeboost.compute_profile import ComputeProfile, KindProfile, shape_key
from pipeboost.costs import CostParams
from pipeboost.model_config import model_spec_from_hf_config, preset_config


def _profile(preset: str) -> ComputeProfile:
    kind = KindProfile((1, 32), (1e-3, 2e-3), (1, 2), (1e-3, 1.5e-3), 1e-6)
    model = model_spec_from_hf_config(preset_config(preset), name=preset, dtype="float32")
    return ComputeProfile(shape_key(model), kind, kind, kind, info={"model": preset})


def test_speed_factors_are_the_median_per_model_and_kind():
    rounds = [{"opt-tiny": {"layer/prefill": 1.10, "layer/decode": 1.0}},
              {"opt-tiny": {"layer/prefill": 1.04}},
              {"opt-tiny": {"layer/prefill": 1.06, "layer/decode": 1.2}}]
    assert speed_factors(rounds) == {"opt-tiny": {"layer/decode": pytest.approx(1.1),
                                                  "layer/prefill": pytest.approx(1.06)}}


def test_with_speed_scales_only_the_probed_models_profiles():
    params = CostParams(compute_profiles=(_profile("opt-tiny"), _profile("llama-tiny")))
    out = with_speed(params, {"opt-tiny": {"layer/prefill": 1.1, "head/decode": 0.5}})
    opt, llama = out.compute_profiles
    assert opt.layer.prefill_s == pytest.approx((1.1e-3, 2.2e-3))
    assert opt.head.decode_s == pytest.approx((0.5e-3, 0.75e-3)) and opt.head.decode_context_s == pytest.approx(5e-7)
    assert opt.layer.decode_s == (1e-3, 1.5e-3) and opt.embed.prefill_s == (1e-3, 2e-3)
    assert llama == params.compute_profiles[1]
    with pytest.raises(Exception, match="no compute profile of smollm2-135m"):
        with_speed(params, {"smollm2-135m": {"layer/prefill": 1.1}})
    with pytest.raises(Exception, match="no compute profile of opt-tiny"):  # the profile is of float32 weights
        with_speed(params, {"opt-tiny": {"layer/prefill": 1.1}}, {"opt-tiny": "float16"})


def test_probe_measures_each_profiled_model_once_per_round(tmp_path, monkeypatch):
    params = CostParams(compute_profiles=(_profile("opt-tiny"),))
    models = probed_models(params, [("opt-tiny", "float32"), ("llama-tiny", "float32"), ("opt-tiny", "float32")])
    assert models == (("opt-tiny", "float32"),)  # llama-tiny has no profile: the roofline is not scaled
    calls = []

    def fake(profile, model, model_dir, preset, dtype, **kw):
        calls.append((preset, kw["runs"], kw["long_prompt_tokens"], (model_dir / "config.json").exists()))
        return {"layer/prefill": 1.0 + 0.01 * len(calls)}
    monkeypatch.setattr(speed_probe, "in_run_factors", fake)
    probe = SpeedProbe(params, models, tmp_path)
    probe.run()
    probe.run()
    assert calls == [("opt-tiny", 1, None, True)] * 2  # one short run, 32-token prompts, on a made checkpoint
    assert speed_factors(probe.rounds) == {"opt-tiny": {"layer/prefill": pytest.approx(1.015)}}


def test_suite_speed_probe_runs_once_per_round_and_writes_its_figures(tmp_path, monkeypatch):
    from calibration.suite import main as suite_main
    from pipeboost.scenario import save_params_file

    params_file = tmp_path / "p.yaml"
    save_params_file(CostParams(startup_s=0.001), params_file)  # no profiles: nothing to probe, the wiring runs
    runs = []
    real = SpeedProbe.run
    monkeypatch.setattr(SpeedProbe, "run", lambda self: runs.append(1) or real(self))
    rc = suite_main(["--params", str(params_file), "--quick", "--threshold", "1000", "--out", str(tmp_path / "o"),
                     "--repeats", "2", "--speed-probe"])
    assert rc == 0 and len(runs) == 2
    data = json.loads((tmp_path / "o" / "speed_probe.json").read_text())
    assert data["rounds"] == [{}, {}] and set(data["corrected"]) == {"ttft", "load_gpu", "all"}
    assert suite_main(["--params", str(params_file), "--quick", "--reuse-executor", str(tmp_path / "o"),
                       "--speed-probe"]) == 2


def test_with_the_speed_probe_the_exit_status_is_the_re_simulated_suites(tmp_path, monkeypatch):
    import calibration.suite as suite
    from pipeboost.scenario import save_params_file

    params_file = tmp_path / "p.yaml"
    save_params_file(CostParams(startup_s=0.001), params_file)
    args = ["--params", str(params_file), "--quick", "--threshold", "1000", "--out", str(tmp_path / "o"),
            "--repeats", "2"]
    assert suite.main(args) == 0  # plain: within the (loose) threshold
    # a probe that makes the simulator absurdly slow: the plain figures pass, the re-simulated ones do not
    monkeypatch.setattr(suite, "with_speed", lambda params, factors, models: params.with_(startup_s=1e5))
    assert suite.main([*args, "--speed-probe"]) == 1
    data = json.loads((tmp_path / "o" / "speed_probe.json").read_text())
    assert data["corrected"]["all"]["median"] > 1000
