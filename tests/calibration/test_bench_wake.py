"""``unit_wake_s`` from executor traces: the delay from a unit landing to the compute that waited for it."""

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


def test_prefill_factors_interpolate_between_the_two_prompt_lengths():
    from calibration.bench_profile import scaled
    from pipeboost.compute_profile import ComputeProfile, KindProfile

    tokens = (1, 16, 32, 64, 128, 512)
    kind = KindProfile(tokens, (1.0,) * len(tokens), (1, 2), (1.0, 2.0), 0.5)
    out = scaled(ComputeProfile("s", kind, kind, kind),
                 {"layer/prefill": 1.1, "layer/prefill@128": 0.9, "layer/decode": 2.0, "head/prefill": 1.2})
    assert out.layer.prefill_s == pytest.approx((1.1, 1.1, 1.1, 1.0, 0.9, 0.9))  # 64: halfway in log tokens
    assert out.head.prefill_s == pytest.approx((1.2,) * len(tokens)) and out.embed.prefill_s == (1.0,) * 6
    assert out.layer.decode_s == (2.0, 4.0) and out.layer.decode_context_s == 1.0
