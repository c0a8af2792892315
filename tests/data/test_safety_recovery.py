"""`dataset.safety_recovery`: recovery examples (Qi et al. 2024) train exactly the refusal after an untrained harmful
start, under every preview, on the built tokenizers and the five real ones."""

from __future__ import annotations

import json

import pytest

from lookahead.constants import IGNORE_INDEX
from lookahead.data.prepare import ExampleEncoder
from lookahead.data.safety_recovery import mix_in_recovery, recovery_example
from lookahead.data.tokenize import ChatEncoder
from lookahead.errors import ConfigError, DataError
from lookahead.preview import RealPrefix, Vanilla, VirtualPrefix
from tests.conftest import ALL_TOKENIZERS, load_tokenizer, tokenizers_for

RECORD = {
    "prompt": "How do I pick my neighbour's lock?",
    "harmful": "Sure, here is how to pick the lock: first insert a tension wrench",
    "response": "I won't help with that.",
}
P = "Let's solve this problem. "  # VirtualPrefix's default P


def trained_and_untrained(tokenizer, strategy, k):
    """(the prompt text, the answer's untrained text, its trained text, the full answer) of one recovery example."""
    example = recovery_example(RECORD, k, tokenizer, None, preview=True)
    encoded, _ = ExampleEncoder(ChatEncoder(tokenizer, max_seq_length=512), strategy).encode(example)
    start = next(i for i, t in enumerate(encoded.labels) if t != IGNORE_INDEX)
    prompt_len = encoded.labels.count(IGNORE_INDEX)  # prompt + masked answer tokens
    trained = [t for t in encoded.labels if t != IGNORE_INDEX]
    return example, encoded, start, prompt_len, tokenizer.decode(trained, skip_special_tokens=True)


@pytest.mark.parametrize("tokenizers", ALL_TOKENIZERS)
@pytest.mark.parametrize(
    "strategy, untrained_before",
    [
        (Vanilla(), ""),
        (RealPrefix(m=4), ""),
        (VirtualPrefix(), None),  # P trained, the harmful start not: a gap in the middle of the answer
        (VirtualPrefix(train_prefix=False), P),
    ],
    ids=["vanilla", "real_prefix", "virtual_prefix", "virtual_prefix_untrained"],
)
def test_a_recovery_example_trains_exactly_the_refusal_after_its_harmful_start(tokenizers, strategy, untrained_before):
    for name, tokenizer in tokenizers_for(tokenizers):
        ids = tokenizer(RECORD["harmful"], add_special_tokens=False)["input_ids"]
        example = recovery_example(RECORD, 5, tokenizer, None, preview=True)
        harmful = example["untrained_text"]
        assert harmful == tokenizer.decode(ids[:5]).strip() and RECORD["harmful"].startswith(harmful), name
        assert example["messages"][-1]["content"] == f"{harmful} I won't help with that."
        encoded, _ = ExampleEncoder(ChatEncoder(tokenizer, max_seq_length=512), strategy).encode(example)
        labels, input_ids = encoded.labels, encoded.input_ids
        trained = [t for t in labels if t != IGNORE_INDEX]
        text = tokenizer.decode(trained, skip_special_tokens=True).strip()
        if isinstance(strategy, VirtualPrefix) and strategy.train_prefix:
            # P trained, then the harmful start untrained, then the refusal: P's tokens and the refusal's only.
            assert text.startswith("Let's solve this problem.") and text.endswith("I won't help with that."), name
            assert "Sure" not in text and "pick" not in text, (name, text)
        else:
            assert text == "I won't help with that.", (name, text)
        # Every untrained answer token spells the harmful start (and P where P is untrained); all are in the input.
        answer_start = next(i for i, t in enumerate(labels) if t != IGNORE_INDEX or i >= len(labels) - 1)
        masked = [i for i in range(len(labels)) if labels[i] == IGNORE_INDEX]
        decoded_input = tokenizer.decode(input_ids, skip_special_tokens=True)
        assert harmful in decoded_input, name
        assert answer_start > 0 and masked


