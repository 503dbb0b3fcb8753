"""``pipeboost search --validate K``: the best trials re-run on the executor, predicted vs measured."""

import csv
from pathlib import Path

import pytest

from pipeboost.cli import main
from pipeboost.search.space import space_from_dict
from pipeboost.search.validate_best import best_rows

ROOT = Path(__file__).resolve().parents[2]


def test_best_rows_rank_feasible_trials_by_the_first_objective():
    space = space_from_dict({"params": {"policies.partition": ["even_layers", "balanced_bytes"]},
                             "objectives": [{"metric": "ttft_mean_s", "direction": "maximize"}]}, "s.yaml")
    rows = [{"trial": 0, "feasible": True, "ttft_mean_s": 1.0}, {"trial": 1, "feasible": False, "ttft_mean_s": 9.0},
            {"trial": 2, "feasible": True, "ttft_mean_s": 3.0}, {"trial": 3, "feasible": True, "ttft_mean_s": 3.0}]
    assert [r["trial"] for r in best_rows(rows, space, 2)] == [2, 3]


def test_search_validate_runs_the_best_trial_on_the_executor(tmp_path, capsys):
    pytest.importorskip("torch")
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  policies.partition: [even_layers, balanced_bytes]\n"
                     "objectives:\n  - {metric: ttft_mean_s, direction: minimize}\n")
    scenario = ROOT / "scenarios" / "validation-overhead" / "opt-tiny-2cpu--even-next.yaml"
    out = tmp_path / "out"
    assert main(["search", str(scenario), "--space", str(space), "--trials", "2", "--validate", "1",
                 "--out", str(out)]) == 0
    assert "predicted vs measured" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "validation.csv")))
    assert [r["metric"] for r in rows] == ["ttft_mean_s", "ttft_p99_s", "time_to_full_replica_s"]
    assert all(float(r["predicted"]) > 0 and float(r["measured"]) > 0 for r in rows)
    assert (Path(rows[0]["folder"]) / "executor" / "trace.jsonl").exists()
