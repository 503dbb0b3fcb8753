"""Continuous batching on a replica: concurrent decode steps run as one batch; tokens equal ``generate``."""

from __future__ import annotations

import pytest
import torch

from executor.batching import RowsCache
from executor.engine import run_executor
from executor.kvcache import RequestKVCache
from executor.units import build_unit, materialise
from pipeboost.trace import TraceKind
from executor_helpers import Req, assert_request_lifecycle, make_plan


def _batch_sizes(trace) -> list[int]:
    return [r.attrs.get("batch", 1) for r in trace if r.kind is TraceKind.DECODE and r.layer == -1]


def _run_concurrent(model_dir, requests, num_layers: int, **kwargs):
    plan = make_plan(num_layers, (0, num_layers))
    return run_executor(plan, model_dir, requests, [], devices="cpu:1", seed=7, **kwargs)


@pytest.mark.parametrize("preset", ["opt-tiny", "llama-tiny"])
def test_eight_concurrent_requests_batch_and_match_generate(preset, model_dirs, reference_tokens):
    """8 requests of different prompt lengths and lengths of output: batched decode, exact greedy tokens."""
    model_dir = model_dirs(preset)
    requests = [Req(i, 0.05 + 0.002 * (i % 3), 3 + 5 * i, 6 + (i * 5) % 9) for i in range(8)]
    result = _run_concurrent(model_dir, requests, 4)
    for req in requests:
        expected = reference_tokens(model_dir, result.prompts[req.id], req.output_tokens)
        assert result.tokens[req.id] == expected, f"request {req.id}"
    assert_request_lifecycle(result.trace, requests)
    sizes = _batch_sizes(result.trace)
    assert max(sizes) >= 4, f"decode steps were not batched: {sizes}"
    assert len(set(sizes)) > 2, "requests finish at different steps, so the batch shrinks"


def test_requests_join_a_running_batch_and_limit_holds(model_dirs, reference_tokens):
    """Late arrivals join running decode batches at step boundaries; no batch exceeds max_batch_size."""
    model_dir = model_dirs("llama-tiny")
    requests = [Req(i, 0.05, 4 + 3 * i, 30) for i in range(3)] + [Req(i, 0.07, 2 + i, 6) for i in range(3, 6)]
    result = _run_concurrent(model_dir, requests, 4, max_batch_size=4)
    for req in requests:
        assert result.tokens[req.id] == reference_tokens(model_dir, result.prompts[req.id], req.output_tokens)
    batched = [r for r in result.trace if r.kind is TraceKind.DECODE and r.attrs.get("batch", 1) > 1]
    assert max(_batch_sizes(result.trace)) <= 4
    assert any(set(r.attrs["requests"]) & {0, 1, 2} and set(r.attrs["requests"]) & {3, 4, 5} for r in batched)


def test_max_batch_size_one_runs_each_request_alone(model_dirs):
    model_dir = model_dirs("opt-tiny")
    requests = [Req(i, 0.05, 4 + i, 5) for i in range(4)]
    result = _run_concurrent(model_dir, requests, 4, max_batch_size=1)
    assert set(_batch_sizes(result.trace)) == {1}
    assert all(r.request is not None for r in result.trace if r.kind is TraceKind.DECODE)


def test_opt125m_sized_model_batched(model_dirs, reference_tokens):
    model_dir = model_dirs("opt-125m")
    requests = [Req(i, 0.0, 3 + 4 * i, 4 + i % 2) for i in range(4)]
    result = _run_concurrent(model_dir, requests, 12)
    for req in requests:
        assert result.tokens[req.id] == reference_tokens(model_dir, result.prompts[req.id], req.output_tokens)
    assert max(_batch_sizes(result.trace)) >= 2


@pytest.mark.parametrize("preset", ["opt-tiny", "llama-tiny"])
def test_batched_layer_equals_rows_run_alone(preset, model_dirs):
    """One layer on B rows with their own caches: attention is per row; outputs equal rows run alone
    up to GEMM rounding (B-row GEMM vs a batch of one), and each row's cache grows by exactly one token."""
    from executor.checkpoint import CheckpointReader
    reader = CheckpointReader(model_dirs(preset))
    layer = build_unit(reader.config, 1)
    from executor.units import unit_tensor_names
    names = unit_tensor_names(reader.config, 1, layer)
    layer = materialise(layer, {k: reader.get(v) for k, v in names.items()}, reader.config, torch.device("cpu"))
    hidden_size = reader.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    lengths = [3, 9, 5, 14]
    alone, batched = [RequestKVCache() for _ in lengths], [RequestKVCache() for _ in lengths]
    with torch.inference_mode():
        for n, c1, c2 in zip(lengths, alone, batched):
            prompt = torch.randn(1, n, hidden_size, generator=gen)
            layer(prompt, torch.arange(n).unsqueeze(0), c1)
            layer(prompt, torch.arange(n).unsqueeze(0), c2)
        step = torch.randn(len(lengths), 1, hidden_size, generator=gen)
        positions = torch.tensor([[n] for n in lengths])
        expected = torch.cat([layer(step[i:i + 1], positions[i:i + 1], alone[i]) for i in range(len(lengths))])
        got = layer(step, positions, RowsCache(batched))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert [c.seq_length(1) for c in batched] == [n + 1 for n in lengths]
