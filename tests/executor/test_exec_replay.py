"""``pipeboost run --engine executor``: the scenario's plan, requests and faults replayed for real."""

import json

import yaml

from executor.engine import prompt_ids
from executor.replay import scenario_requests
from pipeboost.cli import main
from pipeboost.scenario import load_scenario
from pipeboost.trace import TraceKind, read_jsonl

SCENARIO = {
    "name": "tiny-replay", "seed": 5,
    "model": {"preset": "opt-tiny", "dtype": "float32"},
    "cluster": {"preset": "2xcpu-virtual"},
    "serving": {"cold_start_gpus": 2},
    "workload": {"arrivals": {"kind": "poisson", "rate_per_s": 50}, "num_requests": 5, "prompt_tokens": 6,
                 "output_tokens": 4},
    "faults": [{"gpu": 0, "decode_step": 2}],  # request 0 always decodes on GPU 0 (stage 0 or first replica)
    "executor": {"devices": "cpu:2", "max_requests": 3, "time_scale": 2.0},
}


def test_replay_writes_the_simulator_outputs_and_recovers_from_the_fault(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    scenario = load_scenario(path)
    requests = scenario_requests(scenario)
    assert len(requests) == 3 and requests[0].arrival_s == 0.0
    assert main(["run", str(path), "--engine", "executor", "--out", str(tmp_path / "run")]) == 0
    assert "tiny-replay [executor, mode pipeboost]" in capsys.readouterr().out
    trace = read_jsonl(tmp_path / "run" / "trace.jsonl")
    finished = {r.request for r in trace if r.kind is TraceKind.FINISH}
    assert finished == {0, 1, 2}
    assert [r.gpu for r in trace if r.kind is TraceKind.FAILURE] == [0]
    arrivals = sorted(r.t_start_s for r in trace if r.kind is TraceKind.ARRIVAL)
    assert arrivals[1] >= requests[1].arrival_s  # open loop: nothing arrives before its scaled time
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())["summary"]
    assert summary["lost"] == 0 and summary["failures"] == 1
    assert (tmp_path / "checkpoints" / "opt-tiny-float32-seed5" / "config.json").exists()
    assert len(prompt_ids(5, 0, 6, 512)) == 6


def test_replay_with_too_few_devices_is_a_clear_error(tmp_path, capsys):
    doc = dict(SCENARIO, executor={"devices": "cpu:1"}, faults=[])
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    assert main(["run", str(tmp_path / "s.yaml"), "--engine", "executor", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "executor.devices" in err and "give at least 2 devices" in err


def test_replay_loads_from_the_host_pool_only_when_weights_come_from_host_memory(tmp_path, monkeypatch):
    """``serving.source: host`` (the default) leaves the pool to run_executor (on CPU virtual devices: one);
    ``nvme`` reads the checkpoint file itself."""
    import executor.replay as replay
    from executor.replay import replay_scenario

    seen = []
    monkeypatch.setattr(replay, "run_executor", lambda *a, **k: seen.append(k["host_pool"]))
    for source in ("host", "nvme"):
        cluster = {"preset": "2xcpu-virtual", "host": {"nvme_bandwidth_gbps": 3.0}}
        doc = dict(SCENARIO, cluster=cluster, serving={"cold_start_gpus": 2, "source": source}, faults=[])
        (tmp_path / f"{source}.yaml").write_text(yaml.safe_dump(doc))
        replay_scenario(load_scenario(tmp_path / f"{source}.yaml"), tmp_path / "work")
    assert seen == [None, False]
