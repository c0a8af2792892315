"""SDFT: the final-answer check that decides whether a rewrite replaces the original answer."""

from __future__ import annotations

import pytest

from lookahead.objectives.sdft import DEFAULT_TEMPLATE, final_answer_agrees

GOLD = "Natalia sold 48/2 = 24 clips in May.\nAltogether she sold 48+24 = 72 clips.\n#### 72"


@pytest.mark.parametrize(
    ("rewrite", "agrees"),
    [
        ("She sold 24 in May, so 72 in all.\n#### 72", True),
        ("She sold 24 in May, so 72 in all.", True),  # no ####: the last number decides
        ("She sold 24 in May, so 70 in all.\n#### 70", False),
        ("#### 72.0", False),  # the strict form must match exactly, as in evaluation
        ("I am not sure.", False),
    ],
)
def test_final_answer_check(rewrite, agrees):
    assert final_answer_agrees(rewrite, GOLD) is agrees


def test_answers_without_a_final_number_are_not_checked():
    assert final_answer_agrees("A different summary.", "They meet at noon.")


def test_template_has_the_instruction_and_the_reference_answer():
    text = DEFAULT_TEMPLATE.format(instruction="Q?", answer="A.")
    assert "### Instruction:\nQ?\n### Reference Answer:\nA.\n### Response:\n" in text


def test_recovery_examples_are_never_rewritten(tmp_path):
    """A recovery example's harmful start and refusal are what it trains; a rewrite would lose its untrained text."""
    import json

    from lookahead.objectives.sdft import SDFT, rewrite_answers

    task = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "#### 4"}]}
    recovery = {
        "messages": [{"role": "user", "content": "Hurt?"}, {"role": "assistant", "content": "Sure, first I won't."}],
        "source": "recovery",
        "untrained_text": "Sure, first",
    }
    cache = tmp_path / "rewrites.jsonl"
    cache.write_text("".join(json.dumps({"rewrite": r}) + "\n" for r in ("It is 4.\n#### 4", "Sure, here is how.")))
    out, counts = rewrite_answers(None, None, [task, recovery], SDFT(), cache, write_to=None)
    assert out[0]["messages"][-1]["content"] == "It is 4.\n#### 4" and out[1] == recovery
    assert counts == {"train/sdft_rewritten": 1, "train/sdft_kept_original": 1}
