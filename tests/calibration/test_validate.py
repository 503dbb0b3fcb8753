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
OVERHEAD = ROOT / "scenarios" / "validation-overhead"
TINY = OVERHEAD / "opt-tiny-1cpu.yaml"


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


def test_repeats_take_each_quantity_as_the_median_of_the_runs_and_report_their_spread():
    from calibration.align import Row
    from calibration.repeats import merge_repeats

    runs = [[Row("ttft", "req0", 1.0, 1.2), Row("load_gpu", "gpu0", 2.0, 2.0)],
            [Row("ttft", "req0", 1.0, 1.0), Row("load_gpu", "gpu0", 2.0, None)],
            [Row("ttft", "req0", 1.0, 1.1), Row("load_gpu", "gpu0", 2.0, 2.2), Row("recovery", "#0", None, 0.5)]]
    ttft, load, recovery = merge_repeats(runs)
    assert (ttft.key, ttft.sim_s, ttft.executor_s) == ("req0", 1.0, pytest.approx(1.1))
    assert ttft.executor_spread == pytest.approx(0.2 / 1.1) and ttft.rel_error == pytest.approx(0.1 / 1.1)
    assert load.executor_s == pytest.approx(2.1) and load.executor_spread == pytest.approx(0.2 / 2.1)
    assert (recovery.sim_s, recovery.executor_s, recovery.executor_spread) == (None, 0.5, 0.0)
    assert merge_repeats([runs[0]]) == runs[0]


def test_split_halves_compare_the_odd_runs_median_with_the_even_runs_median():
    from calibration.align import Row
    from calibration.repeats import split_halves

    runs = [[Row("ttft", "req0", 1.0, 1.0), Row("load_gpu", "gpu0", 2.0, 2.0)],
            [Row("ttft", "req0", 1.0, 1.1), Row("load_gpu", "gpu0", 2.0, None)],
            [Row("ttft", "req0", 1.0, 1.4), Row("load_gpu", "gpu0", 2.0, 2.4)],
            [Row("ttft", "req0", 1.0, 1.3), Row("load_gpu", "gpu0", 2.0, None)]]
    (ttft,) = split_halves(runs)  # load_gpu: no odd-numbered run measured it
    assert (ttft.component, ttft.key) == ("ttft", "req0")
    assert ttft.sim_s == pytest.approx(1.2) and ttft.executor_s == pytest.approx(1.2)
    assert ttft.rel_error == pytest.approx(0.0, abs=1e-12)
    two = split_halves(runs[1:3])
    assert [(r.sim_s, r.executor_s) for r in two] == [(1.1, 1.4)]
    assert two[0].rel_error == pytest.approx(0.3 / 1.4)
    assert split_halves(runs[:1]) == []


def test_the_suite_reports_the_executor_against_itself(tmp_path):
    from calibration.align import Row
    from calibration.suite import SuiteEntry, executor_noise, format_suite
    from calibration.validate import ValidationResult

    rows = (Row("ttft", "req0", 1.0, 1.0),)
    own = (Row("ttft", "req0", 1.1, 1.0), Row("ttft", "req1", 1.0, 1.0), Row("load_gpu", "gpu0", 1.0, 1.25))
    entry = SuiteEntry(ValidationResult("a", rows, (), tmp_path, 4, own), "a", None, None, "", 2)
    noise = executor_noise([entry])
    assert noise["ttft"]["n"] == 2 and noise["ttft"]["median"] == pytest.approx(0.05)
    assert noise["load_gpu"]["median"] == pytest.approx(0.2)
    assert "executor against itself" in format_suite([entry], {}, [])
    alone = SuiteEntry(ValidationResult("a", rows, (), tmp_path), "a", None, None, "", 2)
    assert executor_noise([alone]) == {} and "against itself" not in format_suite([alone], {}, [])


