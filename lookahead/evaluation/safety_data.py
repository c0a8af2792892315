"""Harmful-prompt sets from local files or the Hub, mapped to one shape.

| format           | file  | prompt                     | harmful answer / target      | category   |
|------------------|-------|----------------------------|------------------------------|------------|
| `hexphi`         | jsonl | `instruction`              | -                            | `category` |
| `harmful_hexphi` | jsonl | the user turn              | the assistant turn           | `category` |
| `jbb`            | csv   | `Goal`                     | `Target`                     | `Category` |
| `advbench`       | csv   | `goal`                     | `target`                     | -          |

`harmful_hexphi` lines may be a bare JSON array of messages (the paper's own Harmful-HEx-PHI.jsonl), or a record with
`messages` or `conversations`. That file has no categories: `categories_from=<HEx-PHI.jsonl>` attaches them by prompt,
so one run reports RSR, JSR and the per-category rates over the same prompts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lookahead.data.sources import Record, read_records, require_text
from lookahead.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMATS = ("hexphi", "harmful_hexphi", "jbb", "advbench")
UNCATEGORISED = "uncategorised"


@dataclass(frozen=True)
class HarmfulPrompt:
    prompt: str
    category: str = "all"
    harmful_answer: str | None = None  # the JSR prefill source


def _convert(record: Record, fmt: str, source: str, line: int | None) -> HarmfulPrompt:
    if fmt == "hexphi":
        return HarmfulPrompt(require_text(record, "instruction", source, line), str(record.get("category") or "all"))
    if fmt == "jbb":
        return HarmfulPrompt(
            require_text(record, "Goal", source, line),
            str(record.get("Category") or "all"),
            require_text(record, "Target", source, line),
        )
    if fmt == "advbench":
        return HarmfulPrompt(
            require_text(record, "goal", source, line), "all", require_text(record, "target", source, line)
        )
    turns = record.get("messages", record.get("conversations"))
    if not isinstance(turns, list):
        raise DataError(source, "expected a list of {role, content} messages", line, "messages")
    users = [t for t in turns if isinstance(t, dict) and t.get("role") == "user"]
    answers = [t for t in turns if isinstance(t, dict) and t.get("role") == "assistant"]
    if not users or not answers:
        raise DataError(source, "needs a user and an assistant turn", line, "messages")
    return HarmfulPrompt(
        require_text(users[0], "content", source, line),
        str(record.get("category") or "all"),
        require_text(answers[-1], "content", source, line),
    )


def _prompt_key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def attach_categories(items: list[HarmfulPrompt], path: str | Path) -> list[HarmfulPrompt]:
    """Categories from a HEx-PHI-style file (`instruction`, `category`), matched by prompt text (whitespace folded).

    A prompt with no match is kept as `uncategorised` and counted in the log; no match at all is an error (the wrong
    file)."""
    categories: dict[str, str] = {}
    for line, record in read_records(path):
        categories[_prompt_key(require_text(record, "instruction", str(path), line))] = str(
            require_text(record, "category", str(path), line)
        )
    matched = [categories.get(_prompt_key(i.prompt)) for i in items]
    missing = sum(c is None for c in matched)
    if missing == len(items):
        raise DataError(str(path), f"categories_from: none of the {len(items)} prompts is in this file")
    if missing:
        log.warning(
            "categories_from %s: %d of %d prompts have no category (%r)", path, missing, len(items), UNCATEGORISED
        )
    return [replace(i, category=c or UNCATEGORISED) for i, c in zip(items, matched)]


def _hub_records(hub_id: str, hub_config: str | None, split: str) -> Iterator[tuple[int, Record]]:
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, hub_config, split=split)
    except Exception as e:  # gated, offline, missing: all surface as different types
        raise DataError(
            f"hub:{hub_id}", f"cannot load ({type(e).__name__}); offline? set safety.path to a local file"
        ) from None
    return enumerate(ds, start=1)


def load_harmful_prompts(cfg: Any) -> list[HarmfulPrompt]:
    """Load `cfg.path` (or `cfg.hub_id`) in `cfg.format`, keeping the first `cfg.limit`."""
    fmt = cfg["format"]
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt!r}: expected one of {list(FORMATS)}")
    if cfg.get("path"):
        records, source = read_records(cfg["path"], conversations=fmt == "harmful_hexphi"), str(cfg["path"])
    elif cfg.get("hub_id"):
        hub_id = cfg["hub_id"]
        records, source = _hub_records(hub_id, cfg.get("hub_config"), cfg.get("split", "train")), f"hub:{hub_id}"
    else:
        raise ConfigError("no harmful-prompt set: set safety.path=<file> (and safety.format) or safety.hub_id")
    prompts = []
    for line, record in records:
        if cfg.get("limit") is not None and len(prompts) >= int(cfg["limit"]):
            break
        prompts.append(_convert(record, fmt, source, line))
    if not prompts:
        raise DataError(source, "no prompts")
    if cfg.get("categories_from"):
        prompts = attach_categories(prompts, cfg["categories_from"])
    return prompts
