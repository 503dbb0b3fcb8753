"""Request generation, trace I/O and metrics on hand-made traces."""

import json

import numpy as np
import pytest

from pipeboost.metrics import percentile, request_metrics, summarize, write_metrics
from pipeboost.trace import TraceKind, TraceRecord, instant, read_jsonl, to_chrome_trace, write_jsonl
from pipeboost.workload import ArrivalSpec, LengthDist, WorkloadSpec, generate_requests


def gen(arrivals, **kw):
    return generate_requests(WorkloadSpec(arrivals=arrivals, **kw), np.random.default_rng(0))


def test_same_seed_same_requests_and_first_arrival_at_start():
    a = gen(ArrivalSpec("poisson", rate_per_s=10), num_requests=50, start_s=2.0)
    b = gen(ArrivalSpec("poisson", rate_per_s=10), num_requests=50, start_s=2.0)
    assert a == b and len(a) == 50 and a[0].arrival_s == 2.0
    assert all(x.arrival_s <= y.arrival_s for x, y in zip(a, a[1:]))


def test_gamma_cv_controls_burstiness():
    smooth = gen(ArrivalSpec("gamma", rate_per_s=100, cv=0.2), num_requests=4000)
    bursty = gen(ArrivalSpec("gamma", rate_per_s=100, cv=4.0), num_requests=4000)
    cv = lambda reqs: np.std(np.diff([r.arrival_s for r in reqs])) / np.mean(np.diff([r.arrival_s for r in reqs]))
    assert cv(smooth) == pytest.approx(0.2, rel=0.15) and cv(bursty) == pytest.approx(4.0, rel=0.25)


def test_on_off_leaves_idle_gaps_of_off_length():
    reqs = gen(ArrivalSpec("on_off", rate_per_s=50, on_s=1.0, off_s=30.0), duration_s=200.0, num_requests=None)
    gaps = np.diff([r.arrival_s for r in reqs])
    assert (gaps > 29.0).sum() >= 4 and all(r.arrival_s <= 200.0 for r in reqs)


def test_length_distributions_respect_bounds():
    rng = np.random.default_rng(1)
    assert set(LengthDist("uniform", low=3, high=5).sample(rng, 500)) == {3, 4, 5}
    draws = LengthDist("lognormal", median=100, sigma=1.0, high=300).sample(rng, 2000)
    assert draws.min() >= 1 and draws.max() <= 300 and 80 < np.median(draws) < 120


def test_trace_file_arrivals_and_lengths(tmp_path):
    (tmp_path / "a.csv").write_text("arrival_s,prompt_tokens,output_tokens\n0.5,10,2\n0.1,20,3\n")
    reqs = generate_requests(WorkloadSpec(ArrivalSpec("trace", trace_file="a.csv"), num_requests=None),
                             np.random.default_rng(0), base_dir=tmp_path)
    assert [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in reqs] == [(0.1, 20, 3), (0.5, 10, 2)]


def _toy_trace():
    return [
        instant(0.0, TraceKind.ARRIVAL, request=0), instant(0.5, TraceKind.ARRIVAL, request=1),
        TraceRecord(0.0, 1.0, TraceKind.LOAD, gpu=0, layer=0, nbytes=100),
        TraceRecord(1.0, 1.5, TraceKind.PREFILL, gpu=0, layer=0, request=0),
        instant(1.5, TraceKind.FIRST_TOKEN, request=0),
        instant(2.5, TraceKind.FINISH, request=0, attrs={"tokens": 3}),
        instant(2.0, TraceKind.FIRST_TOKEN, request=1),
        instant(2.0, TraceKind.REPLICA_READY, gpu=0),
        instant(3.0, TraceKind.FAILURE, gpu=1, attrs={"cause": "injected"}),
        TraceRecord(3.0, 3.4, TraceKind.RECOVERY, gpu=1),
        instant(4.0, TraceKind.REQUEST_ERROR, request=1, attrs={"reason": "no capacity"}),
    ]


def test_metrics_on_a_hand_made_trace():
    rows = request_metrics(_toy_trace())
    assert rows[0].ttft_s == 1.5 and rows[0].latency_s == 2.5 and rows[0].tpot_s == 0.5
    assert rows[1].ttft_s == 1.5 and rows[1].latency_s is None and rows[1].error == "no capacity"
    summary = summarize(_toy_trace())
    assert summary["cold_start_s"] == 1.5 and summary["lost"] == 0 and summary["errors"] == 1
    assert summary["recovery_s"]["max"] == pytest.approx(0.4) and summary["failures"] == 1
    assert summary["time_to_full_replica_s"]["mean"] == 2.0
    assert summary["gpu_seconds"] == pytest.approx(2.0 + 0.4)


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5], 99) == 5 and percentile([], 50) is None


def test_jsonl_round_trip_is_exact_and_byte_stable(tmp_path):
    trace = _toy_trace()
    write_jsonl(trace, tmp_path / "a.jsonl")
    assert read_jsonl(tmp_path / "a.jsonl") == trace
    write_jsonl(read_jsonl(tmp_path / "a.jsonl"), tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_chrome_trace_has_complete_and_instant_events(tmp_path):
    events = to_chrome_trace(_toy_trace())["traceEvents"]
    load = [e for e in events if e.get("name") == "load u0"][0]
    assert load["ph"] == "X" and load["ts"] == 0.0 and load["dur"] == 1e6 and load["pid"] == 0
    assert any(e["ph"] == "i" and e["name"] == "failure" for e in events)
    summary = write_metrics(_toy_trace(), tmp_path)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["summary"] == json.loads(json.dumps(summary))
    assert (tmp_path / "requests.csv").read_text().splitlines()[0].startswith("request,arrival_s,ttft_s")


def test_gpu_seconds_count_held_intervals_not_gaps_between_instances():
    trace = [TraceRecord(0.0, 1.0, TraceKind.STARTUP, gpu=0), instant(5.0, TraceKind.RELEASE, gpu=0),
             TraceRecord(20.0, 21.0, TraceKind.STARTUP, gpu=0), instant(22.5, TraceKind.FAILURE, gpu=0),
             TraceRecord(3.0, 4.0, TraceKind.STARTUP, gpu=1), TraceRecord(4.0, 30.0, TraceKind.DECODE, gpu=1)]
    assert summarize(trace)["gpu_seconds"] == pytest.approx(5.0 + 2.5 + 27.0)
