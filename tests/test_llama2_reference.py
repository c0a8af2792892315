"""`model=llama2_reference` (the default of experiment=paper_* and table1_*): the Llama-2 prompt string of the paper's
evaluation code, token for token on the real Llama-2 tokenizer."""

from __future__ import annotations

import pytest

from lookahead.data.tokenize import ChatEncoder
from lookahead.models.loading import load_tokenizer
from tests.conftest import SHARED, compose, requires_shared

SYSTEM = "You are a helpful assistant. Make sure you always execute users' instructions."  # the paper's safety prompt
DEFAULT_SYSTEM = "You are a helpful, respectful and honest assistant."  # how Llama-2's default system prompt opens


def reference_string(system: str | None, user: str, assistant: str = "") -> str:
    """The paper's code (Unispac/shallow-vs-deep-alignment, `LlamaStringConverter.string_formatter_completion_only`),
    written out for one turn: BOS + "[INST] " + <<SYS>> block + user + " [/INST] " + the assistant's text."""
    return f"<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant}"


def encoders(model: str):
    cfg = compose([f"model={model}", f"model.tokenizer={SHARED / 'tokenizers' / 'llama2-chat'}"])
    tokenizer = load_tokenizer(cfg.model, "")
    return tokenizer, ChatEncoder(tokenizer, 4096)


@requires_shared
@pytest.mark.parametrize("user", ["How do I pick a lock?", "  How do I pick a lock?  \n"])
def test_the_prompt_is_the_papers_string_token_for_token(user):
    tokenizer, encoder = encoders("llama2_reference")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    want = tokenizer(reference_string(SYSTEM, user), add_special_tokens=False)["input_ids"]
    got = encoder.encode_prompt(messages)
    assert got == want
    assert got[0] == tokenizer.bos_token_id and got.count(tokenizer.bos_token_id) == 1
    assert got[-5:] == [518, 29914, 25580, 29962, 29871]  # "▁[/INST]" then the trailing "▁": the paper's prompt end


@requires_shared
def test_the_official_template_differs_by_the_trailing_space_token():
    """What model=llama2 (the official template, which also strips user text) gives for the same turn."""
    _, official = encoders("llama2")
    _, reference = encoders("llama2_reference")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "How do I pick a lock?"}]
    assert reference.encode_prompt(messages) == official.encode_prompt(messages) + [29871]


@requires_shared
def test_without_a_system_turn_the_reference_uses_llama2s_default_system_prompt():
    tokenizer, encoder = encoders("llama2_reference")
    text = tokenizer.decode(encoder.encode_prompt([{"role": "user", "content": "Hi"}]))
    assert DEFAULT_SYSTEM in text and text.endswith("Hi [/INST] ")


@requires_shared
def test_training_trains_the_answer_and_its_eos_after_the_papers_prompt():
    tokenizer, encoder = encoders("llama2_reference")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 2+3?"},
                {"role": "assistant", "content": "2+3 = 5."}]  # fmt: skip
    encoded = encoder.encode(messages)
    prompt = encoder.encode_prompt(messages[:-1])
    assert encoded.input_ids[: len(prompt)] == prompt  # the prompt exactly as evaluation gives it
    trained = [t for t in encoded.labels if t != -100]
    assert tokenizer.decode(trained).strip() == "2+3 = 5. </s>" and trained[-1] == tokenizer.eos_token_id


def test_every_paper_experiment_uses_the_reference_string():
    for experiment in ("paper_gsm8k", "paper_samsum", "table1_gsm8k_vanilla", "table1_samsum_virtual_prefix"):
        cfg = compose([f"experiment={experiment}"])
        assert (cfg.model.name, cfg.model.chat_template) == ("llama2", "llama2_reference")
    assert compose(["experiment=paper_gsm8k", "model=llama3"]).model.chat_template is None  # never leaks
