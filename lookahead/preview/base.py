"""The preview protocol and the one function that applies a strategy to a conversation."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from lookahead.constants import ASSISTANT, USER
from lookahead.errors import ConfigError

# The one place the default connector is written: the configs leave `method.connector: null` to mean this.
DEFAULT_CONNECTOR = " The answer begins with: "


def connector_or_default(connector: str | None) -> str:
    return DEFAULT_CONNECTOR if connector is None else connector


def check_connector(connector: object) -> None:
    """A connector must be visible text: whitespace alone is trimmed by chat templates or lost between words."""
    if not isinstance(connector, str):
        raise ConfigError(f"method.connector={connector!r}: expected a string")
    if not connector.strip():
        raise ConfigError(
            f"method.connector={connector!r}: only whitespace, which chat templates trim, so the preview would run "
            f"into the instruction; use visible text such as {DEFAULT_CONNECTOR!r}"
        )


def check_fraction(fraction: object) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"method.fraction={fraction!r}: the share of previewed examples must be in (0, 1]")


def in_previewed_share(user: str, answer: str, fraction: float) -> bool:
    """Whether an example is among the `fraction` of examples that get the preview (`method.fraction` < 1, a
    deviation from the paper, which previews all). Decided by a hash of the example's text, not a random draw, so
    the same examples are previewed on every rank, on resume and in every run over the same data."""
    if fraction >= 1:
        return True
    digest = hashlib.sha256(f"{user}\0{answer}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def fraction_words(fraction: float) -> str:
    return "" if fraction >= 1 else f"; only on a fixed {fraction:.0%} of the examples (the rest train unpreviewed)"


def fraction_label(fraction: float) -> str:
    return "" if fraction >= 1 else f" on {fraction:.0%}"


@dataclass(frozen=True)
class PreviewResult:
    user: str
    answer: str
    whole_answer_previewed: bool = False  # real_prefix with m >= answer length
    untrained_prefix: str = ""  # leading answer text that carries no loss (virtual_prefix with train_prefix=false)
    previewed: bool = True  # False: outside `method.fraction`, trained as vanilla


class PreviewStrategy(Protocol):
    """A preview is one class like this plus one YAML in `configs/method/`; nothing else names it."""

    name: str
    tag: str | None  # the short form used in run names

    def apply(self, user: str, answer: str, tokenizer: Any) -> PreviewResult:
        """Return the rewritten (user, answer) pair for one training example."""
        ...

    def describe(self) -> str:
        """What the preview shows, in words, for the model card."""
        ...

    def label(self) -> str:
        """Its settings in a few characters, for report tables and plots (e.g. `m=6`); may be empty."""
        ...


def preview_messages(
    messages: list[dict[str, str]], strategy: PreviewStrategy, tokenizer: Any
) -> tuple[list[dict[str, str]], PreviewResult]:
    """Apply `strategy` to the last user turn and the trained (last) assistant turn; earlier turns are untouched."""
    if messages[-1]["role"] != ASSISTANT or messages[-2]["role"] != USER:
        raise ValueError("a training conversation must end with a user turn followed by the trained assistant turn")
    result = strategy.apply(messages[-2]["content"], messages[-1]["content"], tokenizer)
    out = copy.copy(messages)
    out[-2] = {**messages[-2], "content": result.user}
    out[-1] = {**messages[-1], "content": result.answer}
    return out, result
