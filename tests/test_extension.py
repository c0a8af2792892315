"""The shape every method shares: a preview or an objective is one module plus one YAML, and the Trainer is extended
through public hooks only.

`Bracketed` below is a fourth preview that exists only in this file; its YAML is written into a config folder added to
Hydra's search path. It must flow through every place that reports what a run did (inspect_data, train, the model
card, the sweep report) with no edit to lookahead itself.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from transformers import Trainer

import lookahead
from lookahead.preview.base import PreviewResult
from lookahead.training.recipe import train
from tests.conftest import ROOT, compose, tiny_overrides

HINT = "[the reply starts after this hint]"


@dataclass(frozen=True)
class Bracketed:
    """A preview defined only here: a fixed hint in the user turn, the answer unchanged."""

    hint: str = HINT
    name: str = "bracketed"
    tag: str | None = None

    def apply(self, user: str, answer: str, tokenizer: Any) -> PreviewResult:
        return PreviewResult(f"{user} {self.hint}", answer)

    def describe(self) -> str:
        return f"the hint {self.hint!r} after each instruction; the trained answer is unchanged"

    def label(self) -> str:
        return "hint"


@pytest.fixture
def fourth_preview(tmp_path) -> list[str]:
    """Overrides that select the test-only preview through its own YAML."""
    configs = tmp_path / "extra-configs"
    (configs / "method").mkdir(parents=True)
    (configs / "method" / "bracketed.yaml").write_text(
        "_target_: tests.test_extension.Bracketed\nname: bracketed\ntag: bracketed\n"
    )
    return [f"hydra.searchpath=[file://{configs}]", "method=bracketed"]


def test_a_fourth_preview_flows_through_inspect_train_card_and_report(fourth_preview, tmp_path, capsys, monkeypatch):
    overrides = [*tiny_overrides(), *fourth_preview, "trainer.max_steps=2"]

    # inspect: the exact training text carries the hint in the user turn, and the label tokens are the answer only.
    monkeypatch.setattr(sys, "argv", ["inspect_data.py", *overrides, "inspect.n=1"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "scripts" / "inspect_data.py"), run_name="__main__")
    assert done.value.code == 0
    shown = json.loads(capsys.readouterr().out.splitlines()[0])
    assert HINT in shown["text"] and HINT not in shown["trained_text"]

    # train: the run is named by the preview's tag and the card describes it in its own words.
    cfg = compose(overrides, output_dir=tmp_path / "run")
    assert cfg.run_name == "tiny-arithmetic-bracketed-lora"
    summary = train(cfg)
    assert summary["method"] == "bracketed" and summary["global_step"] == 2
    card = (tmp_path / "run" / "final" / "README.md").read_text()
    assert f"- preview: the hint '{HINT}' after each instruction" in card.replace("\\[", "[").replace("\\]", "]")
    assert "- objective: supervised fine-tuning" in card

    # report: the row names the preview and its label.
    from lookahead.evaluation.report import run_row

    row = run_row(tmp_path / "run")
    assert (row["method"], row["preview"], row["objective"]) == ("bracketed", "hint", "")


def test_preview_and_objective_combine_and_describe_themselves():
    from lookahead.components import describe_run

    run = describe_run(compose(["method=real_prefix", "method.m=4", "objective=constrained_sft"]))
    assert run["preview"] == "real_prefix" and run["preview_label"] == "m=4"
    assert run["preview_words"].startswith("the first 4 tokens of each answer, shown in the prompt after ' The answer")
    assert run["objective"] == "constrained_sft" and run["objective_words"].startswith("constrained SFT (Qi et al.")
    assert describe_run(compose(["method=vanilla", "objective=sdft"]))["objective_words"].startswith("SDFT")


def test_the_default_connector_is_written_in_one_place():
    """The configs say `connector: null`; only lookahead.preview.base holds the text."""
    package = Path(lookahead.__file__).parent
    text = " The answer begins with: "
    holders = [
        str(p.relative_to(package))
        for p in package.rglob("*")
        if p.suffix in (".py", ".yaml") and text in p.read_text()
    ]
    assert holders == ["preview/base.py"]
    assert compose(["method=real_prefix"]).method.connector is None


def test_no_private_trainer_method_is_overridden():
    """Extensions go through compute_loss_func, compute_loss, log, training_step and callbacks: the public hooks.
    A `_`-prefixed Trainer method overridden here would break silently when transformers refactors it."""
    spec = importlib.util.find_spec("lookahead")
    package = Path(next(iter(spec.submodule_search_locations)))
    offenders = []
    for path in package.rglob("*.py"):
        module_name = "lookahead." + ".".join(path.relative_to(package).with_suffix("").parts)
        module_name = module_name.removesuffix(".__init__")
        module = importlib.import_module(module_name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module_name or not issubclass(cls, Trainer):
                continue
            for name in vars(cls):
                if name.startswith("_") and not name.startswith("__") and hasattr(Trainer, name):
                    offenders.append(f"{module_name}.{cls.__name__}.{name}")
    assert offenders == []
    from lookahead.training.trainer import LookaheadTrainer

    assert "compute_loss" in vars(LookaheadTrainer)  # the scan does see the Trainer subclass
