"""Labels by construction, checked against the tokenizers' own apply_chat_template on real templates."""

from __future__ import annotations

import pytest
import torch

from lookahead.constants import IGNORE_INDEX
from lookahead.data.prepare import ExampleEncoder, filter_trainable
from lookahead.data.tokenize import ChatEncoder, Skip
from lookahead.errors import ConfigError
from lookahead.preview import RealPrefix, Vanilla, VirtualPrefix, preview_messages
from tests.conftest import (
    ALL_TOKENIZERS,
    arithmetic_records,
    collate,
    gsm8k_records,
    load_tokenizer,
    requires_shared,
    tokenizers_for,
)

SYSTEM = "You are a helpful assistant."
CONNECTOR = " The answer begins with: "
# What each template appends after the assistant content (Llama-2 puts a space before </s>).
END_OF_TURN = {
    "llama2-chat": " </s>",
    "llama3-instruct": "<|eot_id|>",
    "mistral-instruct": "</s>",
    "qwen2.5-instruct": "<|im_end|>",
    "smollm2-instruct": "<|im_end|>",
    "llama3-style": "<|eot_id|>",
    "chatml-style": "<|im_end|>",
}
STRATEGIES = {"vanilla": Vanilla(), "real_prefix": RealPrefix(m=6), "virtual_prefix": VirtualPrefix()}


def conversation(record: dict, system: str | None = SYSTEM) -> list[dict]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": record["question"]}, {"role": "assistant", "content": record["answer"]}]


def oracle_ids(tokenizer, messages, add_generation_prompt):
    return list(
        tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False
        )
    )


def records_for(name: str, n: int) -> list[dict]:
    """Real GSM8K rows for the real tokenizers, generated GSM8K-shaped rows for the built ones."""
    return gsm8k_records(n) if name in END_OF_TURN and not name.endswith("-style") else arithmetic_records(n, seed=3)


def prompt_length(labels: list[int]) -> int:
    return next(i for i, t in enumerate(labels) if t != IGNORE_INDEX)


class TestChatEncoderMatrix:
    """Every chat tokenizer x every method: the two built at test time, and the five real ones (with real GSM8K)."""

    @pytest.mark.parametrize("method", list(STRATEGIES))
    @pytest.mark.parametrize("tokenizers", ALL_TOKENIZERS)
    def test_encode_trains_exactly_the_answer_and_end_of_turn(self, tokenizers, method):
        for name, tokenizer in tokenizers_for(tokenizers):
            self.check_answer_and_end_of_turn(name, tokenizer, method)

    def check_answer_and_end_of_turn(self, name, tokenizer, method):
        encoder = ChatEncoder(tokenizer, max_seq_length=2048)
        strategy = STRATEGIES[method]
        example_encoder = ExampleEncoder(encoder, strategy)
        for record in records_for(name, 4):
            messages = conversation(record)
            previewed, _ = preview_messages(messages, strategy, tokenizer)
            enc, _ = example_encoder.encode({"messages": messages, "preview": True})
            n_prompt = prompt_length(enc.labels)

            # Labels are IGNORE_INDEX on the whole prompt and equal the input on the answer span.
            assert enc.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
            assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]

            # The trained text is the (previewed, for virtual) answer plus the template's end-of-turn marker.
            answer = previewed[-1]["content"].strip()
            trained = tokenizer.decode(enc.input_ids[n_prompt:], skip_special_tokens=False)
            assert trained.strip() == (answer + END_OF_TURN[name]).strip(), name
            if method == "virtual_prefix":
                assert trained.lstrip().startswith("Let's solve this problem. " + record["answer"][:10])

            # The prompt is token for token what the model is given at inference (the template's own tokenization).
            expected_prompt = oracle_ids(tokenizer, encoder.fit_system(previewed[:-1]), add_generation_prompt=True)
            assert enc.input_ids[:n_prompt] == expected_prompt
            # And the whole sequence is the template's tokenization of the full conversation, up to trailing space.
            full = oracle_ids(tokenizer, encoder.fit_system(previewed), add_generation_prompt=False)
            assert enc.input_ids == full[: len(enc.input_ids)]
            assert tokenizer.decode(full[len(enc.input_ids) :]).strip() == ""

            # No double BOS (SmolLM2's "BOS" is <|im_start|>, which also opens every turn, so look at the start).
            if tokenizer.bos_token_id is not None:
                assert enc.input_ids[:2].count(tokenizer.bos_token_id) <= 1

    @pytest.mark.parametrize("method", ["real_prefix", "virtual_prefix"])
    @pytest.mark.parametrize("tokenizers", ALL_TOKENIZERS)
    def test_preview_is_in_the_user_turn_and_never_in_eval_prompts(self, tokenizers, method):
        for name, tokenizer in tokenizers_for(tokenizers):
            self.check_preview_placement(name, tokenizer, method)

    def check_preview_placement(self, name, tokenizer, method):
        encoder = ChatEncoder(tokenizer, max_seq_length=2048)
        example_encoder = ExampleEncoder(encoder, STRATEGIES[method])
        record = records_for(name, 1)[0]
        messages = conversation(record)
        if method == "real_prefix":
            ids = tokenizer(record["answer"], add_special_tokens=False)["input_ids"][:6]
            preview = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        else:
            preview = "Let's solve this problem."

        train, _ = example_encoder.encode({"messages": messages, "preview": True})
        n_prompt = prompt_length(train.labels)
        prompt_text = tokenizer.decode(train.input_ids[:n_prompt])
        assert (record["question"] + CONNECTOR + preview).strip() in prompt_text

        evaluation, _ = example_encoder.encode({"messages": messages, "preview": False})
        eval_prompt = tokenizer.decode(evaluation.input_ids[: prompt_length(evaluation.labels)])
        assert CONNECTOR.strip() not in eval_prompt
        inference = tokenizer.decode(encoder.encode_prompt(messages[:-1]))
        assert CONNECTOR.strip() not in inference
        assert inference == eval_prompt


