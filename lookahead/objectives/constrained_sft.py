"""Constrained SFT: the token-wise constrained objective of Qi et al. (2024).

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
from typing import Any, ClassVar

import torch

from lookahead.errors import ConfigError
from lookahead.objectives.base import PrepareContext, answer_nll, denominator
from lookahead.objectives.logprobs import answer_positions, label_logps


@dataclass(frozen=True)
class ConstrainedSFT:
    beta: float = 0.1
    bias_factor: float = 20.0
    first_token_bias_factor: float = 5.0
    bias_length: int = 5
    min_weight: float = 1e-3
    name: str = "constrained_sft"
    tag: str = "-csft"  # added to run names
    needs_reference: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ConfigError(f"objective.beta={self.beta!r}: must be > 0")
        if not (isinstance(self.bias_length, int) and self.bias_length >= 1):
            raise ConfigError(f"objective.bias_length={self.bias_length!r}: must be an integer >= 1")

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
        self,
        logps: torch.Tensor,
        is_label: torch.Tensor,
        num_items_in_batch: Any = None,
        reference: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`reference` is aligned with `labels` (the seed model's log-prob of each label token, anything elsewhere).
        Without one (evaluation), the loss is plain SFT's, which is what the weights give at the reference."""
        if reference is None:
            return answer_nll(logps, is_label, num_items_in_batch)
        weights = self.weights(logps, reference[:, 1:].to(logps.device), is_label)
        return -(weights * logps).sum() / denominator(is_label, num_items_in_batch)

    def logits_loss(
        self, logits: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """The loss from full logits (for tests and small models)."""
        logps, is_label = label_logps(logits, labels)
        return self.loss(logps, is_label, num_items_in_batch, reference)

    def prepare(self, examples: list[dict[str, Any]], context: PrepareContext) -> tuple[list[dict], dict[str, Any]]:
        return examples, {}

    def describe(self) -> str:
        return (
            f"constrained SFT (Qi et al., 2024): token-wise weights keep the first {self.bias_length} answer tokens "
            f"close to the seed model (beta={self.beta}, x{self.first_token_bias_factor} on the first token, "
            f"x{self.bias_factor} up to token {self.bias_length})"
        )
