"""Length grouping keeps every example once per epoch; packing gives the same loss as padding."""

from __future__ import annotations

import pytest
import torch

from lookahead.data.sampler import LengthGroupedOrder
from lookahead.data.tokenize import ChatEncoder
from lookahead.models.loading import build_tiny_llama
from lookahead.objectives.loss import AnswerTokenLoss
from lookahead.preview import RealPrefix
from tests.conftest import arithmetic_records, collate, compose, load_tokenizer


class TestLengthGroupedOrder:
    def test_each_epoch_is_a_permutation_grouped_by_length(self):
        lengths = [((i * 37) % 101) + 1 for i in range(500)]
        order = LengthGroupedOrder([{"length": n, "i": i} for i, n in enumerate(lengths)], group_size=8, seed=3)
        for epoch in range(3):
            order.set_epoch(epoch)
            seen = [order[k]["i"] for k in range(len(order))]
            assert sorted(seen) == list(range(500))  # every example exactly once
            mega = 8 * min(500 // (8 * 4), 50)  # transformers' mega-batch: 15 batches of 8
            for start in range(0, 500, mega):  # sorted within each mega-batch, the longest batch first overall
                chunk = [lengths[i] for i in seen[start : start + mega]]
                assert chunk[1:] == sorted(chunk[1:], reverse=True)
            assert lengths[seen[0]] == max(lengths)

    def test_order_is_get_length_grouped_indices_with_a_generator_seeded_by_seed_plus_epoch(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        lengths = [(i * 13) % 40 + 1 for i in range(100)]
        order = LengthGroupedOrder([{"length": n} for n in lengths], group_size=4, seed=1)
        order.set_epoch(2)
        expected = get_length_grouped_indices(lengths, 4, generator=torch.Generator().manual_seed(3))
        assert order.order == expected
        again = LengthGroupedOrder([{"length": n} for n in lengths], group_size=4, seed=1)
        again.set_epoch(2)
        assert again.order == order.order  # a resumed run rebuilds the same order
        again.set_epoch(3)
        assert again.order != order.order


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_loss_equals_padded_batch_loss(attn):
    tokenizer = load_tokenizer("chatml-style")
    cfg = compose(["model=tiny", f"model.attn_implementation={attn}"])
    model = build_tiny_llama(cfg.model, tokenizer, seed=0).eval()
    encoder = ChatEncoder(tokenizer, 512)
    examples = [
        {
            "messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}],
            "preview": True,
        }
        for r in arithmetic_records(4)
    ]
    padded = collate(encoder, RealPrefix(m=4), examples)
    packed = collate(encoder, RealPrefix(m=4), examples, padding_free=True)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert packed["input_ids"].shape[1] == int(padded["attention_mask"].sum())  # no pad token left
    assert int((packed["labels"] != -100).sum()) == int((padded["labels"] != -100).sum())

    loss = AnswerTokenLoss(first_k=5)
    with torch.no_grad():
        padded_loss = loss(
            model(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"]), padded["labels"]
        )
        # Packing is detected from position_ids only when no KV cache is in play (training never uses one).
        packed_loss = loss(
            model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False), packed["labels"]
        )
        # Control: the same packed row *without* position ids lets attention cross examples and changes the loss.
        leaky_loss = loss(model(input_ids=packed["input_ids"], use_cache=False), packed["labels"])
    assert packed_loss.item() == pytest.approx(padded_loss.item(), abs=1e-5)
    assert abs(leaky_loss.item() - padded_loss.item()) > 1e-4
