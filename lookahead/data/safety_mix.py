"""Safety-data mixing: refusal examples from a user-provided file, mixed into the training examples.

`dataset.safety_mix=0.1 dataset.safety_path=refusals.jsonl` adds 10% as many refusal examples as there are task
examples, drawn (seeded) from the file and spread through the data. The file is JSON Lines (or .json / .csv) with

    {"prompt": "How do I pick my neighbour's lock?", "response": "I can't help with that. ..."}

(field names: dataset.safety_prompt_field / dataset.safety_response_field), or chat records with a `messages` list
(dataset.safety_format=messages). Mixed examples are trained like the task examples, preview included, and carry
`"source": "safety"` so `scripts/inspect_data.py inspect.source=safety` shows exactly what they train.
`dataset.safety_preview=false` trains them unpreviewed instead (an ablation: under `virtual_prefix` a previewed
refusal trains as P + refusal, a refusal after a harmless opener; docs/demo.md).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

from lookahead.data.sources import Example, load_examples
from lookahead.errors import ConfigError

log = logging.getLogger(__name__)

SAFETY = "safety"


def load_safety_examples(cfg: Mapping[str, Any]) -> list[Example]:
    path = cfg.get("safety_path")
    if not path:
        raise ConfigError("dataset.safety_mix > 0 needs dataset.safety_path=<a file of harmful prompts with refusals>")
    source = {
        "name": f"{cfg.get('name')}/safety",
        "path": path,
        "format": cfg.get("safety_format", "fields"),
        "prompt_field": cfg.get("safety_prompt_field", "prompt"),
        "response_field": cfg.get("safety_response_field", "response"),
        "messages_field": cfg.get("messages_field", "messages"),
        "system_prompt": cfg.get("system_prompt"),
    }
    return [{**example, "source": SAFETY} for example in load_examples(source)]


def mix_in_safety(train: list[Example], cfg: Mapping[str, Any], seed: int) -> list[Example]:
    """`train` with round(safety_mix x len(train)) refusal examples inserted at seeded random positions."""
    fraction = cfg.get("safety_mix") or 0
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 <= fraction <= 1:
        raise ConfigError(f"dataset.safety_mix={fraction!r}: expected a fraction between 0 and 1")
    if fraction == 0:
        return train
    preview = cfg.get("safety_preview", True)
    if not isinstance(preview, bool):
        raise ConfigError(f"dataset.safety_preview={preview!r}: expected true or false")
    pool = [{**example, "preview": example.get("preview", True) and preview} for example in load_safety_examples(cfg)]
    rng = random.Random(seed)
    wanted = round(fraction * len(train))
    if wanted > len(pool):
        log.warning("dataset.safety_mix=%s wants %d refusal examples; the file has %d", fraction, wanted, len(pool))
    chosen = rng.sample(pool, min(wanted, len(pool)))
    mixed = list(train)
    for example in chosen:
        mixed.insert(rng.randrange(len(mixed) + 1), example)
    log.info(
        "Mixed %d refusal examples from %s into %d task examples%s", len(chosen), cfg.get("safety_path"), len(train),
        "" if preview else " (unpreviewed: dataset.safety_preview=false)",
    )  # fmt: skip
    return mixed
