"""The data pass, in one place and in order: source -> messages -> safety mix and recovery examples -> preview -> ids
and labels -> filter.

It runs once before the model loads, so bad data fails early, and keeps every example's ids and labels, so the
collator only pads or packs. A sweep over `method.m` still never rewrites a data file: the encodings live in memory
for the run. Training examples (`preview=True`) get the preview; evaluation examples (`preview=False`) never do.
"""

from __future__ import annotations

import logging
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from lookahead.constants import IGNORE_INDEX
from lookahead.data.collator import LookaheadCollator
from lookahead.data.safety_mix import SAFETY, mix_in_safety
from lookahead.data.safety_recovery import RECOVERY, mix_in_recovery
from lookahead.data.sources import load_examples, split_train_eval
from lookahead.data.tokenize import ChatEncoder, Encoded, Skip
from lookahead.errors import ConfigError, DataError
from lookahead.preview.base import PreviewResult, PreviewStrategy, preview_messages

log = logging.getLogger(__name__)


@dataclass
class DataReport:
    total: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_skipped: list[str] = field(default_factory=list)  # a few offenders, for the log
    whole_answer_previewed: int = 0
    previewed: int = 0
    answer_truncated: int = 0
    boundary_split: int = 0
    label_tokens: int = 0
    tokens: int = 0

    def as_metrics(self, prefix: str) -> dict[str, int]:
        out = {
            f"{prefix}/examples": self.total,
            f"{prefix}/kept": self.kept,
            f"{prefix}/whole_answer_previewed": self.whole_answer_previewed,
            f"{prefix}/previewed": self.previewed,
            f"{prefix}/answer_truncated": self.answer_truncated,
            f"{prefix}/boundary_split": self.boundary_split,
            f"{prefix}/tokens": self.tokens,
            f"{prefix}/label_tokens": self.label_tokens,
        }
        out.update({f"{prefix}/skipped_{reason.value}": self.skipped.get(reason, 0) for reason in Skip})
        return out


class ExampleEncoder:
    """A preview strategy and a chat encoder: one example's messages to its ids and labels."""

    def __init__(self, encoder: ChatEncoder, strategy: PreviewStrategy):
        self.encoder = encoder
        self.strategy = strategy

    def encode(self, example: dict[str, Any]) -> tuple[Encoded | Skip, PreviewResult | None]:
        """Encode one example, previewed unless it is an evaluation example; also return what the preview did."""
        messages, preview = example["messages"], None
        if example.get("preview", True):
            messages, preview = preview_messages(messages, self.strategy, self.encoder.tokenizer)
        encoded = self.encoder.encode(messages)
        if isinstance(encoded, Skip):
            return encoded, preview
        answer_start = encoded.labels.count(IGNORE_INDEX)  # before any masking: the prompt's length
        if preview is not None and preview.untrained_prefix:
            encoded = self.encoder.mask_answer_prefix(encoded, preview.untrained_prefix)
        untrained = example.get("untrained_text")  # a recovery example's harmful prefix, wherever the preview put it
        if untrained and not isinstance(encoded, Skip):
            original, answer = example["messages"][-1]["content"], messages[-1]["content"]
            if not answer.endswith(original):
                raise DataError(
                    "examples", f"an answer with untrained text no longer ends with its own text ({original[:40]!r})"
                )
            start = len(answer) - len(original) + original.index(untrained)
            encoded = self.encoder.mask_answer_span(encoded, answer_start, answer, start, start + len(untrained))
        return encoded, preview

    def check_preview_survives_template(self, examples: list[dict[str, Any]]) -> None:
        """Refuse a chat template that trims or rewrites the connector: the model would never see the preview.
        Checked on the first example the strategy previews (with `method.fraction` < 1, not every one is)."""
        connector = getattr(self.strategy, "connector", None)
        if not connector:
            return
        for example in examples:
            messages, preview = preview_messages(example["messages"], self.strategy, self.encoder.tokenizer)
            if preview.previewed:
                break
        else:
            return
        prompt = self.encoder.render(self.encoder.fit_system(messages[:-1]), add_generation_prompt=True)
        if connector.strip() not in prompt:
            raise ConfigError(
                f"method.connector={connector!r}: the chat template of '{self.encoder.tokenizer.name_or_path}' trims "
                "or rewrites it, so the preview would not reach the model; choose another connector or template"
            )


def encode_all(examples: list[dict[str, Any]], example_encoder: ExampleEncoder) -> list[dict[str, Any]]:
    """Encode examples known to be trainable (tests, scripts); an untrainable one is an error naming it."""
    out = []
    for i, example in enumerate(examples):
        enc, _ = example_encoder.encode(example)
        if isinstance(enc, Skip):
            raise DataError("examples", f"cannot be trained ({enc.value})", line=i)
        out.append({**example, "input_ids": enc.input_ids, "labels": enc.labels, "length": len(enc.input_ids)})
    return out


