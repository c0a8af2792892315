"""The training recipe, read top to bottom: `train(cfg)` runs named setup steps, then the Trainer, then the shipping
steps. It is a plain function, so tests call it directly.

    validate -> run dir (resume decision) -> model path -> data pass -> objective's data (SDFT) -> model
    -> reference log-probs (constrained SFT, full fine-tunes) -> LoRA -> Trainer -> train -> final/ + card + summary
"""

from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import TrainingArguments, set_seed

from lookahead.components import build_guard, build_objective, build_preview
from lookahead.data.prepare import TrainingData, prepare_training_data, refilter
from lookahead.data.sampler import LengthGroupedOrder
from lookahead.errors import ConfigError, Interrupted
from lookahead.models.loading import load_model, load_tokenizer, resolve_model_path
from lookahead.models.lora import apply_lora, check_lora_targets, is_lora
from lookahead.objectives.base import PrepareContext
from lookahead.objectives.chunked_head import chunk_tokens_for
from lookahead.objectives.loss import AnswerTokenLoss
from lookahead.objectives.reference import REFERENCE_FILE, cached_seed_logps
from lookahead.shipping.card import hub_id, write_card
from lookahead.training.callbacks import JsonlMetricsCallback, write_metrics_record
from lookahead.training.checkpoints import (
    CheckpointMarker,
    check_same_run,
    check_world_size,
    checkpoint_step,
    clear_leftovers,
    complete_checkpoints,
    raise_checkpoint_write_error,
    resolve_resume,
    truncate_metrics,
)
from lookahead.training.config import training_arguments_kwargs, validate
from lookahead.training.distributed import (
    adopt_slurm_tasks,
    join_process_group,
    launcher_mixed_precision,
    launcher_sharding,
)
from lookahead.training.loggers import finish_experiment_logger, start_experiment_logger
from lookahead.training.runlock import check_process_group, lock_run_dir
from lookahead.training.safeguards import StopRequest
from lookahead.training.summary import last_logged, write_summary
from lookahead.training.trainer import LookaheadTrainer, StepGuard, close_progress_bars

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


def setup_logging(run_dir: Path, is_main_process: bool) -> logging.Handler | None:
    """Main process: console (from Hydra) plus run_dir/train.log. Other ranks: warnings only."""
    import transformers

    root = logging.getLogger()
    if not is_main_process:
        root.setLevel(logging.WARNING)
        transformers.logging.set_verbosity_warning()
        return None
    root.setLevel(logging.INFO)
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root.addHandler(handler)
    return handler


def build_data(cfg: DictConfig, model_path: str) -> TrainingData:
    """Tokenizer, preview and the data pass: everything but the model (also used by scripts/inspect_data.py)."""
    tokenizer = load_tokenizer(cfg.model, model_path)
    return prepare_training_data(cfg, tokenizer, build_preview(cfg.method))


def prepare_run_dir(cfg: DictConfig, state: Any, run_dir: Path) -> Path | None:
    """Decide resume before any work, so a refused start costs nothing; returns the checkpoint to resume from."""
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    resuming = cfg.resume not in (None, False) and (cfg.resume != "auto" or bool(complete_checkpoints(run_dir)))
    check_same_run(run_dir, config_yaml, resuming, CONFIG_FILE)
    resume_from = resolve_resume(run_dir, cfg.resume)
    if resume_from is not None:
        check_world_size(resume_from, state.num_processes)
    state.wait_for_everyone()
    if state.is_main_process:
        clear_leftovers(run_dir)
        (run_dir / CONFIG_FILE).write_text(config_yaml)
    return resume_from


def prepare_objective_data(
    cfg: DictConfig, objective: Any, data: TrainingData, model: Any, model_path: str, state: Any
) -> TrainingData:
    """Let the objective rewrite the training data once (SDFT's rewrites), then run the data pass over it again."""
    context = PrepareContext(
        model=model,
        encoder=data.example_encoder.encoder,
        fingerprint={
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "model_path": model_path,
            "seed": cfg.trainer.seed,
        },
        cache_dir=str(cfg.paths.cache_dir),
        state=state,
    )
    examples, counts = objective.prepare(data.train, context)
    if examples is data.train:
        return data
    data = refilter(data, examples, f"{cfg.dataset.name}/{objective.name}", cfg.dataset.max_skip_fraction)
    data.metrics.update(counts)
    return data


def attach_seed_reference(cfg: DictConfig, data: TrainingData, model: Any, state: Any, run_dir: Path) -> None:
    """A full fine-tune changes the weights themselves: score the data with the seed model once, before training,
    for objectives that need the seed model's log-probs (a LoRA run switches its adapter off instead)."""
    model.to(state.device)
    with state.main_process_first():
        refs = cached_seed_logps(
            run_dir / REFERENCE_FILE,
            model,
            data.collator,
            data.train,
            cfg.trainer.per_device_eval_batch_size,
            state.is_main_process,
            chunk_tokens=chunk_tokens_for(model, int(cfg.trainer.loss_chunk_tokens or 0), announce=False),
        )
    for example, ref in zip(data.train, refs):
        example["ref_logps"] = ref


