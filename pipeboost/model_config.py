"""Model presets as Hugging Face ``config.json`` dictionaries, and their conversion to :class:`ModelSpec`.

Presets are stored as the config a checkpoint would ship, so the simulator (which needs a
:class:`~pipeboost.spec.ModelSpec`) and the executor (which builds ``transformers`` modules and random
checkpoints from the same dict) can never disagree about a model's shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from pipeboost.errors import ScenarioError
from pipeboost.spec import DTYPE_BYTES, ModelSpec


def _opt(layers: int, hidden: int, heads: int, ffn: int) -> dict[str, Any]:
    return {
        "model_type": "opt", "num_hidden_layers": layers, "hidden_size": hidden,
        "num_attention_heads": heads, "ffn_dim": ffn, "vocab_size": 50272,
        "max_position_embeddings": 2048, "word_embed_proj_dim": hidden,
        "do_layer_norm_before": True, "enable_bias": True, "tie_word_embeddings": True,
        "torch_dtype": "float16",
    }


def _llama(layers: int, hidden: int, heads: int, kv_heads: int, ffn: int, vocab: int,
           max_pos: int) -> dict[str, Any]:
    return {
        "model_type": "llama", "num_hidden_layers": layers, "hidden_size": hidden,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "intermediate_size": ffn,
        "vocab_size": vocab, "max_position_embeddings": max_pos, "tie_word_embeddings": False,
        "attention_bias": False, "mlp_bias": False, "rms_norm_eps": 1e-5, "torch_dtype": "float16",
    }


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "opt-125m": _opt(12, 768, 12, 3072),
    "opt-1.3b": _opt(24, 2048, 32, 8192),
    "opt-2.7b": _opt(32, 2560, 32, 10240),
    "opt-6.7b": _opt(32, 4096, 32, 16384),
    "opt-13b": _opt(40, 5120, 40, 20480),
    "opt-30b": _opt(48, 7168, 56, 28672),
    "opt-66b": _opt(64, 9216, 72, 36864),
    "llama-2-7b": _llama(32, 4096, 32, 32, 11008, 32000, 4096),
    "llama-2-13b": _llama(40, 5120, 40, 40, 13824, 32000, 4096),
    "llama-2-70b": _llama(80, 8192, 64, 8, 28672, 32000, 4096),
    "llama-3-8b": _llama(32, 4096, 32, 8, 14336, 128256, 8192),
    # SmolLM2-135M's architecture (Llama, grouped-query attention, tied embeddings): a real small model
    # with 30 thin layers, used with random weights by the CPU validation suite.
    "smollm2-135m": {**_llama(30, 576, 9, 3, 1536, 49152, 8192), "tie_word_embeddings": True,
                     "rope_theta": 100000.0},
    # Tiny models for tests and CPU demos (random weights only).
    "opt-tiny": {**_opt(4, 64, 4, 256), "vocab_size": 512, "max_position_embeddings": 256},
    "llama-tiny": {**_llama(4, 64, 4, 2, 128, 512, 256), "tie_word_embeddings": False},
}


def preset_config(name: str) -> dict[str, Any]:
    """A copy of the HF config dict of preset ``name``; unknown names list the valid ones."""
    if name not in MODEL_PRESETS:
        raise KeyError(f"unknown model preset {name!r}; valid: {', '.join(sorted(MODEL_PRESETS))}")
    return dict(MODEL_PRESETS[name])


def _dtype_of(config: Mapping[str, Any]) -> str:
    dtype = config.get("dtype") or config.get("torch_dtype") or "float16"
    return str(dtype).replace("torch.", "")


def model_spec_from_hf_config(config: Mapping[str, Any], name: str = "model",
                              dtype: str | None = None) -> ModelSpec:
    """Build a :class:`ModelSpec` from a Hugging Face config dict (OPT or Llama family).

    ``dtype`` overrides the config's dtype. Raises ``ValueError`` for unsupported architectures or
    missing keys (callers wrap it into a :class:`ScenarioError` with the file name).
    """
    model_type = config.get("model_type")
    dtype = dtype or _dtype_of(config)
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype {dtype!r} not supported; use one of {sorted(DTYPE_BYTES)}")
    try:
        if model_type == "opt":
            hidden = int(config["hidden_size"])
            return ModelSpec(
                name=name, family="opt", num_layers=int(config["num_hidden_layers"]),
                hidden_size=hidden, num_heads=int(config["num_attention_heads"]),
                num_kv_heads=int(config["num_attention_heads"]), intermediate_size=int(config["ffn_dim"]),
                vocab_size=int(config["vocab_size"]),
                max_position_embeddings=int(config["max_position_embeddings"]), dtype=dtype,
                tie_word_embeddings=bool(config.get("tie_word_embeddings", True)),
                word_embed_proj_dim=int(config.get("word_embed_proj_dim", hidden)),
                final_norm=bool(config.get("do_layer_norm_before", True))
                and not bool(config.get("_remove_final_layer_norm", False)),
            )
        if model_type in ("llama", "mistral", "qwen2"):
            heads = int(config["num_attention_heads"])
            hidden = int(config["hidden_size"])
            return ModelSpec(
                name=name, family="llama", num_layers=int(config["num_hidden_layers"]),
                hidden_size=hidden, num_heads=heads,
                num_kv_heads=int(config.get("num_key_value_heads") or heads),
                intermediate_size=int(config["intermediate_size"]), vocab_size=int(config["vocab_size"]),
                max_position_embeddings=int(config["max_position_embeddings"]), dtype=dtype,
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                head_dim=int(config.get("head_dim") or hidden // heads),
                attention_bias=bool(config.get("attention_bias", model_type == "qwen2")),
                mlp_bias=bool(config.get("mlp_bias", False)),
                o_proj_bias=model_type != "qwen2",
            )
    except KeyError as exc:
        raise ValueError(f"config has no key {exc.args[0]!r}") from None
    raise ValueError(f"model_type {model_type!r} not supported; use an OPT or Llama/Mistral/Qwen2 config")


def load_hf_config(path: Path) -> dict[str, Any]:
    """Read ``config.json`` (or a model folder containing it) with errors naming the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"model config {path} does not exist", fix="give a path to a config.json "
                            "or a model folder, or use a preset") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"model config {path} is not valid JSON ({exc})") from None
