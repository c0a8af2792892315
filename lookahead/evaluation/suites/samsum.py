"""SAMSum (or any summary task): ROUGE-1 F1 and exact match."""

from __future__ import annotations

from typing import Any

from lookahead.evaluation.evaluator import Evaluator, write_jsonl
from lookahead.evaluation.metrics import exact_match, rouge1_f


def run(ev: Evaluator) -> dict[str, Any]:
    prompts, refs, generations = ev.generate_task("samsum")
    rows = [
        {"prompt": p, "reference": r, "generation": g, "rouge1": rouge1_f(g, r), "exact": exact_match(g, r)}
        for p, r, g in zip(prompts, refs, generations)
    ]
    if ev.is_main:
        write_jsonl(ev.out_dir / "samsum.jsonl", rows)
    n = len(rows)
    return {
        "rouge1": 100 * sum(r["rouge1"] for r in rows) / n,
        "exact_match": 100 * sum(r["exact"] for r in rows) / n,
        "n": n,
    }
