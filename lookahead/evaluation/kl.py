"""Per-position KL drift between the seed and the fine-tuned model on answer tokens: the method's own mechanism.

For each (prompt, response) pair, teacher-force the response and compare the two models' next-token distributions
at answer positions 1..N: KL(seed || fine-tuned), averaged over pairs. LookAhead Tuning should keep the first
positions low.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lookahead.objectives.chunked_head import accepts_logits_to_keep


def seed_context(model: Any, seed_model: Any | None) -> tuple[Any, Callable[[], Any]]:
    """The seed model and a context factory that makes it usable: a LoRA model's own base with its adapter disabled
    (no second copy in memory), or a separately loaded copy."""
    if seed_model is not None:
        return seed_model, contextlib.nullcontext
    if hasattr(model, "disable_adapter"):
        return model, model.disable_adapter
    raise ValueError("a full fine-tune needs the seed model loaded separately for KL")


def span_logits(model: Any, ids: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """Logits of row 0 at the positions in `span` only (`logits_to_keep`), never the whole sequence's."""
    if accepts_logits_to_keep(model):
        return model(input_ids=ids, logits_to_keep=span).logits[0]
    return model(input_ids=ids).logits[0, span]


@torch.no_grad()
def per_position_kl(
    model: Any, seed_model: Any | None, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], positions: int
) -> tuple[list[float], list[int]]:
    """Mean KL(seed || fine-tuned) at each answer position 1..positions, and how many pairs reached each position.

    `pairs` holds (prompt_ids, response_ids); the prompt ends with the generation prompt.
    """
    sums, counts = torch.zeros(positions, dtype=torch.float64), torch.zeros(positions, dtype=torch.long)
    device = next(model.parameters()).device
    reference, disabled = seed_context(model, seed_model)
    for prompt_ids, response_ids in pairs:
        response_ids = list(response_ids)[:positions]
        if not response_ids:
            continue
        ids = torch.tensor([list(prompt_ids) + response_ids], device=device)
        # Logits at position t predict token t+1: the answer tokens are predicted from len(prompt)-1 on.
        span = torch.arange(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(response_ids), device=device)
        tuned = F.log_softmax(span_logits(model, ids, span).double(), dim=-1)
        with disabled():
            seed = F.log_softmax(span_logits(reference, ids, span).double(), dim=-1)
        kl = (seed.exp() * (seed - tuned)).sum(-1).clamp(min=0)
        sums[: len(response_ids)] += kl.cpu()
        counts[: len(response_ids)] += 1
    means = [(s / c).item() if c else float("nan") for s, c in zip(sums, counts)]
    return means, counts.tolist()
