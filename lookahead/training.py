"""The training recipe: read top to bottom. `train(cfg)` is a plain function, so tests call it directly."""

from __future__ import annotations

import logging
import math
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from lookahead.callbacks import JsonlMetricsCallback, write_metrics_record
from lookahead.card import hub_id, write_card
from lookahead.chunked_head import capture_hidden, chunk_tokens_for
from lookahead.config import training_arguments_kwargs, validate
from lookahead.data.collator import LookaheadCollator
from lookahead.data.prepare import filter_trainable
from lookahead.data.safety_mix import SAFETY, mix_in_safety
from lookahead.data.sampler import LengthGroupedSampler
from lookahead.data.sources import load_examples, split_train_eval
from lookahead.data.tokenize import ChatEncoder
from lookahead.distributed import adopt_slurm_tasks
from lookahead.errors import LookaheadError
from lookahead.loggers import finish_experiment_logger, start_experiment_logger
from lookahead.loss import AnswerTokenLoss
from lookahead.modeling import apply_lora, check_lora_targets, is_lora, load_model, load_tokenizer, resolve_model_path
from lookahead.objectives import REFERENCE_FILE, ConstrainedSFT, adapter_disabled_logps, cached_seed_logps
from lookahead.preview import preview_by_name
from lookahead.reporting import last_logged, write_summary
from lookahead.rundir import (
    STAGING_DIR,
    check_same_run,
    check_world_size,
    checkpoint_step,
    clear_leftovers,
    complete_checkpoints,
    publish_checkpoint,
    resolve_resume,
    rotate_checkpoints,
    truncate_metrics,
    write_checkpoint_info,
)
from lookahead.safeguards import CheckpointWriteError, Interrupted, StopRequest, TrainingDiverged
from lookahead.sdft import cache_key, rewrite_answers

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"