def build_training_arguments(cfg: DictConfig, run_dir: Path, state: Any) -> TrainingArguments:
    """Built before the model loads: under DeepSpeed ZeRO-3, TrainingArguments registers the ZeRO config with
    transformers, so `from_pretrained` loads each rank's partition (`zero3_init_flag`) instead of the whole model."""
    kwargs = training_arguments_kwargs(cfg, str(run_dir), state.num_processes, launcher_mixed_precision())
    return TrainingArguments(**kwargs)


def build_trainer(
    cfg: DictConfig,
    args: TrainingArguments,
    model: Any,
    data: TrainingData,
    objective: Any,
    guard: Any,
    run_dir: Path,
) -> LookaheadTrainer:
    train_dataset: Any = data.train
    if cfg.trainer.group_by_length:  # a seeded order per epoch: a resumed run sees the same batches
        group = args.train_batch_size * args.gradient_accumulation_steps
        train_dataset = LengthGroupedOrder(data.train, group, seed=args.seed)
    trainer = LookaheadTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=data.eval or None,
        data_collator=data.collator,
        processing_class=data.tokenizer,
        answer_loss=AnswerTokenLoss(
            cfg.trainer.first_k, objective=objective, chunk_tokens=int(cfg.trainer.loss_chunk_tokens or 0)
        ),
        stop_request=StopRequest(),
        guard=guard,
        callbacks=[JsonlMetricsCallback(run_dir / METRICS_FILE)],
    )
    trainer.add_callback(StepGuard(trainer))
    trainer.add_callback(CheckpointMarker(trainer, keep=cfg.trainer.get("save_total_limit")))
    return trainer


def start_metrics(data: TrainingData, run_dir: Path, resume_from: Path | None) -> None:
    metrics_path = run_dir / METRICS_FILE
    if resume_from is not None:
        truncate_metrics(metrics_path, checkpoint_step(resume_from))
        log.info("Resuming from %s", resume_from)
    else:
        metrics_path.unlink(missing_ok=True)
        write_metrics_record(metrics_path, {"step": 0, **data.metrics})


def finish_from_checkpoint(trainer: LookaheadTrainer, checkpoint: Path) -> Any:
    """Resume from a checkpoint at `max_steps`: the run had trained to the end and stopped before writing final/.

    The HF Trainer checks `max_steps` only after a step, so resuming there would train one step more than an
    uninterrupted run (when `max_steps` is not at an epoch's end). Load that checkpoint's weights and state instead.
    """
    from safetensors.torch import load_file
    from transformers import TrainerState
    from transformers.trainer_utils import TrainOutput

    model = trainer.accelerator.unwrap_model(trainer.model)
    adapter = checkpoint / "adapter_model.safetensors"
    if trainer.is_deepspeed_enabled:
        pass  # no engine is built to load into: save_weights copies the checkpoint's consolidated weights to final/
    elif adapter.is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(adapter))
    else:
        from transformers.modeling_utils import load_sharded_checkpoint

        if (checkpoint / "model.safetensors.index.json").is_file():
            load_sharded_checkpoint(model, str(checkpoint), strict=False)
        else:
            unexpected = model.load_state_dict(
                load_file(checkpoint / "model.safetensors"), strict=False
            ).unexpected_keys
            if unexpected:
                raise RuntimeError(f"{checkpoint}: weights the model does not have: {unexpected[:3]}")
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    log.info("Resuming from %s: training had reached max_steps=%d; writing final/", checkpoint, trainer.args.max_steps)
    return TrainOutput(trainer.state.global_step, last_logged(trainer.state.log_history, "loss"), {})


def is_finished(trainer: LookaheadTrainer, resume_from: Path | None) -> bool:
    """Whether the checkpoint to resume from is at `max_steps`: the run trained to the end and stopped before final/."""
    return resume_from is not None and 0 < trainer.args.max_steps <= checkpoint_step(resume_from)


_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_config.json", "config.json", "generation_config.json")


