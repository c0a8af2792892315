"""The data collator: pads or packs examples the data pass (`lookahead.data.prepare`) already encoded.

Padding goes on the right; padded positions get attention 0 and label IGNORE_INDEX by construction, so a pad id equal
to EOS never masks the real end-of-turn token.
"""

from __future__ import annotations

from typing import Any

import torch

from lookahead.constants import IGNORE_INDEX
from lookahead.data.tokenize import Encoded


class LookaheadCollator:
    """Turns encoded examples (`input_ids`, `labels`, and `ref_logps` where an objective precomputed them) into a
    batch: padded rows with an attention mask, or one padding-free row with `position_ids`.

    Example:
        >>> batch = collator([{"input_ids": [1, 5, 9], "labels": [-100, 5, 9]}])  # doctest: +SKIP
        >>> batch["labels"][0]                                                    # doctest: +SKIP
        tensor([-100, 5, 9])
    """

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None, padding_free: bool = False):
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_free = padding_free
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @staticmethod
    def encoding(example: dict[str, Any]) -> Encoded:
        if "input_ids" not in example:
            # The data pass encodes and filters every example before training, so this is a bug, not bad data.
            raise RuntimeError(f"example reached the collator unencoded: {str(example.get('messages'))[:200]}")
        return Encoded(list(example["input_ids"]), list(example["labels"]))

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = [self.encoding(example) for example in examples]
        batch = self.pack(encoded) if self.padding_free else self.pad(encoded)
        if all("ref_logps" in example for example in examples):
            batch["ref_logps"] = self.place_on_labels(batch["labels"], [ex["ref_logps"] for ex in examples])
        return batch

    def place_on_labels(self, labels: torch.Tensor, values: list[list[float]]) -> torch.Tensor:
        """Per-example values for the label tokens (in order), placed at the label positions of the batch."""
        out = torch.zeros(labels.shape, dtype=torch.float32)
        rows = [[v for ex in values for v in ex]] if self.padding_free else values
        for row, row_values in enumerate(rows):
            positions = (labels[row] != IGNORE_INDEX).nonzero().squeeze(-1)
            if len(positions) != len(row_values):
                raise RuntimeError(f"{len(row_values)} reference values for {len(positions)} label tokens")
            out[row, positions] = torch.tensor(row_values, dtype=torch.float32)
        return out

    def pack(self, encoded: list[Encoded]) -> dict[str, torch.Tensor]:
        """Padding-free: all examples in one row, `position_ids` restarting at 0 for each, and no attention mask.

        Without an attention mask, transformers builds a block-diagonal causal mask from the position ids (sdpa and
        eager) or uses varlen kernels (flash-attention), so no token attends across examples. Each example's first
        label is a prompt token (IGNORE_INDEX), so no example is trained to predict the next one.
        """
        input_ids = torch.tensor([t for e in encoded for t in e.input_ids]).unsqueeze(0)
        labels = torch.tensor([t for e in encoded for t in e.labels]).unsqueeze(0)
        position_ids = torch.cat([torch.arange(len(e.input_ids)) for e in encoded]).unsqueeze(0)
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}

    def pad(self, encoded: list[Encoded]) -> dict[str, torch.Tensor]:
        longest = max(len(e.input_ids) for e in encoded)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(encoded)
        input_ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((n, longest), dtype=torch.long)
        for row, e in enumerate(encoded):
            length = len(e.input_ids)
            input_ids[row, :length] = torch.tensor(e.input_ids)
            labels[row, :length] = torch.tensor(e.labels)
            attention_mask[row, :length] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
