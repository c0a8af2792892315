"""Real-answer preview: user = instruction + connector + the first m answer tokens, decoded; answer unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lookahead.errors import ConfigError
from lookahead.preview.base import (
    PreviewResult,
    check_connector,
    check_fraction,
    connector_or_default,
    fraction_label,
    fraction_words,
    in_previewed_share,
)


@dataclass(frozen=True)
class RealPrefix:
    m: int = 6
    connector: str | None = None  # None: the default connector
    name: str = "real_prefix"
    tag: str | None = None  # the short form used in run names
    fraction: float = 1.0  # the share of examples previewed; the paper previews all (docs/demo.md)

    def __post_init__(self) -> None:
        check_fraction(self.fraction)
        if isinstance(self.m, bool) or not isinstance(self.m, int) or self.m <= 0:
            raise ConfigError(f"method.m={self.m!r}: the number of previewed answer tokens must be a positive integer")
        object.__setattr__(self, "connector", connector_or_default(self.connector))
        check_connector(self.connector)

    def apply(self, user: str, answer: str, tokenizer: Any) -> PreviewResult:
        if not in_previewed_share(user, answer, self.fraction):
            return PreviewResult(user, answer, previewed=False)
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        head = tokenizer.decode(ids[: self.m], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        # A cut inside a multi-byte character decodes to U+FFFD; show only whole characters.
        head = head.rstrip("\ufffd")
        return PreviewResult(user + self.connector + head, answer, whole_answer_previewed=len(ids) <= self.m)

    def describe(self) -> str:
        return (
            f"the first {self.m} tokens of each answer, shown in the prompt after {self.connector!r}; the trained "
            "answer is unchanged" + fraction_words(self.fraction)
        )

    def label(self) -> str:
        return f"m={self.m}" + fraction_label(self.fraction)
