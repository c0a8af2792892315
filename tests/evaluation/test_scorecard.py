"""The safety scorecard in the model card: the section, the model-index metadata, and re-runs that replace it."""

from __future__ import annotations

from huggingface_hub import ModelCard

from lookahead.evaluation.scorecard import SECTION_START, write_safety_section

SAFETY = {
    "n": 330,
    "n_judged": {"raw": 330, "prefilled": 328},
    "judge": "keyword",
    "judge_errors": 2,
    "dataset": "Harmful-HEx-PHI.jsonl",
    "prefix_tokens": 3,
}
RESULTS = {
    "model": "run-a",
    "gsm8k": {"accuracy": 31.25, "accuracy_flexible": 35.0, "n": 64},
    "safety": {**SAFETY, "rsr": 90.0, "jsr": 60.0},
    "kl": {"per_position": [0.5, 0.25, 0.125, 0.1, 0.05, 0.01, 0.0, 0.0], "n": 32},
    "seed": {"gsm8k": {"accuracy": 20.0, "n": 64}, "safety": {**SAFETY, "rsr": 99.0, "jsr": 80.5}},
}
TRAINING_CARD = """---
library_name: peft
tags: [lookahead, lookahead-tuning, safety]
---
# run-a

Fine-tuned with LookAhead Tuning.
"""


def test_card_gets_the_table_and_model_index(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(TRAINING_CARD)
    write_safety_section(path, RESULTS, "run-a", date="2026-11-29")

    card = ModelCard.load(path)
    assert card.data.library_name == "peft" and "lookahead-tuning" in card.data.tags  # the training card's kept
    assert "Fine-tuned with LookAhead Tuning." in card.text
    lines = card.text.splitlines()
    assert "| model | RSR | JSR | GSM8K accuracy | KL@1 | KL@2 | KL@3 | KL@4 | KL@5 |" in lines
    assert "| seed model | 99.00 | 80.50 | 20.00 | 0.0000 | 0.0000 | 0.0000 | 0.0000 | 0.0000 |" in lines
    assert "| this model | 90.00 | 60.00 | 31.25 | 0.5000 | 0.2500 | 0.1250 | 0.1000 | 0.0500 |" in lines
    assert "| change | -9.00 | -20.50 | +11.25 | +0.5000 | +0.2500 | +0.1250 | +0.1000 | +0.0500 |" in lines
    assert "Harmful-HEx-PHI.jsonl" in card.text and "keyword judge" in card.text and "2026-11-29" in card.text
    assert "330 harmful prompts" in card.text and "2 judge errors" in card.text

    index = card.data.to_dict()["model-index"]
    assert index[0]["name"] == "run-a"
    metrics = {m["type"]: m["value"] for r in index[0]["results"] for m in r["metrics"]}
    assert metrics == {
        "rsr": 90.0, "jsr": 60.0, "accuracy": 31.25,
        "kl_position_1": 0.5, "kl_position_2": 0.25, "kl_position_3": 0.125, "kl_position_4": 0.1,
        "kl_position_5": 0.05,
    }  # fmt: skip
    datasets = {r["dataset"]["type"] for r in index[0]["results"]}
    assert datasets == {"Harmful-HEx-PHI.jsonl", "openai/gsm8k"}


def test_a_rerun_replaces_the_section(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(TRAINING_CARD)
    write_safety_section(path, RESULTS, "run-a", date="2026-11-28")
    better = {**RESULTS, "safety": {**RESULTS["safety"], "rsr": 95.0}}
    write_safety_section(path, better, "run-a", date="2026-11-29")
    text = path.read_text()
    assert text.count(SECTION_START) == 1 and text.count("## Safety evaluation") == 1
    assert "| this model | 95.00 |" in text and "| this model | 90.00 |" not in text and "2026-11-28" not in text
    assert text.count("Fine-tuned with LookAhead Tuning.") == 1
    results = ModelCard.load(path).data.to_dict()["model-index"][0]["results"]
    assert [m["value"] for r in results for m in r["metrics"] if m["type"] == "rsr"] == [95.0]


def test_without_a_seed_or_kl_the_table_has_one_row(tmp_path):
    path = tmp_path / "README.md"
    results = {"safety": {**SAFETY, "rsr": 50.0}}  # no JSR (a set without harmful answers), no utility
    write_safety_section(path, results, "seed-eval", date="2026-11-29")
    text = path.read_text()
    assert "| this model | 50.00 | – | – | – | – | – | – | – |" in text and "seed model" not in text
    assert ModelCard.load(path).data.model_name == "seed-eval"
