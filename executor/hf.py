"""Hugging Face configs for the executor: presets or dicts to ``transformers`` config objects.

The executor builds the same ``transformers`` layer classes a Hugging Face model uses, so it needs a
config object whose attention implementation matches what ``from_pretrained`` picks (``sdpa``); otherwise
results would not be bit-identical to ``generate``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from transformers import CONFIG_MAPPING, PretrainedConfig

from pipeboost.model_config import preset_config

LLAMA_FAMILY = ("llama", "mistral", "qwen2")
ATTN_IMPLEMENTATION = "sdpa"

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def family_of(config: PretrainedConfig | Mapping[str, Any]) -> str:
    """``"opt"`` or ``"llama"`` (Llama, Mistral and Qwen2 share the Llama layer layout)."""
    model_type = config["model_type"] if isinstance(config, Mapping) else config.model_type
    if model_type == "opt":
        return "opt"
    if model_type in LLAMA_FAMILY:
        return "llama"
    raise ValueError(f"model_type {model_type!r} not supported; use an OPT or Llama/Mistral/Qwen2 config")


def torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"`` / ``torch.float32`` -> ``torch.float32``; unknown names list the valid ones."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).replace("torch.", "")
    if name not in TORCH_DTYPES:
        raise ValueError(f"dtype {dtype!r} not supported; use one of {sorted(TORCH_DTYPES)}")
    return TORCH_DTYPES[name]


def config_dict(preset_or_config: str | Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a preset's HF config dict, or of the given dict."""
    if isinstance(preset_or_config, str):
        return preset_config(preset_or_config)
    return dict(preset_or_config)


def hf_config(preset_or_config: str | Mapping[str, Any] | PretrainedConfig) -> PretrainedConfig:
    """A ``transformers`` config object with ``sdpa`` attention, from a preset name, dict or config."""
    if isinstance(preset_or_config, PretrainedConfig):
        config = preset_or_config
    else:
        data = config_dict(preset_or_config)
        family_of(data)
        model_type = data.pop("model_type")
        data.pop("torch_dtype", None)
        config = CONFIG_MAPPING[model_type](**data)
    config._attn_implementation = ATTN_IMPLEMENTATION
    return config
