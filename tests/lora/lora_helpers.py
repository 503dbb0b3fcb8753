"""Helpers for LoRA tests: requests with adapters, a two-stage plan and plain-torch reference tokens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from pipeboost.plan import LoadPlan, PartitionPlan, Plan


@dataclass(frozen=True)
class AReq:
    """A request as the engine reads it, naming an adapter (``None``: the base model)."""

    id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    adapter: str | None = None


def two_stage_plan(num_layers: int = 4, mode: str = "pipeboost") -> Plan:
    """Two stages on devices 0 and 1; each loads its own stage first, then the other (full replicas)."""
    half = num_layers // 2
    return Plan(mode, PartitionPlan(num_layers, (0, half, num_layers)), (0, 1), LoadPlan((0, 1), ((0, 1), (1, 0))))


def reference_tokens(model_dir: Path, adapter_dir: Path | None, prompt: list[int], n: int) -> list[int]:
    """Greedy ``generate`` of a transformers model whose target weights are ``W + (alpha/r) B A``."""
    import json

    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None
    if adapter_dir is not None:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
        scale = cfg["lora_alpha"] / cfg["r"]
        tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, a in tensors.items():
                if ".lora_A." not in name:
                    continue
                b = tensors[name.replace(".lora_A.", ".lora_B.")]
                target = name.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
                params[target].copy_(params[target] + scale * (b @ a))
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()