def filter_trainable(
    examples: list[dict[str, Any]], example_encoder: ExampleEncoder, *, name: str, max_skip_fraction: float
) -> tuple[list[dict[str, Any]], DataReport]:
    """Keep the examples that encode to at least one label token; count the rest and why."""
    report = DataReport(total=len(examples))
    kept = []
    for i, example in enumerate(examples):
        enc, preview = example_encoder.encode(example)
        report.whole_answer_previewed += bool(preview and preview.whole_answer_previewed)
        if isinstance(enc, Skip):
            report.skipped[enc] += 1
            if len(report.first_skipped) < 3:
                report.first_skipped.append(f"#{i} ({enc.value})")
            continue
        # The encoding is a pure function of the example and the strategy: kept, so a batch only pads (compact
        # int32 arrays, not Python lists). "length" feeds length-grouped sampling.
        kept.append(
            {
                **example,
                "input_ids": array("i", enc.input_ids),
                "labels": array("i", enc.labels),
                "length": len(enc.input_ids),
            }
        )
        report.previewed += bool(preview and preview.previewed)
        report.answer_truncated += enc.answer_truncated
        report.boundary_split += enc.boundary_split
        report.tokens += len(enc.input_ids)
        report.label_tokens += sum(1 for t in enc.labels if t >= 0)
    report.kept = len(kept)

    n_skipped = report.total - report.kept
    if n_skipped:
        log.warning(
            "%s: skipped %d of %d examples (%s); first: %s",
            name,
            n_skipped,
            report.total,
            ", ".join(f"{r.value}={c}" for r, c in report.skipped.items()),
            ", ".join(report.first_skipped),
        )
    if report.kept == 0 or n_skipped > max_skip_fraction * report.total:
        reasons = ", ".join(f"{r.value}={c}" for r, c in report.skipped.items())
        raise DataError(
            name,
            f"{n_skipped} of {report.total} examples cannot be trained ({reasons}), "
            f"more than dataset.max_skip_fraction={max_skip_fraction}; raise trainer.max_seq_length or the threshold",
        )
    if report.whole_answer_previewed:
        log.info(
            "%s: %d answers are shorter than method.m and are previewed whole", name, report.whole_answer_previewed
        )
    return kept, report


@dataclass
class TrainingData:
    tokenizer: Any
    example_encoder: ExampleEncoder
    collator: LookaheadCollator
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    metrics: dict[str, Any]


def prepare_training_data(cfg: DictConfig, tokenizer: Any, strategy: PreviewStrategy) -> TrainingData:
    """The whole pass for a run: everything the Trainer needs but the model."""
    encoder = ChatEncoder(tokenizer, cfg.trainer.max_seq_length, cfg.dataset.system_policy)
    if not encoder.supports_system and cfg.dataset.get("system_prompt"):
        log.info("The chat template has no system role: dataset.system_policy=%s", cfg.dataset.system_policy)
    example_encoder = ExampleEncoder(encoder, strategy)
    collator = LookaheadCollator(tokenizer, cfg.trainer.get("pad_to_multiple_of"), bool(cfg.trainer.padding_free))

    examples = load_examples(cfg.dataset)
    train_examples, eval_examples = split_train_eval(examples, int(cfg.dataset.eval_size), cfg.trainer.seed)
    train_examples = mix_in_safety(train_examples, cfg.dataset, cfg.trainer.seed)
    train_examples = mix_in_recovery(train_examples, cfg.dataset, cfg.trainer.seed, tokenizer)
    example_encoder.check_preview_survives_template(train_examples)
    train_examples, report = filter_trainable(
        train_examples,
        example_encoder,
        name=f"{cfg.dataset.name}/train",
        max_skip_fraction=cfg.dataset.max_skip_fraction,
    )
    metrics: dict[str, Any] = report.as_metrics("train")
    metrics["train/safety_examples"] = sum(ex.get("source") == SAFETY for ex in train_examples)
    metrics["train/recovery_examples"] = sum(ex.get("source") == RECOVERY for ex in train_examples)
    if eval_examples:
        eval_examples, eval_report = filter_trainable(
            eval_examples,
            example_encoder,
            name=f"{cfg.dataset.name}/eval",
            max_skip_fraction=cfg.dataset.max_skip_fraction,
        )
        metrics.update(eval_report.as_metrics("eval"))
    return TrainingData(tokenizer, example_encoder, collator, train_examples, eval_examples, metrics)


def refilter(data: TrainingData, examples: list[dict[str, Any]], name: str, max_skip_fraction: float) -> TrainingData:
    """The same pass over training examples an objective rewrote (SDFT): new answers, new ids and labels."""
    stale = [{k: v for k, v in ex.items() if k not in ("input_ids", "labels", "length")} for ex in examples]
    kept, report = filter_trainable(stale, data.example_encoder, name=name, max_skip_fraction=max_skip_fraction)
    metrics = {**data.metrics}
    metrics.update({k: v for k, v in report.as_metrics("train").items() if k in ("train/kept", "train/tokens")})
    return TrainingData(data.tokenizer, data.example_encoder, data.collator, kept, data.eval, metrics)
