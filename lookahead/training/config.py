"""Config checks at the boundary, and the translation of `cfg.trainer` into HF TrainingArguments."""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from lookahead.errors import ConfigError

LOGGERS = ("wandb", "tensorboard", "none")

log = logging.getLogger(__name__)

# cfg.trainer keys that are ours, not TrainingArguments fields.
_OWN_TRAINER_KEYS = {
    "max_seq_length",
    "effective_batch_size",
    "first_k",
    "pad_to_multiple_of",
    "packing",
    "padding_free",
    "group_by_length",
    "loss_chunk_tokens",
    # Rotation runs in lookahead's on_save callback, after a checkpoint is marked complete (never the best one).
    "save_total_limit",
    # The HF Trainer would push the run dir's root with its own card; lookahead pushes final/ itself.
    "push_to_hub",
    "hub_model_id",
    "hub_private_repo",
}


def validate(cfg: DictConfig) -> None:
    """Refuse values that would otherwise fail late or, worse, train silently wrong."""
    t = cfg.trainer
    if t.get("packing") is not None:  # the old name of padding_free (TRL's name for it)
        log.warning("trainer.packing is deprecated: it is now trainer.padding_free (set to %s)", bool(t.packing))
        with open_dict(t):
            t.padding_free = bool(t.packing)
            t.packing = None
    chunk = t.get("loss_chunk_tokens")
    if chunk is not None and (not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 0):
        raise ConfigError(f"trainer.loss_chunk_tokens={chunk!r}: expected a whole number >= 0 (0: full logits)")
    checks = [
        ("trainer.learning_rate", t.learning_rate, lambda v: v > 0, "must be > 0"),
        ("trainer.per_device_train_batch_size", t.per_device_train_batch_size, lambda v: v >= 1, "must be >= 1"),
        ("trainer.gradient_accumulation_steps", t.gradient_accumulation_steps, lambda v: v >= 1, "must be >= 1"),
        ("trainer.max_seq_length", t.max_seq_length, lambda v: v >= 2, "must be >= 2"),
        ("trainer.first_k", t.first_k, lambda v: v >= 1, "must be >= 1"),
        ("trainer.num_train_epochs", t.num_train_epochs, lambda v: v > 0, "must be > 0"),
    ]
    for key, value, ok, rule in checks:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected a number that {rule}")
        if not ok(value):
            raise ConfigError(f"{key}={value!r}: {rule}")
    if t.get("use_liger_kernel"):
        import importlib.util

        if not torch.cuda.is_available():
            raise ConfigError("trainer.use_liger_kernel=true needs a CUDA GPU; leave it false on CPU")
        if importlib.util.find_spec("liger_kernel") is None:
            raise ConfigError("trainer.use_liger_kernel=true needs `pip install liger-kernel`")
    from lookahead.models.lora import check_lora, is_lora

    check_lora(cfg.lora)
    from lookahead.models.loading import check_model

    check_model(cfg.model, cfg.lora)
    if t.get("push_to_hub") and not t.get("hub_model_id"):
        raise ConfigError("trainer.push_to_hub=true needs trainer.hub_model_id=<org/name>")
    if t.bf16 and t.fp16:
        raise ConfigError("trainer.bf16=true and trainer.fp16=true: choose one")
    # Build the preview and the objective once here, so their own checks (and the old spelling method=sdft /
    # method=constrained_sft, which names the new one) stop the run before any data or model loads.
    from lookahead.components import build_guard, build_objective, build_preview

    build_preview(cfg.method)
    build_objective(cfg.get("objective"))
    guard = build_guard(cfg.get("guard"))
    if guard.name == "safe_lora" and not is_lora(cfg.lora):
        raise ConfigError("guard=safe_lora projects a LoRA update: use lora=lora or lora=qlora (or guard=asft)")
    if cfg.logger.name not in LOGGERS:
        raise ConfigError(f"logger={cfg.logger.name!r}: expected one of {list(LOGGERS)}")
    if cfg.resume not in (None, False, "auto") and not isinstance(cfg.resume, str):
        raise ConfigError(f"resume={cfg.resume!r}: expected null, auto or a checkpoint path")


