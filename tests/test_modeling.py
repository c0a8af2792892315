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


def test_qlora_on_cpu_loads_4_bit_on_the_cpu(monkeypatch):
    """bitsandbytes runs NF4 on CPU: QLoRA no longer refuses a machine without CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert quantization_kwargs(QLORA, local_rank=0)["device_map"] == {"": "cpu"}


class TestQloraRuns:
    def test_qlora_on_the_tiny_model_loads_4_bit_through_the_real_load_path(self):
        """`lora=qlora model=tiny` used to build the random model directly and train plain, unquantized LoRA."""
        cfg = compose(["model=tiny", "lora=qlora"])
        model = load_model(cfg.model, "", load_tokenizer("chatml-style"), cfg.lora, seed=0, local_rank=0)
        kinds = {type(m).__name__ for m in model.modules()}
        assert "Linear4bit" in kinds and model.is_loaded_in_4bit
        lora = apply_lora(model, cfg.lora, False)
        ids = torch.tensor([[5, 6, 7, 8, 9]])
        loss = lora(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = [p.grad for n, p in lora.named_parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)

    def test_the_tiny_model_loads_the_same_weights_through_from_pretrained(self):
        cfg = compose(["model=tiny"])
        tokenizer = load_tokenizer("chatml-style")
        built, loaded = (
            build_tiny_llama(cfg.model, tokenizer, seed=3),
            load_model(cfg.model, "", tokenizer, cfg.lora, seed=3, local_rank=0),
        )
        for (name, a), (_, b) in zip(built.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(a, b), name

    def test_under_fsdp_or_zero3_the_4_bit_weights_are_stored_in_the_compute_dtype(self):
        assert quantization_kwargs(QLORA, 0)["quantization_config"].bnb_4bit_quant_storage == torch.uint8
        for sharding in ("FSDP", "DeepSpeed ZeRO-3"):
            q = quantization_kwargs(QLORA, 0, sharding)["quantization_config"]
            assert q.bnb_4bit_quant_storage == torch.bfloat16

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            (["model.dtype=float7"], r"model.dtype='float7': expected one of \['float32', 'bfloat16'"),
            (["lora=qlora", "lora.bnb_4bit_compute_dtype=int4"], r"lora.bnb_4bit_compute_dtype='int4'"),
            (["lora=qlora", "lora.bnb_4bit_quant_storage=auto"], r"lora.bnb_4bit_quant_storage='auto'"),
        ],
    )
    @pytest.mark.parametrize("model", ["tiny", "smollm2", "llama3"])
    def test_model_settings_are_checked_before_any_load_for_every_source(self, model, overrides, message):
        """`model=tiny model.dtype=float7` ended in a KeyError traceback from inside the tiny model's builder."""
        from lookahead.training.config import validate

        with pytest.raises(ConfigError, match=message):
            validate(compose([f"model={model}", *overrides]))


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
