"""The chunked answer-only head: the same loss and gradients as full logits, without full-vocabulary logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lookahead.data.tokenize import ChatEncoder
from lookahead.models.loading import build_tiny_llama
from lookahead.models.lora import apply_lora
from lookahead.objectives.chunked_head import (
    ChunkedLinearLogProb,
    capture_hidden,
    chunked_head_support,
    label_logps_from_hidden,
)
from lookahead.objectives.constrained_sft import ConstrainedSFT
from lookahead.objectives.logprobs import label_logps
from lookahead.objectives.loss import AnswerTokenLoss
from lookahead.objectives.reference import adapter_disabled_logps
from lookahead.preview import RealPrefix, Vanilla, VirtualPrefix
from lookahead.training.recipe import train
from tests.conftest import (
    arithmetic_records,
    collate,
    compose,
    load_tokenizer,
    losses,
    read_metrics,
    requires_shared,
    tiny_overrides,
)

I = -100


class TestFunction:
    def test_values_match_log_softmax_for_any_chunk_size(self):
        torch.manual_seed(0)
        hidden, weight, bias = torch.randn(11, 8), torch.randn(50, 8), torch.randn(50)
        targets = torch.randint(0, 50, (11,))
        expected = F.log_softmax(hidden @ weight.T + bias, -1).gather(1, targets[:, None]).squeeze(1)
        for chunk in (1, 3, 11, 64):
            torch.testing.assert_close(ChunkedLinearLogProb.apply(hidden, weight, bias, targets, chunk), expected)

    @pytest.mark.parametrize("with_bias", [True, False])
    def test_gradients_pass_gradcheck_in_float64(self, with_bias):
        torch.manual_seed(1)
        hidden = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
        weight = torch.randn(13, 5, dtype=torch.float64, requires_grad=True)
        bias = torch.randn(13, dtype=torch.float64, requires_grad=True) if with_bias else None
        targets = torch.randint(0, 13, (7,))

        def fn(h, w, *b):
            # the forward accumulates in float32, as training does; compare the backward against that forward
            return ChunkedLinearLogProb.apply(h, w, b[0] if b else None, targets, 3).double()

        inputs = (hidden, weight, *((bias,) if with_bias else ()))
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-3, atol=1e-3, rtol=1e-3)
        # and exactly against autograd through the dense computation, in float32
        h32, w32 = hidden.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
        b32 = bias.detach().float().requires_grad_() if with_bias else None
        upstream = torch.randn(7)
        (ChunkedLinearLogProb.apply(h32, w32, b32, targets, 3) * upstream).sum().backward()
        h_ref, w_ref = hidden.detach().float().requires_grad_(), weight.detach().float().requires_grad_()
        b_ref = bias.detach().float().requires_grad_() if with_bias else None
        (
            F.log_softmax(F.linear(h_ref, w_ref, b_ref), -1).gather(1, targets[:, None]).squeeze(1) * upstream
        ).sum().backward()
        torch.testing.assert_close(h32.grad, h_ref.grad)
        torch.testing.assert_close(w32.grad, w_ref.grad)
        if with_bias:
            torch.testing.assert_close(b32.grad, b_ref.grad)

    def test_only_label_positions_reach_the_head(self, monkeypatch):
        hidden = torch.randn(2, 6, 4)
        head = torch.nn.Linear(4, 9, bias=False)
        labels = torch.tensor([[I, I, 3, 4, I, I], [I, 1, I, I, I, 2]])
        rows, linear = [], F.linear

        def counting_linear(x, w, b=None):
            rows.append(x.shape[0])
            return linear(x, w, b)

        monkeypatch.setattr(F, "linear", counting_linear)
        logps, is_label = label_logps_from_hidden(hidden, head, labels, chunk_tokens=2)
        monkeypatch.undo()
        assert rows == [2, 2]  # 4 label positions in chunks of 2, never all 2 x 6 positions
        expected, mask = label_logps(head(hidden), labels)
        assert torch.equal(is_label, mask)
        torch.testing.assert_close(logps, expected)


def test_heads_that_transform_logits_fall_back():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    model = LlamaForCausalLM(config)
    assert chunked_head_support(model).ok
    config.final_logit_softcapping = 30.0
    support = chunked_head_support(model)
    assert not support.ok and "final_logit_softcapping=30.0" in support.reason
    config.final_logit_softcapping = None
    model.lm_head = torch.nn.Sequential(torch.nn.Linear(16, 32))
    assert "not a plain Linear" in chunked_head_support(model).reason


def batches(tokenizer, method: str):
    encoder = ChatEncoder(tokenizer, 384)
    examples = [
        {"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}],
         "preview": True}
        for r in arithmetic_records(4)
    ]  # fmt: skip
    strategy = {"vanilla": Vanilla(), "real_prefix": RealPrefix(), "virtual_prefix": VirtualPrefix()}[method]
    return {
        "padded": collate(encoder, strategy, examples),
        "packed": collate(encoder, strategy, examples, padding_free=True),
    }


def loss_and_grads(model, batch, chunk_tokens: int, objective=None):
    model.zero_grad()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    loss_fn = AnswerTokenLoss(first_k=5, objective=objective, chunk_tokens=chunk_tokens)
    reference = adapter_disabled_logps(model, batch, chunk_tokens) if objective is not None else None
    n = int((batch["labels"][:, 1:] != I).sum())
    if chunk_tokens:
        with capture_hidden(model) as (capture, head):
            outputs = model(**inputs, use_cache=False, logits_to_keep=1)
        assert outputs.logits.shape[1] == 1  # one position of logits, not the whole sequence
        hidden = (capture.pop(), head)
        loss = loss_fn(outputs, batch["labels"], num_items_in_batch=n, reference=reference, hidden=hidden)
    else:
        outputs = model(**inputs, use_cache=False)
        loss = loss_fn(outputs, batch["labels"], num_items_in_batch=n, reference=reference)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, loss_fn.pop_stats()


@pytest.mark.parametrize(
    ("method", "objective"),
    [("vanilla", None), ("real_prefix", None), ("virtual_prefix", None), ("virtual_prefix", "constrained_sft")],
)
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_loss_and_lora_gradients_equal_the_full_logits_path(method, objective, layout):
    tokenizer = load_tokenizer("chatml-style")
    cfg = compose(["model=tiny", "lora=lora"])
    model = apply_lora(build_tiny_llama(cfg.model, tokenizer, seed=0), cfg.lora, False).eval()  # no LoRA dropout
    # Move the adapter off zero so the constrained objective's weights are not all 1.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02, generator=torch.Generator().manual_seed(len(name)))
    batch = batches(tokenizer, method)[layout]
    obj = ConstrainedSFT() if objective else None
    full_loss, full_grads, full_stats = loss_and_grads(model, batch, 0, obj)
    chunked_loss, chunked_grads, chunked_stats = loss_and_grads(model, batch, 64, obj)
    torch.testing.assert_close(chunked_loss, full_loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked_stats, full_stats, atol=1e-4, rtol=1e-6)
    assert full_grads.keys() == chunked_grads.keys() and len(full_grads) > 0
    for name in full_grads:
        torch.testing.assert_close(chunked_grads[name], full_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_full_fine_tune_with_tied_embeddings_gets_the_same_gradients():
    tokenizer = load_tokenizer("chatml-style")
    model = build_tiny_llama(compose(["model=tiny"]).model, tokenizer, seed=0)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied: the head is the embedding
    batch = batches(tokenizer, "real_prefix")["padded"]
    full_loss, full_grads, _ = loss_and_grads(model, batch, 0)
    chunked_loss, chunked_grads, _ = loss_and_grads(model, batch, 100)
    torch.testing.assert_close(chunked_loss, full_loss, atol=1e-5, rtol=0)
    for name in full_grads:
        torch.testing.assert_close(chunked_grads[name], full_grads[name], atol=1e-5, rtol=1e-4, msg=name)


# Losses of the tiny model at steps 1-3 (4 examples a step), recorded with the full-logits path before the chunked
# head existed (commit 5052960..HEAD~). Both paths must keep reproducing them.
PINNED = {
    "vanilla": [10.831405639648438, 10.820210456848145, 10.785225868225098],
    "real_prefix": [10.831748008728027, 10.82167911529541, 10.78607177734375],
    "virtual_prefix": [10.84396743774414, 10.836333274841309, 10.799664497375488],
}


@requires_shared
@pytest.mark.slow
@pytest.mark.parametrize("method", list(PINNED))
@pytest.mark.parametrize("chunk", [0, 1024])
def test_training_losses_are_pinned_on_both_paths(method, chunk, tmp_path):
    overrides = [
        *tiny_overrides("smollm2-instruct"),
        f"method={method}",
        "trainer.max_steps=3",
        "trainer.per_device_train_batch_size=4",
    ]
    summary = train(compose([*overrides, f"trainer.loss_chunk_tokens={chunk}"], output_dir=tmp_path / "run"))
    got = losses(read_metrics(tmp_path / "run" / "metrics.jsonl"))
    assert [got[s] for s in (1, 2, 3)] == pytest.approx(PINNED[method], abs=1e-5)
    assert summary["global_step"] == 3


def test_kl_span_logits_equal_the_full_logits_at_those_positions():
    from transformers import LlamaConfig, LlamaForCausalLM

    from lookahead.evaluation.kl import span_logits

    config = LlamaConfig(
        vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    ids, span = torch.tensor([[1, 5, 7, 9, 11, 13]]), torch.tensor([2, 3, 4])
    with torch.no_grad():
        torch.testing.assert_close(span_logits(model, ids, span), model(input_ids=ids).logits[0, span])


class TestLowPrecisionBases:
    """The chunked head against full logits where users train: a 4-bit NF4 base (QLoRA) and bf16 weights."""

    def perturbed(self, model):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02, generator=torch.Generator().manual_seed(len(name)))
        return model.eval()

    def test_on_a_4_bit_base(self):
        from lookahead.models.loading import load_model

        tokenizer = load_tokenizer("chatml-style")
        cfg = compose(["model=tiny", "lora=qlora"])
        base = load_model(cfg.model, "", tokenizer, cfg.lora, seed=0, local_rank=0)
        assert base.is_loaded_in_4bit
        model = self.perturbed(apply_lora(base, cfg.lora, False))
        batch = batches(tokenizer, "virtual_prefix")["padded"]
        full_loss, full_grads, _ = loss_and_grads(model, batch, 0)
        chunked_loss, chunked_grads, _ = loss_and_grads(model, batch, 64)
        torch.testing.assert_close(chunked_loss, full_loss, atol=1e-4, rtol=1e-4)
        assert full_grads.keys() == chunked_grads.keys() and len(full_grads) > 0
        for name in full_grads:
            torch.testing.assert_close(chunked_grads[name], full_grads[name], atol=1e-4, rtol=1e-2, msg=name)

    @pytest.mark.parametrize("lora", ["lora", "none"])
    def test_in_bf16(self, lora):
        tokenizer = load_tokenizer("chatml-style")
        cfg = compose(["model=tiny", "model.dtype=bfloat16", f"lora={lora}"])
        model = self.perturbed(apply_lora(build_tiny_llama(cfg.model, tokenizer, seed=0), cfg.lora, False))
        assert {p.dtype for n, p in model.named_parameters() if "lora_" not in n} == {
            torch.bfloat16
        }  # peft: fp32 adapter
        batch = batches(tokenizer, "real_prefix")["padded"]
        full_loss, full_grads, _ = loss_and_grads(model, batch, 0)
        chunked_loss, chunked_grads, _ = loss_and_grads(model, batch, 64)
        # bf16 keeps 8 bits of mantissa: the two paths round differently, within bf16's resolution
        torch.testing.assert_close(chunked_loss.float(), full_loss.float(), atol=2e-2, rtol=1e-2)
        for name in full_grads:
            a, b = chunked_grads[name].float(), full_grads[name].float()
            assert torch.linalg.vector_norm(a - b) <= 0.05 * torch.linalg.vector_norm(b) + 1e-6, name
