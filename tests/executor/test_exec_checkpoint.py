"""Checkpoints: make_checkpoint round trips through from_pretrained; bad checkpoints fail loudly, early."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from executor.checkpoint import CheckpointReader, make_checkpoint
from executor.cli import main
from executor.engine import run_executor
from executor_helpers import Req, make_plan
from pipeboost.errors import CheckpointError


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_sharded_checkpoint_loads_in_transformers(model_dirs):
    from transformers import AutoModelForCausalLM
    model_dir = model_dirs("llama-tiny")
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 2
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    reader = CheckpointReader(model_dir)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reader.get(name), tensor), name


def test_make_checkpoint_is_deterministic_and_cli_works(tmp_path):
    a = make_checkpoint("opt-tiny", tmp_path / "a", seed=7)
    assert main(["make-checkpoint", "--preset", "opt-tiny", "--out", str(tmp_path / "b"), "--seed", "7"]) == 0
    ta, tb = load_file(a / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert "lm_head.weight" not in ta  # tied head stored once
    c = make_checkpoint("opt-tiny", tmp_path / "c", seed=8, dtype="bfloat16")
    tc = load_file(c / "model.safetensors")
    assert tc["model.decoder.embed_tokens.weight"].dtype == torch.bfloat16


def _run_bad(model_dir: Path) -> None:
    run_executor(make_plan(4, (0, 2, 4)), model_dir, [Req(0, 0.0, 4, 2)], [], devices="cpu:2")


def test_truncated_shard_names_file_and_tensor(model_dirs, tmp_path):
    bad = _copy(model_dirs("opt-tiny"), tmp_path / "bad")
    shard = sorted(bad.glob("*.safetensors"))[-1]
    data = shard.read_bytes()
    shard.write_bytes(data[:-1000])
    with pytest.raises(CheckpointError, match=rf"{shard.name}.*tensor '.*' is truncated"):
        _run_bad(bad)


def test_missing_tensor_names_it(model_dirs, tmp_path):
    bad = _copy(model_dirs("opt-tiny"), tmp_path / "bad")
    name = "model.decoder.layers.2.fc1.weight"
    shard = bad / json.loads((bad / "model.safetensors.index.json").read_text())["weight_map"][name]
    tensors = load_file(shard)
    del tensors[name]
    save_file(tensors, str(shard))
    with pytest.raises(CheckpointError, match="layers.2.fc1.weight.*missing"):
        _run_bad(bad)


@pytest.mark.parametrize("change", ["dtype", "shape"])
def test_wrong_dtype_or_shape_names_file_and_tensor(model_dirs, tmp_path, change):
    bad = _copy(model_dirs("opt-tiny"), tmp_path / "bad")
    name = "model.decoder.layers.1.self_attn.q_proj.weight"
    shard = bad / json.loads((bad / "model.safetensors.index.json").read_text())["weight_map"][name]
    tensors = load_file(shard)
    tensors[name] = tensors[name].half() if change == "dtype" else tensors[name][:, :32].contiguous()
    save_file(tensors, str(shard))
    with pytest.raises(CheckpointError, match=rf"{shard.name}: tensor '{name}' has {change}"):
        _run_bad(bad)


def test_garbage_header_and_missing_files(tmp_path, model_dirs):
    bad = _copy(model_dirs("llama-tiny"), tmp_path / "bad")
    shard = sorted(bad.glob("*.safetensors"))[0]
    shard.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(CheckpointError, match=shard.name):
        CheckpointReader(bad)
    shard.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        CheckpointReader(bad)
    with pytest.raises(CheckpointError, match="config"):
        CheckpointReader(tmp_path / "nothing")
