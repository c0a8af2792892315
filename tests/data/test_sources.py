"""Record readers and converters: exact conversations, and one-line errors that name file, line and field."""

from __future__ import annotations

import json

import pytest

from lookahead.data.arithmetic import generate_arithmetic
from lookahead.data.sources import chat_to_messages, load_examples, read_records, split_train_eval
from lookahead.errors import ConfigError, DataError
from tests.conftest import GSM8K_TRAIN, requires_shared


def file_cfg(path, **extra):
    return {
        "name": "t",
        "path": str(path),
        "format": "fields",
        "prompt_field": "question",
        "response_field": "answer",
        "system_prompt": "S",
        **extra,
    }


class TestReadRecords:
    def test_read_jsonl_malformed_line_names_file_and_line(self, tmp_path):
        path = tmp_path / "bad.jsonl"
        path.write_text('{"question": "a", "answer": "b"}\n\n{"question": "c", "answer": \n')
        with pytest.raises(DataError) as err:
            list(read_records(path))
        assert str(err.value).startswith(f"{path}:3: malformed JSON")
        assert "\n" not in str(err.value)

    def test_read_jsonl_given_a_json_array_says_so(self, tmp_path):
        path = tmp_path / "array.jsonl"
        path.write_text('[{"question": "a", "answer": "b"}]\n')
        with pytest.raises(DataError, match=r"array.jsonl:1: .*JSON array.*\.json"):
            list(read_records(path))

    def test_read_json_given_jsonl_says_so(self, tmp_path):
        path = tmp_path / "lines.json"
        path.write_text('{"question": "a", "answer": "b"}\n{"question": "c", "answer": "d"}\n')
        with pytest.raises(DataError, match=r"JSON Lines, rename the file to \.jsonl"):
            list(read_records(path))

    def test_read_csv_and_json_give_numbered_records(self, tmp_path):
        (tmp_path / "d.csv").write_text('question,answer\n"x, y",z\n')
        assert list(read_records(tmp_path / "d.csv")) == [(2, {"question": "x, y", "answer": "z"})]
        (tmp_path / "d.json").write_text(json.dumps({"data": [{"question": "q", "answer": "a"}]}))
        assert list(read_records(tmp_path / "d.json")) == [(1, {"question": "q", "answer": "a"})]

    def test_read_missing_file(self, tmp_path):
        with pytest.raises(DataError, match="no such file"):
            list(read_records(tmp_path / "nope.jsonl"))


class TestLoadExamples:
    def test_load_fields_builds_system_user_assistant(self, tmp_path):
        path = tmp_path / "d.jsonl"
        path.write_text('{"question": "1+1?", "answer": "2"}\n')
        assert load_examples(file_cfg(path)) == [
            {
                "messages": [
                    {"role": "system", "content": "S"},
                    {"role": "user", "content": "1+1?"},
                    {"role": "assistant", "content": "2"},
                ],
                "preview": True,
            }
        ]

    @pytest.mark.parametrize(
        ("line", "message"),
        [
            ('{"question": "q"}', r"d.jsonl:2: field 'answer': missing \(available: question\)"),
            ('{"question": "q", "answer": null}', r"d.jsonl:2: field 'answer': expected a string, got NoneType"),
            ('{"question": "q", "answer": 7}', r"d.jsonl:2: field 'answer': expected a string, got int"),
            ('{"question": "q", "answer": "  \\n "}', r"d.jsonl:2: field 'answer': is empty"),
            ('{"question": "", "answer": "a"}', r"d.jsonl:2: field 'question': is empty"),
        ],
    )
    def test_load_bad_field_names_line_and_field(self, tmp_path, line, message):
        path = tmp_path / "d.jsonl"
        path.write_text('{"question": "ok", "answer": "ok"}\n' + line + "\n")
        with pytest.raises(DataError, match=message):
            load_examples(file_cfg(path))

    def test_load_empty_dataset_is_an_error(self, tmp_path):
        path = tmp_path / "d.jsonl"
        path.write_text("\n")
        with pytest.raises(DataError, match="empty"):
            load_examples(file_cfg(path))

    def test_load_prompt_template_uses_named_fields(self, tmp_path):
        path = tmp_path / "s.jsonl"
        path.write_text(json.dumps({"dialogue": "A: hi\nB: yo", "summary": "They greet."}) + "\n")
        cfg = file_cfg(path, prompt_template="Summarize this dialog:\n{dialogue}", response_field="summary")
        [example] = load_examples(cfg)
        assert example["messages"][1]["content"] == "Summarize this dialog:\nA: hi\nB: yo"

    def test_load_messages_trains_the_last_assistant_turn(self, tmp_path):
        path = tmp_path / "chat.jsonl"
        turns = [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"},
            {"role": "user", "content": "e"},
        ]
        path.write_text(json.dumps({"messages": turns}) + "\n")
        [example] = load_examples(file_cfg(path, format="messages", system_prompt=None))
        assert [m["content"] for m in example["messages"]] == ["a", "b", "c", "d"]

    def test_messages_without_assistant_turn_is_an_error(self):
        with pytest.raises(DataError, match=r"f:4: field 'messages': has no assistant turn"):
            chat_to_messages(
                {"messages": [{"role": "user", "content": "x"}]},
                messages_field="messages",
                system_prompt=None,
                source="f",
                line=4,
            )

    def test_load_unknown_format_is_a_config_error(self, tmp_path):
        path = tmp_path / "d.jsonl"
        path.write_text('{"question": "q", "answer": "a"}\n')
        with pytest.raises(ConfigError, match="dataset.format"):
            load_examples(file_cfg(path, format="alpaca"))

    @requires_shared
    def test_load_gsm8k_local_copy_with_limit(self):
        examples = load_examples(file_cfg(GSM8K_TRAIN, limit=5))
        assert len(examples) == 5
        assert examples[0]["messages"][1]["content"].startswith("Natalia sold clips")
        assert examples[0]["messages"][2]["content"].endswith("#### 72")

    def test_split_train_eval_marks_eval_unpreviewed_and_is_seeded(self):
        examples = [{"messages": [i], "preview": True} for i in range(10)]
        train, evals = split_train_eval(examples, 3, seed=1)
        assert len(train) == 7 and len(evals) == 3
        assert all(not e["preview"] for e in evals) and all(t["preview"] for t in train)
        assert split_train_eval(examples, 3, seed=1) == (train, evals)


class TestArithmetic:
    def test_generate_is_deterministic_and_gsm8k_shaped(self):
        a, b = generate_arithmetic(50, seed=3), generate_arithmetic(50, seed=3)
        assert a == b and a != generate_arithmetic(50, seed=4)
        for record in a:
            *work, final = record["answer"].splitlines()
            assert final.startswith("#### ")
            # The final number is the result of the last calculator mark.
            assert work[-1].split("=")[-1].split(">>")[0] == final[5:]
