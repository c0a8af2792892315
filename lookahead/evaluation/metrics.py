"""Utility metrics: GSM8K answer extraction (the paper's rule and a flexible one), exact match, ROUGE-1."""

from __future__ import annotations

import re
from functools import lru_cache

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def extract_hash_answer(text: str) -> str | None:
    """The paper's rule: the text after the last `####`, stripped, commas removed. None without a `####`.

    Example:
        >>> extract_hash_answer("so 1,200 in all.\\n#### 1,200")
        '1200'
    """
    if "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip().replace(",", "")


def extract_last_number(text: str) -> float | None:
    """The flexible rule: the last number in the text (commas, signs and decimals allowed), as a float."""
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    try:
        return float(matches[-1].replace(",", ""))
    except ValueError:
        return None


def gsm8k_correct(generation: str, gold_answer: str) -> tuple[bool, bool]:
    """(strict, flexible) correctness of one generation against a GSM8K gold answer (`... #### 72`)."""
    gold = extract_hash_answer(gold_answer)
    if gold is None:
        raise ValueError(f"gold answer has no '####': {gold_answer[-60:]!r}")
    predicted = extract_hash_answer(generation)
    strict = predicted is not None and predicted == gold
    number = extract_last_number(generation)
    flexible = number is not None and abs(number - float(gold)) < 1e-6
    return strict, flexible


def exact_match(generation: str, reference: str) -> bool:
    return " ".join(generation.split()).lower() == " ".join(reference.split()).lower()


@lru_cache(maxsize=1)
def _rouge1_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)


def rouge1_f(generation: str, reference: str) -> float:
    """ROUGE-1 F1 in [0, 1], with the Porter stemmer (the `rouge-score` package)."""
    return _rouge1_scorer().score(reference, generation)["rouge1"].fmeasure
