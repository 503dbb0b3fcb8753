"""``pipeboost calibrate`` on 2 CPU virtual devices with a tiny model and budget writes a loadable params file."""

import argparse

import pytest

from calibration.cli import add_calibrate_parser
from pipeboost.costs import CostParams
from pipeboost.errors import PipeBoostError
from pipeboost.scenario import load_params_file, scenario_from_dict


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_calibrate_parser(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.fixture(scope="module")
def params_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "params" / "tiny.yaml"
    args = _parser().parse_args(["calibrate", "--devices", "cpu:2", "--model", "opt-tiny,llama-tiny", "--out", str(out),
                                 "--budget-s", "6", "--link-gbps", "2.0", "--no-progress",
                                 "--cache-dir", str(out.parent.parent / "ckpt")])
    assert args.func(args) == 0
    return out


def test_params_file_loads_with_provenance(params_path):
    params = load_params_file(params_path)
    assert isinstance(params, CostParams)
    prov = params.provenance
    for key in ("machine", "devices", "date", "packages", "executor_git_revision", "residuals_rel_median_p95"):
        assert key in prov
    assert prov["devices"]["spec"] == "cpu:2"
    assert set(prov["packages"]) >= {"torch", "transformers", "safetensors", "simpy"}
    assert 0 < params.link_efficiency <= 1 and 0 < params.compute_efficiency <= 1
    assert params.startup_s > 0 and params.hop_bandwidth_bytes_per_s > 0
    assert prov["wall_s"] < 30


def test_interference_runtime_latencies_and_failure_handling_are_measured(params_path):
    params = load_params_file(params_path)
    prov = params.provenance
    assert 1.0 <= params.host_cores <= 2.0  # two virtual devices: between one and two cores' worth
    assert params.host_cores_threads == 2 and params.host_cores_many_threads == 4  # measured with 2, then 4
    # the loaders' CPU per byte, measured, is charged on the host cores (one pass: its own value); the cores
    # compute loses to the copies per byte/s is measured beside it, for the record
    assert params.copy_cpu_s_per_byte == prov["copy_cpu_s_per_byte"] > 0 and prov["loader_cpu_s_wall_s_bytes"][0][2] > 0
    assert prov["copy_cores_per_byte"] >= 0
    per_gbps, calls = prov["load_interference_per_gbps_calls"]
    assert calls >= 1 and params.compute_interference_per_gbps == per_gbps >= 0
    assert params.compute_interference_per_job == 0.0
    long_value, long_calls, long_tokens = prov["load_interference_per_gbps_long_calls_tokens"]
    assert long_tokens == params.compute_interference_long_tokens == 128 and long_value >= 0
    # set only with enough overlapping calls (a tiny model's long prefills may all finish before the load)
    assert params.compute_interference_per_gbps_long == (long_value if long_calls >= 20 else None)
    alone_rate, busy_rate = prov["load_rate_alone_computing_bytes_per_s"]
    assert alone_rate > 0 and busy_rate > 0 and params.copy_interference_per_job == pytest.approx(
        max(0.0, alone_rate / busy_rate - 1.0) / (2 * max(1.0, 2 / params.host_cores)))  # cores oversubscribed
    assert len(prov["effective_cores_threads_alone_together"]) == 4
    assert params.dispatch_s > 0 and params.handoff_s > 0 and params.step_start_s > 0
    # the workers' own hand-off / token time, read from the concurrency runs' busy pipelines (one pass)
    for kind in ("after_hop_s", "after_token_s"):
        value, samples = prov["worker_switch_s_samples"][kind]
        assert getattr(params, f"worker_{kind}") == value >= 0 and (samples > 0 or value == 0)
    assert prov["worker_switch_s_samples"]["after_token_s"][1] > 0  # 8 requests on two devices: tokens queue
    wake_s, waits = prov["unit_wake_s_samples"]
    assert params.unit_wake_s == wake_s >= 0 and (waits > 0 or wake_s == 0)
    assert 0 < params.failure_detection_s < 0.5 and params.replan_overhead_s >= 0
    assert prov["resume_s"] > 0 and params.unit_load_cpu_s > 0


def test_every_listed_model_gets_a_compute_profile(params_path):
    from pipeboost.compute_profile import shape_key
    from pipeboost.model_config import model_spec_from_hf_config, preset_config

    params = load_params_file(params_path)
    assert [p.info["model"] for p in params.compute_profiles] == ["opt-tiny", "llama-tiny"]
    for p in params.compute_profiles:
        spec = model_spec_from_hf_config(preset_config(p.info["model"]), p.info["model"], dtype="float32")
        assert p.shape == shape_key(spec) and params.profile_for(spec) is p
        assert len(p.layer.prefill_tokens) >= 4 and p.layer.decode_batches == (1, 2, 3, 4, 6, 8)
        assert p.runtime_overhead_s == params.provenance["runtime_overhead_per_unit_s"]
        assert all(s > 0 for s in p.layer.prefill_s)
        assert {"layer/prefill", "layer/prefill@128", "head/prefill@128"} <= set(p.info["in_run_factors"])
        assert len(p.info["in_run_factor_runs"]) == 3 + 1  # a 6 s budget: each model's minimum runs
        calls = p.info["concurrency_slowdown_calls"]  # per phase, two virtual devices
        assert p.concurrency_slowdown == calls["decode"][0] >= 0 and calls["decode"][1:] == [calls["decode"][1], 2]
        assert p.prefill_concurrency_slowdown == calls["prefill"][0] >= 0 and calls["prefill"][2] == 2
        for phase in ("prefill", "decode"):  # a tiny model's 0.1 ms units may never overlap in one short run
            assert calls[phase][1] > 0 or calls[phase][0] == 0.0  # no samples: no slowdown


def test_scenario_references_params_file(params_path, tmp_path):
    doc = {"name": "x", "model": {"preset": "opt-tiny", "dtype": "float32"}, "cluster": {"preset": "2xcpu-virtual"},
           "serving": {"cold_start_gpus": 2}, "params": {"file": str(params_path)}}
    scenario = scenario_from_dict(doc, file=str(tmp_path / "x.yaml"))
    assert scenario.params.compute_efficiency == load_params_file(params_path).compute_efficiency


@pytest.mark.parametrize("models", ["no-such", "opt-tiny,no-such"])
def test_bad_model_is_a_user_error(tmp_path, models):
    args = _parser().parse_args(["calibrate", "--model", models, "--out", str(tmp_path / "p.yaml")])
    with pytest.raises(PipeBoostError, match="no-such"):
        args.func(args)


def test_copy_cores_per_byte_reads_the_compute_rate_lost_while_loading():
    from calibration.bench_host import copy_cores_per_byte
    from calibration.bench_load import UnitLoadRun

    # 2 GB copied over a 1 s window (time zero at perf_counter 9.9, the first load at 0.1 s, the last landing
    # at 1.1 s: perf_counter 10.0 to 11.0): the two compute threads did 60 calls in it against 100/s alone,
    # so the copies took 40% of the 1.5 cores computing used: 0.6 core at 2 GB/s
    busy = UnitLoadRun(((0, 0, 1_000_000_000, 0.5), (1, 0, 1_000_000_000, 0.5)), 0.1, 0.0, 1.1, t0_perf_s=9.9)
    ends = [9.99] + [10.0 + i / 60 for i in range(60)] + [11.01]  # calls outside the window do not count
    assert copy_cores_per_byte(busy, ends, 100.0, 1.5) == pytest.approx(0.6 / 2e9, rel=0.02)
    faster = [10.0 + i / 120 for i in range(120)]  # not slower than alone: nothing taken
    assert copy_cores_per_byte(busy, faster, 100.0, 1.5) == 0.0
    assert copy_cores_per_byte(UnitLoadRun((), 0.0), ends, 100.0, 1.5) == 0.0
