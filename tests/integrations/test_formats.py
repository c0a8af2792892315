"""scripts/preview_data.py --format alpaca|sharegpt|openai: the records and the pasted config parse against
LLaMA-Factory's (data/README.md) and axolotl's (dataset formats) documented schemas, and carry the CLI's preview."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from lookahead.preview.base import DEFAULT_CONNECTOR
from tests.conftest import ROOT, arithmetic_records, run_cli

P = "Let's solve this problem. "

# LLaMA-Factory's dataset_info.json: the keys each formatting allows (data/README.md).
LF_COLUMNS = {
    "alpaca": {"prompt", "query", "response", "history", "system", "messages", "images", "videos", "audios", "tools"},
    "sharegpt": {"messages", "system", "tools", "images", "videos", "audios"},
}
LF_TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"}


def write(tmp_path, fmt, *extra):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in arithmetic_records(4, seed=2)))
    out = tmp_path / f"train.{fmt}.json"
    script = str(ROOT / "scripts" / "preview_data.py")
    result = run_cli([sys.executable, script, "--input", str(data), "--output", str(out), "--method", "virtual_prefix",
                      "--format", fmt, "--system", "Be helpful.", *extra])  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    entry_text, block_text = result.stdout.split("# axolotl: in your config\n")
    entry = json.loads(entry_text.split("\n", 1)[1])
    return json.loads(out.read_text()), entry, yaml.safe_load(block_text), out


def check_llamafactory(records, entry, out, fmt):
    (name, info), = entry.items()  # fmt: skip
    assert info["file_name"] == str(out) and info.get("formatting", "alpaca") in ("alpaca", "sharegpt")
    formatting = info.get("formatting", "alpaca")
    assert set(info["columns"]) <= LF_COLUMNS[formatting]
    assert set(info.get("tags", {})) <= LF_TAGS
    for record in records:
        if formatting == "alpaca":
            for key, column in info["columns"].items():
                if key in ("prompt", "query", "response", "system"):
                    assert isinstance(record.get(column, ""), str)
            assert all(isinstance(t, list) and len(t) == 2 for t in record.get(info["columns"]["history"], []))
        else:
            tags = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                    "system_tag": "system", **info.get("tags", {})}  # LLaMA-Factory's defaults  # fmt: skip
            turns = record[info["columns"]["messages"]]
            if turns[0][tags["role_tag"]] == tags["system_tag"]:
                turns = turns[1:]
            roles = [t[tags["role_tag"]] for t in turns]
            assert roles == [tags["user_tag"], tags["assistant_tag"]] * (len(roles) // 2) and len(roles) % 2 == 0
            assert all(isinstance(t[tags["content_tag"]], str) for t in turns)


def check_axolotl(records, block, out, fmt):
    (ds,) = block["datasets"]
    assert ds["path"] == str(out) and ds["ds_type"] == "json"
    for record in records:
        if ds["type"] == "alpaca":
            assert {"instruction", "input", "output"} <= set(record)
            continue
        assert ds["type"] == "chat_template"
        mapping = ds.get("message_property_mappings", {"role": "role", "content": "content"})
        roles = {name: aliases for name, aliases in ds.get("roles", {}).items()}
        turns = record[ds["field_messages"]]
        for turn in turns:
            role = turn[mapping["role"]]
            assert role in {"system", "user", "assistant"} or any(role in a for a in roles.values())
            assert isinstance(turn[mapping["content"]], str)
        assert set(ds["roles_to_train"]) == {"assistant"}


def previewed_pair(record, fmt):
    if fmt == "alpaca":
        return record["instruction"], record["output"]
    turns = record["conversations"] if fmt == "sharegpt" else record["messages"]
    key = "value" if fmt == "sharegpt" else "content"
    return turns[-2][key], turns[-1][key]


@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt", "openai"])
def test_each_format_parses_against_the_tools_schemas_and_carries_the_preview(tmp_path, fmt):
    records, entry, block, out = write(tmp_path, fmt)
    assert len(records) == 4
    check_llamafactory(records, entry, out, fmt)
    check_axolotl(records, block, out, fmt)
    raw = arithmetic_records(4, seed=2)
    for record, source in zip(records, raw):
        user, answer = previewed_pair(record, fmt)
        assert user == source["question"] + DEFAULT_CONNECTOR + P and answer == P + source["answer"]
    system = {"alpaca": lambda r: r["system"], "sharegpt": lambda r: r["system"],
              "openai": lambda r: r["messages"][0]["content"]}[fmt]  # fmt: skip
    assert system(records[0]) == "Be helpful."


def test_the_default_format_still_rewrites_the_fields(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps(arithmetic_records(1)[0] | {"id": 7}) + "\n")
    out = tmp_path / "out.jsonl"
    result = run_cli([sys.executable, str(ROOT / "scripts" / "preview_data.py"), "--input", str(data), "--output",
                      str(out), "--method", "vanilla"])  # fmt: skip
    assert result.returncode == 0 and result.stdout == ""
    assert json.loads(out.read_text())["id"] == 7
