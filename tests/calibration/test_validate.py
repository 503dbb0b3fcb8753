"""``pipeboost validate`` on one tiny scenario, and the suite in its quick form."""

import argparse
import csv
from pathlib import Path

import pytest

from calibration.align import validation_scenario
from calibration.cli import add_validate_parser
from calibration.suite import main as suite_main
from calibration.suite import suite_files
from executor.replay import scenario_requests
from pipeboost.costs import CostParams
from pipeboost.scenario import load_scenario, save_params_file

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "scenarios" / "validation"
TINY = SUITE / "opt-tiny-1cpu.yaml"


@pytest.fixture(scope="module")
def params_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("params") / "defaults.yaml"
    save_params_file(CostParams(startup_s=0.001), path)
    return path


def _validate(*argv):
    parser = argparse.ArgumentParser()
    add_validate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["validate", *map(str, argv)])
    return args.func(args)


def test_both_engines_get_the_executor_workload(tmp_path):
    scenario = load_scenario(SUITE / "opt-125m-2cpu-gamma.yaml")
    common = validation_scenario(scenario, CostParams(), tmp_path)
    original = scenario_requests(scenario)
    replayed = scenario_requests(common)
    assert len(replayed) == len(original) == scenario.executor.max_requests
    assert replayed[0].arrival_s == 0.0
    t0 = original[0].arrival_s
    assert [r.arrival_s for r in replayed] == pytest.approx([r.arrival_s - t0 for r in original])
    assert common.serving.max_batch_size == scenario.serving.max_batch_size and common.executor.time_scale == 1.0
    # the executor sends each request through the pipeline as its own micro-batch, with no in-flight limit
    assert common.serving.pipeline_micro_batch_size == 1
    assert common.serving.pipeline_max_in_flight >= len(replayed)
    # an executor replica prefills queued requests one at a time, each first token at its own prefill's end
    assert common.serving.replica_prefill == "sequential" and scenario.serving.replica_prefill == "batched"


def test_validate_writes_table_and_picture_and_exit_codes(params_file, tmp_path, capsys):
    assert _validate(TINY, "--params", params_file, "--threshold", "1000", "--out", tmp_path / "a") == 0
    out = capsys.readouterr().out
    assert "ttft" in out and "overall median error" in out
    with open(tmp_path / "a" / "errors.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["component"] for r in rows} >= {"ttft", "load_gpu"}
    assert (tmp_path / "a" / "timeline.png").stat().st_size > 1000
    assert _validate(TINY, "--params", params_file, "--threshold", "0", "--out", tmp_path / "b") == 1


def test_quick_suite_runs_and_writes_one_table(params_file, tmp_path, capsys):
    assert 2 <= len(suite_files(SUITE, quick=True)) <= 3
    assert len(suite_files(SUITE)) >= 20
    rc = suite_main(["--params", str(params_file), "--quick", "--threshold", "1000", "--out", str(tmp_path)])
    assert rc == 0
    with open(tmp_path / "suite.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(suite_files(SUITE, quick=True))
    assert "ttft" in capsys.readouterr().out
    # Re-simulating with other params against the same executor traces reproduces the executor rows.
    again = tmp_path / "again"
    rc = suite_main(["--params", str(params_file), "--quick", "--threshold", "1000", "--out", str(again),
                     "--reuse-executor", str(tmp_path)])
    assert rc == 0
    for path in suite_files(SUITE, quick=True):
        first = (tmp_path / path.stem / "executor" / "trace.jsonl").read_text()
        assert (again / path.stem / "executor" / "trace.jsonl").read_text() == first


def test_step_overhead_is_token_gap_minus_unit_and_hop_time():
    from calibration.bench_runtime import step_overheads_s
    from pipeboost.trace import TraceKind, TraceRecord

    trace = [TraceRecord(1.0, 1.0, TraceKind.FIRST_TOKEN, request=0, attrs={"index": 0}),
             TraceRecord(1.1, 1.16, TraceKind.DECODE, gpu=0, layer=0, request=0, attrs={"step": 1}),
             TraceRecord(1.16, 1.17, TraceKind.HOP, gpu=0, request=0, attrs={"step": 1}),
             TraceRecord(1.2, 1.2, TraceKind.TOKEN, request=0, attrs={"index": 1})]
    assert step_overheads_s(trace, units_per_step=2) == pytest.approx([(0.2 - 0.07) / 2])
