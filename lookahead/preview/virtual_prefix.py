"""Virtual preview: a fixed text P is shown in the user turn and also starts the answer (answer = P + answer)."""

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

DEFAULT_PREFIX = "Let's solve this problem. "


@dataclass(frozen=True)
class VirtualPrefix:
    prefix: str = DEFAULT_PREFIX
    connector: str | None = None  # None: the default connector
    name: str = "virtual_prefix"
    tag: str | None = None  # the short form used in run names
    # The paper trains P as part of the answer. False (a deviation, off by default): P still starts the answer the
    # model sees, but its tokens carry no loss, so the fine-tune cannot learn P as an unconditional opener.
    train_prefix: bool = True
    fraction: float = 1.0  # the share of examples previewed; the paper previews all (docs/demo.md)

    def __post_init__(self) -> None:
        check_fraction(self.fraction)
        if not isinstance(self.prefix, str) or not self.prefix.strip():
            raise ConfigError(f"method.prefix={self.prefix!r}: the virtual prefix must be non-empty text")
        object.__setattr__(self, "connector", connector_or_default(self.connector))
        check_connector(self.connector)

    def apply(self, user: str, answer: str, tokenizer: Any) -> PreviewResult:
        if not in_previewed_share(user, answer, self.fraction):
            return PreviewResult(user, answer, previewed=False)
        untrained = "" if self.train_prefix else self.prefix
        return PreviewResult(user + self.connector + self.prefix, self.prefix + answer, untrained_prefix=untrained)

    def describe(self) -> str:
        trained = "trained as" if self.train_prefix else "put, untrained (no loss on its tokens), at"
        return (
            f"{self.prefix!r} shown in the prompt after {self.connector!r}, and {trained} the start of the answer"
            + fraction_words(self.fraction)
        )

    def label(self) -> str:
        return f"P={self.prefix!r}" + ("" if self.train_prefix else " untrained") + fraction_label(self.fraction)
