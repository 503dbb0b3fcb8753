"""The interference estimators read executor traces relative to each run's own speed, per phase."""

from __future__ import annotations

import dataclasses

import pytest

from calibration.bench_profile import CONCURRENCY_MIN_CALLS, _copy_slowdowns, concurrency_slowdowns, phase_slowdowns
from pipeboost.compute_profile import ComputeProfile, KindProfile
from pipeboost.model_config import model_spec_from_hf_config, preset_config
from pipeboost.trace import TraceKind, TraceRecord

UNIT_S = 1e-3
RUN_SPEED = 1.1
"""This run's units all take 1.1x the profile's time when nothing else happens."""


def _model_and_profile():
    model = model_spec_from_hf_config(preset_config("opt-tiny"), "opt-tiny", dtype="float32")
    flat = KindProfile((1, 4096), (UNIT_S, UNIT_S), (1, 64), (UNIT_S, UNIT_S))
    return model, ComputeProfile("toy", flat, flat, flat)


def _call(kind: TraceKind, gpu: int, start: float, seconds: float, layer: int = 0) -> TraceRecord:
    return TraceRecord(start, start + seconds, kind, gpu=gpu, layer=layer, request=0, attrs={"step": 1})


def test_concurrency_is_measured_per_phase_against_the_runs_single_device_calls():
    model, profile = _model_and_profile()
    alone = UNIT_S * RUN_SPEED
    trace = []
    for k in range(6):
        trace.append(_call(TraceKind.DECODE, 0, 0.01 * k, alone))  # one device computes
        trace.append(_call(TraceKind.PREFILL, 0, 0.1 + 0.01 * k, alone))
        for gpu in (0, 1):  # both devices: decode 20% slower, prefill not at all
            trace.append(_call(TraceKind.DECODE, gpu, 0.2 + 0.01 * k, alone * 1.2, layer=gpu))
            trace.append(_call(TraceKind.PREFILL, gpu, 0.3 + 0.01 * k, alone, layer=gpu))
    values = concurrency_slowdowns(trace, profile, model, host_cores=None, prompt_tokens=32)
    assert values["decode"] == pytest.approx([0.2] * 12) and values["prefill"] == pytest.approx([0.0] * 12)
    # two devices on 1.5 cores: core sharing (x 4/3) is the simulator's, not this term's
    shared = [_call(r.kind, r.gpu, r.t_start_s, r.duration_s * (4 / 3 if r.t_start_s >= 0.2 else 1.0), r.layer)
              for r in trace]
    values = concurrency_slowdowns(shared, profile, model, host_cores=1.5, prompt_tokens=32)
    assert values["decode"] == pytest.approx([0.2] * 12) and values["prefill"] == pytest.approx([0.0] * 12)


def test_copy_slowdown_is_relative_to_the_runs_calls_without_copies():
    model, profile = _model_and_profile()
    alone = UNIT_S * RUN_SPEED
    trace = [TraceRecord(0.0, 0.1, TraceKind.LOAD, gpu=0, layer=1)]  # one copy at 2 GB/s until 0.1 s
    trace += [_call(TraceKind.PREFILL, 0, 0.01 * k, alone * 1.1) for k in range(5)]  # 10% slower while copying
    trace += [_call(TraceKind.PREFILL, 0, 0.2 + 0.01 * k, alone) for k in range(5)]
    assert _copy_slowdowns(trace, profile, model, 2e9, None, 32) == pytest.approx([0.05] * 5)  # per GB/s
    few = trace[:6] + trace[6:9]  # fewer reference calls than RUN_SPEED_MIN_CALLS: against the profile itself
    assert _copy_slowdowns(few, profile, model, 2e9, None, 32) == pytest.approx([(1.21 - 1) / 2] * 5)


