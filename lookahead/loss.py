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


class AnswerTokenLoss:
    """`compute_loss_func` for the HF Trainer.

    The loss is the sum of per-token negative log-likelihoods divided by `num_items_in_batch`, the number of label
    tokens in the whole effective batch (all accumulation micro-batches, all processes), which the Trainer counts
    over shifted labels. So 8 x 1 and 2 x 4 give the same gradient. It also keeps the training loss on the first
    `first_k` answer tokens apart from the rest: LookAhead Tuning exists to keep the former low.
    """

    def __init__(self, first_k: int, objective: Any = None):
        self.first_k = first_k
        self._stats: torch.Tensor | None = None  # [nll_first, n_first, nll_rest, n_rest], summed since last pop
        # Another objective (e.g. constrained SFT) replaces the returned loss; the statistics stay plain NLL.
        self.objective = objective
        self.reference: torch.Tensor | None = None  # the objective's reference log-probs for the next call

    def __call__(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        targets = labels[:, 1:].to(logits.device)
        nll = F.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.size(-1)),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="none",
        ).view_as(targets)
        is_label = targets != IGNORE_INDEX
        if torch.is_grad_enabled():
            self._record(nll.detach(), is_label)
        if self.objective is not None and self.reference is not None:
            reference, self.reference = self.reference, None
            return self.objective.loss_from_logps(-nll, is_label, reference, num_items_in_batch)
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
