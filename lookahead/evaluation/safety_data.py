"""Harmful-prompt sets from local files or the Hub, mapped to one shape.

| format           | file  | prompt                     | harmful answer / target      | category   |
|------------------|-------|----------------------------|------------------------------|------------|
| `hexphi`         | jsonl | `instruction`              | -                            | `category` |
| `harmful_hexphi` | jsonl | `messages[user]`           | `messages[assistant]`        | `category` |
| `jbb`            | csv   | `Goal`                     | `Target`                     | `Category` |
| `advbench`       | csv   | `goal`                     | `target`                     | -          |
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lookahead.data.sources import Record, read_records, require_text
from lookahead.errors import ConfigError, DataError

FORMATS = ("hexphi", "harmful_hexphi", "jbb", "advbench")


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
    by_role = {t.get("role"): t for t in turns if isinstance(t, dict)}
    if "user" not in by_role or "assistant" not in by_role:
        raise DataError(source, "needs a user and an assistant turn", line, "messages")
    return HarmfulPrompt(
        require_text(by_role["user"], "content", source, line),
        str(record.get("category") or "all"),
        require_text(by_role["assistant"], "content", source, line),
    )


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
        records, source = read_records(cfg["path"]), str(cfg["path"])
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
    return prompts
