"""Data sources: read records from a file, the Hub or the built-in generator, and convert them to conversations.

A conversation is a list of `{"role", "content"}` messages whose last message is the assistant answer to train on.
Earlier turns are context and are never trained. Each example travels as
`{"messages": [...], "preview": bool}`; `preview` is False for evaluation examples, which are never previewed.

Two record formats:

    fields:    {"question": "...", "answer": "..."}                (field names configurable)
    messages:  {"messages": [{"role": "user", "content": "..."},
                             {"role": "assistant", "content": "..."}]}
"""

from __future__ import annotations

import csv
import json
import logging
import random
import string
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lookahead.constants import ASSISTANT, ROLES, SYSTEM, USER
from lookahead.data.arithmetic import generate_arithmetic
from lookahead.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Record = Mapping[str, Any]
Example = dict[str, Any]


def read_records(path: str | Path, *, conversations: bool = False) -> Iterator[tuple[int, Record]]:
    """Yield `(line_or_row_number, record)` from a .jsonl, .json or .csv file (1-based numbers).

    With `conversations=True` a record may also be a bare list of `{role, content}` messages (one per line, as in
    the paper's Harmful-HEx-PHI.jsonl); it is yielded as `{"messages": [...]}`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "no such file (check dataset.path)")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _read_csv(path)
    elif suffix == ".json":
        yield from _read_json_array(path, conversations)
    elif suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path, conversations)
    else:
        raise DataError(str(path), f"unsupported file type '{suffix}'; use .jsonl, .json or .csv")


def _as_conversation(record: Any) -> Any:
    """A bare list of message objects becomes `{"messages": [...]}`; anything else is returned as it is."""
    if isinstance(record, list) and record and all(isinstance(m, dict) and "role" in m for m in record):
        return {"messages": record}
    return record


def _read_jsonl(path: Path, conversations: bool = False) -> Iterator[tuple[int, Record]]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if line_no == 1 and line.lstrip().startswith("[") and not conversations:
                raise DataError(str(path), "this looks like a JSON array, not JSON Lines; rename the file to .json", 1)
            try:
                record = json.loads(line.rstrip())  # without the newline, the column points into this line
            except json.JSONDecodeError as e:
                hint = "; the whole file looks like one JSON array, rename it to .json" if line_no == 1 else ""
                raise DataError(str(path), f"malformed JSON ({e.msg} at column {e.colno}){hint}", line_no) from None
            if conversations:
                record = _as_conversation(record)
            if not isinstance(record, dict):
                raise DataError(str(path), f"expected a JSON object, got {type(record).__name__}", line_no)
            yield line_no, record


def _read_json_array(path: Path, conversations: bool = False) -> Iterator[tuple[int, Record]]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        hint = "; this looks like JSON Lines, rename the file to .jsonl" if text.lstrip().startswith("{") else ""
        raise DataError(str(path), f"malformed JSON ({e.msg}){hint}", e.lineno) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(str(path), 'expected a JSON array of objects (or {"data": [...]})')
    for i, record in enumerate(data, start=1):
        if conversations:
            record = _as_conversation(record)
        if not isinstance(record, dict):
            raise DataError(str(path), f"item {i} is a {type(record).__name__}, expected an object")
        yield i, record


def _read_csv(path: Path) -> Iterator[tuple[int, Record]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for record in reader:
            yield reader.line_num, record


def require_text(record: Record, field: str, source: str, line: int | None) -> str:
    """Return `record[field]` if it is a non-empty string, else raise a DataError naming the place."""
    if field not in record:
        raise DataError(source, f"missing (available: {', '.join(sorted(map(str, record))) or 'none'})", line, field)
    value = record[field]
    if not isinstance(value, str):
        raise DataError(source, f"expected a string, got {type(value).__name__}", line, field)
    if not value.strip():
        raise DataError(source, "is empty", line, field)
    return value


def fields_to_messages(
    record: Record,
    *,
    prompt_field: str,
    response_field: str,
    prompt_template: str | None,
    system_prompt: str | None,
    source: str,
    line: int | None,
) -> list[dict[str, str]]:
    """Convert a flat record to `[system?, user, assistant]`.

    `prompt_template` (e.g. "Summarize this dialog:\\n{dialogue}") builds the user turn from several fields;
    without it the user turn is `record[prompt_field]`.

    Example:
        >>> fields_to_messages({"q": "1+1?", "a": "2"}, prompt_field="q", response_field="a",
        ...                    prompt_template=None, system_prompt=None, source="x", line=1)
        [{'role': 'user', 'content': '1+1?'}, {'role': 'assistant', 'content': '2'}]
    """
    if prompt_template:
        names = [name for _, name, _, _ in string.Formatter().parse(prompt_template) if name]
        user = prompt_template.format(**{n: require_text(record, n, source, line) for n in names})
    else:
        user = require_text(record, prompt_field, source, line)
    answer = require_text(record, response_field, source, line)
    messages = [{"role": SYSTEM, "content": system_prompt}] if system_prompt else []
    return messages + [{"role": USER, "content": user}, {"role": ASSISTANT, "content": answer}]


def chat_to_messages(
    record: Record, *, messages_field: str, system_prompt: str | None, source: str, line: int | None
) -> list[dict[str, str]]:
    """Validate a chat record and cut it after its last assistant turn, which is the one trained."""
    turns = record.get(messages_field)
    if not isinstance(turns, list) or not turns:
        raise DataError(source, "expected a non-empty list of {role, content} messages", line, messages_field)
    messages = []
    for i, turn in enumerate(turns):
        where = f"{messages_field}[{i}]"
        if not isinstance(turn, dict):
            raise DataError(source, f"expected an object, got {type(turn).__name__}", line, where)
        role = turn.get("role")
        if role not in ROLES:
            raise DataError(source, f"role {role!r} is not one of {list(ROLES)}", line, f"{where}.role")
        messages.append({"role": role, "content": require_text(turn, "content", source, line)})
    last_answer = max((i for i, m in enumerate(messages) if m["role"] == ASSISTANT), default=None)
    if last_answer is None:
        raise DataError(source, "has no assistant turn to train on", line, messages_field)
    messages = messages[: last_answer + 1]
    if last_answer == 0 or messages[last_answer - 1]["role"] != USER:
        raise DataError(source, "the trained assistant turn must follow a user turn", line, messages_field)
    if system_prompt and messages[0]["role"] != SYSTEM:
        messages.insert(0, {"role": SYSTEM, "content": system_prompt})
    return messages


def load_examples(cfg: Mapping[str, Any], *, split: str | None = None) -> list[Example]:
    """Load the configured dataset as a list of `{"messages", "preview"}` examples (preview=True)."""
    path, source_kind = cfg.get("path"), cfg.get("source", "file")
    if path:
        records: Iterator[tuple[int | None, Record]] = read_records(path)
        source = str(path)
    elif source_kind == "arithmetic":
        records = enumerate(generate_arithmetic(int(cfg["size"]), seed=int(cfg.get("seed", 0))), start=1)
        source = "arithmetic"
    elif source_kind == "hub":
        records, source = _hub_records(cfg, split or cfg.get("split", "train"))
    else:
        raise ConfigError(f"dataset '{cfg.get('name')}': set dataset.path to a local .jsonl/.json/.csv file")

    limit = cfg.get("limit")
    fmt = cfg.get("format", "fields")
    if fmt not in ("fields", "messages"):
        raise ConfigError(f"dataset.format={fmt!r}: expected 'fields' or 'messages'")
    examples = []
    for line, record in records:
        if limit is not None and len(examples) >= int(limit):
            break
        if fmt == "messages":
            messages = chat_to_messages(
                record,
                messages_field=cfg.get("messages_field", "messages"),
                system_prompt=cfg.get("system_prompt"),
                source=source,
                line=line,
            )
        else:
            messages = fields_to_messages(
                record,
                prompt_field=cfg["prompt_field"],
                response_field=cfg["response_field"],
                prompt_template=cfg.get("prompt_template"),
                system_prompt=cfg.get("system_prompt"),
                source=source,
                line=line,
            )
        examples.append({"messages": messages, "preview": True})
    if not examples:
        raise DataError(source, "the dataset is empty")
    log.info("Loaded %d examples from %s", len(examples), source)
    return examples


def _hub_records(cfg: Mapping[str, Any], split: str) -> tuple[Iterator[tuple[int, Record]], str]:
    import datasets  # imported here: it is slow to import and only the Hub path needs it

    hub_id = cfg.get("hub_id")
    if not hub_id:
        raise ConfigError(f"dataset '{cfg.get('name')}' has neither dataset.path nor dataset.hub_id")
    try:
        ds = datasets.load_dataset(hub_id, cfg.get("hub_config"), split=split)
    except Exception as e:  # the datasets library raises many types for "not reachable / not found"
        raise DataError(
            f"hub:{hub_id}",
            f"could not load split '{split}' ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "offline? point dataset.path at a local copy",
        ) from None
    return enumerate(ds, start=1), f"hub:{hub_id}"


def split_train_eval(examples: list[Example], eval_size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out `eval_size` examples (seeded shuffle) for the eval loss; they are never previewed."""
    if eval_size <= 0:
        return examples, []
    if eval_size >= len(examples):
        raise ConfigError(f"dataset.eval_size={eval_size} leaves no training examples (have {len(examples)})")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:eval_size])
    train = [ex for i, ex in enumerate(examples) if i not in held]
    evals = [{**examples[i], "preview": False} for i in sorted(held)]
    return train, evals
