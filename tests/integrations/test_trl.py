"""TRL's SFTTrainer on `preview_dataset`'s output trains the tokens train.py trains: for the Llama-3, ChatML (Qwen)
and Mistral templates and every preview, TRL's `input_ids` and loss mask equal our encoder's ids and labels, but for
two pinned differences (docs/trl.md). And the TRL script of docs/trl.md runs as written."""

from __future__ import annotations

import importlib.util
import re

import pytest
from datasets import Dataset

from lookahead import preview_dataset
from lookahead.constants import IGNORE_INDEX
from lookahead.data.tokenize import ChatEncoder
from tests.conftest import ROOT, arithmetic_records, load_tokenizer, requires_shared, run_trl_example

pytestmark = pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="pip install trl (lookahead[trl])")

TEMPLATES = ["llama3-instruct", "qwen2.5-instruct", "mistral-instruct"]
PREVIEWS = {"vanilla": {}, "real_prefix": {"m": 6}, "virtual_prefix": {}}
CHATML_TURN_END = 198  # "\n": ChatML's separator after <|im_end|>, which TRL trains and train.py does not


def trl_rows(dataset, tokenizer):
    """What SFTTrainer trains on: its own tokenization and labels of `dataset` (completion-only loss)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    args = SFTConfig(output_dir="/tmp/lookahead-trl-unused", max_length=1024, completion_only_loss=True,
                     report_to=[], use_cpu=True, max_steps=1)  # fmt: skip
    trainer = SFTTrainer(model=LlamaForCausalLM(config), args=args, train_dataset=dataset, processing_class=tokenizer)
    return list(trainer.train_dataset)


def conversations():
    return [
        {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                      {"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]}
        for r in arithmetic_records(4, seed=3)
    ]  # fmt: skip


@requires_shared
@pytest.mark.parametrize("method", list(PREVIEWS))
@pytest.mark.parametrize("template", TEMPLATES)
def test_trl_trains_the_tokens_we_train(template, method):
    tokenizer = load_tokenizer(template)
    dataset = preview_dataset(Dataset.from_list(conversations()), method, tokenizer, **PREVIEWS[method])
    encoder = ChatEncoder(tokenizer, 1024)
    for row, trl in zip(dataset, trl_rows(dataset, tokenizer), strict=True):
        ours = encoder.encode([*row["prompt"], *row["completion"]])
        ids, labels = list(trl["input_ids"]), list(trl["labels"])
        if template == "qwen2.5-instruct":  # pinned: TRL also trains the newline ChatML writes after <|im_end|>
            assert ids[-1] == labels[-1] == CHATML_TURN_END
            ids, labels = ids[:-1], labels[:-1]
        assert ids == ours.input_ids
        assert labels == ours.labels
        assert labels.count(IGNORE_INDEX) == ours.labels.count(IGNORE_INDEX) > 0


@requires_shared
def test_an_answer_that_merges_with_the_generation_prompt_is_pinned():
    """ChatML's generation prompt ends in "\\n"; an answer opening with "\\n\\n" merges with it into one token.
    train.py keeps the prompt as inference sees it and trains "\\n\\n"; TRL trains the merged "\\n\\n\\n" and drops
    the prompt's last "\\n" from the context. docs/trl.md: strip leading whitespace from completions."""
    tokenizer = load_tokenizer("qwen2.5-instruct")
    dataset = preview_dataset(Dataset.from_list([{"prompt": "What is 2+3?", "completion": "\n\n2+3 = 5."}]),
                              "vanilla", tokenizer)  # fmt: skip
    trl = trl_rows(dataset, tokenizer)[0]
    ours = ChatEncoder(tokenizer, 1024).encode([*dataset[0]["prompt"], *dataset[0]["completion"]])
    newline, two, three = (tokenizer.convert_tokens_to_ids(t) for t in ("Ċ", "ĊĊ", "ĊĊĊ"))
    start = ours.labels.count(IGNORE_INDEX)
    assert ours.boundary_split and ours.input_ids[start - 1 : start + 1] == [newline, two]
    assert trl["input_ids"][: start - 1] == ours.input_ids[: start - 1]  # the prompt but its last "\n"
    assert trl["input_ids"][start - 1] == three and trl["labels"][start - 1] == three
    assert trl["input_ids"][start:] == ours.input_ids[start + 1 :] + [CHATML_TURN_END]


def test_the_trl_script_in_the_docs_runs_as_written(tmp_path):
    """docs/trl.md shows examples/trl_sft.py verbatim; it trains 2 steps on the tiny model."""
    script = (ROOT / "examples" / "trl_sft.py").read_text()
    doc = (ROOT / "docs" / "trl.md").read_text()
    block = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert block == script
    assert len([line for line in script.splitlines() if line.strip() and not line.startswith("#")]) <= 17

    _, checkpoint = run_trl_example(tmp_path)
    assert (checkpoint / "adapter_model.safetensors").is_file() and (checkpoint / "adapter_config.json").is_file()