def test_validate_repeats_the_executor_and_writes_every_run(params_file, tmp_path, capsys):
    assert _validate(TINY, "--params", params_file, "--threshold", "1000", "--out", tmp_path, "--repeats", "2") == 0
    assert sorted(p.name for p in (tmp_path / "executor").iterdir()) == ["trace-2.jsonl", "trace.jsonl"]
    with open(tmp_path / "errors.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert all(r["executor_spread"] != "" for r in rows if r["component"] == "ttft")
    out = capsys.readouterr().out
    assert "executor spread over 2 runs" in out
    assert any(line.startswith("ttft") and "executor against itself" in line for line in out.splitlines())


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


def test_runtime_gaps_split_unit_gaps_handoffs_step_starts_and_dispatch():
    from calibration.bench_runtime import runtime_gaps
    from pipeboost.trace import TraceKind, TraceRecord

    def unit(t0, t1, gpu, layer, step, kind=TraceKind.DECODE):
        return TraceRecord(t0, t1, kind, gpu=gpu, layer=layer, request=0, attrs={"step": step})

    trace = [TraceRecord(0.5, 0.5, TraceKind.ARRIVAL, request=0),
             unit(0.9, 1.0, 0, -1, 0, TraceKind.PREFILL), unit(1.01, 1.1, 0, 0, 0, TraceKind.PREFILL),
             TraceRecord(1.1, 1.12, TraceKind.HOP, gpu=0, request=0, attrs={"step": 0, "to": 1}),
             unit(1.2, 1.3, 1, 1, 0, TraceKind.PREFILL),
             TraceRecord(1.35, 1.35, TraceKind.FIRST_TOKEN, request=0, attrs={"index": 0}),
             unit(1.5, 1.6, 0, -1, 1), unit(1.63, 1.7, 0, 0, 1), unit(1.72, 1.8, 0, 1, 1),
             TraceRecord(1.85, 1.85, TraceKind.TOKEN, request=0, attrs={"index": 1}),
             unit(1.9, 2.0, 0, -1, 2)]
    gaps = runtime_gaps(trace)
    assert gaps["dispatch_s"] == pytest.approx([0.4])
    assert sorted(gaps["per_unit_s"]) == pytest.approx([0.01, 0.02, 0.03])
    assert sorted(gaps["handoff_s"]) == pytest.approx([0.08, 0.15])  # HOP end -> gpu 1; token -> gpu 0
    assert gaps["step_start_s"] == pytest.approx([0.05])  # step 1 ended on gpu 0, step 2 starts there


def test_worker_switch_gaps_count_only_requests_that_were_already_waiting():
    """After a HOP or a token of request 0, gpu 0's next unit of request 1 is a sample when request 1's
    input was there by then; request 1 arriving later (its ARRIVAL after the HOP) is not the worker's doing."""
    from calibration.bench_runtime import worker_switch_gaps, worker_switch_s
    from pipeboost.trace import TraceKind, TraceRecord

    def unit(t0, t1, request, gpu=0, kind=TraceKind.PREFILL):
        return TraceRecord(t0, t1, kind, gpu=gpu, layer=0, request=request, attrs={"step": 0})

    def hop(t0, t1, request):
        return TraceRecord(t0, t1, TraceKind.HOP, gpu=0, request=request, attrs={"step": 0, "to": 1})

    trace = [TraceRecord(0.0, 0.0, TraceKind.ARRIVAL, request=0), TraceRecord(0.0, 0.0, TraceKind.ARRIVAL, request=1),
             unit(0.1, 0.2, 0), hop(0.2, 0.21, 0), unit(0.2103, 0.3, 1),  # request 1 waited: 0.3 ms
             TraceRecord(0.32, 0.32, TraceKind.ARRIVAL, request=2),
             hop(0.3, 0.31, 1), unit(0.3205, 0.4, 2),  # request 2 arrived after the HOP: no sample
             TraceRecord(0.5, 0.5, TraceKind.FIRST_TOKEN, gpu=0, request=2, attrs={"index": 0}),
             unit(0.5002, 0.6, 0, kind=TraceKind.DECODE),  # request 0's token at 0.31 -> waiting: 0.2 ms
             TraceRecord(0.6, 0.6, TraceKind.TOKEN, gpu=0, request=0, attrs={"index": 1}),
             unit(0.6, 0.7, 0, kind=TraceKind.DECODE),  # the same request: not a switch
             hop(0.7, 0.71, 0), unit(0.72, 0.8, 1, kind=TraceKind.DECODE)]  # 10 ms: waited elsewhere
    trace.insert(7, TraceRecord(0.31, 0.31, TraceKind.TOKEN, gpu=1, request=0, attrs={"index": 0}))
    gaps = worker_switch_gaps(trace)
    assert gaps["after_hop_s"] == pytest.approx([0.0003])
    assert gaps["after_token_s"] == pytest.approx([0.0002])
    assert worker_switch_s([trace, trace]) == {"after_hop_s": (pytest.approx(0.0003), 2),
                                               "after_token_s": (pytest.approx(0.0002), 2)}
    assert worker_switch_s([]) == {"after_hop_s": (0.0, 0), "after_token_s": (0.0, 0)}


def test_end_to_end_latency_is_compared_but_not_counted_in_the_overall_median(tmp_path):
    from calibration.align import compare_traces
    from calibration.validate import ValidationResult
    from pipeboost.trace import TraceKind, TraceRecord

    def trace(first_s, finish_s):
        return [TraceRecord(0.5, 0.5, TraceKind.ARRIVAL, request=0),
                TraceRecord(first_s, first_s, TraceKind.FIRST_TOKEN, request=0, attrs={"index": 0}),
                TraceRecord(finish_s, finish_s, TraceKind.FINISH, request=0, attrs={"tokens": 2})]
    rows = compare_traces(trace(1.0, 2.5), trace(1.0, 4.5))
    by = {r.component: r for r in rows}
    assert (by["ttft"].sim_s, by["ttft"].executor_s) == (0.5, 0.5)
    assert (by["latency"].sim_s, by["latency"].executor_s) == (2.0, 4.0) and by["latency"].rel_error == 0.5
    result = ValidationResult("x", tuple(rows), (), tmp_path)
    assert result.median_error == 0.0  # the TTFT row only
    assert result.component_stats()["latency"]["median"] == 0.5


def test_the_suite_reports_machine_drift_from_its_one_gpu_scenarios(tmp_path):
    from calibration.align import Row
    from calibration.suite import SuiteEntry, format_suite, machine_drift
    from calibration.validate import ValidationResult

    def entry(name, gpus, pairs):
        rows = tuple(Row("ttft", f"req{i}", sim, exe) for i, (sim, exe) in enumerate(pairs))
        return SuiteEntry(ValidationResult(name, rows, (), tmp_path), name, None, None, "", gpus)
    one = entry("a-1cpu", 1, [(0.9, 1.0), (0.95, 1.0), (1.0, 1.0)])  # -10%, -5%, 0%
    two = entry("a-2cpu", 2, [(2.0, 1.0)])  # not a one-GPU scenario: ignored
    assert machine_drift([one, two]) == (pytest.approx(-0.05), 3)
    assert machine_drift([two]) == (None, 0)
    assert "machine drift: one-GPU scenarios' TTFT, simulated vs measured -5.0% (n=3): the executor ran 5.0% " \
           "slower" in format_suite([one, two], {}, [])


def test_suite_repeats_run_round_by_round_over_the_scenarios(params_file, tmp_path, monkeypatch):
    """With --repeats the executor runs every scenario once per round, so a slow window of the machine falls
    on one repeat of several scenarios rather than on every repeat of one."""
    import executor.replay as replay

    order = []
    real = replay.replay_scenario

    def recording(scenario, work_dir):
        order.append(scenario.name)
        return real(scenario, work_dir=work_dir)
    monkeypatch.setattr(replay, "replay_scenario", recording)
    rc = suite_main(["--params", str(params_file), "--quick", "--threshold", "1000", "--out", str(tmp_path),
                     "--repeats", "2"])
    assert rc == 0
    names = [p.stem for p in suite_files(SUITE, quick=True)]
    assert order == names + names
    for name in names:
        assert sorted(p.name for p in (tmp_path / name / "executor").iterdir()) == ["trace-2.jsonl", "trace.jsonl"]
    with open(tmp_path / "suite.csv") as fh:  # run 1 against run 2: the executor's own disagreement
        assert all(r["ttft_self_p95"] != "" for r in csv.DictReader(fh))
