"""Fixtures for LoRA tests: one opt-tiny checkpoint and two seeded adapters per session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def lora_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"model": opt-tiny float32, "a0": r=8 q/v, "a1": r=4 q/k/fc1}`` folders."""
    from executor.checkpoint import make_checkpoint
    from executor.lora import make_adapter
    root = tmp_path_factory.mktemp("lora")
    return {"model": make_checkpoint("opt-tiny", root / "model", seed=0, dtype="float32"),
            "a0": make_adapter("opt-tiny", root / "a0", rank=8, alpha=16.0, target_modules=("q_proj", "v_proj"),
                               seed=1),
            "a1": make_adapter("opt-tiny", root / "a1", rank=4, alpha=8.0,
                               target_modules=("q_proj", "k_proj", "fc1"), seed=2)}
