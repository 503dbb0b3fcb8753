"""ModelSpec byte counts equal the parameters of the transformers model built from the same config."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pipeboost.model_config import MODEL_PRESETS, model_spec_from_hf_config, preset_config  # noqa: E402
from pipeboost.spec import EMBED_UNIT  # noqa: E402

TINY_CONFIGS = {
    "opt": {"model_type": "opt", "num_hidden_layers": 3, "hidden_size": 32, "num_attention_heads": 4,
            "ffn_dim": 80, "vocab_size": 97, "max_position_embeddings": 64, "word_embed_proj_dim": 32},
    "opt-proj": {"model_type": "opt", "num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
                 "ffn_dim": 64, "vocab_size": 50, "max_position_embeddings": 40, "word_embed_proj_dim": 16},
    "llama": {"model_type": "llama", "num_hidden_layers": 3, "hidden_size": 48, "num_attention_heads": 6,
              "num_key_value_heads": 2, "intermediate_size": 72, "vocab_size": 101,
              "max_position_embeddings": 64, "tie_word_embeddings": False},
    "llama-tied-bias": {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
                        "num_key_value_heads": 4, "intermediate_size": 40, "vocab_size": 60,
                        "max_position_embeddings": 32, "tie_word_embeddings": True, "attention_bias": True,
                        "mlp_bias": True},
    "mistral": {"model_type": "mistral", "num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 48, "vocab_size": 70,
                "max_position_embeddings": 32, "tie_word_embeddings": False},
    "qwen2": {"model_type": "qwen2", "num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 48, "vocab_size": 70,
              "max_position_embeddings": 32, "tie_word_embeddings": False},
}


def _build(config_dict):
    config = transformers.AutoConfig.for_model(**config_dict)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config)


def _decoder_layers(model):
    inner = model.model
    return inner.decoder.layers if hasattr(inner, "decoder") else inner.layers


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_spec_bytes_equal_transformers_parameters(name):
    config = TINY_CONFIGS[name]
    model = _build(config)
    spec = model_spec_from_hf_config(config, name, dtype="float32")
    total = sum(p.numel() for p in model.parameters())  # tied weights are counted once by parameters()
    assert spec.total_params() == total
    assert spec.total_bytes == total * 4
    for layer in _decoder_layers(model):
        assert spec.layer_params() == sum(p.numel() for p in layer.parameters())


def test_unit_bytes_sum_to_replica_and_exceed_checkpoint_only_by_tied_head():
    spec = model_spec_from_hf_config(preset_config("opt-1.3b"), "opt-1.3b")
    units = list(spec.units())
    assert units[0] == EMBED_UNIT and units[-1] == spec.num_layers
    tied = spec.vocab_size * spec.hidden_size * spec.dtype_bytes
    assert spec.replica_bytes == spec.total_bytes + tied


@pytest.mark.parametrize("preset,billions", [("opt-1.3b", 1.316), ("opt-6.7b", 6.658), ("llama-2-7b", 6.738),
                                            ("llama-2-70b", 68.98), ("llama-3-8b", 8.030),
                                            ("smollm2-135m", 0.1345)])
def test_presets_have_published_parameter_counts(preset, billions):
    spec = model_spec_from_hf_config(preset_config(preset), preset)
    assert spec.total_params() / 1e9 == pytest.approx(billions, rel=1e-3)


def test_every_preset_builds_a_spec():
    for name in MODEL_PRESETS:
        spec = model_spec_from_hf_config(preset_config(name), name)
        assert spec.total_bytes > 0 and spec.num_layers >= 1


def test_unsupported_architecture_is_rejected_with_its_name():
    with pytest.raises(ValueError, match="model_type 'gpt2' not supported"):
        model_spec_from_hf_config({"model_type": "gpt2"})
