"""Reference log-probs: the seed model's log-prob of each label token, for objectives that keep close to it.

A LoRA run gets them from the same model with its adapter switched off, per batch. A full fine-tune changes the weights
themselves, so the seed model scores the training data once before training, cached in the run dir.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lookahead.constants import IGNORE_INDEX
from lookahead.objectives.chunked_head import capture_hidden, label_logps_from_hidden
from lookahead.objectives.logprobs import label_logps


def aligned_with_labels(shifted: torch.Tensor) -> torch.Tensor:
    """(B, T-1) values at shifted positions -> (B, T) aligned with `labels` (position 0 is never a label)."""
    return F.pad(shifted, (1, 0), value=0.0)


@torch.no_grad()
def model_label_logps(model: Any, inputs: dict[str, torch.Tensor], chunk_tokens: int = 0) -> torch.Tensor:
    """log p(label) under `model` for a batch, aligned with labels. With `chunk_tokens`, through the chunked
    answer-only head (no full-vocabulary logits)."""
    labels = inputs["labels"]
    forward = {k: v for k, v in inputs.items() if k not in ("labels", "ref_logps")}
    if chunk_tokens:
        with capture_hidden(model) as (capture, head):
            model(**forward, logits_to_keep=1)
            logps = label_logps_from_hidden(capture.pop(), head, labels, chunk_tokens)[0]
    else:
        logps = label_logps(model(**forward).logits, labels)[0]
    return aligned_with_labels(logps)


@torch.no_grad()
def adapter_disabled_logps(model: Any, inputs: dict[str, torch.Tensor], chunk_tokens: int = 0) -> torch.Tensor:
    """Reference log-probs of a LoRA model: the same forward with its adapter switched off. Aligned with labels."""
    with model.disable_adapter():
        return model_label_logps(model, inputs, chunk_tokens)


REFERENCE_FILE = "reference_logps.safetensors"


@torch.no_grad()
def seed_logps(
    model: Any, collator: Any, examples: list[dict[str, Any]], batch_size: int, chunk_tokens: int = 0
) -> list[list[float]]:
    """The seed model's log-prob of every label token of every (previewed) training example, in label order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[float]] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = collator.pad([collator.encoding(ex) for ex in chunk])
        batch = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "labels")}
        aligned = model_label_logps(model, batch, chunk_tokens).cpu()
        out += [aligned[row][batch["labels"][row] != IGNORE_INDEX].tolist() for row in range(len(chunk))]
    model.train(was_training)
    return out


def cached_seed_logps(
    path: Any,
    model: Any,
    collator: Any,
    examples: list[dict[str, Any]],
    batch_size: int,
    write: bool,
    chunk_tokens: int = 0,
) -> list[list[float]]:
    """`seed_logps`, computed once per run and kept in the run dir: a resumed run's model is no longer the seed."""
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    path = Path(path)
    if path.is_file():
        stored = load_file(path)
        offsets, values = stored["offsets"].tolist(), stored["values"]
        if len(offsets) == len(examples) + 1:
            return [values[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    refs = seed_logps(model, collator, examples, batch_size, chunk_tokens)
    if write:
        offsets = torch.tensor([0, *torch.tensor([len(r) for r in refs]).cumsum(0).tolist()], dtype=torch.int64)
        values = torch.tensor([v for r in refs for v in r], dtype=torch.float32)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"offsets": offsets, "values": values}, str(tmp))
        tmp.replace(path)
    return refs