def test_with_host_cores_the_copy_term_is_read_on_calls_of_a_device_computing_alone():
    """The simulator's copy term caps a thread that has a core to itself; with two devices computing their
    share of the cores (less the copies') sets the pace, so those calls do not measure the term."""
    model, profile = _model_and_profile()
    alone = UNIT_S * RUN_SPEED
    trace = [TraceRecord(0.0, 0.1, TraceKind.LOAD, gpu=0, layer=1)]  # one copy at 2 GB/s until 0.1 s
    trace += [_call(TraceKind.PREFILL, 0, 0.01 * k, alone * 1.1) for k in range(5)]  # alone, copying: +10%
    for k in range(5):  # both computing while copying: +50% (core sharing and the copies' cores)
        trace += [_call(TraceKind.PREFILL, gpu, 0.05 + 0.01 * k, alone * 1.5, layer=gpu) for gpu in (0, 1)]
    trace += [_call(TraceKind.PREFILL, 0, 0.2 + 0.01 * k, alone) for k in range(5)]  # alone, no copy
    trace += [_call(TraceKind.PREFILL, gpu, 0.3 + 0.01 * k, alone * 2 / 1.8, layer=gpu)  # both, no copy
              for k in range(5) for gpu in (0, 1)]
    assert _copy_slowdowns(trace, profile, model, 2e9, 1.8, 32) == pytest.approx([0.05] * 5)
    # without host cores every call counts, against all calls without copies (speed 1.1 x 2 / 1.8): the
    # two-device calls' slowdown is the term's, and the alone calls read faster than the run
    both = _copy_slowdowns(trace, profile, model, 2e9, None, 32)
    assert sorted(both) == pytest.approx([(0.99 - 1) / 2] * 5 + [(1.35 - 1) / 2] * 10)
    # fewer than RUN_SPEED_MIN_CALLS alone calls without copies: every call, as before
    short = [r for r in trace if not (0.2 <= r.t_start_s < 0.3)]
    assert len(_copy_slowdowns(short, profile, model, 2e9, 1.8, 32)) == 15


def test_copy_slowdown_leaves_out_the_profiles_own_concurrency_slowdown():
    model, profile = _model_and_profile()
    profile = dataclasses.replace(profile, prefill_concurrency_slowdown=0.1)
    alone = UNIT_S * RUN_SPEED
    trace = [TraceRecord(0.0, 0.1, TraceKind.LOAD, gpu=0, layer=1)]  # one copy at 2 GB/s until 0.1 s
    for k in range(5):  # both devices compute: 10% for that (the profile's), another 10% while copying
        trace += [_call(TraceKind.PREFILL, gpu, 0.01 * k, alone * 1.2, layer=gpu) for gpu in (0, 1)]
        trace += [_call(TraceKind.PREFILL, gpu, 0.2 + 0.01 * k, alone * 1.1, layer=gpu) for gpu in (0, 1)]
    assert _copy_slowdowns(trace, profile, model, 2e9, None, 32) == pytest.approx([0.05] * 10)


def test_a_phase_with_too_few_overlapping_calls_gets_no_slowdown():
    few = [1.37] * (CONCURRENCY_MIN_CALLS - 1)
    enough = [0.1] * CONCURRENCY_MIN_CALLS
    faster = [-0.05] * CONCURRENCY_MIN_CALLS
    assert phase_slowdowns({"prefill": few, "decode": enough}) == {"prefill": (0.0, len(few)),
                                                                   "decode": (pytest.approx(0.1), len(enough))}
    assert phase_slowdowns({"prefill": faster, "decode": []}) == {"prefill": (0.0, len(faster)), "decode": (0.0, 0)}


def test_copy_interference_per_job_divides_out_the_cores_oversubscription():
    """Loads 1.5x slower while 2 devices compute: 0.25 per device on 2 or more cores; on 1.6 cores the
    simulator multiplies the count by 2 / 1.6, so the coefficient is 0.25 / 1.25 = 0.2."""
    from calibration.bench_host import copy_interference_per_job
    from calibration.bench_load import UnitLoadRun

    alone = UnitLoadRun(((0, 0, 3_000_000, 0.001),), startup_s=0.0, wall_s=0.001)
    computing = UnitLoadRun(((0, 0, 3_000_000, 0.0015),), startup_s=0.0, wall_s=0.0015)
    assert copy_interference_per_job(alone, computing, 2) == pytest.approx(0.25)
    assert copy_interference_per_job(alone, computing, 2, host_cores=2.0) == pytest.approx(0.25)
    assert copy_interference_per_job(alone, computing, 2, host_cores=1.6) == pytest.approx(0.2)