def copy_checkpoint_weights(checkpoint: Path, final_dir: Path) -> list[str]:
    """Under DeepSpeed a run resumed at `max_steps` never builds its engine, so `Trainer.save_model` cannot gather
    weights: final/ takes the finished checkpoint's consolidated weights instead (the 16-bit model ZeRO-3 writes with
    `zero3_save_16bit_model`, or an adapter). Returns the files copied."""
    import shutil

    names = [n for n in _WEIGHT_FILES if (checkpoint / n).is_file()]
    names += sorted(p.name for p in checkpoint.glob("model*.safetensors*"))
    if not any(n.endswith((".safetensors", ".safetensors.index.json")) for n in names):
        raise ConfigError(
            f"{checkpoint}: the run finished there but the checkpoint holds no consolidated weights (DeepSpeed ZeRO-3 "
            "without zero3_save_16bit_model); convert it with its zero_to_fp32.py, or resume from an earlier checkpoint"
        )
    final_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(checkpoint / name, final_dir / name)
    return names


def save_weights(trainer: LookaheadTrainer, final_dir: Path, finished_from: Path | None) -> None:
    """The trained adapter or model into final/; every rank calls it, since the sharded strategies gather together.

    FSDP: the full state dict is gathered (`Accelerator.get_state_dict`) whatever `fsdp_state_dict_type` the
    checkpoints use; `Trainer.save_model` writes nothing under `SHARDED_STATE_DICT`. DeepSpeed resumed at the end:
    the finished checkpoint's weights (`copy_checkpoint_weights`)."""
    if trainer.is_deepspeed_enabled and trainer.deepspeed is None and finished_from is not None:
        if trainer.is_world_process_zero():
            copy_checkpoint_weights(finished_from, final_dir)
    elif trainer.is_fsdp_enabled:
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        if trainer.is_world_process_zero():
            model = trainer.accelerator.unwrap_model(trainer.model)
            model.save_pretrained(str(final_dir), state_dict=state_dict, safe_serialization=True)
    else:
        trainer.save_model(str(final_dir))


def run_training(trainer: LookaheadTrainer, resume_from: Path | None, run_dir: Path, experiment_run: Any) -> Any:
    """`trainer.train()` under the stop-signal handlers; a failed checkpoint write or a signal becomes one error."""
    if is_finished(trainer, resume_from) and not trainer.is_fsdp_enabled:
        return finish_from_checkpoint(trainer, resume_from)
    try:
        with trainer.stop_request.installed():
            result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except BaseException as e:
        close_progress_bars(trainer)
        finish_experiment_logger(experiment_run, {}, exit_code=1)
        if isinstance(e, Exception):
            raise_checkpoint_write_error(e, run_dir, trainer.state.global_step, trainer.args.should_save)
        raise
    if trainer.stopped_by_signal is not None:
        finish_experiment_logger(experiment_run, {}, exit_code=1)
        trainer.accelerator.wait_for_everyone()
        saved = complete_checkpoints(run_dir)
        raise Interrupted(
            f"stopped by {trainer.stop_request.name or 'a signal'} at step {trainer.state.global_step}; saved "
            f"{saved[-1] if saved else 'no checkpoint'}; continue with resume=auto",
            trainer.stopped_by_signal,
        )
    return result