class TestChatEncoderTraps:
    def test_apply_chat_template_returns_a_dict_unless_told_otherwise(self):
        """transformers 5 returns a BatchEncoding from apply_chat_template by default; we always ask for text/ids."""
        tokenizer = load_tokenizer("llama3-style")
        messages = [{"role": "user", "content": "hi"}]
        assert not isinstance(tokenizer.apply_chat_template(messages), list)
        assert isinstance(tokenizer.apply_chat_template(messages, return_dict=False), list)
        assert isinstance(ChatEncoder(tokenizer, 64).render(messages, add_generation_prompt=True), str)

    @requires_shared
    @pytest.mark.parametrize("name", ["qwen2.5-instruct", "smollm2-instruct"])
    def test_encode_chatml_answer_with_leading_whitespace_keeps_the_inference_prompt(self, name):
        """ChatML: the prompt ends in "\\n"; an answer starting with "\\n\\n" merges with it when tokenized jointly."""
        tokenizer = load_tokenizer(name)
        encoder = ChatEncoder(tokenizer, 256)
        messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "\n\nSure"}]
        prompt = oracle_ids(tokenizer, messages[:1], add_generation_prompt=True)
        joint = oracle_ids(tokenizer, messages, add_generation_prompt=False)
        assert joint[: len(prompt)] != prompt  # the trap: a joint tokenization shifts the boundary

        enc = encoder.encode(messages)
        n_prompt = prompt_length(enc.labels)
        assert enc.boundary_split
        assert enc.input_ids[:n_prompt] == prompt
        assert tokenizer.decode(enc.input_ids[n_prompt:]) == "\n\nSure<|im_end|>"

    @pytest.mark.parametrize(
        "names", [["llama3-style"], pytest.param(["llama2-chat", "llama3-instruct"], marks=requires_shared)]
    )
    def test_encode_trimming_template_trains_the_trimmed_answer(self, names):
        for name in names:
            tokenizer = load_tokenizer(name)
            encoder = ChatEncoder(tokenizer, 256)
            conversation = [{"role": "user", "content": "  2+2?  "}, {"role": "assistant", "content": "\n 4 \n\n"}]
            enc = encoder.encode(conversation)
            trained = tokenizer.decode(enc.input_ids[prompt_length(enc.labels) :])
            assert trained.strip() == ("4" + END_OF_TURN[name]).strip(), name

    @pytest.mark.parametrize("name", ["chatml-style", pytest.param("smollm2-instruct", marks=requires_shared)])
    def test_encode_pad_equal_to_eos_keeps_the_real_eos_trained(self, name):
        tokenizer = load_tokenizer(name)
        assert tokenizer.pad_token_id == tokenizer.eos_token_id
        encoder = ChatEncoder(tokenizer, 256)
        short = {
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
            "preview": True,
        }
        long = {
            "messages": [
                {"role": "user", "content": "Count"},
                {"role": "assistant", "content": "one two three four five six"},
            ],
            "preview": True,
        }
        batch = collate(encoder, Vanilla(), [short, long])
        row = batch["labels"][0]
        length = int(batch["attention_mask"][0].sum())
        assert row[length - 1].item() == tokenizer.eos_token_id  # the real end-of-turn is trained
        assert (row[length:] == IGNORE_INDEX).all()  # the pads (same id) are not
        assert (batch["input_ids"][0, length:] == tokenizer.pad_token_id).all()
        assert batch["labels"][1, -1].item() == tokenizer.eos_token_id
        assert batch["attention_mask"].tolist()[1] == [1] * batch["input_ids"].shape[1]

    @requires_shared
    def test_no_system_role_merges_drops_or_refuses(self):
        tokenizer = load_tokenizer("mistral-instruct")
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
        ]
        merged = ChatEncoder(tokenizer, 256, system_policy="merge")
        assert not merged.supports_system
        text = tokenizer.decode(merged.encode(messages).input_ids)
        assert text.startswith("<s>[INST] Be brief.\n\nHi [/INST]Hello</s>".replace("<s>", "<s>"))
        dropped = tokenizer.decode(ChatEncoder(tokenizer, 256, system_policy="drop").encode(messages).input_ids)
        assert "Be brief" not in dropped
        with pytest.raises(ConfigError, match="no system role"):
            ChatEncoder(tokenizer, 256, system_policy="error").encode(messages)

    @requires_shared
    def test_template_without_generation_prompt_still_splits_at_the_answer(self):
        """Llama-2's template ignores add_generation_prompt: the prompt ends at [/INST]."""
        tokenizer = load_tokenizer("llama2-chat")
        encoder = ChatEncoder(tokenizer, 256)
        enc = encoder.encode([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
        n_prompt = prompt_length(enc.labels)
        assert tokenizer.decode(enc.input_ids[:n_prompt]) == "<s> [INST] Hi [/INST]"
        assert tokenizer.convert_ids_to_tokens(enc.input_ids[n_prompt:]) == ["▁Hello", "▁", "</s>"]

    @pytest.mark.parametrize(
        "names",
        [["llama3-style"], pytest.param(["llama2-chat", "mistral-instruct", "llama3-instruct"], marks=requires_shared)],
    )
    def test_tokenizer_that_adds_bos_gets_exactly_one(self, names):
        for name in names:
            tokenizer = load_tokenizer(name)
            enc = ChatEncoder(tokenizer, 256).encode(
                [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
            )
            assert enc.input_ids[0] == tokenizer.bos_token_id
            assert enc.input_ids[1] != tokenizer.bos_token_id

    def test_encode_truncates_answers_and_skips_long_prompts(self):
        tokenizer = load_tokenizer("llama3-style")
        messages = [
            {"role": "user", "content": "Say it"},
            {"role": "assistant", "content": "one two three four five six seven"},
        ]
        n_prompt = len(oracle_ids(tokenizer, messages[:1], add_generation_prompt=True))
        enc = ChatEncoder(tokenizer, n_prompt + 3).encode(messages)
        assert len(enc.input_ids) == n_prompt + 3 and enc.answer_truncated
        assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]
        assert ChatEncoder(tokenizer, n_prompt).encode(messages) is Skip.PROMPT_TOO_LONG

    def test_encoder_without_chat_template_names_the_option(self):
        tokenizer = load_tokenizer("llama3-style")
        template, tokenizer.chat_template = tokenizer.chat_template, None
        try:
            with pytest.raises(ConfigError, match="model.chat_template"):
                ChatEncoder(tokenizer, 64)
        finally:
            tokenizer.chat_template = template


class TestCollator:
    def test_collator_pads_right_with_exact_ids(self):
        tokenizer = load_tokenizer("llama3-style")
        encoder = ChatEncoder(tokenizer, 256)
        examples = [
            {
                "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                "preview": True,
            },
            {
                "messages": [
                    {"role": "user", "content": "Hi there friend"},
                    {"role": "assistant", "content": "Hello to you"},
                ],
                "preview": True,
            },
        ]
        batch = collate(encoder, Vanilla(), examples, pad_to_multiple_of=8)
        width = batch["input_ids"].shape[1]
        assert width % 8 == 0
        for row, example in enumerate(examples):
            enc = encoder.encode(example["messages"])
            n = len(enc.input_ids)
            assert batch["input_ids"][row, :n].tolist() == enc.input_ids
            assert batch["labels"][row, :n].tolist() == enc.labels
            assert batch["labels"][row, n:].eq(IGNORE_INDEX).all()
            assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert batch["input_ids"].dtype == torch.long


@pytest.mark.parametrize("tokenizers", ALL_TOKENIZERS)
def test_an_untrained_virtual_prefix_masks_exactly_its_own_tokens(tokenizers):
    """`method.train_prefix=false`: the same ids as the paper's virtual preview; P's whole tokens carry no loss, and
    the answer's first token (which may carry P's trailing space) and everything after it stay trained."""
    for name, tokenizer in tokenizers_for(tokenizers):
        encoder = ChatEncoder(tokenizer, max_seq_length=2048)
        paper = ExampleEncoder(encoder, VirtualPrefix())
        untrained = ExampleEncoder(encoder, VirtualPrefix(train_prefix=False))
        for record in records_for(name, 3):
            example = {"messages": conversation(record), "preview": True}
            (full, _), (masked, preview) = paper.encode(example), untrained.encode(example)
            assert masked.input_ids == full.input_ids and preview.untrained_prefix == "Let's solve this problem. "
            start, first = prompt_length(full.labels), prompt_length(masked.labels)
            assert full.labels[first:] == masked.labels[first:] and masked.labels[:first] == [IGNORE_INDEX] * first
            assert tokenizer.decode(full.input_ids[start:first]).strip() == "Let's solve this problem.", name
            assert not tokenizer.decode(full.input_ids[first : first + 1]).strip().startswith("Let"), name


def test_an_answer_that_is_only_the_untrained_prefix_trains_its_end_of_turn_alone():
    tokenizer = load_tokenizer("chatml-style")
    strategy = VirtualPrefix(prefix="Sure. ", train_prefix=False)
    encoder = ExampleEncoder(ChatEncoder(tokenizer, max_seq_length=256), strategy)
    enc, _ = encoder.encode({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]})
    assert [t for t in enc.labels if t != IGNORE_INDEX] == [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_examples_outside_the_previewed_share_encode_exactly_as_vanilla_and_are_counted():
    tokenizer = load_tokenizer("chatml-style")
    encoder = ChatEncoder(tokenizer, max_seq_length=512)
    vanilla = ExampleEncoder(encoder, Vanilla())
    partial = ExampleEncoder(encoder, VirtualPrefix(train_prefix=False, fraction=0.5))
    paper = ExampleEncoder(encoder, VirtualPrefix(train_prefix=False))
    examples = [{"messages": conversation(r), "preview": True} for r in arithmetic_records(40)]
    previewed = 0
    for example in examples:
        (enc, preview), (plain, _), (full, _) = partial.encode(example), vanilla.encode(example), paper.encode(example)
        previewed += preview.previewed
        assert (enc.input_ids, enc.labels) == ((full if preview.previewed else plain).input_ids,
                                               (full if preview.previewed else plain).labels)  # fmt: skip
    assert 10 < previewed < 30
    kept, report = filter_trainable(examples, partial, name="t", max_skip_fraction=0.0)
    assert report.as_metrics("train")["train/previewed"] == previewed and len(kept) == 40
    assert filter_trainable(examples, vanilla, name="t", max_skip_fraction=0.0)[1].previewed == 0


def test_mixed_refusals_are_previewed_like_the_task_unless_safety_preview_is_false(tmp_path):
    """`dataset.safety_preview=false` (an ablation): the mixed refusals encode exactly as vanilla, the task examples
    keep their preview; the default previews both."""
    from lookahead.data.safety_mix import mix_in_safety

    refusals = tmp_path / "refusals.jsonl"
    refusals.write_text(
        "".join(f'{{"prompt": "Hurt {i}?", "response": "I can\'t help with that."}}\n' for i in range(4))
    )
    train = [{"messages": conversation(r), "preview": True} for r in arithmetic_records(16)]
    tokenizer = load_tokenizer("chatml-style")
    encoder = ChatEncoder(tokenizer, max_seq_length=512)
    vanilla, paper = ExampleEncoder(encoder, Vanilla()), ExampleEncoder(encoder, VirtualPrefix())
    cfg = {"name": "t", "safety_mix": 0.25, "safety_path": str(refusals)}
    for safety_preview in (True, False):
        mixed = mix_in_safety(train, {**cfg, "safety_preview": safety_preview}, seed=0)
        assert sum(e.get("source") == "safety" for e in mixed) == 4
        for example in mixed:
            (enc, preview), (plain, _) = paper.encode(example), vanilla.encode(example)
            previewed = example.get("source") != "safety" or safety_preview
            assert preview.previewed if previewed else preview is None
            assert (enc.input_ids == plain.input_ids) is not previewed
            if example.get("source") == "safety" and previewed:
                trained = tokenizer.decode([t for t in enc.labels if t != IGNORE_INDEX])
                assert trained == "Let's solve this problem. I can't help with that.<|im_end|>"
    with pytest.raises(ConfigError, match=r"dataset.safety_preview='no': expected true or false"):
        mix_in_safety(train, {**cfg, "safety_preview": "no"}, seed=0)
