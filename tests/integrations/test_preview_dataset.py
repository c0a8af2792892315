"""`lookahead.preview_dataset`: the CLI's preview as a `datasets` transform, token for token what train.py trains."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict

from lookahead import preview_dataset
from lookahead.components import build_preview
from lookahead.data.prepare import ExampleEncoder
from lookahead.data.tokenize import ChatEncoder
from lookahead.errors import ConfigError
from tests.conftest import ALL_TOKENIZERS, arithmetic_records, compose, load_tokenizer, tokenizers_for

PREVIEWS = {
    "vanilla": {},
    "real_prefix": {"m": 4},
    "virtual_prefix": {"prefix": "Let's solve this problem. "},
}


def conversations(n: int = 6) -> list[dict]:
    rows = arithmetic_records(n, seed=3)
    return [
        {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]}
        for r in rows
    ]  # fmt: skip


@pytest.mark.parametrize("name", ALL_TOKENIZERS)
@pytest.mark.parametrize("method", list(PREVIEWS))
def test_every_preview_trains_what_the_cli_trains(name, method):
    """For each tokenizer: the previewed dataset, encoded, equals the CLI's encoding of the same example (the ids and
    labels scripts/inspect_data.py prints)."""
    rows = conversations()
    overrides = [f"method={method}", *(f"method.{k}={json.dumps(v)}" for k, v in PREVIEWS[method].items())]
    strategy = build_preview(compose(overrides).method)
    for tok_name, tokenizer in tokenizers_for(name):
        encoder = ChatEncoder(tokenizer, 512)
        cli = ExampleEncoder(encoder, strategy)
        out = preview_dataset(Dataset.from_list(rows), method, tokenizer, **PREVIEWS[method])
        assert out.column_names == ["prompt", "completion"] and len(out) == len(rows)
        for row, example in zip(out, rows):
            ours, _ = cli.encode(example)
            theirs = encoder.encode([*row["prompt"], *row["completion"]])
            assert (theirs.input_ids, theirs.labels) == (ours.input_ids, ours.labels), (tok_name, method)
            assert row["completion"][0]["role"] == "assistant" and row["prompt"][-1]["role"] == "user"


class TestInputs:
    def test_prompt_completion_fields_and_messages_give_the_same_rows(self):
        records = arithmetic_records(3, seed=5)
        fields = Dataset.from_list(records)
        trl = Dataset.from_list([{"prompt": r["question"], "completion": r["answer"]} for r in records])
        chat = Dataset.from_list(
            [{"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]}
             for r in records]
        )  # fmt: skip
        a = preview_dataset(fields, prompt_field="question", response_field="answer")
        b, c = preview_dataset(trl), preview_dataset(chat)
        assert a.to_list() == b.to_list() == c.to_list()
        first = a[0]
        assert first["prompt"] == [
            {"role": "user", "content": records[0]["question"] + " The answer begins with: Let's solve this problem. "}
        ]
        assert first["completion"] == [
            {"role": "assistant", "content": "Let's solve this problem. " + records[0]["answer"]}
        ]

    def test_a_dataset_dict_is_previewed_split_by_split(self):
        records = arithmetic_records(4, seed=5)
        parts = DatasetDict({"train": Dataset.from_list(records[:3]), "test": Dataset.from_list(records[3:])})
        out = preview_dataset(parts, "vanilla", prompt_field="question", response_field="answer", num_proc=2)
        assert {k: len(v) for k, v in out.items()} == {"train": 3, "test": 1}
        assert out["test"][0]["prompt"][0]["content"] == records[3]["question"]

    def test_the_share_option_previews_the_cli_share(self):
        records = arithmetic_records(40, seed=5)
        out = preview_dataset(Dataset.from_list(records), prompt_field="question", response_field="answer",
                              fraction=0.5)  # fmt: skip
        strategy = build_preview(compose(["method=virtual_prefix", "method.fraction=0.5"]).method)
        want = [strategy.apply(r["question"], r["answer"], None).previewed for r in records]
        got = [row["completion"][0]["content"].startswith("Let's solve this problem. ") for row in out]
        assert got == want and 0 < sum(got) < 40


class TestRefusals:
    def test_real_prefix_needs_the_tokenizer(self):
        with pytest.raises(ConfigError, match="method=real_prefix previews the first m answer tokens: pass tokenizer="):
            preview_dataset(Dataset.from_list([{"prompt": "q", "completion": "a"}]), "real_prefix")

    def test_an_untrained_prefix_cannot_be_said_in_prompt_completion(self):
        with pytest.raises(ConfigError, match="method.train_prefix=false"):
            preview_dataset(Dataset.from_list([{"prompt": "q", "completion": "a"}]), train_prefix=False)

    def test_unknown_columns_and_bad_options_are_one_line_errors(self):
        with pytest.raises(ConfigError, match=r"columns \['text'\] are not"):
            preview_dataset(Dataset.from_list([{"text": "x"}]))
        with pytest.raises(ConfigError, match="method.m=0"):
            preview_dataset(Dataset.from_list([{"prompt": "q", "completion": "a"}]), "real_prefix", m=0)

    def test_what_train_py_skips_is_dropped_and_counted(self):
        tokenizer = load_tokenizer("chatml-style")
        rows = [{"prompt": "short", "completion": "ok"}, {"prompt": "long " * 200, "completion": "ok"}]
        out = preview_dataset(Dataset.from_list(rows), "vanilla", tokenizer, max_seq_length=64)
        assert len(out) == 1 and out[0]["prompt"][0]["content"] == "short"
        report = json.loads(out.info.description)["lookahead"]
        assert report["skipped"] == {"prompt_too_long": 1} and report["examples"] == 2


@pytest.mark.slow
def test_preview_dataset_imports_from_the_built_wheel(tmp_path):
    """`from lookahead import preview_dataset` from the wheel's own files, not the checkout."""
    import subprocess
    import sys
    import zipfile

    from tests.conftest import ROOT

    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    built = subprocess.run([*pip_wheel, "-w", str(tmp_path / "dist"), str(ROOT)], capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("lookahead-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "lookahead" / "integrations" / "preview_dataset.py").is_file()
    probe = (
        "import lookahead, sys; from lookahead import preview_dataset; from datasets import Dataset\n"
        "assert lookahead.__file__.startswith(sys.argv[1]), lookahead.__file__\n"
        "row = preview_dataset(Dataset.from_list([{'prompt': 'q?', 'completion': 'a.'}]))[0]\n"
        "print(row['completion'][0]['content'])\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-c", probe, str(site)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "Let's solve this problem. a."
