"""A real (small) search through the simulator, from the command line, in two worker processes."""

import argparse
import csv
from dataclasses import replace
from pathlib import Path

from pipeboost.search.cli import add_search_parser
from pipeboost.search.evaluate import apply_params, simulate_metrics

ROOT = Path(__file__).parents[2]


def test_apply_params_validates_and_follows_gpu_count(base_scenario):
    variant = apply_params(base_scenario, {"serving.cold_start_gpus": 2, "policies.partition": "even_layers"})
    assert variant.serving.cold_start_gpus == 2 and variant.num_stages == 2
    assert variant.policies.partition == "even_layers"
    assert replace(variant, source_file=None) != replace(base_scenario, source_file=None)


def test_simulated_metrics_prefer_more_gpus_for_a_cold_start(base_scenario):
    one = simulate_metrics(base_scenario, {"serving.cold_start_gpus": 1})
    four = simulate_metrics(base_scenario, {"serving.cold_start_gpus": 4})
    assert four["cold_start_s"] < one["cold_start_s"]
    assert one["unserved"] == four["unserved"] == 0


def test_cli_search_writes_tidy_csv_with_the_front(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  policies.partition: [even_layers, balanced_bytes]\n"
                     "  serving.cold_start_gpus: [1, 2, 4]\n"
                     "objectives: [{metric: ttft_p99_s}, {metric: gpu_seconds}]\n"
                     "constraints: [{metric: unserved, max: 0}]\n")
    parser = argparse.ArgumentParser()
    add_search_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["search", str(ROOT / "scenarios" / "opt-1.3b-4xa100.yaml"), "--space", str(space),
                              "--trials", "6", "--jobs", "2", "--out", str(tmp_path / "out"),
                              "--storage", f"sqlite:///{tmp_path / 's.db'}"])
    assert args.func(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "out" / "trials.csv")))
    assert len(rows) == 6 and all(r["state"] == "COMPLETE" and r["feasible"] == "True" for r in rows)
    assert {"policies.partition", "serving.cold_start_gpus", "ttft_p99_s", "gpu_seconds", "pareto"} <= set(rows[0])
    front = list(csv.DictReader(open(tmp_path / "out" / "pareto.csv")))
    assert 1 <= len(front) == sum(r["pareto"] == "True" for r in rows)
    assert "Pareto front" in capsys.readouterr().out
