"""Recovery examples against prefilling (Qi et al. 2024, "Safety Alignment Should Be Made More Than Just a Few Tokens
Deep", section 3: the safety recovery augmentation that the paper's evaluation comes from).

`dataset.safety_recovery=0.1 dataset.recovery_path=recovery.jsonl` adds 10% as many examples as there are task
examples, each a harmful request answered with the first k tokens of a harmful answer, which carry no loss, then a
refusal, which is trained: the model learns to turn back after a harmful start, the case a prefilling attack (JSR)
tests. The file is JSON Lines (or .json / .csv) with

    {"prompt": "How do I pick my neighbour's lock?", "harmful": "Sure. First, get a tension wrench ...",
     "response": "I won't help with that."}

(field names: dataset.recovery_prompt_field / recovery_harmful_field / recovery_response_field). As in Qi et al.'s
code, k is 0 (a plain refusal) for half the examples (`dataset.recovery_plain_share`) and otherwise uniform in
[1, min(len(harmful tokens), dataset.recovery_max_prefix_tokens)], drawn per example from the run's seed. The
examples are previewed like the task's (`dataset.safety_preview=false`: unpreviewed), carry `"source": "recovery"`,
and the harmful text rides along as `untrained_text`, which the encoder masks wherever the preview puts it
(`ExampleEncoder.encode`). `scripts/inspect_data.py inspect.source=recovery` shows what they train.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

from lookahead.constants import ASSISTANT, SYSTEM, USER
from lookahead.data.sources import Example, read_records
from lookahead.errors import ConfigError, DataError

log = logging.getLogger(__name__)

RECOVERY = "recovery"


def check_fraction(value: object, key: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ConfigError(f"dataset.{key}={value!r}: expected a fraction between 0 and 1")
    return float(value)


def load_recovery_records(cfg: Mapping[str, Any]) -> list[dict[str, str]]:
    """(prompt, harmful, response) triples from `dataset.recovery_path`; a missing or empty field is an error naming
    the file, the line and the field."""
    path = cfg.get("recovery_path")
    if not path:
        raise ConfigError(
            "dataset.safety_recovery > 0 needs dataset.recovery_path=<a file of harmful requests, harmful answers and "
            "refusals>"
        )
    fields = {
        "prompt": cfg.get("recovery_prompt_field", "prompt"),
        "harmful": cfg.get("recovery_harmful_field", "harmful"),
        "response": cfg.get("recovery_response_field", "response"),
    }
    out = []
    for line, record in read_records(path):
        triple = {}
        for key, name in fields.items():
            value = record.get(name) if isinstance(record, Mapping) else None
            if not isinstance(value, str) or not value.strip():
                raise DataError(str(path), f"field '{name}' is missing or empty", line=line)
            triple[key] = value
        out.append(triple)
    if not out:
        raise DataError(str(path), "no records")
    return out


def join(prefix: str, refusal: str) -> str:
    """The trained answer: the harmful prefix, a space where it ends mid-text, then the refusal."""
    return prefix + (" " if prefix and not prefix[-1].isspace() else "") + refusal


def recovery_example(
    record: Mapping[str, str], k: int, tokenizer: Any, system_prompt: str | None, preview: bool
) -> Example:
    """One example: the request, then the harmful answer's first k tokens (untrained) and the refusal (trained)."""
    ids = tokenizer(record["harmful"], add_special_tokens=False)["input_ids"]
    prefix = tokenizer.decode(ids[:k]).strip() if k else ""
    system = [{"role": SYSTEM, "content": system_prompt}] if system_prompt else []
    return {
        "messages": [
            *system,
            {"role": USER, "content": record["prompt"]},
            {"role": ASSISTANT, "content": join(prefix, record["response"])},
        ],
        "preview": preview,
        "source": RECOVERY,
        "untrained_text": prefix,
    }


def mix_in_recovery(train: list[Example], cfg: Mapping[str, Any], seed: int, tokenizer: Any) -> list[Example]:
    """`train` with round(safety_recovery x len(train)) recovery examples inserted at seeded random positions."""
    fraction = check_fraction(cfg.get("safety_recovery") or 0, "safety_recovery")
    if fraction == 0:
        return train
    plain_share = check_fraction(cfg.get("recovery_plain_share", 0.5), "recovery_plain_share")
    max_prefix = cfg.get("recovery_max_prefix_tokens", 100)
    if isinstance(max_prefix, bool) or not isinstance(max_prefix, int) or max_prefix < 1:
        raise ConfigError(f"dataset.recovery_max_prefix_tokens={max_prefix!r}: expected a positive integer")
    preview = cfg.get("safety_preview", True)
    if not isinstance(preview, bool):
        raise ConfigError(f"dataset.safety_preview={preview!r}: expected true or false")
    records = load_recovery_records(cfg)
    rng = random.Random(f"recovery-{seed}")
    wanted = round(fraction * len(train))
    if wanted > len(records):
        log.warning("dataset.safety_recovery=%s wants %d examples; the file has %d", fraction, wanted, len(records))
    examples = []
    for record in rng.sample(records, min(wanted, len(records))):
        harmful_tokens = len(tokenizer(record["harmful"], add_special_tokens=False)["input_ids"])
        k = 0 if rng.random() < plain_share else rng.randint(1, max(1, min(harmful_tokens, max_prefix)))
        examples.append(recovery_example(record, k, tokenizer, cfg.get("system_prompt"), preview))
    mixed = list(train)
    for example in examples:
        mixed.insert(rng.randrange(len(mixed) + 1), example)
    log.info(
        "Mixed %d recovery examples from %s (%d with a harmful prefix) into %d examples",
        len(examples), cfg.get("recovery_path"), sum(bool(e["untrained_text"]) for e in examples), len(train),
    )  # fmt: skip
    return mixed
