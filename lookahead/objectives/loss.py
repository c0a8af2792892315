"""The Trainer's `compute_loss_func`: label log-probs (full logits or the chunked head) into the chosen objective,
with the first-k / rest answer-token statistics logged beside it."""

from __future__ import annotations

from typing import Any

import torch

from lookahead.objectives.base import Objective
from lookahead.objectives.chunked_head import label_logps_from_hidden
from lookahead.objectives.logprobs import answer_positions, label_logps
from lookahead.objectives.sft import SFT


class AnswerTokenLoss:
    """`compute_loss_func` for the HF Trainer.

    The objective's loss is normalised by `num_items_in_batch`, the number of label tokens in the whole effective
    batch (all accumulation micro-batches, all processes), which the Trainer counts over shifted labels. So 8 x 1 and
    2 x 4 give the same gradient. The plain training loss on the first `first_k` answer tokens is kept apart from the
    rest: LookAhead Tuning exists to keep the former low.

    Log-probs come from the model's logits, or, when the caller passes `hidden` (the last hidden state and the output
    head), through the chunked answer-only head (`lookahead.objectives.chunked_head`): the same numbers without
    full-vocabulary logits. An objective that needs the seed model's log-probs gets them as `reference`.
    """

    def __init__(self, first_k: int, objective: Objective | None = None, chunk_tokens: int = 0):
        self.first_k = first_k
        self.chunk_tokens = chunk_tokens
        self.objective: Objective = objective if objective is not None else SFT()
        self._stats: torch.Tensor | None = None  # [nll_first, n_first, nll_rest, n_rest], summed since last pop

    def label_logps(
        self, outputs: Any, labels: torch.Tensor, hidden: tuple[torch.Tensor, torch.nn.Linear] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if hidden is not None:
            states, head = hidden
            return label_logps_from_hidden(states, head, labels, self.chunk_tokens)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return label_logps(logits, labels)

    def __call__(
        self,
        outputs: Any,
        labels: torch.Tensor,
        num_items_in_batch: Any = None,
        *,
        reference: torch.Tensor | None = None,
        hidden: tuple[torch.Tensor, torch.nn.Linear] | None = None,
    ) -> torch.Tensor:
        logps, is_label = self.label_logps(outputs, labels, hidden)
        if torch.is_grad_enabled():
            self._record(-logps.detach(), is_label)
        return self.objective.loss(logps, is_label, num_items_in_batch, reference)

    def _record(self, nll: torch.Tensor, is_label: torch.Tensor) -> None:
        first = is_label & (answer_positions(is_label) < self.first_k)
        rest = is_label & ~first
        stats = torch.stack([nll[first].sum(), first.sum().float(), nll[rest].sum(), rest.sum().float()])
        self._stats = stats if self._stats is None else self._stats + stats

    def pop_stats(self) -> torch.Tensor | None:
        stats, self._stats = self._stats, None
        return stats
