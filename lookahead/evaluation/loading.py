"""Load the model to evaluate: a training run's output (adapter or full model), or a configured seed model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lookahead.errors import ConfigError
from lookahead.models.loading import load_model, load_tokenizer, resolve_model_path

log = logging.getLogger(__name__)

_NO_LORA = OmegaConf.create({"r": None})


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    is_adapter: bool
    model_cfg: DictConfig
    model_path: str
    seed: int
    adapter_dir: str | None = None  # a LoRA run's final/ folder

    def load_seed(self) -> Any:
        """A separate copy of the seed model (full fine-tunes only; LoRA runs disable their adapter instead), on the
        device of the model under evaluation, so the two can be compared batch by batch."""
        device = next(self.model.parameters()).device
        seed = load_model(self.model_cfg, self.model_path, self.tokenizer, _NO_LORA, seed=self.seed, local_rank=0)
        return seed.to(device).eval()


def load_for_evaluation(cfg: DictConfig) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not cfg.get("run_dir"):
        model_path = resolve_model_path(cfg.model, cfg.paths.cache_dir)
        tokenizer = load_tokenizer(cfg.model, model_path)
        model = load_model(cfg.model, model_path, tokenizer, _NO_LORA, seed=cfg.seed, local_rank=0)
        return LoadedModel(model.eval(), tokenizer, cfg.model.name, False, cfg.model, model_path, cfg.seed)

    run_dir = Path(cfg.run_dir)
    final, config_path = run_dir / "final", run_dir / "config.yaml"
    if not final.is_dir() or not config_path.is_file():
        raise ConfigError(f"run_dir={run_dir}: not a finished training run (needs final/ and config.yaml)")
    train_cfg = OmegaConf.load(config_path)
    model_path = resolve_model_path(train_cfg.model, cfg.paths.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(final)
    seed = int(train_cfg.trainer.seed)
    if (final / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_model(train_cfg.model, model_path, tokenizer, _NO_LORA, seed=seed, local_rank=0)
        model = PeftModel.from_pretrained(base, final)
        is_adapter = True
    else:
        model = AutoModelForCausalLM.from_pretrained(final, use_safetensors=True)
        is_adapter = False
    log.info("Evaluating %s (%s)", run_dir, "adapter" if is_adapter else "full model")
    adapter_dir = str(final) if is_adapter else None
    return LoadedModel(
        model.eval(), tokenizer, str(train_cfg.run_name), is_adapter, train_cfg.model, model_path, seed, adapter_dir
    )
