"""The quantized and low-precision paths users run, end to end on CPU: QLoRA (bitsandbytes NF4 runs on CPU) trained
and exported into a plain model, and bf16 LoRA and full fine-tunes."""

from __future__ import annotations

import math

import pytest
import torch

from lookahead.shipping.export import export_merged
from lookahead.training.recipe import train
from tests.conftest import compose, losses, read_metrics, tiny_overrides

pytestmark = pytest.mark.slow


def run(tmp_path, *extra):
    overrides = [*tiny_overrides(), "trainer.max_steps=2", "trainer.per_device_train_batch_size=4", *extra]
    summary = train(compose(overrides, output_dir=tmp_path / "run"))
    got = losses(read_metrics(tmp_path / "run" / "metrics.jsonl"))
    assert list(got) == [1, 2] and all(math.isfinite(v) for v in got.values()), got
    return summary


def test_qlora_trains_on_cpu_and_exports_a_plain_model(tmp_path):
    from transformers import AutoModelForCausalLM

    summary = run(tmp_path, "lora=qlora", "trainer.learning_rate=0.05")
    assert summary["adapter"] and summary["global_step"] == 2
    out = export_merged(tmp_path / "run", out_dir=tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    assert getattr(model.config, "quantization_config", None) is None
    assert not any("4bit" in type(m).__name__ for m in model.modules())
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # merged into a 16-bit base, never 4-bit
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.isfinite(model(input_ids=ids).logits).all()


@pytest.mark.parametrize("lora", ["lora", "none"])
def test_bf16_weights_and_autocast_train(tmp_path, lora):
    from safetensors.torch import load_file

    summary = run(tmp_path, f"lora={lora}", "model.dtype=bfloat16", "trainer.bf16=true")
    weights = "adapter_model.safetensors" if lora == "lora" else "model.safetensors"
    saved = load_file(tmp_path / "run" / "final" / weights)
    assert saved and all(torch.isfinite(t.float()).all() for t in saved.values())
    if lora == "none":
        assert {t.dtype for t in saved.values()} == {torch.bfloat16}
    assert summary["global_step"] == 2
