"""``suite --speed-probe``'s copy probe: the loaders' aggregate rate during a run replaces ``host_mem``."""

from __future__ import annotations

import json

import pytest

from calibration import copy_probe
from calibration.copy_probe import CopyProbe, calibrated_devices, copy_probe_for, with_copy_rate
from pipeboost.costs import CostParams
from pipeboost.errors import PipeBoostError


def test_the_probe_uses_the_calibrations_device_count():
    assert calibrated_devices(CostParams(provenance={"devices": {"spec": "cpu:3"}})) == 3
    assert calibrated_devices(CostParams(provenance={"devices": {"spec": "cuda:0,1"}})) == copy_probe.DEFAULT_DEVICES
    assert calibrated_devices(CostParams()) == copy_probe.DEFAULT_DEVICES


def test_without_a_host_mem_limit_calibrated_on_cpu_there_is_nothing_to_probe(tmp_path):
    assert copy_probe_for(CostParams(), "opt-tiny", "float32", tmp_path) is None
    limit = {"host_mem": 9e9}
    for provenance in ({"devices": {"spec": "cuda:0,1"}}, {}):  # a PCIe upstream path; hand-written params
        params = CostParams(link_bandwidth_overrides_bytes_per_s=limit, provenance=provenance)
        assert copy_probe_for(params, "opt-tiny", "float32", tmp_path) is None
    params = CostParams(link_bandwidth_overrides_bytes_per_s={"host_mem": 9e9},
                        provenance={"devices": {"spec": "cpu:4"}})
    probe = copy_probe_for(params, "opt-tiny", "float32", tmp_path)
    assert probe is not None and probe.devices == 4 and probe.preset == "opt-tiny"


def test_with_copy_rate_replaces_only_the_host_mem_limit():
    params = CostParams(link_bandwidth_overrides_bytes_per_s={"host_mem": 9e9, "gpu0": 2e9})
    out = with_copy_rate(params, 4.5e9)
    assert out.link_bandwidth_overrides_bytes_per_s == {"host_mem": 4.5e9, "gpu0": 2e9}
    assert params.link_bandwidth_overrides_bytes_per_s["host_mem"] == 9e9
    with pytest.raises(PipeBoostError, match="no host_mem limit"):
        with_copy_rate(CostParams(), 4.5e9)
    with pytest.raises(PipeBoostError, match="must be positive"):
        with_copy_rate(params, 0.0)


def test_each_run_measures_once_and_the_median_is_taken(tmp_path, monkeypatch):
    calls = []

    def fake(model_dir, devices):
        calls.append(((model_dir / "config.json").exists(), len(devices)))
        return [6e9, 3e9, 4e9][len(calls) - 1]
    monkeypatch.setattr(copy_probe, "uncapped_load_aggregate_bytes_per_s", fake)
    probe = CopyProbe("opt-tiny", "float32", 3, tmp_path)
    assert probe.median_bytes_per_s() == 6e9  # none yet: one probe now
    probe.run()
    probe.run()
    assert calls == [(True, 3)] * 3 and probe.rounds_bytes_per_s == [6e9, 3e9, 4e9]
    assert probe.median_bytes_per_s() == 4e9


def test_a_real_probe_measures_the_executors_loaders(tmp_path):
    probe = CopyProbe("opt-tiny", "float32", 2, tmp_path)
    rate = probe.run()
    assert rate > 1e8 and probe.rounds_bytes_per_s == [rate]  # a memory copy: well above 0.1 GB/s


def test_the_suite_re_simulates_with_the_probed_rate(tmp_path, monkeypatch):
    import calibration.suite as suite
    from pipeboost.scenario import save_params_file

    params_file = tmp_path / "p.yaml"
    save_params_file(CostParams(startup_s=0.001, link_bandwidth_overrides_bytes_per_s={"host_mem": 9e9},
                                provenance={"devices": {"spec": "cpu:2"}}), params_file)
    rates = iter([5e9, 3e9])
    monkeypatch.setattr(copy_probe, "uncapped_load_aggregate_bytes_per_s", lambda model_dir, devices: next(rates))
    used = []
    real = suite.with_copy_rate
    monkeypatch.setattr(suite, "with_copy_rate", lambda params, rate: used.append(rate) or real(params, rate))
    rc = suite.main(["--params", str(params_file), "--quick", "--threshold", "1000", "--out", str(tmp_path / "o"),
                     "--repeats", "2", "--speed-probe"])
    assert rc == 0 and used == [4e9]
    data = json.loads((tmp_path / "o" / "speed_probe.json").read_text())
    assert data["copy_rounds_bytes_per_s"] == [5e9, 3e9] and data["copy_bytes_per_s"] == 4e9
    assert data["calibrated_copy_bytes_per_s"] == 9e9 and data["copy_devices"] == 2
