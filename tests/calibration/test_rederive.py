"""Re-deriving an older calibration's copy interference and copy CPU from what it stores (calibration.rederive)."""

from __future__ import annotations

import pytest

from calibration.rederive import main, rederive_copy_cpu, rederive_copy_interference
from pipeboost.costs import CostParams
from pipeboost.errors import PipeBoostError
from pipeboost.scenario import load_params_file, save_params_file


def _calibrated(gammas, cores) -> CostParams:
    return CostParams(host_cores=1.8, copy_interference_per_job=0.05,
                      provenance={"devices": {"spec": "cpu:2"}, "passes": len(gammas),
                                  "pass_values": {"copy_interference_per_job": list(gammas),
                                                  "host_cores": list(cores)}})


def test_each_pass_is_divided_by_its_oversubscription_then_the_median_taken():
    params = rederive_copy_interference(_calibrated([0.04, 0.05, 0.06], [1.6, 2.0, 1.25]))
    # passes: 0.04 / (2 / 1.6) = 0.032, 0.05 / 1 = 0.05, 0.06 / (2 / 1.25) = 0.0375 -> median 0.0375
    assert params.copy_interference_per_job == pytest.approx(0.0375)
    assert params.provenance["pass_values"]["copy_interference_per_job"] == pytest.approx([0.032, 0.05, 0.0375])
    assert rederive_copy_interference(params) is params  # already re-derived: unchanged


def test_a_file_without_passes_is_refused_with_its_name(tmp_path):
    path = tmp_path / "old.yaml"
    save_params_file(CostParams(host_cores=1.8, provenance={"devices": {"spec": "cpu:2"}}), path)
    with pytest.raises(PipeBoostError, match="old.yaml: provenance.pass_values"):
        rederive_copy_interference(load_params_file(path), str(path))
    assert main(["--term", "copy_interference", "--out-dir", str(tmp_path / "out"), str(path)]) == 2


def test_the_cli_writes_the_rederived_file(tmp_path):
    path = tmp_path / "cal.yaml"
    save_params_file(_calibrated([0.05], [1.6]), path)
    assert main(["--term", "copy_interference", "--out-dir", str(tmp_path / "out"), str(path)]) == 0
    assert load_params_file(tmp_path / "out" / "cal.yaml").copy_interference_per_job == pytest.approx(0.04)


def test_the_measured_copy_cpu_replaces_a_zero_and_a_set_value_is_kept(tmp_path):
    old = CostParams(host_cores=1.8, provenance={"copy_cpu_s_per_byte": 9e-11})
    new = rederive_copy_cpu(old)
    assert new.copy_cpu_s_per_byte == 9e-11 and new.provenance["copy_cpu_rederived"] is True
    assert rederive_copy_cpu(new) is new
    measured = CostParams(host_cores=1.8, copy_cpu_s_per_byte=8e-11, provenance={"copy_cpu_s_per_byte": 9e-11})
    assert rederive_copy_cpu(measured) is measured  # calibrated since session 6: its passes' median stays
    assert rederive_copy_cpu(CostParams()) == CostParams()  # no host cores (a GPU file): nothing to do
    path = tmp_path / "gpu.yaml"
    save_params_file(CostParams(host_cores=1.8), path)
    with pytest.raises(PipeBoostError, match="gpu.yaml: provenance.copy_cpu_s_per_byte is missing"):
        rederive_copy_cpu(load_params_file(path), str(path))
    both = tmp_path / "both.yaml"
    save_params_file(_calibrated([0.05], [1.6]).with_(provenance={**_calibrated([0.05], [1.6]).provenance,
                                                                  "copy_cpu_s_per_byte": 9e-11}), both)
    assert main(["--term", "copy_cpu", "--term", "copy_interference", "--out-dir", str(tmp_path / "o"), str(both)]) == 0
    out = load_params_file(tmp_path / "o" / "both.yaml")
    assert (out.copy_cpu_s_per_byte, out.copy_interference_per_job) == (9e-11, pytest.approx(0.04))
