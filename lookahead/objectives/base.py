"""The objective protocol: what the loss does with the log-probs of the answer tokens.

An objective receives, for one micro-batch, the log-prob of every label token under the model being trained
(`logps`, 0 elsewhere), the mask of label positions, the number of label tokens in the whole effective batch, and,
when it declares `needs_reference`, the seed model's log-probs at the same positions as an argument. It may also
rewrite the training data once before training (`prepare`), as SDFT does. A new objective is one module here plus
one YAML in `configs/objective/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


@dataclass
class PrepareContext:
    """What an objective may use to rewrite the training data before training starts."""

    model: Any  # the seed model, on its training device, before LoRA
    encoder: Any  # lookahead.data.tokenize.ChatEncoder
    fingerprint: dict[str, Any]  # model config, model path and seed: what a cache of rewrites must be keyed on
    cache_dir: str
    state: Any  # accelerate's PartialState: the main process writes caches, the others read them


class Objective(Protocol):
    name: str
    needs_reference: bool  # the seed model's log-prob of each label token, passed to `loss` as `reference`

    def loss(
        self,
        logps: torch.Tensor,
        is_label: torch.Tensor,
        num_items_in_batch: Any = None,
        reference: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of one micro-batch, normalised by the label tokens of the whole effective batch."""
        ...

    def prepare(self, examples: list[dict[str, Any]], context: PrepareContext) -> tuple[list[dict], dict[str, Any]]:
        """The training examples to use (and metrics about the change); most objectives return them unchanged."""
        ...

    def describe(self) -> str:
        """One sentence for the model card and the report."""
        ...


def denominator(is_label: torch.Tensor, num_items_in_batch: Any) -> Any:
    """Label tokens in the effective batch (all micro-batches, all processes), or in this batch when not given."""
    return num_items_in_batch if num_items_in_batch is not None else is_label.sum().clamp(min=1)


def answer_nll(logps: torch.Tensor, is_label: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """Plain answer-token cross-entropy: the summed negative log-likelihood over the effective batch's tokens."""
    return (-logps).sum() / denominator(is_label, num_items_in_batch)