class LookaheadTrainer(Trainer):
    """The HF Trainer with the answer-token loss (first-k / rest answer losses logged beside it), and safeguards:

    - a NaN or inf loss stops the run at the end of its step, before any checkpoint of it is written;
    - a stop request (SIGINT / SIGTERM) saves a checkpoint at the end of the current step and stops;
    - checkpoints are written to `<run dir>/.staging` and renamed into place when complete.
    """

    def __init__(
        self,
        *args: Any,
        answer_loss: AnswerTokenLoss,
        group_by_length: bool = False,
        stop_request: StopRequest | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, compute_loss_func=answer_loss, **kwargs)
        self.answer_loss = answer_loss
        self.group_by_length = group_by_length
        self.stop_request = stop_request if stop_request is not None else StopRequest()
        self.stopped_by_signal: int | None = None
        self._losses_finite: torch.Tensor | None = None
        self._staging = False
        self.chunk_tokens = self._chunked_head_tokens()

    def _chunked_head_tokens(self) -> int:
        """`trainer.loss_chunk_tokens` when the chunked answer-only head can serve this model, else 0 (full logits)."""
        blocked = None
        if self.is_fsdp_enabled or (
            self.is_deepspeed_enabled and getattr(self.accelerator.state.deepspeed_plugin, "zero_stage", 0) == 3
        ):
            blocked = "its weights are sharded outside the forward pass (FSDP / ZeRO-3)"
        elif self.args.use_liger_kernel:
            blocked = "trainer.use_liger_kernel=true brings its own fused loss"
        return chunk_tokens_for(self.model, self.answer_loss.chunk_tokens, blocked)

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None):
        inputs = dict(inputs)
        reference = inputs.pop("ref_logps", None)  # precomputed for full fine-tunes under constrained_sft
        if self.answer_loss.objective is not None and model.training:
            if reference is None:  # LoRA: the seed model is this model with its adapter switched off
                reference = adapter_disabled_logps(self.accelerator.unwrap_model(model), inputs, self.chunk_tokens)
            self.answer_loss.reference = reference
        if not self.chunk_tokens:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # One position of logits from the model; the loss takes the last hidden state through the chunked head.
        inputs["logits_to_keep"] = 1
        with capture_hidden(self.accelerator.unwrap_model(model)) as hidden_from:
            self.answer_loss.hidden_from = hidden_from
            try:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                self.answer_loss.hidden_from = None

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        finite = torch.isfinite(loss.detach())  # stays on the device: no sync per micro-batch
        self._losses_finite = finite if self._losses_finite is None else self._losses_finite & finite
        return loss

    def check_step(self, control: Any) -> Any:
        """Run by `StepGuard` at the end of each optimizer step, before that step's log and checkpoint."""
        finite = self._losses_finite if self._losses_finite is not None else torch.tensor(True)
        self._losses_finite = None
        signum = float(self.stop_request.signum or 0)
        flags = torch.stack([(~finite).float().to(self.args.device), torch.tensor(signum, device=self.args.device)])
        if self.accelerator.num_processes > 1:
            flags = self.accelerator.reduce(flags, reduction="max")  # one rank's NaN or signal stops every rank
        nonfinite, signum = flags.tolist()
        step = self.state.global_step
        if nonfinite:
            last = complete_checkpoints(self.args.output_dir)
            kept = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written before it"
            raise TrainingDiverged(
                f"the loss became NaN or inf at step {step}; stopped without saving that step, {kept}. Lower "
                "trainer.learning_rate, check the data, or use bf16 instead of fp16, then resume=auto"
            )
        if signum and self.stopped_by_signal is None:
            self.stopped_by_signal = int(signum)
            control.should_save = True
            control.should_training_stop = True
        return control

    def _get_output_dir(self, trial: Any) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING_DIR) if self._staging else run_dir

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Write the checkpoint in the staging folder, then rename it into the run dir and rotate old ones."""
        run_dir = Path(self._get_output_dir(trial))
        name = f"checkpoint-{self.state.global_step}"
        staged = run_dir / STAGING_DIR / name
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                write_checkpoint_info(staged, self.accelerator.num_processes)
        except Exception as e:
            shutil.rmtree(staged, ignore_errors=True)
            last = complete_checkpoints(run_dir)
            kept = f"{last[-1].name} is intact" if last else "there is no earlier checkpoint"
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            raise CheckpointWriteError(
                f"could not write {name} in {run_dir} ({reason}); {kept}. Free space or fix permissions, then "
                "resume=auto"
            ) from e
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()  # every rank has written its part (RNG state, shards)
        if self.args.should_save:
            publish_checkpoint(staged, run_dir)
            rotate_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.group_by_length:
            return super()._get_train_sampler(train_dataset)
        group = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedSampler([ex["length"] for ex in dataset], group, seed=self.args.seed)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Every process reaches this point at the same step, so the reduction below is safe under DDP.
        if "loss" in logs:
            stats = self.answer_loss.pop_stats()
            stats = torch.zeros(4) if stats is None else stats
            stats = self.accelerator.reduce(stats.to(self.args.device), reduction="sum").tolist()
            logs["loss_first_k"] = stats[0] / stats[1] if stats[1] else math.nan
            logs["loss_rest"] = stats[2] / stats[3] if stats[3] else math.nan
        super().log(logs, start_time)


class StepGuard(TrainerCallback):
    """The NaN and signal checks at the end of every optimizer step, through the Trainer's public callback hook:
    `on_step_end` runs after the step and before its log and checkpoint, so a NaN step is never saved and a stop
    request saves this step's checkpoint and ends the run."""

    def __init__(self, trainer: LookaheadTrainer):
        self.trainer = trainer

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        return self.trainer.check_step(control)


def close_progress_bars(trainer: Trainer) -> None:
    """End the progress bar's line, so an error printed after a failed step starts on a line of its own."""
    from transformers.trainer_callback import ProgressCallback

    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressCallback) and callback.training_bar is not None:
            callback.training_bar.close()
            callback.training_bar = None


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


@dataclass
class TrainingData:
    tokenizer: Any
    collator: LookaheadCollator
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    metrics: dict[str, int]


def build_strategy(method_cfg: DictConfig) -> Any:
    """The preview strategy of `cfg.method`; its own config errors surface as one line, not Hydra's wrapper.

    Preview methods name their class (`_target_`); objective methods (constrained_sft, sdft) name a preview in
    `method.preview` and carry its parameters beside their own.
    """
    if "_target_" not in method_cfg:
        return preview_by_name(
            method_cfg.get("preview", "vanilla"),
            m=method_cfg.get("m", 6),
            prefix=method_cfg.get("prefix"),
            connector=method_cfg.get("connector"),
        )
    try:
        return instantiate(method_cfg)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, LookaheadError):
            raise cause from None
        raise


def build_objective(method_cfg: DictConfig) -> ConstrainedSFT | None:
    if method_cfg.name != "constrained_sft":
        return None
    return ConstrainedSFT(
        beta=float(method_cfg.beta),
        bias_factor=float(method_cfg.bias_factor),
        first_token_bias_factor=float(method_cfg.first_token_bias_factor),
        bias_length=method_cfg.bias_length,
    )


