"""The answer-token loss: exact values, normalisation, and the first-k statistics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lookahead.constants import IGNORE_INDEX
from lookahead.objectives.loss import AnswerTokenLoss

I = IGNORE_INDEX


def test_loss_equals_token_mean_cross_entropy_without_num_items():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[I, I, 3, 4, 5], [I, 1, 2, I, I]])
    loss = AnswerTokenLoss(first_k=2)({"logits": logits}, labels)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1), ignore_index=I)
    assert torch.allclose(loss, expected)


def test_loss_divides_by_num_items_in_batch():
    logits = torch.zeros(1, 3, 4)  # uniform: each token costs log(4)
    labels = torch.tensor([[I, 1, 2]])
    loss = AnswerTokenLoss(first_k=1)({"logits": logits}, labels, num_items_in_batch=torch.tensor(8))
    assert math.isclose(loss.item(), 2 * math.log(4) / 8, rel_tol=1e-6)


def test_loss_splits_first_k_answer_tokens_per_row():
    logits = torch.zeros(2, 6, 4)
    logits[..., 0] = 5.0  # token 0 is cheap, others dear
    labels = torch.tensor([[I, I, 0, 0, 1, 1], [I, 0, 1, 1, 1, I]])
    loss_fn = AnswerTokenLoss(first_k=2)
    loss_fn({"logits": logits}, labels)
    nll_cheap = -torch.log_softmax(torch.tensor([5.0, 0, 0, 0]), 0)[0].item()
    nll_dear = -torch.log_softmax(torch.tensor([5.0, 0, 0, 0]), 0)[1].item()
    first_sum, first_n, rest_sum, rest_n = loss_fn.pop_stats().tolist()
    # Row 0 answer: 0 0 | 1 1 ; row 1 answer: 0 1 | 1 1
    assert (first_n, rest_n) == (4, 4)
    assert math.isclose(first_sum, 3 * nll_cheap + nll_dear, rel_tol=1e-5)
    assert math.isclose(rest_sum, 4 * nll_dear, rel_tol=1e-5)
    assert loss_fn.pop_stats() is None


def test_loss_records_nothing_under_no_grad():
    loss_fn = AnswerTokenLoss(first_k=2)
    with torch.no_grad():
        loss_fn({"logits": torch.zeros(1, 3, 4)}, torch.tensor([[I, 1, 2]]))
    assert loss_fn.pop_stats() is None


def test_answer_positions_restart_in_each_packed_example():
    from lookahead.objectives.logprobs import answer_positions

    is_label = torch.tensor([[False, True, True, True, False, False, True, True, False, True]])
    assert answer_positions(is_label).tolist() == [[0, 0, 1, 2, 0, 0, 0, 1, 0, 0]]


def test_first_k_counts_every_packed_example():
    loss_fn = AnswerTokenLoss(first_k=1)
    labels = torch.tensor([[I, I, 1, 1, I, 2, 2, 2]])  # two examples packed into one row
    loss_fn({"logits": torch.zeros(1, 8, 4)}, labels)
    _, first_n, _, rest_n = loss_fn.pop_stats().tolist()
    assert (first_n, rest_n) == (2, 3)
