"""Answer-token cross-entropy, normalised over the whole effective batch, with first-k / rest statistics."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lookahead.constants import IGNORE_INDEX


def answer_positions(is_label: torch.Tensor) -> torch.Tensor:
    """0-based position of each label token within its contiguous answer span.

    A span starts at a label token whose left neighbour is not a label, so this holds for padded rows (one answer per
    row) and for packed rows (several examples, each answer preceded by its prompt) alike.

    Example:
        >>> answer_positions(torch.tensor([[False, True, True, False, True]]))
        tensor([[0, 0, 1, 0, 0]])
    """
    previous = torch.nn.functional.pad(is_label[:, :-1], (1, 0), value=False)
    starts = is_label & ~previous
    index = torch.arange(is_label.size(1), device=is_label.device).expand_as(is_label)
    span_start = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return torch.where(is_label, index - span_start, torch.zeros_like(index))


def label_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label) at each shifted position (0 where ignored), and the mask of label positions; both (B, T-1)."""
    targets = labels[:, 1:].to(logits.device)
    is_label = targets != IGNORE_INDEX
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half -> float32; float64 stays
    logps = -F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view_as(targets)
    return logps, is_label


class AnswerTokenLoss:
    """`compute_loss_func` for the HF Trainer.

    The loss is the sum of per-token negative log-likelihoods divided by `num_items_in_batch`, the number of label
    tokens in the whole effective batch (all accumulation micro-batches, all processes), which the Trainer counts
    over shifted labels. So 8 x 1 and 2 x 4 give the same gradient. It also keeps the training loss on the first
    `first_k` answer tokens apart from the rest: LookAhead Tuning exists to keep the former low.

    Log-probs come from the model's logits, or, when the trainer sets `hidden_from` for the call, from the last
    hidden state through the chunked answer-only head (`lookahead.chunked_head`): the same numbers without
    full-vocabulary logits.
    """

    def __init__(self, first_k: int, objective: Any = None, chunk_tokens: int = 0):
        self.first_k = first_k
        self.chunk_tokens = chunk_tokens
        self._stats: torch.Tensor | None = None  # [nll_first, n_first, nll_rest, n_rest], summed since last pop
        # Another objective (e.g. constrained SFT) replaces the returned loss; the statistics stay plain NLL.
        self.objective = objective
        self.reference: torch.Tensor | None = None  # the objective's reference log-probs for the next call
        self.hidden_from: tuple[Any, torch.nn.Linear] | None = None  # (HiddenCapture, head) for the chunked path

    def label_logps(self, outputs: Any, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hidden_from is not None:
            from lookahead.chunked_head import label_logps_from_hidden

            capture, head = self.hidden_from
            return label_logps_from_hidden(capture.pop(), head, labels, self.chunk_tokens)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return label_logps(logits, labels)

    def __call__(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logps, is_label = self.label_logps(outputs, labels)
        nll = -logps
        if torch.is_grad_enabled():
            self._record(nll.detach(), is_label)
        if self.objective is not None and self.reference is not None:
            reference, self.reference = self.reference, None
            return self.objective.loss_from_logps(logps, is_label, reference, num_items_in_batch)
        denominator = num_items_in_batch if num_items_in_batch is not None else is_label.sum().clamp(min=1)
        return nll.sum() / denominator

    def _record(self, nll: torch.Tensor, is_label: torch.Tensor) -> None:
        first = is_label & (answer_positions(is_label) < self.first_k)
        rest = is_label & ~first
        stats = torch.stack([nll[first].sum(), first.sum().float(), nll[rest].sum(), rest.sum().float()])
        self._stats = stats if self._stats is None else self._stats + stats

    def pop_stats(self) -> torch.Tensor | None:
        stats, self._stats = self._stats, None
        return stats
