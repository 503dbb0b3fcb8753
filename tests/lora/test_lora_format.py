"""PEFT adapter files: write/read round trip and bad adapters rejected with exact messages."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from executor.lora import base_model_spec, make_adapter, read_adapter
from pipeboost.errors import CheckpointError
from pipeboost.lora import read_adapter_config

Q0A = "base_model.model.model.decoder.layers.0.self_attn.q_proj.lora_A.weight"


@pytest.fixture()
def adapter(tmp_path: Path) -> Path:
    return make_adapter("opt-tiny", tmp_path / "ad", rank=4, alpha=8.0, target_modules=("q_proj", "v_proj"), seed=5)


def test_round_trip(adapter: Path, tmp_path: Path):
    base = base_model_spec("opt-tiny")
    read = read_adapter(adapter, base)
    cfg = read_adapter_config(adapter)
    assert (cfg.spec.rank, cfg.spec.alpha, cfg.spec.target_modules, cfg.base_model) == \
        (4, 8.0, ("q_proj", "v_proj"), "opt-tiny")
    assert read.scale == 2.0 and len(read.weights) == base.num_layers * 2
    a, b = read.weights[(0, "q_proj")]
    assert a.shape == (4, base.hidden_size) and b.shape == (base.hidden_size, 4)
    on_disk = load_file(str(adapter / "adapter_model.safetensors"))
    assert torch.equal(on_disk[Q0A], a)
    again = make_adapter("opt-tiny", tmp_path / "ad2", rank=4, alpha=8.0, target_modules=("q_proj", "v_proj"),
                         seed=5)
    assert (again / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()


def test_missing_weights_file(adapter: Path):
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"{adapter}/adapter_model.safetensors: adapter weights "
                                                        "file is missing")):
        read_adapter(adapter, base_model_spec("opt-tiny"))


def test_missing_config(adapter: Path):
    (adapter / "adapter_config.json").unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"{adapter}/adapter_config.json: cannot read adapter "
                                                        "config (No such file or directory)")):
        read_adapter(adapter, base_model_spec("opt-tiny"))


def test_missing_tensor(adapter: Path):
    path = adapter / "adapter_model.safetensors"
    tensors = load_file(str(path))
    del tensors[Q0A]
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: tensor '{Q0A}' is missing from the adapter")):
        read_adapter(adapter, base_model_spec("opt-tiny"))


def test_wrong_shape(adapter: Path):
    path = adapter / "adapter_model.safetensors"
    tensors = load_file(str(path))
    name = Q0A.replace("lora_A", "lora_B")
    tensors[name] = torch.zeros(3, 4)
    save_file(tensors, str(path))
    hidden = base_model_spec("opt-tiny").hidden_size
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: tensor '{name}' has shape [3, 4], "
                                                        f"expected [{hidden}, 4]") + "$"):
        read_adapter(adapter, base_model_spec("opt-tiny"))


def test_adapter_for_another_base_names_both_hidden_sizes(tmp_path: Path):
    from pipeboost.model_config import preset_config
    config = preset_config("opt-tiny")
    config.update(hidden_size=config["hidden_size"] * 2, word_embed_proj_dim=config["hidden_size"] * 2,
                  ffn_dim=config["ffn_dim"])
    ad = make_adapter(config, tmp_path / "wide", rank=4, alpha=8.0, seed=1)
    hidden = base_model_spec("opt-tiny").hidden_size
    path = ad / "adapter_model.safetensors"
    with pytest.raises(CheckpointError, match=re.escape(
            f"{path}: tensor '{Q0A}' has shape [4, {2 * hidden}], expected [4, {hidden}] (adapter made for "
            f"another base model: input size {2 * hidden}, base has {hidden}; base hidden size {hidden})")):
        read_adapter(ad, base_model_spec("opt-tiny"))


def test_unknown_target_module(adapter: Path):
    cfg_path = adapter / "adapter_config.json"
    data = json.loads(cfg_path.read_text())
    data["target_modules"] = ["q_proj", "gate_proj"]
    cfg_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=re.escape(f"{cfg_path}: target_modules: 'gate_proj' is not a opt "
                                                        "layer module (use fc1, fc2, k_proj, out_proj, q_proj, "
                                                        "v_proj)")):
        read_adapter(adapter, base_model_spec("opt-tiny"))


def test_bad_rank_in_config(adapter: Path):
    cfg_path = adapter / "adapter_config.json"
    data = json.loads(cfg_path.read_text())
    data["r"] = 0
    cfg_path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=re.escape(f"{cfg_path}: r: 0 is not a positive integer")):
        read_adapter(adapter, base_model_spec("opt-tiny"))


def test_request_naming_unknown_adapter_is_rejected(adapter: Path, tmp_path: Path):
    from lora_helpers import AReq, two_stage_plan

    from executor.checkpoint import make_checkpoint
    from executor.engine import run_executor
    model = make_checkpoint("opt-tiny", tmp_path / "m", seed=0)
    shutil.copytree(adapter, tmp_path / "copy")
    with pytest.raises(CheckpointError, match=re.escape("request 0 names adapter 'zz' but no adapter folder was "
                                                        "given for it (given: a)")):
        run_executor(two_stage_plan(), model, [AReq(0, 0.0, 4, 2, "zz")], adapters={"a": tmp_path / "copy"})
