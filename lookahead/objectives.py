"""Training objectives beyond plain answer-token SFT: the token-wise constrained objective of Qi et al. (2024).

"Safety Alignment Should Be Made More Than Just a Few Tokens Deep" keeps the first answer tokens close to the seed
model by down-weighting tokens whose log-probability has already risen above the reference:

    delta_t = log pi_theta(y_t) - log pi_ref(y_t)              (t counts answer tokens from 1)
    w_t     = detach(clamp(2 * (1 - sigmoid(beta_t * delta_t)), min=1e-3))
    loss    = sum_t -w_t * log pi_theta(y_t) / (answer tokens in the effective batch)

with beta_1 = beta * first_token_bias_factor, beta_t = beta * bias_factor for 2 <= t <= bias_length, beta after.
At delta = 0 every weight is 1, so the loss is plain SFT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lookahead.constants import IGNORE_INDEX
from lookahead.errors import ConfigError
from lookahead.loss import answer_positions, label_logps


@dataclass(frozen=True)
class ConstrainedSFT:
    beta: float = 0.1
    bias_factor: float = 20.0
    first_token_bias_factor: float = 5.0
    bias_length: int = 5
    min_weight: float = 1e-3

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ConfigError(f"method.beta={self.beta!r}: must be > 0")
        if not (isinstance(self.bias_length, int) and self.bias_length >= 1):
            raise ConfigError(f"method.bias_length={self.bias_length!r}: must be an integer >= 1")

    def betas(self, position: torch.Tensor) -> torch.Tensor:
        """beta_t for 0-based answer-token positions (t = position + 1)."""
        beta = torch.full(position.shape, self.beta, dtype=torch.float32, device=position.device)
        beta = torch.where(position < self.bias_length, beta * self.bias_factor, beta)
        return torch.where(position == 0, torch.full_like(beta, self.beta * self.first_token_bias_factor), beta)

    def weights(self, logps: torch.Tensor, ref_logps: torch.Tensor, is_label: torch.Tensor) -> torch.Tensor:
        beta = self.betas(answer_positions(is_label))
        delta = logps.detach().float() - ref_logps.float()
        weights = (2 * (1 - torch.sigmoid(beta * delta))).clamp(min=self.min_weight)
        return torch.where(is_label, weights, torch.zeros_like(weights))

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, ref_logps: torch.Tensor, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """`ref_logps` is aligned with `labels` (the reference log-prob of each label token, anything elsewhere)."""
        logps, is_label = label_logps(logits, labels)
        return self.loss_from_logps(logps, is_label, ref_logps, num_items_in_batch)

    def loss_from_logps(
        self, logps: torch.Tensor, is_label: torch.Tensor, ref_logps: torch.Tensor, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        weights = self.weights(logps, ref_logps[:, 1:].to(logps.device), is_label)
        denominator = num_items_in_batch if num_items_in_batch is not None else is_label.sum().clamp(min=1)
        return -(weights * logps).sum() / denominator


def aligned_with_labels(shifted: torch.Tensor) -> torch.Tensor:
    """(B, T-1) values at shifted positions -> (B, T) aligned with `labels` (position 0 is never a label)."""
    return F.pad(shifted, (1, 0), value=0.0)


@torch.no_grad()
def model_label_logps(model: Any, inputs: dict[str, torch.Tensor], chunk_tokens: int = 0) -> torch.Tensor:
    """log p(label) under `model` for a batch, aligned with labels. With `chunk_tokens`, through the chunked
    answer-only head (no full-vocabulary logits)."""
    labels = inputs["labels"]
    forward = {k: v for k, v in inputs.items() if k not in ("labels", "ref_logps")}
    if chunk_tokens:
        from lookahead.chunked_head import capture_hidden, label_logps_from_hidden

        with capture_hidden(model) as (capture, head):
            model(**forward, logits_to_keep=1)
            logps = label_logps_from_hidden(capture.pop(), head, labels, chunk_tokens)[0]
    else:
        logps = label_logps(model(**forward).logits, labels)[0]
    return aligned_with_labels(logps)


@torch.no_grad()
def adapter_disabled_logps(model: Any, inputs: dict[str, torch.Tensor], chunk_tokens: int = 0) -> torch.Tensor:
    """Reference log-probs of a LoRA model: the same forward with its adapter switched off. Aligned with labels."""
    with model.disable_adapter():
        return model_label_logps(model, inputs, chunk_tokens)


REFERENCE_FILE = "reference_logps.safetensors"


@torch.no_grad()
def seed_logps(
    model: Any, collator: Any, examples: list[dict[str, Any]], batch_size: int, chunk_tokens: int = 0
) -> list[list[float]]:
    """The seed model's log-prob of every label token of every (previewed) training example, in label order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[float]] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = collator.pad([collator.trainable_encoding(ex) for ex in chunk])
        batch = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels")}
        aligned = model_label_logps(model, batch, chunk_tokens).cpu()
        out += [aligned[row][batch["labels"][row] != IGNORE_INDEX].tolist() for row in range(len(chunk))]
    model.train(was_training)
    return out


def cached_seed_logps(
    path: Any,
    model: Any,
    collator: Any,
    examples: list[dict[str, Any]],
    batch_size: int,
    write: bool,
    chunk_tokens: int = 0,
) -> list[list[float]]:
    """`seed_logps`, computed once per run and kept in the run dir: a resumed run's model is no longer the seed."""
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    path = Path(path)
    if path.is_file():
        stored = load_file(path)
        offsets, values = stored["offsets"].tolist(), stored["values"]
        if len(offsets) == len(examples) + 1:
            return [values[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    refs = seed_logps(model, collator, examples, batch_size, chunk_tokens)
    if write:
        offsets = torch.tensor([0, *torch.tensor([len(r) for r in refs]).cumsum(0).tolist()], dtype=torch.int64)
        values = torch.tensor([v for r in refs for v in r], dtype=torch.float32)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"offsets": offsets, "values": values}, str(tmp))
        tmp.replace(path)
    return refs
