"""Utility metrics on hand-checked cases."""

from __future__ import annotations

import pytest

from lookahead.evaluation.metrics import exact_match, extract_hash_answer, extract_last_number, gsm8k_correct, rouge1_f


class TestGsm8kExtraction:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("She has 1,200 apples.\n#### 1,200", "1200"),
            ("#### -5", "-5"),
            ("#### 3.50", "3.50"),
            ("first #### 4 then #### 7 ", "7"),  # the last ####
            ("no marker 42", None),
        ],
    )
    def test_extract_hash_answer(self, text, expected):
        assert extract_hash_answer(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("costs $1,234.50 total", 1234.5),
            ("from 3 to -7", -7.0),
            ("2 apples and 3 pears, so 5.", 5.0),
            ("answer: .5", 0.5),
            ("none here", None),
        ],
    )
    def test_extract_last_number(self, text, expected):
        assert extract_last_number(text) == expected

    def test_gsm8k_correct_strict_and_flexible(self):
        gold = "48/2 = 24\n#### 72"
        assert gsm8k_correct("So 72 clips.\n#### 72", gold) == (True, True)
        assert gsm8k_correct("So the total is 72.", gold) == (False, True)  # no ####: strict fails
        assert gsm8k_correct("#### 72.0", gold) == (False, True)  # the paper's rule compares text
        assert gsm8k_correct("#### 71 (not 72)", gold) == (False, True)  # last number wins for flexible
        assert gsm8k_correct("#### 7,2", gold) == (True, True)  # commas are removed before comparing
        assert gsm8k_correct("I think 70", gold) == (False, False)
        with pytest.raises(ValueError, match="no '####'"):
            gsm8k_correct("72", "72")


def test_rouge1_matches_a_hand_computed_case():
    # Stemmed unigrams: reference [the, cat, sat, on, the, mat], prediction [the, cat(s), is, on, the, mat].
    # Clipped overlap: the x2, cat, on, mat = 5, so precision = recall = 5/6 and F1 = 5/6.
    reference = "the cat sat on the mat"
    prediction = "the cats is on the mat"
    assert rouge1_f(prediction, reference) == pytest.approx(5 / 6)
    assert rouge1_f("completely different words", reference) == 0.0
    assert rouge1_f(reference, reference) == pytest.approx(1.0)


def test_exact_match_ignores_case_and_spacing():
    assert exact_match("  Hello   World ", "hello world") and not exact_match("hello", "hello world")
