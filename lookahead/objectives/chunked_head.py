"""The LM head and cross-entropy on answer positions only, in chunks: full-vocabulary logits never exist at once.

A causal LM's logits are `[batch, length, vocab]`; at Llama-3's 128k vocabulary, batch 8 x 1024 tokens is 4.2 GB in
fp32 before its gradient, and the prompt positions among them carry no loss at all. Here the model runs with
`logits_to_keep=1` (one position of logits), a forward hook keeps the decoder's last hidden state, and only the
positions whose next token is a label go through the LM head, `chunk_tokens` at a time. The backward pass recomputes
each chunk's logits instead of storing them, so memory is O(chunk x vocab), not O(batch x length x vocab).

Plain torch: the same code runs on CPU and GPU. Models whose head is not a plain linear layer (logit soft-capping,
logit scaling, a LoRA-wrapped head) or whose weights are sharded outside their forward (FSDP, DeepSpeed ZeRO-3) use
full logits instead, with one log line saying why.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lookahead.constants import IGNORE_INDEX
from lookahead.models.loading import hf_model

log = logging.getLogger(__name__)

# Config fields that change logits after the linear head; such models take the full-logits path.
_HEAD_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


class ChunkedLinearLogProb(torch.autograd.Function):
    """log softmax(h @ W.T + b)[y] for N rows, computed `chunk` rows at a time, recomputed in backward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: Any, targets: torch.Tensor, chunk: int):
        out = torch.empty(hidden.size(0), dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        for s in range(0, hidden.size(0), chunk):
            logits = F.linear(hidden[s : s + chunk], weight, bias).float()
            lse[s : s + chunk] = torch.logsumexp(logits, dim=-1)
            out[s : s + chunk] = logits.gather(1, targets[s : s + chunk, None]).squeeze(1) - lse[s : s + chunk]
        ctx.save_for_backward(hidden, weight, bias if bias is not None else torch.empty(0), targets, lse)
        ctx.has_bias, ctx.chunk = bias is not None, chunk
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        need_h, need_w, need_b = (
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
            ctx.has_bias and ctx.needs_input_grad[2],
        )
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for s in range(0, hidden.size(0), ctx.chunk):
            h = hidden[s : s + ctx.chunk]
            # d log p(y) / d logits = onehot(y) - softmax(logits), scaled by the incoming gradient; computed in place
            # in the one [chunk, vocab] buffer the recomputed logits occupy.
            grad_logits = F.linear(h, weight, bias).float()
            grad_logits.sub_(lse[s : s + ctx.chunk, None]).exp_().neg_()
            grad_logits.scatter_add_(1, targets[s : s + ctx.chunk, None], torch.ones_like(grad_logits[:, :1]))
            grad_logits.mul_(grad_out[s : s + ctx.chunk, None])
            if need_h:
                grad_h[s : s + ctx.chunk] = (grad_logits.to(weight.dtype) @ weight).to(hidden.dtype)
            if need_w:
                grad_w += grad_logits.t() @ h.float()
            if need_b:
                grad_b += grad_logits.sum(0)
        return (
            grad_h,
            grad_w.to(weight.dtype) if need_w else None,
            grad_b.to(bias.dtype) if need_b else None,
            None,
            None,
        )


def label_logps_from_hidden(
    hidden: torch.Tensor, head: torch.nn.Linear, labels: torch.Tensor, chunk_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(label) at each shifted position (0 where ignored) and the label mask, both (B, T-1), like
    `label_logps(logits, labels)`, from the last hidden state: only label positions go through the head."""
    targets = labels[:, 1:].to(hidden.device)
    is_label = targets != IGNORE_INDEX
    selected = hidden[:, :-1][is_label]  # [N, H]: the positions whose next token is trained
    logps = ChunkedLinearLogProb.apply(selected, head.weight, head.bias, targets[is_label], max(1, int(chunk_tokens)))
    dense = torch.zeros(targets.shape, dtype=torch.float32, device=hidden.device)
    return dense.masked_scatter(is_label, logps), is_label


@dataclass
class HeadSupport:
    ok: bool
    reason: str = ""


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the model's forward can return logits for some positions only (`logits_to_keep`)."""
    return "logits_to_keep" in inspect.signature(hf_model(model).forward).parameters


def chunked_head_support(model: Any) -> HeadSupport:
    """Whether `model` (a transformers causal LM, possibly under PEFT) can take the chunked path."""
    inner = hf_model(model)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear:
        return HeadSupport(False, f"its output head is {type(head).__name__}, not a plain Linear")
    config = getattr(inner, "config", None)
    for field in _HEAD_TRANSFORMS:
        if getattr(config, field, None) not in (None, 1, 1.0):
            return HeadSupport(False, f"config.{field}={getattr(config, field)} transforms the logits")
    if not accepts_logits_to_keep(inner):
        return HeadSupport(False, f"{type(inner).__name__}.forward takes no logits_to_keep")
    if not hasattr(inner, "get_decoder") or inner.get_decoder() is None:
        return HeadSupport(False, "it exposes no decoder (get_decoder)")
    return HeadSupport(True)


def chunk_tokens_for(model: Any, chunk_tokens: int, blocked: str | None = None, announce: bool = True) -> int:
    """`chunk_tokens` when the chunked head can serve `model`, else 0 (full logits). `blocked` is a reason from the
    caller's setup (sharded weights, another fused loss). With `announce`, one log line says which path is used."""
    if not chunk_tokens:
        return 0
    support = chunked_head_support(model)
    reason = support.reason if not support.ok else blocked
    if announce:
        if reason:
            log.info("Loss: full-vocabulary logits, not the chunked answer-only head: %s", reason)
        else:
            log.info("Loss: chunked answer-only head, %d tokens a chunk (no full-vocabulary logits)", chunk_tokens)
    return 0 if reason else int(chunk_tokens)


class HiddenCapture:
    """Keeps the decoder's last hidden state (after its final norm) from the next forward passes."""

    def __init__(self) -> None:
        self.hidden: torch.Tensor | None = None

    def hook(self, module: Any, args: Any, output: Any) -> None:
        self.hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    def pop(self) -> torch.Tensor:
        hidden, self.hidden = self.hidden, None
        if hidden is None:
            raise RuntimeError("no hidden state was captured: the model's forward did not run its decoder")
        return hidden


@contextlib.contextmanager
def capture_hidden(model: Any) -> Iterator[tuple[HiddenCapture, torch.nn.Linear]]:
    """Within the block, forward passes of `model` leave the last hidden state in the capture; yields it with the
    head to apply."""
    inner = hf_model(model)
    capture = HiddenCapture()
    handle = inner.get_decoder().register_forward_hook(capture.hook)
    try:
        yield capture, inner.get_output_embeddings()
    finally:
        handle.remove()
