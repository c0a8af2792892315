"""The HF Trainer with the answer-token loss, extended through its public hooks only: `compute_loss_func` (the
objective), `compute_loss` (the documented override point, here to pass the reference log-probs and the hidden state
to the loss as arguments), `log`, and callbacks (`StepGuard`; checkpoints are marked by
`lookahead.training.checkpoints.CheckpointMarker`). No `_`-prefixed Trainer method is overridden.

Safeguards:
- a NaN or inf loss stops the run at the end of its step, before any checkpoint of it is written;
- a stop request (SIGINT / SIGTERM) saves a checkpoint at the end of the current step and stops.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from lookahead.errors import ConfigError, TrainingDiverged
from lookahead.objectives.chunked_head import capture_hidden, chunk_tokens_for
from lookahead.objectives.loss import AnswerTokenLoss
from lookahead.objectives.reference import adapter_disabled_logps
from lookahead.training.checkpoints import complete_checkpoints
from lookahead.training.safeguards import StopRequest


class LookaheadTrainer(Trainer):
    """The HF Trainer with the answer-token loss (first-k / rest answer losses logged beside it) and the step guard."""

    def __init__(
        self,
        *args: Any,
        answer_loss: AnswerTokenLoss,
        stop_request: StopRequest | None = None,
        guard: Any = None,
        **kwargs: Any,
    ):
        super().__init__(*args, compute_loss_func=answer_loss, **kwargs)
        self.answer_loss = answer_loss
        self.stop_request = stop_request if stop_request is not None else StopRequest()
        self.stopped_by_signal: int | None = None
        self.guard = guard
        self.guard_penalties: list[float] = []  # since the last log
        self.losses_finite: torch.Tensor | None = None
        self.chunk_tokens = self.chunked_head_tokens()
        check_guard_placement(guard, weight_sharding(self))

    def chunked_head_tokens(self) -> int:
        """`trainer.loss_chunk_tokens` when the chunked answer-only head can serve this model, else 0 (full logits)."""
        blocked = None
        sharding = weight_sharding(self)
        if sharding:
            blocked = f"its weights are sharded outside the forward pass ({sharding})"
        elif self.args.use_liger_kernel:
            blocked = "trainer.use_liger_kernel=true brings its own fused loss"
        return chunk_tokens_for(self.model, self.answer_loss.chunk_tokens, blocked)

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None):
        """The forward pass and the objective's loss, normalised over the effective batch's label tokens."""
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        reference = inputs.pop("ref_logps", None)  # precomputed for full fine-tunes
        unwrapped = self.accelerator.unwrap_model(model)
        if self.answer_loss.objective.needs_reference and model.training and reference is None:
            # LoRA: the seed model is this model with its adapter switched off.
            reference = adapter_disabled_logps(unwrapped, {**inputs, "labels": labels}, self.chunk_tokens)
        hidden = None
        if self.chunk_tokens:
            # One position of logits from the model; the loss takes the last hidden state through the chunked head.
            with capture_hidden(unwrapped) as (capture, head):
                outputs = model(**inputs, logits_to_keep=1)
            hidden = (capture.pop(), head)
        else:
            outputs = model(**inputs)
        loss = self.compute_loss_func(
            outputs, labels, num_items_in_batch=num_items_in_batch, reference=reference, hidden=hidden
        )
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # The loss is divided by the label tokens of all processes; DDP averages gradients over processes.
            loss = loss * (
                self.accelerator.num_processes // self.get_tp_size() if self.args.n_gpu <= 1 else self.args.n_gpu
            )
        if self.guard is not None and model.training:
            penalty = self.guard.penalty(unwrapped)
            if penalty is not None:  # once per optimizer step: a share in each accumulated micro-batch
                loss = loss + penalty / self.args.gradient_accumulation_steps
                self.guard_penalties.append(float(penalty.detach()))
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        finite = torch.isfinite(loss.detach())  # stays on the device: no sync per micro-batch
        self.losses_finite = finite if self.losses_finite is None else self.losses_finite & finite
        return loss

    def check_step(self, control: Any) -> Any:
        """Run by `StepGuard` at the end of each optimizer step, before that step's log and checkpoint."""
        finite = self.losses_finite if self.losses_finite is not None else torch.tensor(True)
        self.losses_finite = None
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

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Every process reaches this point at the same step, so the reduction below is safe under DDP.
        if "loss" in logs:
            stats = self.answer_loss.pop_stats()
            stats = torch.zeros(4) if stats is None else stats
            stats = self.accelerator.reduce(stats.to(self.args.device), reduction="sum").tolist()
            logs["loss_first_k"] = stats[0] / stats[1] if stats[1] else math.nan
            logs["loss_rest"] = stats[2] / stats[3] if stats[3] else math.nan
            if self.guard_penalties:
                logs["guard_penalty"] = sum(self.guard_penalties) / len(self.guard_penalties)
                self.guard_penalties = []
        super().log(logs, start_time)


def weight_sharding(trainer: Trainer) -> str | None:
    """ "FSDP" or "DeepSpeed ZeRO-3" when each rank holds only a shard of the weights outside the forward pass (FSDP2
    DTensors, ZeRO-3's empty partitions); None when every rank holds them whole (single process, DDP, ZeRO-1/2)."""
    if trainer.is_fsdp_enabled:
        return "FSDP"
    if trainer.is_deepspeed_enabled and getattr(trainer.accelerator.state.deepspeed_plugin, "zero_stage", 0) == 3:
        return "DeepSpeed ZeRO-3"
    return None


def check_guard_placement(guard: Any, sharding: str | None) -> None:
    """Safe LoRA and AsFT read each adapted weight outside the forward pass, which sharded weights do not allow."""
    if sharding and guard is not None and getattr(guard, "name", "none") != "none":
        raise ConfigError(
            f"guard={guard.name} reads whole weights outside the forward pass, which {sharding} shards across "
            "processes: train it with DDP or DeepSpeed ZeRO-2 (configs/accelerate/ddp.yaml, deepspeed_zero2.yaml), "
            "or use guard=none"
        )


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