def test_effective_cores_is_the_median_of_alone_together_pairs(monkeypatch):
    """Each pair is one thread alone then both at once, back to back; a burst that slows one pair's "together"
    run (another tenant on a core) is outvoted, where the ratio of the separate medians would mix pairs."""
    from calibration import bench_host

    # warm-up, then (alone, together) x 5: pairs 1.8, 1.9, 1.2 (the burst), 1.85, 1.9
    walls = iter([0.1, 0.10, 0.111, 0.10, 0.105, 0.12, 0.2, 0.10, 0.108, 0.10, 0.105])
    monkeypatch.setattr(bench_host, "_timed_threads", lambda works, threads=1: next(walls))
    sample = bench_host.effective_cores([None, None], repeats=5)
    assert sample.pair_cores == pytest.approx((2 * 0.1 / 0.111, 1.9048, 1.2, 2 * 0.1 / 0.108, 1.9048), rel=1e-3)
    assert sample.effective_cores == pytest.approx(2 * 0.1 / 0.108)  # the median pair
    assert (sample.alone_s, sample.together_s) == (0.10, pytest.approx(0.108))
    # the pairs decide, not the medians of the separate runs (2 x 0.1 / 0.125 = 1.6)
    assert bench_host.CoresSample(2, 0.1, 0.125, (1.7, 1.9, 1.8)).effective_cores == pytest.approx(1.8)


def test_long_prompt_copy_term_runs_more_loading_runs_until_enough_calls(monkeypatch):
    """Two loading runs with 17 overlapping calls (session 11) left the long-prompt term unset; with
    ``max_runs`` one more run at a time until CONCURRENCY_MIN_CALLS calls, and never past ``max_runs``."""
    from calibration import bench_profile

    model, profile = _model_and_profile()
    asked = []

    def fake_runs(*args, runs, **kw):
        asked.append(runs)
        return [[f"trace{len(asked)}-{i}"] for i in range(runs)]
    monkeypatch.setattr(bench_profile, "loading_runs", fake_runs)
    per_run_calls = 9
    monkeypatch.setattr(bench_profile, "load_interference_per_gbps",
                        lambda traces, *a, **kw: (0.01 * len(traces), per_run_calls * len(traces)))
    traces, value, calls = bench_profile.copy_term_runs(None, "opt-tiny", "float32", 2e9, 2, profile, model, 1.8,
                                                        runs=2, max_runs=4)
    assert asked == [2, 1] and len(traces) == 3 and calls == 27 >= CONCURRENCY_MIN_CALLS and value == 0.03
    asked.clear()
    per_run_calls = 1
    traces, _, calls = bench_profile.copy_term_runs(None, "opt-tiny", "float32", 2e9, 2, profile, model, 1.8,
                                                    runs=2, max_runs=4)
    assert asked == [2, 1, 1] and len(traces) == 4 and calls == 4  # capped: the caller leaves the term unset
    asked.clear()
    bench_profile.copy_term_runs(None, "opt-tiny", "float32", 2e9, 2, profile, model, 1.8, runs=3)
    assert asked == [3]  # without max_runs: the runs asked for, whatever the calls
    asked.clear()
    per_run_calls = 9
    _, _, calls = bench_profile.copy_term_runs(None, "opt-tiny", "float32", 2e9, 2, profile, model, 1.8,
                                               runs=3, max_runs=6, min_calls=50)
    assert asked == [3, 1, 1, 1] and calls == 54  # the 32-token term's own threshold (COPY_TERM_MIN_CALLS)


def test_more_benches_adds_benches_on_the_devices_in_turn_up_to_the_thread_count():
    from types import SimpleNamespace

    from calibration.bench_host import more_benches

    two = [SimpleNamespace(device="cpu:0"), SimpleNamespace(device="cpu:1")]
    made = more_benches(two, 5, lambda d: SimpleNamespace(device=d, new=True))
    assert made[:2] == two and [b.device for b in made] == ["cpu:0", "cpu:1", "cpu:0", "cpu:1", "cpu:0"]
    assert all(getattr(b, "new", False) for b in made[2:])
    assert more_benches(two, 2, lambda d: None) == two
