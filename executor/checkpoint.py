"""Hugging Face safetensors checkpoints: make them, validate them, and read tensors by name.

A model folder holds ``config.json`` and either ``model.safetensors`` or several shards listed in
``model.safetensors.index.json``. :class:`CheckpointReader` parses every shard's header first and checks the
tensors the executor needs (present, expected dtype and shape, bytes inside the file), so a missing,
truncated, wrong-dtype or wrong-shape checkpoint raises :class:`CheckpointError` naming the file and
tensor before anything is loaded. Tensors are then read with ``safetensors.safe_open`` as zero-copy views
of the memory-mapped file (the page cache is the host source of a load).
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from executor.hf import config_dict, hf_config, torch_dtype
from pipeboost.errors import CheckpointError

log = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
              "I32": torch.int32, "U8": torch.uint8, "F64": torch.float64, "BOOL": torch.bool}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: file, dtype, shape and byte range inside the file's data section."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    nbytes: int


def _read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse a safetensors header; raise CheckpointError for unreadable or truncated files."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if 8 + header_len > size:
                raise CheckpointError(f"{path}: truncated header ({size} bytes, header needs {8 + header_len})")
            header = json.loads(fh.read(header_len))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    data_bytes = size - 8 - header_len
    infos: dict[str, TensorInfo] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        if end > data_bytes:
            raise CheckpointError(f"{path}: tensor {name!r} is truncated (needs bytes up to {end}, "
                                  f"file has {data_bytes} data bytes)")
        dtype = _ST_DTYPES.get(meta["dtype"])
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {meta['dtype']}")
        infos[name] = TensorInfo(path, dtype, tuple(meta["shape"]), end - start)
    return infos


def _shard_files(model_dir: Path) -> list[Path]:
    index = model_dir / INDEX_NAME
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index}: malformed index ({exc})") from None
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    single = model_dir / SINGLE_NAME
    if single.exists():
        return [single]
    raise CheckpointError(f"{model_dir}: no {SINGLE_NAME} or {INDEX_NAME}; run "
                          f"`python -m executor make-checkpoint` or give a Hugging Face model folder")


class CheckpointReader:
    """Tensor-by-name access to a model folder's safetensors shards (zero-copy, memory-mapped).

    ``config`` is the ``transformers`` config (sdpa attention) read from ``config.json``.
    """

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = Path(model_dir)
        config_path = self.model_dir / "config.json"
        try:
            self.config_dict: dict[str, Any] = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{config_path}: cannot read model config ({exc})") from None
        self.config = hf_config(self.config_dict)
        self.tensors: dict[str, TensorInfo] = {}
        for path in _shard_files(self.model_dir):
            if not path.exists():
                raise CheckpointError(f"{path}: shard listed in the index is missing")
            self.tensors.update(_read_header(path))
        self._handles: dict[Path, Any] = {}
        self._pool: dict[str, torch.Tensor] = {}

    def fill_host_pool(self, names: list[str] | None = None, pin: bool = False) -> int:
        """Copy tensors (default: all) into one host buffer that later :meth:`get` calls read from.

        This is the ServerlessLLM-style host pool (page-locked when ``pin``): the source of a load is then
        ordinary, already-mapped host memory instead of the file's page-cache mapping. Returns its bytes.
        """
        names = sorted(self.tensors) if names is None else names
        total = sum(-(-self.tensors[n].nbytes // 256) * 256 for n in names)
        pool = torch.empty(total, dtype=torch.uint8, pin_memory=pin)
        offset = 0
        for name in names:
            src = self.get(name)
            view = pool[offset:offset + self.tensors[name].nbytes].view(src.dtype).view(src.shape)
            view.copy_(src)
            self._pool[name] = view
            offset += -(-self.tensors[name].nbytes // 256) * 256
        return total

    def check(self, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> TensorInfo:
        """The tensor's info; CheckpointError naming file and tensor if missing or of another dtype/shape."""
        info = self.tensors.get(name)
        if info is None:
            raise CheckpointError(f"{self.model_dir}: tensor {name!r} is missing from the checkpoint")
        if info.dtype != dtype:
            raise CheckpointError(f"{info.file}: tensor {name!r} has dtype {info.dtype}, expected {dtype}")
        if info.shape != tuple(shape):
            raise CheckpointError(f"{info.file}: tensor {name!r} has shape {list(info.shape)}, "
                                  f"expected {list(shape)}")
        return info

    def get(self, name: str) -> torch.Tensor:
        """A zero-copy CPU view of tensor ``name``: from the host pool if filled, else memory-mapped."""
        pooled = self._pool.get(name)
        if pooled is not None:
            return pooled
        info = self.tensors.get(name)
        if info is None:
            raise CheckpointError(f"{self.model_dir}: tensor {name!r} is missing from the checkpoint")
        handle = self._handles.get(info.file)
        if handle is None:
            try:
                handle = safe_open(str(info.file), framework="pt", device="cpu")
            except Exception as exc:  # safetensors raises its own error type
                raise CheckpointError(f"{info.file}: cannot open ({exc})") from None
            self._handles[info.file] = handle
        return handle.get_tensor(name)


