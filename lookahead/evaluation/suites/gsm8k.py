"""GSM8K (or any `#### <number>` task): accuracy by the paper's rule and a flexible one (the last number)."""

from __future__ import annotations

from typing import Any

from lookahead.evaluation.evaluator import Evaluator, write_jsonl
from lookahead.evaluation.metrics import gsm8k_correct


def run(ev: Evaluator) -> dict[str, Any]:
    questions, golds, generations = ev.generate_task("gsm8k")
    rows, strict, flexible = [], 0, 0
    for q, gold, gen in zip(questions, golds, generations):
        s, f = gsm8k_correct(gen, gold)
        strict, flexible = strict + s, flexible + f
        rows.append({"question": q, "gold": gold, "generation": gen, "correct": s, "correct_flexible": f})
    if ev.is_main:
        write_jsonl(ev.out_dir / "gsm8k.jsonl", rows)
    n = len(rows)
    # Per question (1/0, in file order), for paired intervals over questions (lookahead.evaluation.intervals).
    items = [int(r["correct"]) for r in rows]
    return {"accuracy": 100 * strict / n, "accuracy_flexible": 100 * flexible / n, "n": n, "correct_items": items}