def command_line() -> str | None:
    """The command that reproduces this run: `python train.py` and its overrides (None outside a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # train() called directly, not through the command line
        return None
    return " ".join(["python train.py", *(shlex.quote(o) for o in overrides)])


def make_adapter_portable(final_dir: Path, configured: str | None, loaded_from: str) -> None:
    """Name the base model by its Hub id in adapter_config.json, so the adapter loads on any machine. The weights may
    have come from a local copy (the packaged GGUF, a download folder); where no Hub id is known, keep the local
    path and say so."""
    import json

    path = final_dir / "adapter_config.json"
    if not path.is_file():
        return
    adapter = json.loads(path.read_text())
    base = hub_id(configured)
    if base is None:
        log.warning(
            "adapter_config.json names the base model by the local path %s: the adapter loads only where that path "
            "exists (set model.path to the Hub id to make it portable)",
            adapter.get("base_model_name_or_path"),
        )
        return
    if adapter.get("base_model_name_or_path") != base:
        log.info("adapter_config.json: base model %s (loaded from %s)", base, loaded_from)
        adapter["base_model_name_or_path"] = base
        path.write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n")


def save_final(
    cfg: DictConfig,
    trainer: LookaheadTrainer,
    data: TrainingData,
    result: Any,
    model_path: str,
    run_dir: Path,
    started: float,
    guarded: dict[str, Any] | None = None,
    finished_from: Path | None = None,
) -> dict[str, Any]:
    """final/ (the adapter or model, its tokenizer, config and card) and summary.json; pushed when asked."""
    final_dir = run_dir / "final"
    trainer.model.config.use_cache = True  # the saved model is for inference
    save_weights(trainer, final_dir, finished_from)
    history = trainer.state.log_history
    summary = {
        "run_dir": str(run_dir),
        "final_dir": str(final_dir),
        "metrics": str(run_dir / METRICS_FILE),
        "config": str(run_dir / CONFIG_FILE),
        "base_model": model_path,
        "adapter": is_lora(cfg.lora),
        "method": cfg.method.name,
        "objective": cfg.objective.name,
        "guard": cfg.guard.name,
        "guard_report": guarded or {},
        "global_step": trainer.state.global_step,
        "final_loss": last_logged(history, "loss"),
        "loss_first_k": last_logged(history, "loss_first_k"),
        "loss_rest": last_logged(history, "loss_rest"),
        "train_loss": result.training_loss,
        "train_seconds": round(time.time() - started, 2),
        "data": data.metrics,
    }
    if not trainer.is_world_process_zero():
        return summary
    data.tokenizer.save_pretrained(str(final_dir))
    (final_dir / "lookahead_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if summary["adapter"]:
        make_adapter_portable(final_dir, cfg.model.get("path"), model_path)
    summary["command"] = command_line()
    write_card(final_dir, cfg, summary, kind="adapter" if summary["adapter"] else "full", command=summary["command"])
    write_summary(run_dir, summary)
    if cfg.trainer.get("push_to_hub"):
        from lookahead.shipping.hub import push_folder

        push_folder(final_dir, str(cfg.trainer.hub_model_id), private=bool(cfg.trainer.get("hub_private_repo")))
    kind = "adapter" if summary["adapter"] else "model"
    print(
        f"\nDone: {trainer.state.global_step} steps, final loss {summary['final_loss']}, "
        f"first-{cfg.trainer.first_k}-token loss {summary['loss_first_k']}\n"
        f"  {kind}:  {final_dir}\n  metrics: {run_dir / METRICS_FILE}\n  config:  {run_dir / CONFIG_FILE}\n",
        flush=True,
    )
    return summary


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune as configured; returns the run summary (also written to run_dir/summary.json)."""
    validate(cfg)
    adopt_slurm_tasks()  # srun / submitit tasks without a launcher become ranks of one run
    # Joins the process group under `accelerate launch`; without CUDA that group is gloo over CPU processes.
    state = join_process_group(cfg.trainer.get("ddp_timeout"))
    check_process_group(state)  # a launch whose machines never met: each process a rank 0 of its own
    run_dir = Path(cfg.paths.output_dir)
    is_main = state.is_main_process
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    lock = lock_run_dir(state, run_dir)  # one run dir, one writer; a lock left by a killed run is taken over
    log_file = setup_logging(run_dir, is_main)
    try:
        return _train(cfg, state, run_dir)
    finally:
        if log_file is not None:
            logging.getLogger().removeHandler(log_file)
            log_file.close()
        if lock is not None:
            lock.release()


def _train(cfg: DictConfig, state: Any, run_dir: Path) -> dict[str, Any]:
    set_seed(cfg.trainer.seed)
    resume_from = prepare_run_dir(cfg, state, run_dir)

    with state.main_process_first():  # the GGUF conversion, if any, runs once
        model_path = resolve_model_path(cfg.model, cfg.paths.cache_dir)
    data = build_data(cfg, model_path)
    log.info("Data: %s", data.metrics)
    check_lora_targets(cfg.lora, cfg.model, model_path, data.tokenizer)
    objective = build_objective(cfg.objective)
    args = build_training_arguments(cfg, run_dir, state)

    model = load_model(
        cfg.model,
        model_path,
        data.tokenizer,
        cfg.lora,
        seed=cfg.trainer.seed,
        local_rank=state.local_process_index,
        sharding=launcher_sharding(),
    )
    data = prepare_objective_data(cfg, objective, data, model, model_path, state)
    if objective.needs_reference and not is_lora(cfg.lora):
        attach_seed_reference(cfg, data, model, state, run_dir)
    model = apply_lora(model, cfg.lora, bool(cfg.model.gradient_checkpointing))
    guard = build_guard(cfg.get("guard"))
    guard.prepare(model, is_lora(cfg.lora), device=state.device)
    # Training never reuses a KV cache, and without one transformers can read packed sequences from position_ids.
    model.config.use_cache = False

    trainer = build_trainer(cfg, args, model, data, objective, guard, run_dir)
    if state.is_main_process:
        start_metrics(data, run_dir, resume_from)
    experiment_run = start_experiment_logger(cfg, run_dir, is_main_process=state.is_main_process)

    started = time.time()
    result = run_training(trainer, resume_from, run_dir, experiment_run)
    guarded = guard.finalize(
        trainer.accelerator.unwrap_model(trainer.model), run_dir if state.is_main_process else None
    )
    finished_from = resume_from if is_finished(trainer, resume_from) else None
    summary = save_final(cfg, trainer, data, result, model_path, run_dir, started, guarded, finished_from)
    finish_experiment_logger(experiment_run, summary)
    state.wait_for_everyone()
    return summary
