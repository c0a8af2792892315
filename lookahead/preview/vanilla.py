"""No preview: the baseline fine-tune."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lookahead.preview.base import PreviewResult


@dataclass(frozen=True)
class Vanilla:
    name: str = "vanilla"
    tag: str | None = None  # the short form used in run names

    def apply(self, user: str, answer: str, tokenizer: Any) -> PreviewResult:
        return PreviewResult(user, answer, previewed=False)

    def describe(self) -> str:
        return "none (a plain fine-tune: the baseline)"

    def label(self) -> str:
        return ""