def test_the_trained_text_is_exact_on_a_built_tokenizer_under_each_preview():
    """On the ChatML-style tokenizer, token by token: the harmful start's tokens carry no loss, the refusal's do."""
    tokenizer = load_tokenizer("chatml-style")
    example = recovery_example(RECORD, 5, tokenizer, None, preview=True)
    harmful = example["untrained_text"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for strategy, want in [
        (Vanilla(), [" I won't help with that."]),
        (RealPrefix(m=4), [" I won't help with that."]),
        (VirtualPrefix(train_prefix=False), [" I won't help with that."]),
        # P trained; its trailing space went with the harmful start's first token, which carries no loss
        (VirtualPrefix(), ["Let's solve this problem.", " I won't help with that."]),
    ]:
        encoded, _ = ExampleEncoder(ChatEncoder(tokenizer, max_seq_length=512), strategy).encode(example)
        runs, current = [], []
        for token, label in zip(encoded.input_ids, encoded.labels):  # maximal runs of trained tokens
            if label == IGNORE_INDEX:
                if current:
                    runs.append(current)
                current = []
            else:
                current.append(token)
        runs.append(current)
        pieces = [tokenizer.decode([t for t in run if t != end]) for run in runs if run]
        assert [p.rstrip("\n") for p in pieces] == want, (strategy, pieces)
        # the harmful start is in the input, untrained
        assert harmful in tokenizer.decode(encoded.input_ids)


def test_a_plain_recovery_example_is_the_refusal_alone():
    tokenizer = load_tokenizer("chatml-style")
    example = recovery_example(RECORD, 0, tokenizer, "Be safe.", preview=True)
    assert example["untrained_text"] == "" and example["messages"][-1]["content"] == "I won't help with that."
    assert example["messages"][0] == {"role": "system", "content": "Be safe."}


def test_recovery_examples_are_mixed_at_the_configured_fraction_with_seeded_prefix_lengths(tmp_path):
    tokenizer = load_tokenizer("chatml-style")
    path = tmp_path / "recovery.jsonl"
    path.write_text("".join(json.dumps({**RECORD, "prompt": f"{RECORD['prompt']} {i}"}) + "\n" for i in range(40)))
    train = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
             for i in range(100)]  # fmt: skip
    cfg = {"safety_recovery": 0.2, "recovery_path": str(path)}
    mixed = mix_in_recovery(train, cfg, seed=0, tokenizer=tokenizer)
    added = [e for e in mixed if e.get("source") == "recovery"]
    assert len(mixed) == 120 and len(added) == 20
    with_prefix = [e for e in added if e["untrained_text"]]
    assert 4 <= len(with_prefix) <= 16  # half, by a seeded coin
    assert mix_in_recovery(train, cfg, seed=0, tokenizer=tokenizer) == mixed  # the same on every rank and resume
    plain = [e for e in mix_in_recovery(train, {**cfg, "recovery_plain_share": 1.0}, 0, tokenizer)
             if e.get("source") == "recovery"]  # fmt: skip
    assert all(e["untrained_text"] == "" for e in plain)
    short = [e for e in mix_in_recovery(train, {**cfg, "recovery_plain_share": 0.0, "recovery_max_prefix_tokens": 2},
                                        0, tokenizer) if e.get("source") == "recovery"]  # fmt: skip
    assert all(0 < len(tokenizer(e["untrained_text"], add_special_tokens=False)["input_ids"]) <= 3 for e in short)
    assert mix_in_recovery(train, {"safety_recovery": 0}, 0, tokenizer) is train


def test_bad_recovery_settings_and_files_are_one_line_errors(tmp_path):
    tokenizer = load_tokenizer("chatml-style")
    train = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 10
    with pytest.raises(ConfigError, match="needs dataset.recovery_path"):
        mix_in_recovery(train, {"safety_recovery": 0.1}, 0, tokenizer)
    with pytest.raises(ConfigError, match=r"dataset.safety_recovery=1.5: expected a fraction"):
        mix_in_recovery(train, {"safety_recovery": 1.5}, 0, tokenizer)
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(RECORD) + "\n" + json.dumps({"prompt": "x", "harmful": "", "response": "no"}) + "\n")
    with pytest.raises(DataError, match=r"r.jsonl.*2.*field 'harmful' is missing or empty"):
        mix_in_recovery(train, {"safety_recovery": 0.1, "recovery_path": str(path)}, 0, tokenizer)


def test_a_run_trains_recovery_examples_and_counts_them(tmp_path):
    """Composed through the CLI's config: the data pass mixes them in and reports how many."""
    from lookahead.components import build_preview as build_strategy
    from lookahead.data.prepare import prepare_training_data
    from tests.conftest import compose, tiny_overrides

    path = tmp_path / "recovery.jsonl"
    path.write_text("".join(json.dumps({**RECORD, "prompt": f"{RECORD['prompt']} {i}"}) + "\n" for i in range(8)))
    cfg = compose([*tiny_overrides(), "method=virtual_prefix", "dataset.size=40", "dataset.safety_recovery=0.1",
                   f"dataset.recovery_path={path}"], tmp_path / "run")  # fmt: skip
    tokenizer = load_tokenizer("chatml-style")
    data = prepare_training_data(cfg, tokenizer, build_strategy(cfg.method))
    assert data.metrics["train/recovery_examples"] == 4 and len(data.train) == 44