def batch_layout(trainer_cfg: DictConfig, world_size: int) -> tuple[int, int]:
    """(per-device batch, accumulation steps). With `effective_batch_size`, accumulation is derived so a recipe keeps
    its batch at any process count; where the processes alone exceed it at the configured per-device batch (the
    paper's 64 at 16 per device on 8 GPUs), the per-device batch shrinks to effective / processes."""
    per_device = int(trainer_cfg.per_device_train_batch_size)
    effective = trainer_cfg.get("effective_batch_size")
    if effective is None:
        return per_device, int(trainer_cfg.gradient_accumulation_steps)
    if effective % world_size:
        raise ConfigError(
            f"trainer.effective_batch_size={effective} is not a multiple of the {world_size} processes; change it or "
            "the process count"
        )
    if per_device * world_size > effective:
        log.warning(
            "trainer.effective_batch_size=%d on %d processes: per-device batch %d instead of %d",
            effective,
            world_size,
            effective // world_size,
            per_device,
        )
        per_device = effective // world_size
    per_step = per_device * world_size
    if effective % per_step:
        raise ConfigError(
            f"trainer.effective_batch_size={effective} is not a multiple of per_device_train_batch_size x processes "
            f"= {per_step}; change one of them"
        )
    return per_device, effective // per_step


def adopt_launcher_precision(kwargs: dict[str, Any], launcher_precision: str | None) -> None:
    """A launcher's mixed precision (`accelerate launch` with mixed_precision: bf16) becomes the run's, so the Trainer
    and DeepSpeed agree: transformers refuses a DeepSpeed bf16 config with `bf16=false`. A conflict is an error."""
    launcher = launcher_precision or "no"
    chosen = "bf16" if kwargs.get("bf16") else "fp16" if kwargs.get("fp16") else None
    if chosen and launcher not in ("no", chosen):
        raise ConfigError(
            f"trainer.{chosen}=true but the launcher's mixed_precision is {launcher}: set one of them to match the "
            "other"
        )
    if chosen or launcher == "no":
        return
    if launcher not in ("bf16", "fp16"):
        raise ConfigError(f"the launcher's mixed_precision={launcher!r}: lookahead trains in bf16 or fp16")
    log.info("trainer.%s=true, from the launcher's mixed_precision", launcher)
    kwargs[launcher] = True


def training_arguments_kwargs(
    cfg: DictConfig, run_dir: str, world_size: int, launcher_precision: str | None = None
) -> dict[str, Any]:
    """Keyword arguments for `transformers.TrainingArguments`, from `cfg.trainer`, the logger choice and the
    launcher's mixed precision (accelerate's `ACCELERATE_MIXED_PRECISION`, read by the caller)."""
    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs = {k: v for k, v in t.items() if k not in _OWN_TRAINER_KEYS}
    kwargs["per_device_train_batch_size"], kwargs["gradient_accumulation_steps"] = batch_layout(cfg.trainer, world_size)
    adopt_launcher_precision(kwargs, launcher_precision)
    report_to = {"wandb": ["wandb"], "tensorboard": ["tensorboard"], "none": []}[cfg.logger.name]
    if cfg.logger.name == "wandb" and cfg.logger.mode == "disabled":
        report_to = []
    kwargs.update(
        output_dir=run_dir,
        report_to=report_to,
        run_name=cfg.run_name,
        remove_unused_columns=False,  # the collator needs the raw "messages"
        activation_checkpointing=bool(cfg.model.gradient_checkpointing),
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.model.gradient_checkpointing else None,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        eval_strategy="steps" if cfg.dataset.eval_size and kwargs.get("eval_steps") else "no",
    )
    if cfg.trainer.group_by_length:  # the dataset holds a seeded length-grouped order per epoch; read it in order
        kwargs["train_sampling_strategy"] = "sequential"
    return kwargs
