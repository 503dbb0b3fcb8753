"""The failure microbenchmark's phases from a trace, and its retry of runs where the fault never fired."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import calibration.bench_failure as bench_failure
from pipeboost.trace import TraceKind, TraceRecord


def _trace(with_failure: bool) -> list[TraceRecord]:
    if not with_failure:
        return [TraceRecord(0.01, 0.01, TraceKind.FIRST_TOKEN, gpu=0, request=0)]
    return [TraceRecord(0.100, 0.100, TraceKind.FAILURE, gpu=1), TraceRecord(0.125, 0.125, TraceKind.DETECT, gpu=1),
            TraceRecord(0.126, 0.126, TraceKind.REPLAN, gpu=1), TraceRecord(0.100, 0.226, TraceKind.RECOVERY, gpu=1)]


def test_failure_timing_reads_each_phase():
    t = bench_failure.failure_timing(_trace(True))
    assert (t.detection_s, t.replan_s, t.resume_s) == pytest.approx((0.025, 0.001, 0.100))
    assert bench_failure.failure_timing(_trace(False)) == bench_failure.FailureTiming(None, None, None)


def test_runs_where_the_fault_never_fired_are_discarded_and_retried(monkeypatch, tmp_path):
    outcomes = iter([False, True, False, True, True])
    calls = []

    def fake_run(*args, **kwargs):
        calls.append(1)
        return SimpleNamespace(trace=_trace(next(outcomes)))
    monkeypatch.setattr(bench_failure, "run_executor", fake_run)
    got = bench_failure.measure_failure(tmp_path, "opt-tiny", "float32", "cpu:2", 2, repeats=3)
    assert len(calls) == 5
    assert got == pytest.approx({"failure_detection_s": 0.025, "replan_overhead_s": 0.001, "resume_s": 0.100})
