"""Fixtures for executor tests: seeded random checkpoints in temp dirs and reference ``generate`` tokens.

Nothing is downloaded: models are built from preset configs with fixed seeds.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from executor.checkpoint import make_checkpoint  # noqa: E402
from pipeboost.plan import LoadPlan, PartitionPlan, Plan  # noqa: E402
from pipeboost.trace import TraceKind, TraceRecord  # noqa: E402


@dataclass(frozen=True)
class Req:
    """A request as the engine reads it."""

    id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int


def make_plan(num_layers: int, boundaries: tuple[int, ...], gpus: tuple[int, ...] | None = None,
              mode: str = "pipeboost", full: bool = True) -> Plan:
    """Stage s on GPU s; each GPU loads its own stage first, then (``full``) the others in ring order."""
    stages = len(boundaries) - 1
    gpus = gpus if gpus is not None else tuple(range(stages))
    orders = []
    for i, _ in enumerate(gpus):
        own = i % stages
        orders.append(tuple((own + k) % stages for k in range(stages if full else 1)))
    stage_gpus = tuple(gpus[s] for s in range(stages))
    return Plan(mode, PartitionPlan(num_layers, boundaries), stage_gpus, LoadPlan(tuple(gpus), tuple(orders)))


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``model_dirs(preset)``: a float32 checkpoint of the preset (seed 0), built once per session."""
    cache: dict[str, Path] = {}

    def get(preset: str) -> Path:
        if preset not in cache:
            out = tmp_path_factory.mktemp(preset)
            shards = 2 if preset.endswith("tiny") else 1
            cache[preset] = make_checkpoint(preset, out, seed=0, dtype="float32", shards=shards)
        return cache[preset]
    return get


@pytest.fixture(scope="session")
def reference_tokens() -> Callable[[Path, list[int], int], list[int]]:
    """``reference_tokens(model_dir, prompt, n)``: greedy ``generate`` tokens (no EOS stop), memoised."""
    from transformers import AutoModelForCausalLM
    models: dict[Path, torch.nn.Module] = {}
    memo: dict[tuple, list[int]] = {}

    def get(model_dir: Path, prompt: list[int], n: int) -> list[int]:
        key = (model_dir, tuple(prompt), n)
        if key not in memo:
            if model_dir not in models:
                model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
                model.generation_config.eos_token_id = None
                models[model_dir] = model
            ids = torch.tensor([prompt])
            with torch.inference_mode():
                out = models[model_dir].generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0)
            memo[key] = out[0, len(prompt):].tolist()
        return memo[key]
    return get


def assert_compute_after_load(trace: list[TraceRecord]) -> None:
    """No unit is computed on a device before that device's LOAD record of the unit has ended."""
    loaded = {(r.gpu, r.layer): r.t_end_s for r in trace if r.kind == TraceKind.LOAD}
    for r in trace:
        if r.kind in (TraceKind.PREFILL, TraceKind.DECODE):
            assert (r.gpu, r.layer) in loaded, f"unit {r.layer} computed on GPU {r.gpu} without a load"
            assert loaded[(r.gpu, r.layer)] <= r.t_start_s, f"unit {r.layer} on GPU {r.gpu} ran before loaded"


def assert_request_lifecycle(trace: list[TraceRecord], requests: list[Req]) -> None:
    """Every request arrives, gets its first token, all its tokens and finishes, in that order."""
    for req in requests:
        recs = [r for r in trace if r.request == req.id]
        kinds = [r.kind for r in recs]
        assert kinds.count(TraceKind.ARRIVAL) == 1 and kinds.count(TraceKind.FINISH) == 1
        arrival = next(r for r in recs if r.kind == TraceKind.ARRIVAL)
        first = [r for r in recs if r.kind == TraceKind.FIRST_TOKEN]
        assert len(first) == 1 and first[0].t_start_s >= arrival.t_start_s
        tokens = [r for r in recs if r.kind == TraceKind.TOKEN]
        assert len({r.attrs["index"] for r in tokens}) == req.output_tokens - 1
