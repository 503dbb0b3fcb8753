"""Per-request KV cache held by one device for the layers it runs.

The ``transformers`` attention modules call ``cache.update(keys, values, layer_idx, ...)`` and use the
returned full keys/values; this class implements exactly that contract (concatenation along the sequence
axis, as ``DynamicCache`` does), keyed by the global layer index, so a device can hold the cache of any
subset of layers and drop or rebuild one request's cache without touching the others.
"""

from __future__ import annotations

from typing import Any

import torch


class RequestKVCache:
    """Keys/values of one request on one device: ``layer -> (keys, values)`` of shape ``(1, heads, T, d)``."""

    def __init__(self) -> None:
        self._layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys/values to layer ``layer_idx`` and return the layer's full keys/values."""
        old = self._layers.get(layer_idx)
        if old is not None:
            key_states = torch.cat([old[0], key_states], dim=-2)
            value_states = torch.cat([old[1], value_states], dim=-2)
        self._layers[layer_idx] = (key_states, value_states)
        return key_states, value_states

    def reset_layer(self, layer_idx: int) -> None:
        """Forget layer ``layer_idx`` (a prefill rebuilds it from scratch)."""
        self._layers.pop(layer_idx, None)

    def seq_length(self, layer_idx: int) -> int:
        """Tokens cached for ``layer_idx`` (0 when none)."""
        entry = self._layers.get(layer_idx)
        return 0 if entry is None else int(entry[0].shape[-2])

    def nbytes(self) -> int:
        """Bytes held by all cached keys and values."""
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self._layers.values())
