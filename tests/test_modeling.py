"""Model loading: tiny models, LoRA targets, QLoRA placement, and the shipped accelerate configs."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lookahead.errors import ConfigError
from lookahead.models.loading import build_tiny_llama, load_model, quantization_kwargs
from lookahead.models.lora import apply_lora
from tests.conftest import compose, load_tokenizer

QLORA = OmegaConf.create(
    {
        "r": 16,
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "bfloat16",
    }
)


def test_qlora_without_cuda_fails_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="lora=qlora needs a CUDA GPU.*lora=lora"):
        quantization_kwargs(QLORA, local_rank=0)


def test_qlora_places_each_rank_on_its_own_gpu(monkeypatch):
    """bitsandbytes cannot shard a quantized model across a rank's GPUs: one device per process."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    kwargs = quantization_kwargs(QLORA, local_rank=3)
    assert kwargs["device_map"] == {"": 3}
    q = kwargs["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.bfloat16


def test_lora_without_4bit_needs_no_quantization():
    assert quantization_kwargs(OmegaConf.create({"r": 8}), local_rank=0) == {}


class TestTinyModel:
    def test_tiny_llama_is_deterministic_and_sized_to_the_tokenizer(self):
        cfg = compose(["model=tiny"]).model
        tokenizer = load_tokenizer("llama3-style")
        a, b = build_tiny_llama(cfg, tokenizer, seed=1), build_tiny_llama(cfg, tokenizer, seed=1)
        assert a.config.vocab_size == len(tokenizer)
        for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(pa, pb), name
        c = build_tiny_llama(cfg, tokenizer, seed=2)
        assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)

    def test_lora_targets_every_projection_and_freezes_the_base(self):
        cfg = compose(["model=tiny", "lora=lora"])
        model = apply_lora(build_tiny_llama(cfg.model, load_tokenizer("chatml-style"), 0), cfg.lora, False)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n for n in trainable)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
            assert any(f"{proj}.lora_A" in n for n in trainable), proj

    def test_lora_none_is_a_full_finetune(self):
        cfg = compose(["model=tiny", "lora=none"])
        model = apply_lora(build_tiny_llama(cfg.model, load_tokenizer("chatml-style"), 0), cfg.lora, False)
        assert all(p.requires_grad for p in model.parameters())


def test_unknown_model_path_is_a_config_error(tmp_path):
    cfg = compose(["model=llama3", f"model.path={tmp_path}/missing"])
    with pytest.raises(ConfigError, match="model.path=.*missing.*cannot load"):
        load_model(cfg.model, cfg.model.path, None, cfg.lora, seed=0, local_rank=0)
