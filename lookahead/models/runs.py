"""A finished training run, read back: its config, `final/` folder and summary, and its LoRA adapter on the seed
model. Evaluation, export and the post-hoc guards all open runs here, so they agree on what a run is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lookahead.errors import ConfigError
from lookahead.models.loading import load_model, resolve_model_path

# The seed model as it was before LoRA: no adapter, no quantization (a QLoRA run's seed comes back in 16 bits).
NO_LORA = OmegaConf.create({"r": None})


def read_run(run_dir: Path) -> tuple[Any, Path, dict[str, Any]]:
    """(training config, final/ folder, summary) of a finished run; a clear error for anything else."""
    final, config_path = run_dir / "final", run_dir / "config.yaml"
    if not final.is_dir() or not config_path.is_file():
        raise ConfigError(f"run_dir={run_dir}: not a finished training run (needs final/ and config.yaml)")
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return OmegaConf.load(config_path), final, summary


def is_adapter(final: Path) -> bool:
    """Whether a run's final/ holds a LoRA adapter (else: a full fine-tune's weights)."""
    return (final / "adapter_config.json").is_file()


def load_adapter_model(
    train_cfg: Any, final: Path, tokenizer: Any, cache_dir: str, model_cfg: Any = None
) -> tuple[Any, str]:
    """(the run's seed model with final/'s adapter on top, as a PeftModel; the seed's resolved path). `model_cfg`
    replaces the run's model settings (export: another dtype)."""
    from peft import PeftModel

    model_cfg = train_cfg.model if model_cfg is None else model_cfg
    model_path = resolve_model_path(model_cfg, cache_dir)
    base = load_model(model_cfg, model_path, tokenizer, NO_LORA, seed=int(train_cfg.trainer.seed), local_rank=0)
    return PeftModel.from_pretrained(base, final), model_path
