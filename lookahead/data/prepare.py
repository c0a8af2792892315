"""One pass over the data before the model loads: fail early on bad data, filter untrainable examples, count.

It previews and encodes every example once and keeps the result, so training batches only pad. A sweep over
`method.m` still never rewrites a data file: the encodings live in memory for the run.
"""

from __future__ import annotations

import logging
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lookahead.data.collator import LookaheadCollator
from lookahead.data.tokenize import Skip
from lookahead.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class DataReport:
    total: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_skipped: list[str] = field(default_factory=list)  # a few offenders, for the log
    whole_answer_previewed: int = 0
    answer_truncated: int = 0
    boundary_split: int = 0
    label_tokens: int = 0
    tokens: int = 0

    def as_metrics(self, prefix: str) -> dict[str, int]:
        out = {
            f"{prefix}/examples": self.total,
            f"{prefix}/kept": self.kept,
            f"{prefix}/whole_answer_previewed": self.whole_answer_previewed,
            f"{prefix}/answer_truncated": self.answer_truncated,
            f"{prefix}/boundary_split": self.boundary_split,
            f"{prefix}/tokens": self.tokens,
            f"{prefix}/label_tokens": self.label_tokens,
        }
        out.update({f"{prefix}/skipped_{reason.value}": self.skipped.get(reason, 0) for reason in Skip})
        return out


def filter_trainable(
    examples: list[dict[str, Any]], collator: LookaheadCollator, *, name: str, max_skip_fraction: float
) -> tuple[list[dict[str, Any]], DataReport]:
    """Keep the examples that encode to at least one label token; count the rest and why."""
    report = DataReport(total=len(examples))
    kept = []
    for i, example in enumerate(examples):
        enc, preview = collator.preview_and_encode(example)
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
