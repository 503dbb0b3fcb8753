"""Continuous batching of decode steps on a device that holds the whole model (a replica).

A decode step of a request whose route is entirely one device is *batchable*. The compute worker collects
the batchable tasks queued at a step boundary (up to ``max_batch_size``) and runs them as one forward pass:
token ids ``(B, 1)``, absolute positions ``(B, 1)`` (OPT learned positions and Llama rotary positions per
row), one call of each ``transformers`` layer with ``(B, 1, H)`` hidden states. Requests that arrive while a
step runs join at the next boundary; prefills and pipeline stages stay micro-batches of one.

Each request keeps its own :class:`~executor.kvcache.RequestKVCache`. :class:`RowsCache` is the cache the
layer sees: ``update`` appends row *i*'s new key/value to request *i*'s cache, and the attention function
registered as :data:`ATTN_NAME` (:func:`rows_attention`) attends each row over exactly its own keys with the
same ``sdpa`` call a batch of one makes. No padding enters attention, so attention is bitwise the batch-of-one
computation given the same inputs; outside a batch the function *is* ``sdpa``.

Exactness contract: the batched linear layers are one GEMM of ``B`` rows where a batch of one uses a
matrix-vector product, so hidden states may differ from ``generate`` (batch 1) by float rounding (~1e-6
relative, the same difference ``generate`` itself shows between batch 1 and batch 8). Greedy tokens equal
``generate`` in every test (margins checked in ``tests/executor/test_exec_batching.py``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from transformers import PretrainedConfig

from executor.kvcache import RequestKVCache
from pipeboost.spec import EMBED_UNIT
from pipeboost.trace import TraceKind

if TYPE_CHECKING:
    from executor.devices import Device
    from executor.pipeline import Runtime
    from executor.worker import StageTask

log = logging.getLogger(__name__)

ATTN_NAME = "pipeboost_rows_sdpa"


class RowsCache:
    """The cache a batched layer call sees: row ``i`` of each update goes to ``caches[i]``.

    ``update(keys, values, layer_idx)`` takes ``(B, heads, 1, head_dim)`` tensors, appends row ``i`` to
    ``caches[i]`` and keeps each row's full keys/values ``(1, heads, T_i, head_dim)`` for
    :func:`rows_attention`; it returns its inputs unchanged (the attention reads the rows instead).
    """

    def __init__(self, caches: list[RequestKVCache]) -> None:
        self.caches = caches
        self.rows: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Append each row's keys/values to its request's cache; remember the rows' full keys/values."""
        self.rows[layer_idx] = [cache.update(key_states[i:i + 1], value_states[i:i + 1], layer_idx)
                                for i, cache in enumerate(self.caches)]
        return key_states, value_states


def rows_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """``sdpa`` attention; with ``row_cache`` (a :class:`RowsCache`) each row attends over its own keys.

    ``query`` is ``(B, heads, T_q, head_dim)``; returns ``(B, T_q, heads, head_dim)`` like ``sdpa``.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    rows_cache = kwargs.pop("row_cache", None)
    if rows_cache is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    outs = [sdpa_attention_forward(module, query[i:i + 1], k, v, None, **kwargs)[0]
            for i, (k, v) in enumerate(rows_cache.rows[module.layer_idx])]
    return torch.cat(outs, dim=0), None


def rows_attention_config(config: PretrainedConfig) -> PretrainedConfig:
    """A shallow copy of ``config`` whose attention is :func:`rows_attention` (registered on first use)."""
    import copy

    from transformers import AttentionInterface
    if ATTN_NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTN_NAME, rows_attention)
    layer_config = copy.copy(config)
    layer_config._attn_implementation = ATTN_NAME
    return layer_config


def batchable(task: "StageTask", gpu: int) -> bool:
    """A decode step at stage 0 of a request whose whole route is device ``gpu``."""
    return not task.prefill and task.stage == 0 and all(g == gpu for g in task.request.route)


def split_batches(tasks: list["StageTask"], gpu: int, limit: int) -> tuple[list["StageTask"],
                                                                            list[list["StageTask"]]]:
    """``(singles, batches)``: non-batchable tasks in order, then batchable ones in groups of <= ``limit``."""
    singles = [t for t in tasks if limit <= 1 or not batchable(t, gpu)]
    rows = [t for t in tasks if limit > 1 and batchable(t, gpu)]
    return singles, [rows[i:i + limit] for i in range(0, len(rows), limit)]


def run_batch(runtime: "Runtime", device: "Device", tasks: list["StageTask"]) -> None:
    """One decode step of ``tasks`` (all batchable on ``device``) as one forward pass; emit each row's token.

    Raises :class:`~pipeboost.errors.DeviceFailure` if the device fails (the caller stops its worker).
    """
    for task in tasks:
        runtime.faults.before_compute(device.index, False, task.step)
    ids = torch.cat([t.data.reshape(1, 1) for t in tasks]).to(device.torch_device)
    positions = torch.cat([t.positions.reshape(1, 1) for t in tasks]).to(device.torch_device)
    caches = RowsCache([device.cache_of((t.request.id, t.epoch)) for t in tasks])
    attrs = {"requests": [t.request.id for t in tasks], "steps": [t.step for t in tasks], "batch": len(tasks)}
    hidden = ids
    num_layers = runtime.partition.num_layers
    for unit in range(EMBED_UNIT, num_layers + 1):
        module = device.wait_resident(unit, runtime.stop)
        if runtime.lora is not None:
            runtime.lora.before_unit(device, unit, module)
        t_start = runtime.tracer.now_s()
        if unit == EMBED_UNIT:
            hidden = module(hidden, positions)
        elif unit == num_layers:
            hidden = module(hidden)
        else:
            hidden = module(hidden, positions, caches)
        if device.is_cuda:
            torch.cuda.current_stream(device.torch_device).synchronize()
        runtime.tracer.add(t_start, runtime.tracer.now_s(), TraceKind.DECODE, gpu=device.index,
                           stage=runtime.partition.stage_of_unit(unit), layer=unit, attrs=attrs)
    for i, task in enumerate(tasks):
        runtime.emit(task, hidden[i:i + 1])
