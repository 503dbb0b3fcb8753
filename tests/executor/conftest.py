"""Fixtures for executor tests: seeded random checkpoints in temp dirs and reference ``generate`` tokens.

Nothing is downloaded: models are built from preset configs with fixed seeds.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from executor.checkpoint import make_checkpoint  # noqa: E402


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
