"""Conversation -> `input_ids` and `labels`, built together so they cannot drift apart.

Layout of one encoded example (labels use IGNORE_INDEX everywhere but the answer):

    input_ids:  <bos> [system] [user + preview] [generation prompt] answer <end-of-turn>
    labels:     ----------------- IGNORE_INDEX ------------------  answer <end-of-turn>

The answer span is *what the full rendering adds after the prompt rendering*, so whatever the chat template does
(strip, trim, add a space, add an end-of-turn marker) is trained exactly as the model will see it at inference.
Nothing searches the text for marker strings.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError

from lookahead.constants import IGNORE_INDEX, SYSTEM, USER
from lookahead.errors import ConfigError

log = logging.getLogger(__name__)

SYSTEM_POLICIES = ("merge", "drop", "error")


class Skip(enum.Enum):
    """Why an example cannot be trained; counted and reported once per run."""

    PROMPT_TOO_LONG = "prompt_too_long"
    NO_ANSWER_TOKENS = "no_answer_tokens"


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    answer_truncated: bool = False
    boundary_split: bool = False  # prompt and answer were tokenized apart because they merge at the boundary


class ChatEncoder:
    """Renders conversations with the tokenizer's chat template and builds labels by construction.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        max_seq_length: the longest sequence trained; longer answers are cut, longer prompts are skipped.
        system_policy: what to do with a system prompt when the template has no system role:
            "merge" prepends it to the first user turn (blank line between), "drop" discards it, "error" refuses.
    """

    def __init__(self, tokenizer: Any, max_seq_length: int, system_policy: str = "merge"):
        if tokenizer.chat_template is None:
            raise ConfigError(
                f"tokenizer '{tokenizer.name_or_path}' has no chat template; set model.chat_template to a .jinja file "
                "or a template string"
            )
        if system_policy not in SYSTEM_POLICIES:
            raise ConfigError(f"dataset.system_policy={system_policy!r}: expected one of {list(SYSTEM_POLICIES)}")
        if max_seq_length < 2:
            raise ConfigError(f"trainer.max_seq_length={max_seq_length}: must be at least 2")
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.system_policy = system_policy
        self.supports_system = self._template_keeps_system()
        # Rendered templates carry their own BOS as text. Add one only if the tokenizer expects one and the
        # template leaves it out, and never twice.
        self.bos_id = tokenizer.bos_token_id
        plain = tokenizer("a", add_special_tokens=True)["input_ids"]
        self.tokenizer_adds_bos = self.bos_id is not None and len(plain) > 0 and plain[0] == self.bos_id
        self.eos_id = tokenizer.eos_token_id
        self.special_ids = set(tokenizer.all_special_ids)

    def _template_keeps_system(self) -> bool:
        sentinel = "lookahead-system-probe"
        probe = [{"role": SYSTEM, "content": sentinel}, {"role": USER, "content": "hi"}]
        try:
            return sentinel in self.render(probe, add_generation_prompt=True)
        except TemplateError:
            return False

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        # return_dict=False: transformers 5 returns a dict by default; tokenize=False gives the text itself.
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, return_dict=False
        )

    def fit_system(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """Apply the system policy when the template has no system role."""
        if self.supports_system or not messages or messages[0]["role"] != SYSTEM:
            return messages
        if self.system_policy == "error":
            raise ConfigError(
                f"the chat template of '{self.tokenizer.name_or_path}' has no system role; set "
                "dataset.system_prompt=null or dataset.system_policy=merge|drop"
            )
        system, rest = messages[0]["content"], messages[1:]
        if self.system_policy == "drop":
            return rest
        first = {**rest[0], "content": f"{system}\n\n{rest[0]['content']}"}
        return [first, *rest[1:]]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _with_bos(self, ids: list[int]) -> list[int]:
        if self.tokenizer_adds_bos and (not ids or ids[0] != self.bos_id):
            return [self.bos_id, *ids]
        return ids

    def encode_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of an inference prompt: the conversation so far plus the generation prompt. Never previewed."""
        return self._with_bos(self._ids(self.render(self.fit_system(messages), add_generation_prompt=True)))

    def encode(self, messages: list[dict[str, str]]) -> Encoded | Skip:
        """Encode a conversation whose last message is the trained assistant turn."""
        messages = self.fit_system(messages)
        prompt_text = self.render(messages[:-1], add_generation_prompt=True)
        full_text = self.render(messages, add_generation_prompt=False)
        if not full_text.startswith(prompt_text):
            raise ConfigError(
                f"the chat template of '{self.tokenizer.name_or_path}' renders the prompt differently once the answer "
                "follows it, so the answer span is undefined; use a template whose turns are appended, not rewritten"
            )
        # What follows the end-of-turn marker (e.g. ChatML's newline) only separates turns: not trained.
        answer_text = full_text[len(prompt_text) :].rstrip()

        prompt_ids = self._ids(prompt_text)
        joint = self._ids(prompt_text + answer_text)
        boundary_split = joint[: len(prompt_ids)] != prompt_ids
        # If the answer merges with the prompt's last token (ChatML "\n" + " answer"), tokenize the answer on its
        # own: the prompt must stay exactly the token sequence the model is given at inference.
        answer_ids = self._ids(answer_text) if boundary_split else joint[len(prompt_ids) :]
        if answer_ids and answer_ids[-1] not in self.special_ids and self.eos_id is not None:
            answer_ids = [*answer_ids, self.eos_id]  # a template with no end-of-turn marker: the model must still stop
        prompt_ids = self._with_bos(prompt_ids)

        room = self.max_seq_length - len(prompt_ids)
        if room <= 0:
            return Skip.PROMPT_TOO_LONG
        truncated = len(answer_ids) > room
        answer_ids = answer_ids[:room]
        if not answer_ids:
            return Skip.NO_ANSWER_TOKENS
        return Encoded(
            input_ids=prompt_ids + answer_ids,
            labels=[IGNORE_INDEX] * len(prompt_ids) + answer_ids,
            answer_truncated=truncated,
            boundary_split=boundary_split,
        )

    def mask_answer_prefix(self, encoded: Encoded, text: str) -> Encoded | Skip:
        """`encoded` with no loss on the leading answer tokens that spell `text` (whole tokens only: a token that
        runs past `text` into the answer stays trained)."""
        labels = list(encoded.labels)
        start = labels.count(IGNORE_INDEX)  # labels are IGNORE_INDEX up to the answer, by construction
        masked = 0
        for k in range(1, len(labels) - start + 1):
            # Leading whitespace is the template's or SentencePiece's, not the answer's.
            if not text.startswith(self.tokenizer.decode(encoded.input_ids[start : start + k]).lstrip()):
                break
            masked = k
        if masked == len(labels) - start:
            return Skip.NO_ANSWER_TOKENS
        labels[start : start + masked] = [IGNORE_INDEX] * masked
        return Encoded(encoded.input_ids, labels, encoded.answer_truncated, encoded.boundary_split)

    def mask_answer_span(
        self, encoded: Encoded, answer_start: int, answer: str, start: int, end: int
    ) -> Encoded | Skip:
        """`encoded` with no loss on the answer tokens that end inside characters [start, end) of `answer` (the
        answer's tokens begin at `answer_start`): whole tokens, so a token that runs past `end` into trained text
        stays trained, and one that straddles `start` is masked. Character positions are read by decoding growing
        prefixes of the answer's tokens, leading whitespace aside, as `mask_answer_prefix` does."""
        ids, labels = encoded.input_ids, list(encoded.labels)
        shift = len(answer) - len(answer.lstrip())  # the template's or SentencePiece's leading space is not counted
        start, end = start - shift, end - shift
        for j in range(answer_start, len(ids)):
            ends_at = len(self.tokenizer.decode(ids[answer_start : j + 1]).lstrip())
            if ends_at > end:
                break
            if ends_at > start:
                labels[j] = IGNORE_INDEX
        if all(t == IGNORE_INDEX for t in labels[answer_start:]):
            return Skip.NO_ANSWER_TOKENS
        return Encoded(ids, labels, encoded.answer_truncated, encoded.boundary_split)

    def answer_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The last assistant turn's tokens exactly as training sees them after the prompt, without the end-of-turn.

        Evaluation uses this for the JSR prefill and the KL pairs: tokenizing the answer on its own can differ
        from what follows the generation prompt (SentencePiece's leading `▁`, e.g. Mistral's `▁Step` vs `Step`).
        """
        encoded = self.encode(messages)
        if isinstance(encoded, Skip):
            raise ConfigError(f"evaluation prompt is longer than max_seq_length={self.max_seq_length}")
        prompt_len = encoded.labels.count(IGNORE_INDEX)
        ids = encoded.input_ids[prompt_len:]
        # The template's end-of-turn: trailing special tokens, and whitespace it adds around them.
        while ids and (ids[-1] in self.special_ids or not self.tokenizer.decode(ids[-1:]).strip()):
            ids = ids[:-1]
        return ids
