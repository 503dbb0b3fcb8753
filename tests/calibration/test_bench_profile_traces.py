"""Terms calibration reads from executor traces: ``unit_wake_s`` and the copy-on-compute slowdown."""

from __future__ import annotations

import pytest

from calibration.bench_profile import unit_wake_s
from pipeboost.trace import TraceKind, TraceRecord


def _load(gpu, layer, end):
    return TraceRecord(0.0, end, TraceKind.LOAD, gpu=gpu, layer=layer)


def _prefill(gpu, layer, start, end):
    return TraceRecord(start, end, TraceKind.PREFILL, gpu=gpu, layer=layer, request=0)


def test_only_calls_that_waited_for_their_unit_count():
    trace = [_load(0, -1, 0.010), _load(0, 0, 0.020), _load(0, 1, 0.025), _load(0, 2, 0.050), _load(1, 3, 0.100),
             _prefill(0, -1, 0.013, 0.014),  # the embedding: not counted (a request's dispatch rides on it)
             _prefill(0, 0, 0.0215, 0.030),  # waited: 1.5 ms
             _prefill(0, 1, 0.030, 0.040),  # landed while layer 0 ran: no wait
             _prefill(0, 2, 0.0525, 0.060),  # waited: 2.5 ms
             _prefill(1, 3, 0.300, 0.310)]  # 200 ms later: waited for something else (a hop, its turn)
    assert unit_wake_s([trace]) == (pytest.approx(0.002), 2)
    assert unit_wake_s([]) == (0.0, 0)


def test_copy_slowdown_divides_out_what_the_simulator_already_charges():
    """Two layer calls at once while one link copies at 2 GB/s (each sees the other device computing): core sharing (2 devices,
    2 cores: none) and the profile's concurrency slowdown are divided out; the rest is per GB/s."""
    from calibration.bench_profile import load_interference_per_gbps
    from pipeboost.compute_profile import ComputeProfile, KindProfile, shape_key
    from pipeboost.model_config import model_spec_from_hf_config, preset_config

    model = model_spec_from_hf_config(preset_config("opt-tiny"), "opt-tiny")
    kind = KindProfile((1, 64), (1e-3, 1e-3), (1,), (1e-3,))
    profile = ComputeProfile(shape_key(model), kind, kind, kind, concurrency_slowdown=0.2)
    beta = 0.05
    slowed = 1e-3 * 1.2 * (1 + beta * 2.0)
    trace = [TraceRecord(0.0, 1.0, TraceKind.LOAD, gpu=0, layer=1),
             _prefill(0, 0, 0.100, 0.100 + slowed), _prefill(1, 1, 0.100, 0.100 + slowed)]
    value, calls = load_interference_per_gbps([trace], profile, model, 2e9, host_cores=2.0, prompt_tokens=32)
    assert calls == 2 and value == pytest.approx(beta)