def _split_shards(state: Mapping[str, torch.Tensor], shards: int) -> list[dict[str, torch.Tensor]]:
    """Split tensors (in order) into ``shards`` groups of roughly equal bytes."""
    total = sum(t.numel() * t.element_size() for t in state.values())
    groups: list[dict[str, torch.Tensor]] = [{} for _ in range(shards)]
    done = 0
    for name, tensor in state.items():
        index = min(shards - 1, int(done * shards / max(total, 1)))
        groups[index][name] = tensor.contiguous()
        done += tensor.numel() * tensor.element_size()
    return [g for g in groups if g]


def make_checkpoint(preset_or_config: str | Mapping[str, Any], out_dir: Path, seed: int = 0,
                    dtype: str | torch.dtype = "float32", shards: int = 1) -> Path:
    """Build a random-weight model (seeded) from a preset name or HF config dict and save it.

    Writes ``config.json`` and ``model.safetensors`` (``shards == 1``) or ``shards`` files plus
    ``model.safetensors.index.json``, the layout ``from_pretrained`` reads. A tied LM head is stored once.
    Returns ``out_dir``. Same arguments give byte-identical tensors.
    """
    from transformers import AutoModelForCausalLM
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = torch_dtype(dtype)
    config = hf_config(config_dict(preset_or_config))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = {k: v for k, v in model.state_dict().items()
             if not (k == "lm_head.weight" and getattr(config, "tie_word_embeddings", False))}
    groups = _split_shards(state, shards)
    if len(groups) == 1:
        save_file(groups[0], str(out_dir / SINGLE_NAME), metadata={"format": "pt"})
    else:
        weight_map: dict[str, str] = {}
        for i, group in enumerate(groups):
            name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
            save_file(group, str(out_dir / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in group})
        total = sum(t.numel() * t.element_size() for t in state.values())
        (out_dir / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total},
                                                      "weight_map": weight_map}, indent=2))
    model.config.dtype = dtype
    model.config.save_pretrained(out_dir)
    log.info("wrote %s checkpoint (%d tensors, %d file(s)) to %s", config.model_type, len(state),
             len(groups), out_dir)
    return out_dir


def cached_checkpoint(preset_or_config: str | Mapping[str, Any], out_dir: Path, seed: int = 0,
                      dtype: str | torch.dtype = "float32") -> Path:
    """``out_dir`` if it already holds a checkpoint (its ``config.json``), else :func:`make_checkpoint` there
    first: random checkpoints made once and reused (calibration, the suite's caches, the replay)."""
    out_dir = Path(out_dir)
    if not (out_dir / "config.json").exists():
        log.info("making random checkpoint %s", out_dir)
        make_checkpoint(preset_or_config, out_dir, seed=seed, dtype=dtype)
    return out_dir
