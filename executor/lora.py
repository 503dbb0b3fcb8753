"""PEFT LoRA adapters for the executor: make seeded random ones, read and validate them.

An adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (names and shapes in
:mod:`pipeboost.lora`). :func:`read_adapter` checks everything before anything is loaded: the config, the
weights file, and every ``lora_A`` / ``lora_B`` tensor of every decoder layer and target module (present,
dtype, shape). A problem raises :class:`CheckpointError` naming the file and the tensor. An adapter made for
another base model shows as a shape mismatch whose message names both hidden sizes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import save_file

from executor.checkpoint import _read_header
from executor.hf import config_dict, torch_dtype
from pipeboost.errors import CheckpointError
from pipeboost.lora import (WEIGHTS_NAME, AdapterConfig, check_modules, expected_tensors, read_adapter_config,
                            tensor_name, write_adapter_config)
from pipeboost.model_config import model_spec_from_hf_config
from pipeboost.spec import ModelSpec
from pipeboost.workload import AdapterSpec

log = logging.getLogger(__name__)

INIT_STD = 0.1
"""Standard deviation of random A and B (PEFT initialises B to zero; tests need a visible effect)."""


@dataclass(frozen=True)
class LoraAdapter:
    """A validated adapter: its config and CPU tensors ``{(layer, module): (A (r, in), B (out, r))}``."""

    name: str
    config: AdapterConfig
    weights: Mapping[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]
    path: Path

    @property
    def scale(self) -> float:
        """``alpha / r``."""
        return self.config.scale

    @property
    def target_modules(self) -> tuple[str, ...]:
        return self.config.spec.target_modules

    def layer_bytes(self, layer: int) -> int:
        """Bytes of layer ``layer``'s A and B tensors."""
        return sum(a.numel() * a.element_size() + b.numel() * b.element_size()
                   for (lay, _m), (a, b) in self.weights.items() if lay == layer)


def base_model_spec(base_config: str | Mapping[str, Any], dtype: str = "float32") -> ModelSpec:
    """ModelSpec of a preset name or HF config dict (shapes of the base the adapter attaches to)."""
    data = config_dict(base_config)
    return model_spec_from_hf_config(data, data.get("_name_or_path") or "base", dtype)


def make_adapter(base_config: str | Mapping[str, Any], out_dir: Path, rank: int = 8, alpha: float = 16.0,
                 target_modules: tuple[str, ...] | list[str] = ("q_proj", "v_proj"), seed: int = 0,
                 dtype: str = "float32") -> Path:
    """Write a seeded random PEFT adapter for ``base_config`` (preset name or HF config dict) to ``out_dir``.

    A and B are normal with std :data:`INIT_STD`; same arguments give byte-identical files. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = base_model_spec(base_config, dtype)
    spec = AdapterSpec(out_dir.name, rank, float(alpha), tuple(target_modules))
    check_modules(model, spec, out_dir)
    gen = torch.Generator().manual_seed(seed)
    tensors = {name: (torch.randn(shape, generator=gen) * INIT_STD).to(torch_dtype(dtype)).contiguous()
               for name, shape in expected_tensors(model, spec).items()}
    save_file(tensors, str(out_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    base_name = base_config if isinstance(base_config, str) else dict(base_config).get("_name_or_path")
    write_adapter_config(AdapterConfig(spec, base_name), out_dir)
    log.info("wrote adapter %s (r=%d, %d tensors) to %s", spec.name, rank, len(tensors), out_dir)
    return out_dir


def _shape_error(path: Path, name: str, got: tuple[int, ...], want: tuple[int, int], model: ModelSpec) -> str:
    text = f"{path}: tensor {name!r} has shape {list(got)}, expected {list(want)}"
    if name.endswith("lora_A.weight") and len(got) == 2 and got[0] == want[0] and got[1] != want[1]:
        text += f" (adapter made for another base model: input size {got[1]}, base has {want[1]}; " \
                f"base hidden size {model.hidden_size})"
    return text


def read_adapter(adapter_dir: Path, base: ModelSpec, name: str | None = None,
                 dtype: torch.dtype = torch.float32) -> LoraAdapter:
    """Read and validate the adapter in ``adapter_dir`` against base model ``base``; tensors as ``dtype``.

    Raises :class:`CheckpointError` (file and tensor named) for a missing or unreadable file, an unknown
    target module, or a missing, wrong-dtype or wrong-shape tensor.
    """
    adapter_dir = Path(adapter_dir)
    config = read_adapter_config(adapter_dir, name)
    path = adapter_dir / WEIGHTS_NAME
    if not path.exists():
        raise CheckpointError(f"{path}: adapter weights file is missing")
    check_modules(base, config.spec, adapter_dir / "adapter_config.json")
    infos = _read_header(path)
    from safetensors import safe_open
    weights: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        for layer in range(base.num_layers):
            for module in config.spec.target_modules:
                pair = []
                for which in ("A", "B"):
                    tname = tensor_name(base.family, layer, module, which)
                    want = expected_tensors_of(base, config.spec, tname)
                    info = infos.get(tname)
                    if info is None:
                        raise CheckpointError(f"{path}: tensor {tname!r} is missing from the adapter")
                    if info.shape != want:
                        raise CheckpointError(_shape_error(path, tname, info.shape, want, base))
                    if info.dtype != dtype:
                        raise CheckpointError(f"{path}: tensor {tname!r} has dtype {info.dtype}, expected {dtype}")
                    pair.append(handle.get_tensor(tname))
                weights[(layer, module)] = (pair[0], pair[1])
    return LoraAdapter(config.spec.name, config, weights, adapter_dir)


def expected_tensors_of(base: ModelSpec, spec: AdapterSpec, tname: str) -> tuple[int, int]:
    """Expected shape of tensor ``tname`` (cached per spec: computing all names once per adapter)."""
    key = (base, spec)
    table = _EXPECTED.get(key)
    if table is None:
        table = _EXPECTED[key] = expected_tensors(base, spec)
    return table[tname]


_EXPECTED: dict[tuple[ModelSpec, AdapterSpec], dict[str, tuple[int, int]]] = {}
