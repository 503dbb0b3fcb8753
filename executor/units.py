"""Model slices ("units"): embedding (-1), decoder layers (0..L-1) and head (L), built on the meta device.

Each unit is a small ``nn.Module`` made of the ``transformers`` classes of the model family, created on
the meta device (no memory) and materialised with ``load_state_dict(tensors, assign=True)`` from views into
a device arena. :func:`unit_tensor_names` maps a unit's local parameter names to checkpoint tensor names,
so a loader can read exactly the tensors of one unit.

Forward contracts (batch 1, ``positions`` a ``(1, T)`` long tensor of absolute positions; a decode batch
of :mod:`executor.batching` passes ``B`` rows of one token each, ``(B, 1)``, with the same shapes per row):

* embedding: token ids ``(1, T)`` -> hidden ``(1, T, H)``;
* decoder layer: hidden ``(1, T, H)`` -> hidden, appending ``T`` keys/values to the request's cache;
* head: hidden ``(1, T, H)`` -> logits ``(1, V)`` of the last position.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from transformers import PretrainedConfig

from executor.batching import RowsCache, rows_attention_config
from executor.hf import family_of
from executor.kvcache import RequestKVCache
from pipeboost.spec import EMBED_UNIT


class EmbedUnit(nn.Module):
    """Token (and, for OPT, learned position) embeddings; OPT's ``project_in`` when present."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.family = family_of(config)
        if self.family == "opt":
            from transformers.models.opt.modeling_opt import OPTLearnedPositionalEmbedding
            self.embed_tokens = nn.Embedding(config.vocab_size, config.word_embed_proj_dim, config.pad_token_id)
            self.embed_positions = OPTLearnedPositionalEmbedding(config.max_position_embeddings,
                                                                 config.hidden_size)
            self.project_in = (nn.Linear(config.word_embed_proj_dim, config.hidden_size, bias=False)
                               if config.word_embed_proj_dim != config.hidden_size else None)
        else:
            self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden = self.embed_tokens(ids)
        if self.family != "opt":
            return hidden
        if self.project_in is not None:
            hidden = self.project_in(hidden)
        return hidden + self.embed_positions(None, position_ids=positions)


class LayerUnit(nn.Module):
    """One decoder layer (``OPTDecoderLayer`` or ``LlamaDecoderLayer``); Llama computes its own rotary."""

    def __init__(self, config: PretrainedConfig, index: int) -> None:
        super().__init__()
        self.family = family_of(config)
        self.index = index
        config = rows_attention_config(config)  # sdpa, per row inside a decode batch
        if self.family == "opt":
            from transformers.models.opt.modeling_opt import OPTDecoderLayer
            self.layer = OPTDecoderLayer(config, layer_idx=index)
        else:
            from transformers.models.llama.modeling_llama import LlamaDecoderLayer
            self.layer = LlamaDecoderLayer(config, layer_idx=index)
        self.rotary = None

    def forward(self, hidden: torch.Tensor, positions: torch.Tensor,
                cache: RequestKVCache | RowsCache) -> torch.Tensor:
        """``hidden`` ``(B, T, H)``, ``positions`` ``(B, T)``; ``B > 1`` only with a :class:`RowsCache`."""
        extra = {"row_cache": cache} if isinstance(cache, RowsCache) else {}
        if self.family == "opt":
            return self.layer(hidden, attention_mask=None, cache=cache, position_ids=positions, **extra)
        cos_sin = self.rotary(hidden, positions)
        return self.layer(hidden, attention_mask=None, position_ids=positions, cache=cache,
                          position_embeddings=cos_sin, **extra)


class HeadUnit(nn.Module):
    """Final norm (+ OPT ``project_out``) and the LM head; returns logits of the last position."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.family = family_of(config)
        if self.family == "opt":
            self.final_layer_norm = (nn.LayerNorm(config.hidden_size,
                                                  elementwise_affine=config.layer_norm_elementwise_affine)
                                     if config.do_layer_norm_before and not config._remove_final_layer_norm
                                     else None)
            self.project_out = (nn.Linear(config.hidden_size, config.word_embed_proj_dim, bias=False)
                                if config.word_embed_proj_dim != config.hidden_size else None)
            self.lm_head = nn.Linear(config.word_embed_proj_dim, config.vocab_size, bias=False)
        else:
            from transformers.models.llama.modeling_llama import LlamaRMSNorm
            self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.family == "opt":
            if self.final_layer_norm is not None:
                hidden = self.final_layer_norm(hidden)
            if self.project_out is not None:
                hidden = self.project_out(hidden)
        else:
            hidden = self.norm(hidden)
        return self.lm_head(hidden[:, -1:, :])[:, -1, :]


def build_unit(config: PretrainedConfig, unit: int) -> nn.Module:
    """The unit's module on the meta device (parameters take no memory until materialised)."""
    with torch.device("meta"):
        if unit == EMBED_UNIT:
            module: nn.Module = EmbedUnit(config)
        elif unit == config.num_hidden_layers:
            module = HeadUnit(config)
        elif 0 <= unit < config.num_hidden_layers:
            module = LayerUnit(config, unit)
        else:
            raise ValueError(f"unit {unit} out of range -1..{config.num_hidden_layers}")
    return module.eval()


def _prefix(config: PretrainedConfig) -> str:
    return "model.decoder." if family_of(config) == "opt" else "model."


def unit_tensor_names(config: PretrainedConfig, unit: int, module: nn.Module) -> dict[str, str]:
    """``{local parameter name: checkpoint tensor name}`` of the unit's parameters.

    A tied LM head reads the input embedding's tensor (the checkpoint stores it once).
    """
    prefix = _prefix(config)
    names: dict[str, str] = {}
    for local in module.state_dict():
        if unit == EMBED_UNIT:
            names[local] = prefix + local
        elif isinstance(module, LayerUnit):
            names[local] = f"{prefix}layers.{unit}." + local.removeprefix("layer.")
        elif local == "lm_head.weight":
            tied = getattr(config, "tie_word_embeddings", False)
            names[local] = prefix + "embed_tokens.weight" if tied else "lm_head.weight"
        else:
            names[local] = prefix + local
    return names


def _assign(module: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """``load_state_dict(tensors, strict=True, assign=True)`` without its per-call overhead.

    Each tensor replaces the parameter or buffer of that name (no copy); every parameter and persistent
    buffer of ``module`` must be given exactly once, as ``strict`` demands.
    """
    expected = {name for name, _ in module.named_parameters()} | \
        {name for name, _ in module.named_buffers() if _is_persistent(module, name)}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise RuntimeError(f"unit tensors do not match the module: missing {missing}, unexpected {extra}")
    for name, tensor in tensors.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if leaf in owner._parameters:
            owner._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
        else:
            owner._buffers[leaf] = tensor


def _is_persistent(module: nn.Module, name: str) -> bool:
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    return leaf not in owner._non_persistent_buffers_set


def materialise(module: nn.Module, tensors: Mapping[str, torch.Tensor], config: PretrainedConfig,
                device: torch.device) -> nn.Module:
    """Assign ``tensors`` (views into an arena) as the module's parameters; add a rotary module if needed.

    The module must come from :func:`build_unit`; ``tensors`` must hold every parameter (strict load).
    """
    _assign(module, tensors)
    if isinstance(module, LayerUnit) and module.family == "llama":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
        with torch.device(device):
            module.rotary = LlamaRotaryEmbedding(config)
    return module.requires_grad_(False)
