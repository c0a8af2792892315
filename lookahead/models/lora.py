"""LoRA and QLoRA: which run kind a `lora=` group is, its checks before anything loads, and the adapter."""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig

from lookahead.errors import ConfigError
from lookahead.models.loading import build_tiny_llama

log = logging.getLogger(__name__)


# LoRA targets per architecture: every attention and MLP projection, as QLoRA recommends.
_LORA_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def is_lora(lora_cfg: Any) -> bool:
    """Whether the chosen `lora=` group trains an adapter: its `kind`, never a value such as `r`."""
    return lora_cfg.get("kind", "full" if lora_cfg.get("r") is None else "lora") == "lora"


def check_lora(lora_cfg: Any) -> None:
    """Refuse impossible LoRA values before anything loads (r=0 used to train a full fine-tune silently)."""
    if not is_lora(lora_cfg):
        return

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    checks = [
        ("r", lora_cfg.get("r"), lambda v: number(v) and float(v).is_integer() and v >= 1, "an integer >= 1"),
        ("alpha", lora_cfg.get("alpha"), lambda v: number(v) and v > 0, "a number > 0"),
        ("dropout", lora_cfg.get("dropout"), lambda v: number(v) and 0 <= v < 1, "in [0, 1)"),
    ]
    for key, value, ok, rule in checks:
        if not ok(value):
            raise ConfigError(f"lora.{key}={value!r}: must be {rule} (lora=none trains a full fine-tune)")
    targets = lora_cfg.get("target_modules")
    if targets is not None and not isinstance(targets, str) and not all(isinstance(t, str) and t for t in targets):
        raise ConfigError(f"lora.target_modules={list(targets)!r}: expected module names, all-linear or null")


def check_lora_targets(lora_cfg: Any, model_cfg: DictConfig, model_path: str, tokenizer: Any) -> None:
    """Every name in `lora.target_modules` must name modules of the model: checked on an empty (meta) copy built from
    its config, so a typo stops the run before the weights load."""
    targets = lora_cfg.get("target_modules")
    if not is_lora(lora_cfg) or targets is None or isinstance(targets, str):
        return
    from accelerate import init_empty_weights

    with init_empty_weights():
        if model_cfg.get("tiny") is not None:
            skeleton = build_tiny_llama(model_cfg, tokenizer, seed=0)
        else:
            from transformers import AutoConfig, AutoModelForCausalLM

            config = AutoConfig.from_pretrained(model_path, trust_remote_code=bool(model_cfg.trust_remote_code))
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=bool(model_cfg.trust_remote_code))
    names = {name.rsplit(".", 1)[-1] for name, _ in skeleton.named_modules()} | {n for n, _ in skeleton.named_modules()}
    unknown = [t for t in targets if t not in names]
    if unknown:
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, mod in skeleton.named_modules() if isinstance(mod, torch.nn.Linear)}
        )
        raise ConfigError(f"lora.target_modules: {unknown} are not modules of this model (its linear layers: {linear})")


def apply_lora(model: Any, lora_cfg: DictConfig, gradient_checkpointing: bool) -> Any:
    """Wrap the model with a LoRA adapter (peft); `lora=none` returns it unchanged for a full fine-tune."""
    if not is_lora(lora_cfg):
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if lora_cfg.get("load_in_4bit"):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.enable_input_require_grads()  # so checkpointed blocks see a grad-requiring input with frozen embeddings
    targets = lora_cfg.get("target_modules") or _LORA_TARGETS.get(model.config.model_type, "all-linear")
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=int(lora_cfg.r),
        lora_alpha=int(lora_cfg.alpha),
        lora_dropout=float(lora_cfg.dropout),
        target_modules=list(targets) if not isinstance(targets, str) else targets,
        bias="none",
    )
    model = get_peft_model(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    log.info(
        "LoRA r=%d on %s: %d of %d parameters trainable (%.2f%%)",
        config.r,
        targets,
        trainable,
        total,
        100 * trainable / total,
    )
    return model
