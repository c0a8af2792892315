"""Plain supervised fine-tuning: cross-entropy on the answer and end-of-turn tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from lookahead.objectives.base import PrepareContext, answer_nll


@dataclass(frozen=True)
class SFT:
    name: str = "sft"
    tag: str = ""  # added to run names; empty for the default objective
    needs_reference: ClassVar[bool] = False

    def loss(
        self,
        logps: torch.Tensor,
        is_label: torch.Tensor,
        num_items_in_batch: Any = None,
        reference: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return answer_nll(logps, is_label, num_items_in_batch)

    def prepare(self, examples: list[dict[str, Any]], context: PrepareContext) -> tuple[list[dict], dict[str, Any]]:
        return examples, {}

    def describe(self) -> str:
        return "supervised fine-tuning: cross-entropy on the answer and end-of-turn tokens"
