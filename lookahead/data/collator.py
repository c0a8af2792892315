"""The data collator: preview, encode (unless the data pass already did), pad or pack.

A sweep over `method.m` never rewrites data files: previews are applied in memory, per run.
"""

from __future__ import annotations

from typing import Any

import torch

from lookahead.constants import IGNORE_INDEX
from lookahead.data.tokenize import ChatEncoder, Encoded, Skip
from lookahead.errors import ConfigError
from lookahead.preview.base import PreviewResult, PreviewStrategy, preview_messages


class LookaheadCollator:
    """Turns `{"messages", "preview"}` examples into a padded batch.

    Training examples (`preview=True`) get the preview strategy; evaluation examples (`preview=False`) never do.
    Padding goes on the right; padded positions get attention 0 and label IGNORE_INDEX by construction, so a pad
    id equal to EOS never masks the real end-of-turn token.

    Example:
        >>> batch = collator([{"messages": msgs, "preview": True}])  # doctest: +SKIP
        >>> batch["labels"][0]                                      # doctest: +SKIP
        tensor([-100, -100, ..., 22, 1345, 2])
    """

    def __init__(
        self,
        encoder: ChatEncoder,
        strategy: PreviewStrategy,
        pad_to_multiple_of: int | None = None,
        padding_free: bool = False,
    ):
        self.encoder = encoder
        self.strategy = strategy
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_free = padding_free
        tok = encoder.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def encode_example(self, example: dict[str, Any]) -> Encoded | Skip:
        return self.preview_and_encode(example)[0]

    def preview_and_encode(self, example: dict[str, Any]) -> tuple[Encoded | Skip, PreviewResult | None]:
        """Encode one example, previewed unless it is an evaluation example; also return what the preview did."""
        messages, preview = example["messages"], None
        if example.get("preview", True):
            messages, preview = preview_messages(messages, self.strategy, self.encoder.tokenizer)
        return self.encoder.encode(messages), preview

    def trainable_encoding(self, example: dict[str, Any]) -> Encoded:
        """The encoding the data pass kept (lookahead.data.prepare), or a fresh one for an example it never saw."""
        if "input_ids" in example:
            return Encoded(list(example["input_ids"]), list(example["labels"]))
        enc = self.encode_example(example)
        if isinstance(enc, Skip):
            # The dataset is filtered with the same encoder before training, so this is a bug, not bad data.
            raise RuntimeError(f"example reached the collator unfiltered ({enc.value}): {example['messages'][-2]}")
        return enc

    def check_preview_survives_template(self, example: dict[str, Any]) -> None:
        """Refuse a chat template that trims or rewrites the connector: the model would never see the preview."""
        connector = getattr(self.strategy, "connector", None)
        if not connector:
            return
        messages, _ = preview_messages(example["messages"], self.strategy, self.encoder.tokenizer)
        prompt = self.encoder.render(self.encoder.fit_system(messages[:-1]), add_generation_prompt=True)
        if connector.strip() not in prompt:
            raise ConfigError(
                f"method.connector={connector!r}: the chat template of '{self.encoder.tokenizer.name_or_path}' trims "
                "or rewrites it, so the preview would not reach the model; choose another connector or template"
            )

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        encoded = [self.trainable_encoding(example) for example in examples]
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
