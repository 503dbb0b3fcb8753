"""Executor adapters: tokens equal plain-torch merged weights + generate, unmerged and merged; epochs."""

from __future__ import annotations

import pytest
from lora_helpers import AReq, reference_tokens, two_stage_plan

from executor.engine import run_executor
from pipeboost.trace import TraceKind


def _run(lora_dirs, requests, mode: str, **kw):
    adapters = {"a0": lora_dirs["a0"], "a1": lora_dirs["a1"]}
    return run_executor(two_stage_plan(), lora_dirs["model"], requests, devices="cpu:2", adapters=adapters,
                        adapter_mode=mode, seed=3, timeout_s=120, **kw)


def _check(lora_dirs, result, requests) -> None:
    for req in requests:
        adapter_dir = lora_dirs[req.adapter] if req.adapter else None
        expected = reference_tokens(lora_dirs["model"], adapter_dir, result.prompts[req.id], req.output_tokens)
        assert result.tokens[req.id] == expected, f"request {req.id} adapter {req.adapter}"


REQUESTS = [AReq(0, 0.0, 6, 4, "a0"), AReq(1, 0.0, 5, 4, "a1"), AReq(2, 0.01, 7, 3, None),
            AReq(3, 0.02, 6, 4, "a0")]


@pytest.mark.parametrize("mode", ["unmerged", "merged"])
def test_tokens_equal_reference_with_two_adapters(lora_dirs, mode):
    result = _run(lora_dirs, REQUESTS, mode, adapter_epoch_s=0.0)
    _check(lora_dirs, result, REQUESTS)
    loads = [r for r in result.trace if r.kind is TraceKind.LOAD and r.attrs.get("adapter") and
             r.attrs.get("op") != "merge"]
    assert {(r.gpu, r.attrs["adapter"]) for r in loads} == {(g, a) for g in (0, 1) for a in ("a0", "a1")}


def test_adapters_change_reference_tokens(lora_dirs):
    """Guard against a vacuous equality: on one prompt the base model and both adapters disagree."""
    prompt = [5, 9, 17, 33, 2, 40, 7, 11]
    outs = {name: tuple(reference_tokens(lora_dirs["model"], lora_dirs.get(name), prompt, 8))
            for name in ("a0", "a1", None)}
    assert len(set(outs.values())) == 3


def test_merged_epoch_switch_keeps_inflight_requests_on_their_weights(lora_dirs):
    """A long a0 request is in flight when a1 requests arrive: it finishes on a0 weights, then a1 runs."""
    reqs = [AReq(0, 0.0, 6, 12, "a0"), AReq(1, 0.005, 6, 3, "a1"), AReq(2, 0.006, 5, 3, "a0")]
    result = _run(lora_dirs, reqs, "merged", adapter_epoch_s=0.0)
    _check(lora_dirs, result, reqs)
    finish = {r.request: r.t_start_s for r in result.trace if r.kind is TraceKind.FINISH}
    first = {r.request: r.t_start_s for r in result.trace if r.kind is TraceKind.FIRST_TOKEN}
    assert first[1] > finish[0]          # a1 waits until the in-flight a0 request finished
    assert first[2] > finish[1]          # the late a0 request waits for the next a0 epoch (a1 won the tie)
    merges = [r for r in result.trace if r.kind is TraceKind.LOAD and r.attrs.get("op") == "merge"]
    switch_to_a1 = min(r.t_start_s for r in merges if r.attrs["adapter"] == "a1")
    assert switch_to_a1 >= finish[0]


def test_unmerged_decode_batch_mixes_adapters_per_row(lora_dirs):
    """On one replica, concurrent requests for a0, a1 and the base model decode in one batch, each row
    with its own adapter, and every request still gets its reference tokens."""
    from pipeboost.plan import LoadPlan, PartitionPlan, Plan
    plan = Plan("pipeboost", PartitionPlan(4, (0, 4)), (0,), LoadPlan((0,), ((0,),)))
    reqs = [AReq(i, 0.05, 4 + 2 * i, 6, ("a0", "a1", None)[i % 3]) for i in range(6)]
    result = run_executor(plan, lora_dirs["model"], reqs, devices="cpu:1", seed=3, timeout_s=120,
                          adapters={"a0": lora_dirs["a0"], "a1": lora_dirs["a1"]}, adapter_mode="unmerged")
    _check(lora_dirs, result, reqs)
    adapter_of = {r.id: r.adapter for r in reqs}
    mixed = [r for r in result.trace if r.kind is TraceKind.DECODE and r.attrs.get("batch", 1) > 1
             and len({adapter_of[i] for i in r.attrs["requests"]}) == 3]
    assert mixed, "no decode batch mixed the three adapters"
