"""Length grouping keeps every example once per epoch; packing gives the same loss as padding."""

from __future__ import annotations

import pytest
import torch

from lookahead.data.collator import LookaheadCollator
from lookahead.data.sampler import LengthGroupedSampler
from lookahead.data.tokenize import ChatEncoder
from lookahead.loss import AnswerTokenLoss
from lookahead.modeling import build_tiny_llama
from lookahead.preview import RealPrefix
from tests.conftest import compose, gsm8k_records, load_shared_tokenizer, requires_shared


class TestLengthGroupedSampler:
    def test_each_epoch_is_a_permutation_grouped_by_length(self):
        lengths = [((i * 37) % 101) + 1 for i in range(500)]
        sampler = LengthGroupedSampler(lengths, group_size=8, seed=3, mega_batch_factor=4)
        for epoch in range(3):
            sampler.set_epoch(epoch)
            order = list(sampler)
            assert sorted(order) == list(range(500))  # every example exactly once
            for start in range(0, 500, 32):  # sorted within each mega-batch
                chunk = [lengths[i] for i in order[start : start + 32]]
                assert chunk == sorted(chunk, reverse=True)

    def test_order_depends_only_on_seed_and_epoch(self):
        lengths = list(range(100))
        a, b = (
            LengthGroupedSampler(lengths, 4, seed=1, mega_batch_factor=2),
            LengthGroupedSampler(lengths, 4, seed=1, mega_batch_factor=2),
        )
        a.set_epoch(2)
        b.set_epoch(2)
        assert list(a) == list(b)
        b.set_epoch(3)
        assert list(a) != list(b)


@requires_shared
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_batch_loss_equals_padded_batch_loss(attn):
    tokenizer = load_shared_tokenizer("smollm2-instruct")
    cfg = compose(["model=tiny", f"model.attn_implementation={attn}"])
    model = build_tiny_llama(cfg.model, tokenizer, seed=0).eval()
    encoder = ChatEncoder(tokenizer, 512)
    examples = [
        {
            "messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}],
            "preview": True,
        }
        for r in gsm8k_records(4)
    ]
    padded = LookaheadCollator(encoder, RealPrefix(m=4))(examples)
    packed = LookaheadCollator(encoder, RealPrefix(m=4), padding_free=True)(examples)
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
