"""LoRA adapters on a shared base model: the PEFT adapter format and its shapes and bytes (no torch).

A PEFT adapter folder holds ``adapter_config.json`` (``r``, ``lora_alpha``, ``target_modules``,
``base_model_name_or_path``) and ``adapter_model.safetensors`` with, per decoder layer and target module,

* ``base_model.model.model.decoder.layers.{i}.self_attn.q_proj.lora_A.weight`` of shape ``(r, in)`` and
* ``...q_proj.lora_B.weight`` of shape ``(out, r)`` (OPT; Llama uses ``model.layers.{i}...``).

The adapted module computes ``y = x W^T + b + (alpha / r) * (x A^T) B^T``; merged, ``W' = W + (alpha/r) B A``.
Both engines use this module for shapes and byte counts, so the simulator's adapter loads carry exactly the
bytes the executor copies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pipeboost.errors import CheckpointError
from pipeboost.spec import ModelSpec
from pipeboost.workload import AdapterSpec

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."

OPT_MODULES = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
               "out_proj": "self_attn.out_proj", "fc1": "fc1", "fc2": "fc2"}
LLAMA_MODULES = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
                 "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
                 "down_proj": "mlp.down_proj"}


def module_paths(family: str) -> dict[str, str]:
    """``{short target name: path inside a decoder layer}`` of a model family (``opt`` or ``llama``)."""
    return dict(OPT_MODULES if family == "opt" else LLAMA_MODULES)


def module_shape(model: ModelSpec, module: str) -> tuple[int, int]:
    """``(in_features, out_features)`` of target ``module`` (a short name such as ``q_proj``) in one layer."""
    h, ffn = model.hidden_size, model.intermediate_size
    q_dim, kv_dim = model.num_heads * model.head_dim, model.num_kv_heads * model.head_dim
    shapes = {"q_proj": (h, q_dim), "k_proj": (h, kv_dim), "v_proj": (h, kv_dim), "out_proj": (q_dim, h),
              "o_proj": (q_dim, h), "fc1": (h, ffn), "fc2": (ffn, h), "gate_proj": (h, ffn),
              "up_proj": (h, ffn), "down_proj": (ffn, h)}
    if module not in module_paths(model.family):
        raise ValueError(f"target module {module!r} is not a {model.family} layer module; "
                         f"use one of {sorted(module_paths(model.family))}")
    return shapes[module]


def layer_prefix(family: str, layer: int) -> str:
    """Checkpoint-style name prefix of decoder layer ``layer`` (without the PEFT prefix)."""
    return f"model.decoder.layers.{layer}." if family == "opt" else f"model.layers.{layer}."


def tensor_name(family: str, layer: int, module: str, which: str) -> str:
    """PEFT tensor name of ``lora_A`` / ``lora_B`` (``which`` = ``"A"`` or ``"B"``) of one module."""
    path = module_paths(family)[module]
    return f"{PEFT_PREFIX}{layer_prefix(family, layer)}{path}.lora_{which}.weight"


def expected_tensors(model: ModelSpec, spec: AdapterSpec) -> dict[str, tuple[int, int]]:
    """``{tensor name: shape}`` every layer of an adapter must provide: A is (r, in), B is (out, r)."""
    out: dict[str, tuple[int, int]] = {}
    for layer in range(model.num_layers):
        for module in spec.target_modules:
            fan_in, fan_out = module_shape(model, module)
            out[tensor_name(model.family, layer, module, "A")] = (spec.rank, fan_in)
            out[tensor_name(model.family, layer, module, "B")] = (fan_out, spec.rank)
    return out


def adapter_layer_bytes(model: ModelSpec, spec: AdapterSpec, dtype_bytes: int | None = None) -> int:
    """Bytes of one decoder layer's adapter: sum over target modules of ``r * (in + out) * dtype``."""
    width = model.dtype_bytes if dtype_bytes is None else dtype_bytes
    return sum(spec.rank * sum(module_shape(model, m)) * width for m in spec.target_modules)


def adapter_unit_bytes(model: ModelSpec, spec: AdapterSpec, unit: int) -> int:
    """Adapter bytes of a unit: decoder layers carry adapters; the embedding and head carry none."""
    return adapter_layer_bytes(model, spec) if 0 <= unit < model.num_layers else 0


def adapter_bytes(model: ModelSpec, spec: AdapterSpec, units: Any = None) -> int:
    """Adapter bytes over ``units`` (default: the whole model)."""
    chosen = model.units() if units is None else units
    return sum(adapter_unit_bytes(model, spec, u) for u in chosen)


@dataclass(frozen=True)
class AdapterConfig:
    """``adapter_config.json`` of a PEFT LoRA adapter (the fields PipeBoost uses)."""

    spec: AdapterSpec
    base_model: str | None = None

    @property
    def scale(self) -> float:
        """``alpha / r``: the factor on ``B A``."""
        return self.spec.alpha / self.spec.rank

    def to_dict(self) -> dict[str, Any]:
        return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": self.spec.rank,
                "lora_alpha": self.spec.alpha, "target_modules": list(self.spec.target_modules),
                "base_model_name_or_path": self.base_model, "bias": "none", "lora_dropout": 0.0,
                "fan_in_fan_out": False}


def parse_adapter_config(data: Mapping[str, Any], name: str, path: Path | str = CONFIG_NAME) -> AdapterConfig:
    """Validate a PEFT adapter config dict; CheckpointError naming ``path`` and the key on problems."""
    def bad(key: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: {key}: {problem}")

    if data.get("peft_type", "LORA") != "LORA":
        raise bad("peft_type", f"{data.get('peft_type')!r} is not LORA")
    rank = data.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise bad("r", f"{rank!r} is not a positive integer")
    alpha = data.get("lora_alpha")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise bad("lora_alpha", f"{alpha!r} is not a positive number")
    modules = data.get("target_modules")
    if isinstance(modules, str):
        modules = [modules]
    if not modules or not all(isinstance(m, str) for m in modules):
        raise bad("target_modules", f"{modules!r} is not a list of module names")
    if data.get("fan_in_fan_out", False):
        raise bad("fan_in_fan_out", "true is not supported (OPT and Llama use nn.Linear)")
    spec = AdapterSpec(name, rank, float(alpha), tuple(modules))
    return AdapterConfig(spec, data.get("base_model_name_or_path"))


def read_adapter_config(adapter_dir: Path, name: str | None = None) -> AdapterConfig:
    """Read and validate ``adapter_dir/adapter_config.json`` (``name`` defaults to the folder name)."""
    path = Path(adapter_dir) / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read adapter config ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return parse_adapter_config(data, name or Path(adapter_dir).name, path)


def write_adapter_config(config: AdapterConfig, adapter_dir: Path) -> Path:
    """Write ``adapter_config.json``; returns its path."""
    path = Path(adapter_dir) / CONFIG_NAME
    path.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
    return path


def check_modules(model: ModelSpec, spec: AdapterSpec, path: Path | str) -> None:
    """CheckpointError when a target module does not exist in the base model's layers."""
    for module in spec.target_modules:
        if module not in module_paths(model.family):
            raise CheckpointError(f"{path}: target_modules: {module!r} is not a {model.family} layer module "
                                  f"(use {', '.join(sorted(module_paths(model.family)))})")
