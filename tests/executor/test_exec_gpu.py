"""The same executor code path on CUDA devices (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from executor.engine import run_executor
from executor.faults import ExecutorFault
from executor_helpers import Req, assert_compute_after_load, make_plan

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_pipeline_matches_generate(model_dirs, reference_tokens):
    model_dir = model_dirs("llama-tiny")
    requests = [Req(0, 0.0, 8, 5), Req(1, 0.01, 6, 4)]
    if torch.cuda.device_count() >= 2:
        plan, devices = make_plan(4, (0, 2, 4)), "cuda:2"
    else:
        plan, devices = make_plan(4, (0, 4)), "cuda:1"
    result = run_executor(plan, model_dir, requests, [], devices=devices)
    for req in requests:
        assert result.tokens[req.id] == reference_tokens(model_dir, result.prompts[req.id], req.output_tokens)
    assert_compute_after_load(result.trace)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_cuda_recovery(model_dirs, reference_tokens):
    model_dir = model_dirs("opt-tiny")
    requests = [Req(0, 0.0, 8, 5)]
    result = run_executor(make_plan(4, (0, 2, 4)), model_dir, requests, [ExecutorFault(gpu=1, decode_step=2)],
                          devices="cuda:2")
    assert result.tokens[0] == reference_tokens(model_dir, result.prompts[0], 5)
