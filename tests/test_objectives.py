"""Constrained SFT: the weights, the schedule, the gradient, the reference model, and a run end to end."""

from __future__ import annotations

import pytest
import torch

from lookahead.constants import IGNORE_INDEX
from lookahead.models.loading import build_tiny_llama
from lookahead.models.lora import apply_lora
from lookahead.objectives.constrained_sft import ConstrainedSFT
from lookahead.objectives.logprobs import label_logps
from lookahead.objectives.loss import AnswerTokenLoss
from lookahead.objectives.reference import REFERENCE_FILE, adapter_disabled_logps, aligned_with_labels
from lookahead.training.recipe import train
from tests.conftest import compose, load_tokenizer, losses, read_metrics, tiny_overrides

LABELS = torch.tensor(
    [
        [5, 6, IGNORE_INDEX, 7, 8, 9, 10, 11, 12, 13],  # the first position is never a label (nothing predicts it)
        [5, IGNORE_INDEX, IGNORE_INDEX, 3, 2, 1, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
    ]
)


def test_beta_schedule_follows_the_paper_defaults():
    objective = ConstrainedSFT()
    betas = objective.betas(torch.arange(8))
    torch.testing.assert_close(betas, torch.tensor([0.5, 2.0, 2.0, 2.0, 2.0, 0.1, 0.1, 0.1]))


def test_weights_are_one_at_the_reference_so_the_loss_is_plain_sft():
    torch.manual_seed(0)
    logits = torch.randn(2, 10, 32)
    labels = LABELS.clone()
    labels[0, 0] = IGNORE_INDEX
    reference = aligned_with_labels(label_logps(logits, labels)[0])
    constrained = ConstrainedSFT().logits_loss(logits, labels, reference, num_items_in_batch=11)
    plain = AnswerTokenLoss(first_k=5)({"logits": logits}, labels, num_items_in_batch=11)
    torch.testing.assert_close(constrained, plain)
    logps, is_label = label_logps(logits, labels)
    weights = ConstrainedSFT().weights(logps, reference[:, 1:], is_label)
    assert torch.equal(weights[is_label], torch.ones(int(is_label.sum())))


def test_weights_shrink_where_the_model_already_beats_the_reference_most_on_the_first_tokens():
    objective = ConstrainedSFT()
    is_label = torch.tensor([[True] * 7])
    logps = torch.zeros(1, 7)
    weights = objective.weights(logps, torch.full((1, 7), -1.0), is_label)  # delta = +1 everywhere
    # 2 (1 - sigmoid(beta_t)): beta 0.5 on token 1, 2.0 on tokens 2-5, 0.1 after
    expected = 2 * (1 - torch.sigmoid(torch.tensor([0.5, 2, 2, 2, 2, 0.1, 0.1])))
    torch.testing.assert_close(weights[0], expected)
    assert weights[0, 1] < weights[0, 0] < weights[0, 6] < 1
    huge = objective.weights(logps, torch.full((1, 7), -100.0), is_label)
    assert torch.all(huge >= 1e-3) and huge[0, 1] == pytest.approx(1e-3)  # clamped, never zero


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("chatml-style")


def tiny_model(tokenizer, seed: int, dtype=torch.float32):
    cfg = compose(tiny_overrides())
    cfg.model.tiny.hidden_size, cfg.model.tiny.intermediate_size = 16, 32
    cfg.model.tiny.num_attention_heads = cfg.model.tiny.num_key_value_heads = 2
    return build_tiny_llama(cfg.model, tokenizer, seed=seed).to(dtype)


def test_gradient_matches_finite_differences_with_the_weights_held_fixed(tokenizer, monkeypatch):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    def rms_norm_in_input_dtype(self, x):  # Llama's norm computes in float32, too coarse for finite differences
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(LlamaRMSNorm, "forward", rms_norm_in_input_dtype)
    torch.manual_seed(0)
    model, seed = tiny_model(tokenizer, 1, torch.float64), tiny_model(tokenizer, 2, torch.float64)
    input_ids = torch.randint(0, 500, (2, 10))
    labels = torch.where(LABELS == IGNORE_INDEX, IGNORE_INDEX, input_ids)
    with torch.no_grad():
        reference = aligned_with_labels(label_logps(seed(input_ids=input_ids).logits, labels)[0])
    objective = ConstrainedSFT()

    loss = objective.logits_loss(model(input_ids=input_ids).logits, labels, reference)
    param = model.model.layers[0].mlp.down_proj.weight
    (grad,) = torch.autograd.grad(loss, param)

    # The weights are detached: the gradient is that of the weighted NLL with the weights as constants.
    with torch.no_grad():
        logps, is_label = label_logps(model(input_ids=input_ids).logits, labels)
        weights = objective.weights(logps, reference[:, 1:], is_label)
        assert not torch.allclose(weights[is_label], torch.ones(int(is_label.sum()), dtype=weights.dtype))

    def surrogate() -> float:
        with torch.no_grad():
            lp, mask = label_logps(model(input_ids=input_ids).logits, labels)
            return float(-(weights.double() * lp).sum() / mask.sum())

    eps = 1e-6
    for index in [(0, 0), (3, 7), (15, 31)]:
        original = param.data[index].item()
        param.data[index] = original + eps
        up = surrogate()
        param.data[index] = original - eps
        down = surrogate()
        param.data[index] = original
        assert grad[index].item() == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9), index


