"""Load the model to evaluate: a training run's output (adapter or full model), or a configured seed model."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lookahead.evaluation.vllm_backend import VllmEngines
from lookahead.models.loading import load_model, load_tokenizer, resolve_model_path
from lookahead.models.runs import NO_LORA, is_adapter, load_adapter_model, read_run

log = logging.getLogger(__name__)


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
    # False: the seed of a LoRA run, i.e. the same model with its adapter switched off (HF: disable_adapter(); vLLM:
    # no LoRARequest). A seed view shares `engines` with the run's, so vLLM serves both from one engine.
    adapter_enabled: bool = True
    engines: VllmEngines = field(default_factory=VllmEngines, repr=False)

    def load_seed(self) -> Any:
        """A separate copy of the seed model (full fine-tunes only; LoRA runs disable their adapter instead), on the
        device of the model under evaluation, so the two can be compared batch by batch."""
        device = next(self.model.parameters()).device
        seed = load_model(self.model_cfg, self.model_path, self.tokenizer, NO_LORA, seed=self.seed, local_rank=0)
        return seed.to(device).eval()


def load_for_evaluation(cfg: DictConfig) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not cfg.get("run_dir"):
        model_path = resolve_model_path(cfg.model, cfg.paths.cache_dir)
        tokenizer = load_tokenizer(cfg.model, model_path)
        model = load_model(cfg.model, model_path, tokenizer, NO_LORA, seed=cfg.seed, local_rank=0)
        return LoadedModel(model.eval(), tokenizer, cfg.model.name, False, cfg.model, model_path, cfg.seed)

    run_dir = Path(cfg.run_dir)
    train_cfg, final, _ = read_run(run_dir)
    tokenizer = AutoTokenizer.from_pretrained(final)
    adapter = is_adapter(final)
    if adapter:
        model, model_path = load_adapter_model(train_cfg, final, tokenizer, cfg.paths.cache_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(final, use_safetensors=True)
        model_path = resolve_model_path(train_cfg.model, cfg.paths.cache_dir)
    log.info("Evaluating %s (%s)", run_dir, "adapter" if adapter else "full model")
    return LoadedModel(
        model.eval(), tokenizer, str(train_cfg.run_name), adapter, train_cfg.model, model_path,
        int(train_cfg.trainer.seed), str(final) if adapter else None,
    )  # fmt: skip
