"""Previewed conversations in the files LLaMA-Factory and axolotl read, and the config snippet each needs.

    alpaca    {"instruction", "input", "output", "system"?, "history"?}
              LLaMA-Factory `alpaca`, axolotl `alpaca`
    sharegpt  {"conversations": [{"from": "human"|"gpt", "value"}], "system"?}
              LLaMA-Factory `sharegpt`, axolotl `chat_template` with `from`/`value` mapped
    openai    {"messages": [{"role", "content"}]}
              LLaMA-Factory `sharegpt` with OpenAI tags, axolotl `chat_template`

Those tools mask by their own rules (LLaMA-Factory trains the last response, and earlier ones unless `mask_history`;
axolotl's `chat_template` trains every assistant turn unless told otherwise), which docs/other-trainers.md compares with
what train.py trains.
"""

from __future__ import annotations

import json
from typing import Any

from lookahead.constants import ASSISTANT, SYSTEM, USER
from lookahead.errors import ConfigError

FORMATS = ("alpaca", "sharegpt", "openai")


def split_system(messages: list[dict[str, str]]) -> tuple[str | None, list[dict[str, str]]]:
    if messages and messages[0]["role"] == SYSTEM:
        return messages[0]["content"], messages[1:]
    return None, messages


def turn_pairs(messages: list[dict[str, str]]) -> list[tuple[str, str]]:
    """(user, assistant) pairs of a conversation that alternates from a user turn to the trained assistant turn."""
    roles = [m["role"] for m in messages]
    if len(roles) % 2 or roles != [USER, ASSISTANT] * (len(roles) // 2):
        raise ConfigError(f"a conversation for alpaca must alternate user/assistant turns, got roles {roles}")
    return [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages), 2)]


def to_alpaca(messages: list[dict[str, str]]) -> dict[str, Any]:
    system, rest = split_system(messages)
    pairs = turn_pairs(rest)
    record: dict[str, Any] = {"instruction": pairs[-1][0], "input": "", "output": pairs[-1][1]}
    if system:
        record["system"] = system
    if len(pairs) > 1:
        record["history"] = [list(p) for p in pairs[:-1]]
    return record


def to_sharegpt(messages: list[dict[str, str]]) -> dict[str, Any]:
    system, rest = split_system(messages)
    speaker = {USER: "human", ASSISTANT: "gpt"}
    record: dict[str, Any] = {"conversations": [{"from": speaker[m["role"]], "value": m["content"]} for m in rest]}
    if system:
        record["system"] = system
    return record


def to_openai(messages: list[dict[str, str]]) -> dict[str, Any]:
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}


CONVERTERS = {"alpaca": to_alpaca, "sharegpt": to_sharegpt, "openai": to_openai}


def convert(messages: list[dict[str, str]], fmt: str) -> dict[str, Any]:
    if fmt not in CONVERTERS:
        raise ConfigError(f"--format {fmt!r}: expected one of {list(FORMATS)}")
    return CONVERTERS[fmt](messages)


def llamafactory_entry(name: str, file_name: str, fmt: str) -> dict[str, Any]:
    """The `dataset_info.json` entry for a file written in `fmt` (LLaMA-Factory's data/README.md)."""
    if fmt == "alpaca":
        columns = {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                   "history": "history"}  # fmt: skip
        return {name: {"file_name": file_name, "columns": columns}}
    if fmt == "sharegpt":
        return {name: {"file_name": file_name, "formatting": "sharegpt",
                       "columns": {"messages": "conversations", "system": "system"}}}  # fmt: skip
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
            "system_tag": "system"}  # fmt: skip
    return {name: {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": tags}}


def axolotl_datasets(path: str, fmt: str) -> dict[str, Any]:
    """The axolotl `datasets:` entry for a file written in `fmt` (axolotl's dataset-formats docs)."""
    if fmt == "alpaca":
        return {"path": path, "ds_type": "json", "type": "alpaca"}
    if fmt == "sharegpt":
        return {"path": path, "ds_type": "json", "type": "chat_template", "field_messages": "conversations",
                "message_property_mappings": {"role": "from", "content": "value"},
                "roles": {"user": ["human"], "assistant": ["gpt"]}, "roles_to_train": ["assistant"]}  # fmt: skip
    return {"path": path, "ds_type": "json", "type": "chat_template", "field_messages": "messages",
            "roles_to_train": ["assistant"]}  # fmt: skip


def snippets(name: str, path: str, fmt: str) -> str:
    """What to paste: the LLaMA-Factory entry (JSON) and the axolotl block (YAML)."""
    import yaml

    entry = json.dumps(llamafactory_entry(name, path, fmt), indent=2)
    block = yaml.safe_dump({"datasets": [axolotl_datasets(path, fmt)]}, sort_keys=False)
    return f"# LLaMA-Factory: add to data/dataset_info.json\n{entry}\n# axolotl: in your config\n{block}"
