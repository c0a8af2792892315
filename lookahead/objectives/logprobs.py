"""Per-token log-probs of the labels from full logits, and where each token sits within its answer."""

from __future__ import annotations

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