def distill(cfg: DictConfig, data: TrainingData, model: Any, model_path: str, state: Any) -> TrainingData:
    """SDFT: replace the training answers by the seed model's rewrites (cached), then filter them again."""
    key = cache_key(cfg.model, model_path, cfg.trainer.seed, cfg.method, data.train)
    cache_path = Path(cfg.paths.cache_dir) / "sdft" / f"{key}.jsonl"
    model.to(state.device)
    with state.main_process_first():  # the main process generates; the others read its cache
        rewritten, counts = rewrite_answers(
            model, data.collator.encoder, data.train, cfg.method, cache_path, write_cache=state.is_main_process
        )
    train_examples, report = filter_trainable(
        rewritten, data.collator, name=f"{cfg.dataset.name}/sdft", max_skip_fraction=cfg.dataset.max_skip_fraction
    )
    metrics = {**data.metrics, **counts, "train/sdft_cache": str(cache_path)}
    metrics.update({k: v for k, v in report.as_metrics("train").items() if k in ("train/kept", "train/tokens")})
    return TrainingData(data.tokenizer, data.collator, train_examples, data.eval, metrics)


def build_data(cfg: DictConfig, model_path: str) -> TrainingData:
    """Tokenizer, preview strategy, collator and the filtered examples: everything but the model."""
    tokenizer = load_tokenizer(cfg.model, model_path)
    strategy = build_strategy(cfg.method)
    encoder = ChatEncoder(tokenizer, cfg.trainer.max_seq_length, cfg.dataset.system_policy)
    if not encoder.supports_system and cfg.dataset.get("system_prompt"):
        log.info("The chat template has no system role: dataset.system_policy=%s", cfg.dataset.system_policy)
    collator = LookaheadCollator(
        encoder, strategy, cfg.trainer.get("pad_to_multiple_of"), bool(cfg.trainer.padding_free)
    )

    examples = load_examples(cfg.dataset)
    train_examples, eval_examples = split_train_eval(examples, int(cfg.dataset.eval_size), cfg.trainer.seed)
    train_examples = mix_in_safety(train_examples, cfg.dataset, cfg.trainer.seed)
    collator.check_preview_survives_template(train_examples[0])
    train_examples, report = filter_trainable(
        train_examples, collator, name=f"{cfg.dataset.name}/train", max_skip_fraction=cfg.dataset.max_skip_fraction
    )
    metrics = report.as_metrics("train")
    metrics["train/safety_examples"] = sum(ex.get("source") == SAFETY for ex in train_examples)
    if eval_examples:
        eval_examples, eval_report = filter_trainable(
            eval_examples, collator, name=f"{cfg.dataset.name}/eval", max_skip_fraction=cfg.dataset.max_skip_fraction
        )
        metrics.update(eval_report.as_metrics("eval"))
    return TrainingData(tokenizer, collator, train_examples, eval_examples, metrics)


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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune as configured; returns the run summary (also written to run_dir/summary.json)."""
    from accelerate import PartialState

    validate(cfg)
    adopt_slurm_tasks()  # srun / submitit tasks without a launcher become ranks of one run
    # Joins the process group under `accelerate launch`; without CUDA that group is gloo over CPU processes.
    state = PartialState(cpu=not torch.cuda.is_available())
    run_dir = Path(cfg.paths.output_dir)
    is_main = state.is_main_process
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    log_file = setup_logging(run_dir, is_main)
    try:
        return _train(cfg, state, run_dir)
    finally:
        if log_file is not None:
            logging.getLogger().removeHandler(log_file)
            log_file.close()


def _train(cfg: DictConfig, state: Any, run_dir: Path) -> dict[str, Any]:
    is_main = state.is_main_process
    set_seed(cfg.trainer.seed)

    # Decide resume before any work, so a refused start costs nothing.
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    resuming = cfg.resume not in (None, False) and (cfg.resume != "auto" or bool(complete_checkpoints(run_dir)))
    check_same_run(run_dir, config_yaml, resuming, CONFIG_FILE)
    resume_from = resolve_resume(run_dir, cfg.resume)
    if resume_from is not None:
        check_world_size(resume_from, state.num_processes)
    state.wait_for_everyone()
    if is_main:
        clear_leftovers(run_dir)
        (run_dir / CONFIG_FILE).write_text(config_yaml)

    with state.main_process_first():  # the GGUF conversion, if any, runs once
        model_path = resolve_model_path(cfg.model, cfg.paths.cache_dir)
    data = build_data(cfg, model_path)
    log.info("Data: %s", data.metrics)
    check_lora_targets(cfg.lora, cfg.model, model_path, data.tokenizer)

    model = load_model(
        cfg.model, model_path, data.tokenizer, cfg.lora, seed=cfg.trainer.seed, local_rank=state.local_process_index
    )
    if cfg.method.name == "sdft":
        data = distill(cfg, data, model, model_path, state)
    objective = build_objective(cfg.method)
    chunk_tokens = int(cfg.trainer.loss_chunk_tokens or 0)
    if objective is not None and not is_lora(cfg.lora):
        # A full fine-tune changes the weights themselves: score the data with the seed model once, before training.
        model.to(state.device)
        with state.main_process_first():
            refs = cached_seed_logps(
                run_dir / REFERENCE_FILE,
                model,
                data.collator,
                data.train,
                cfg.trainer.per_device_eval_batch_size,
                is_main,
                chunk_tokens=chunk_tokens_for(model, chunk_tokens, announce=False),
            )
        for example, ref in zip(data.train, refs):
            example["ref_logps"] = ref
    model = apply_lora(model, cfg.lora, bool(cfg.model.gradient_checkpointing))
    # Training never reuses a KV cache, and without one transformers can read packed sequences from position_ids.
    model.config.use_cache = False

    args = TrainingArguments(**training_arguments_kwargs(cfg, str(run_dir), state.num_processes))
    metrics_path = run_dir / METRICS_FILE
    trainer = LookaheadTrainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval or None,
        data_collator=data.collator,
        processing_class=data.tokenizer,
        answer_loss=AnswerTokenLoss(cfg.trainer.first_k, objective=objective, chunk_tokens=chunk_tokens),
        group_by_length=bool(cfg.trainer.group_by_length),
        stop_request=(stop_request := StopRequest()),
        callbacks=[JsonlMetricsCallback(metrics_path)],
    )
    trainer.add_callback(StepGuard(trainer))

    if is_main:
        if resume_from is not None:
            truncate_metrics(metrics_path, checkpoint_step(resume_from))
            log.info("Resuming from %s", resume_from)
        else:
            metrics_path.unlink(missing_ok=True)
            write_metrics_record(metrics_path, {"step": 0, **data.metrics})
    experiment_run = start_experiment_logger(cfg, run_dir, is_main_process=is_main)

    started = time.time()
    try:
        with stop_request.installed():
            result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except BaseException:
        close_progress_bars(trainer)
        finish_experiment_logger(experiment_run, {}, exit_code=1)
        raise
    if trainer.stopped_by_signal is not None:
        finish_experiment_logger(experiment_run, {}, exit_code=1)
        state.wait_for_everyone()
        saved = complete_checkpoints(run_dir)
        raise Interrupted(
            f"stopped by {stop_request.name or 'a signal'} at step {trainer.state.global_step}; saved "
            f"{saved[-1] if saved else 'no checkpoint'}; continue with resume=auto",
            trainer.stopped_by_signal,
        )
    final_dir = run_dir / "final"
    model.config.use_cache = True  # the saved model is for inference
    trainer.save_model(str(final_dir))  # every rank calls it: FSDP and DeepSpeed gather weights collectively

    history = trainer.state.log_history
    summary = {
        "run_dir": str(run_dir),
        "final_dir": str(final_dir),
        "metrics": str(metrics_path),
        "config": str(run_dir / CONFIG_FILE),
        "base_model": model_path,
        "adapter": is_lora(cfg.lora),
        "method": cfg.method.name,
        "global_step": trainer.state.global_step,
        "final_loss": last_logged(history, "loss"),
        "loss_first_k": last_logged(history, "loss_first_k"),
        "loss_rest": last_logged(history, "loss_rest"),
        "train_loss": result.training_loss,
        "train_seconds": round(time.time() - started, 2),
        "data": data.metrics,
    }
    if is_main:
        data.tokenizer.save_pretrained(str(final_dir))
        (final_dir / "lookahead_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if summary["adapter"]:
            make_adapter_portable(final_dir, cfg.model.get("path"), model_path)
        summary["command"] = command_line()
        write_card(
            final_dir, cfg, summary, kind="adapter" if summary["adapter"] else "full", command=summary["command"]
        )
        write_summary(run_dir, summary)
        if cfg.trainer.get("push_to_hub"):
            from lookahead.hub import push_folder

            push_folder(final_dir, str(cfg.trainer.hub_model_id), private=bool(cfg.trainer.get("hub_private_repo")))
        kind = "adapter" if summary["adapter"] else "model"
        print(
            f"\nDone: {trainer.state.global_step} steps, final loss {summary['final_loss']}, "
            f"first-{cfg.trainer.first_k}-token loss {summary['loss_first_k']}\n"
            f"  {kind}:  {final_dir}\n  metrics: {metrics_path}\n  config:  {run_dir / CONFIG_FILE}\n",
            flush=True,
        )
    finish_experiment_logger(experiment_run, summary)
    state.wait_for_everyone()
    return summary
