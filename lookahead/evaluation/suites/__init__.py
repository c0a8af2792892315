"""The evaluation suites, one module each, in an explicit registry: a suite is a `run(evaluator) -> dict` function.

A new suite is one module here, one line below, and its section in `configs/evaluate.yaml`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lookahead.evaluation.suites import gsm8k, kl, safety, samsum

SUITES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "gsm8k": gsm8k.run,
    "samsum": samsum.run,
    "safety": safety.run,
    "kl": kl.run,
}