def test_lora_adapter_disabled_reference_equals_a_separately_loaded_seed_model(tokenizer):
    cfg = compose(tiny_overrides())
    model = apply_lora(tiny_model(tokenizer, 3), cfg.lora, gradient_checkpointing=False)
    with torch.no_grad():  # a trained adapter: B is no longer zero, so the adapter changes the outputs
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    input_ids = torch.randint(0, 500, (2, 10))
    inputs = {"input_ids": input_ids, "labels": torch.where(LABELS == IGNORE_INDEX, IGNORE_INDEX, input_ids)}

    reference = adapter_disabled_logps(model, inputs)
    with torch.no_grad():
        seed = tiny_model(tokenizer, 3)(input_ids=input_ids).logits
        adapted = model(input_ids=input_ids).logits
    expected = aligned_with_labels(label_logps(seed, inputs["labels"])[0])
    torch.testing.assert_close(reference, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(aligned_with_labels(label_logps(adapted, inputs["labels"])[0]), expected, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("lora", ["lora", "none"])
def test_constrained_sft_trains_and_starts_exactly_at_the_sft_loss(tmp_path, lora):
    """At step 1 the model is the seed (LoRA's B starts at zero), so delta = 0 and the loss equals plain SFT's."""
    common = [*tiny_overrides(), f"lora={lora}", "trainer.max_steps=3"]
    train(compose([*common, "method=vanilla"], output_dir=tmp_path / "sft"))
    csft = train(compose([*common, "method=vanilla", "objective=constrained_sft"], output_dir=tmp_path / "csft"))
    a = losses(read_metrics(tmp_path / "sft" / "metrics.jsonl"))
    b = losses(read_metrics(tmp_path / "csft" / "metrics.jsonl"))
    assert b[1] == pytest.approx(a[1], abs=1e-6)
    assert b[3] != pytest.approx(a[3], abs=1e-6)  # later the weights move away from 1
    assert (csft["method"], csft["objective"]) == ("vanilla", "constrained_sft") and (
        tmp_path / "csft" / "final"
    ).is_dir()
    assert (tmp_path / "csft" / REFERENCE_FILE).is_file() == (lora == "none")  # cached once for full fine-tunes


@pytest.mark.slow
def test_constrained_sft_combines_with_a_virtual_preview(tmp_path):
    cfg = compose([*tiny_overrides(), "method=virtual_prefix", "objective=constrained_sft", "trainer.max_steps=1"])
    assert cfg.run_name == "tiny-arithmetic-virtual_prefix-csft-lora"
    summary = train(compose([*tiny_overrides(), "method=virtual_prefix", "objective=constrained_sft",
                             "trainer.max_steps=1"], output_dir=tmp_path / "run"))  # fmt: skip
    assert summary["global_step"] == 1
