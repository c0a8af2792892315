"""Preview strategies: the paper's exact semantics."""

from __future__ import annotations

import pytest

from lookahead.errors import ConfigError
from lookahead.preview import RealPrefix, Vanilla, VirtualPrefix, preview_messages
from tests.conftest import load_tokenizer, requires_shared

QUESTION, ANSWER = "How many?", "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"


class TestVirtualPrefix:
    def test_virtual_prefix_previews_p_and_prepends_it_to_the_answer(self):
        result = VirtualPrefix().apply(QUESTION, ANSWER, tokenizer=None)
        assert result.user == "How many? The answer begins with: Let's solve this problem. "
        assert result.answer == "Let's solve this problem. " + ANSWER

    @pytest.mark.parametrize("prefix", ["", "   ", None])
    def test_virtual_prefix_must_be_text(self, prefix):
        with pytest.raises(ConfigError, match="method.prefix"):
            VirtualPrefix(prefix=prefix)


class TestRealPrefix:
    @requires_shared
    def test_real_prefix_previews_the_first_m_tokens_and_keeps_the_answer(self):
        tokenizer = load_tokenizer("llama3-instruct")
        result = RealPrefix(m=6).apply(QUESTION, ANSWER, tokenizer)
        # Llama-3 tokens: "N" "atal" "ia" " sold" " " "48"
        assert result.user == "How many? The answer begins with: Natalia sold 48"
        assert result.answer == ANSWER and not result.whole_answer_previewed

    def test_real_prefix_previews_m_tokens_of_a_built_tokenizer(self):
        tokenizer = load_tokenizer("llama3-style")
        ids = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
        for m in (1, 3, 6):
            result = RealPrefix(m=m).apply(QUESTION, ANSWER, tokenizer)
            assert result.user == QUESTION + " The answer begins with: " + tokenizer.decode(ids[:m])
            assert result.answer == ANSWER and not result.whole_answer_previewed

    @requires_shared
    def test_real_prefix_counts_the_models_tokens(self):
        text = {}
        for name in ["llama2-chat", "smollm2-instruct"]:
            tokenizer = load_tokenizer(name)
            ids = tokenizer(ANSWER, add_special_tokens=False)["input_ids"][:4]
            text[name] = RealPrefix(m=4, connector="|").apply("q", ANSWER, tokenizer).user
            assert text[name] == "q|" + tokenizer.decode(ids)
        assert text["llama2-chat"] != text["smollm2-instruct"]

    def test_real_prefix_longer_than_answer_previews_it_whole(self):
        tokenizer = load_tokenizer("chatml-style")
        result = RealPrefix(m=50).apply("q", "#### 72", tokenizer)
        assert result.user == "q The answer begins with: #### 72" and result.whole_answer_previewed

    @pytest.mark.parametrize("name", ["llama3-style", pytest.param("llama3-instruct", marks=requires_shared)])
    def test_real_prefix_never_shows_half_a_character(self, name):
        tokenizer = load_tokenizer(name)
        answer = "日本語の答え"
        for m in range(1, 8):
            assert "\ufffd" not in RealPrefix(m=m).apply("q", answer, tokenizer).user

    @pytest.mark.parametrize("m", [0, -1, 2.5, "6", True])
    def test_real_prefix_m_must_be_a_positive_integer(self, m):
        with pytest.raises(ConfigError, match="method.m"):
            RealPrefix(m=m)


def test_preview_messages_rewrites_only_the_last_turns():
    history = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
    ]
    messages = history + [{"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]
    out, _ = preview_messages(messages, VirtualPrefix(prefix="P ", connector=" | "), tokenizer=None)
    assert out[:3] == history
    assert out[3:] == [{"role": "user", "content": "u2 | P "}, {"role": "assistant", "content": "P a2"}]
    assert messages[3]["content"] == "u2"  # the input is not mutated
    assert preview_messages(messages, Vanilla(), None)[0] == messages


class TestFraction:
    """`method.fraction` < 1: a fixed share of the examples is previewed, the rest pass through as vanilla."""

    QUESTIONS = [f"What is {i} + {i + 1}?" for i in range(400)]

    @pytest.mark.parametrize("strategy", [VirtualPrefix(fraction=0.75), RealPrefix(m=2, fraction=0.75)])
    def test_a_fixed_share_is_previewed_and_the_rest_is_left_as_it_was(self, strategy):
        tokenizer = load_tokenizer("chatml-style")
        results = [strategy.apply(q, ANSWER, tokenizer) for q in self.QUESTIONS]
        previewed = [r for r in results if r.previewed]
        assert 0.70 < len(previewed) / len(results) < 0.80
        for question, result in zip(self.QUESTIONS, results):
            if not result.previewed:
                assert (result.user, result.answer, result.untrained_prefix) == (question, ANSWER, "")
            else:
                assert result.user.startswith(question + " The answer begins with: ")
        # The share is decided by the text, not a random draw: the same examples in every run and on every rank.
        again = [strategy.apply(q, ANSWER, tokenizer).previewed for q in self.QUESTIONS]
        assert again == [r.previewed for r in results]
        # A larger share previews a superset.
        wider = [
            type(strategy)(**{**strategy.__dict__, "fraction": 0.9}).apply(q, ANSWER, tokenizer) for q in self.QUESTIONS
        ]
        assert all(w.previewed for w, r in zip(wider, results) if r.previewed)

    def test_the_default_previews_every_example_as_the_paper_does(self):
        assert all(VirtualPrefix().apply(q, ANSWER, None).previewed for q in self.QUESTIONS)
        assert not Vanilla().apply("q", ANSWER, None).previewed

    @pytest.mark.parametrize("fraction", [0, -0.5, 1.5, "0.5", True])
    def test_the_share_must_be_in_zero_to_one(self, fraction):
        with pytest.raises(ConfigError, match="method.fraction"):
            VirtualPrefix(fraction=fraction)
        with pytest.raises(ConfigError, match="method.fraction"):
            RealPrefix(fraction=fraction)

    def test_the_label_and_words_say_the_share(self):
        strategy = VirtualPrefix(train_prefix=False, fraction=0.75)
        assert strategy.label() == 'P="Let\'s solve this problem. " untrained on 75%'
        assert strategy.describe().endswith("only on a fixed 75% of the examples (the rest train unpreviewed)")
        assert RealPrefix(m=4, fraction=0.5).label() == "m=4 on 50%"
