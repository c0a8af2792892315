"""Secrets never reach a run dir, remote code is opt-in and logged, and data is inert in reports."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lookahead.commands.compose import CONFIG_DIR
from lookahead.evaluation.report import write_report
from lookahead.models.loading import build_tiny_llama, load_model
from lookahead.shipping.card import write_card
from lookahead.training.summary import write_summary
from tests.conftest import compose, load_tokenizer, python_cli, tiny_overrides, write_behaviours_csv
from tests.fakes import FakeChatCompletions

WANDB_KEY = "planted-wandb-key-0123456789abcdef0123456789abcdef01234567"
JUDGE_KEY = "sk-planted-judge-key-a1b2c3d4e5f6"


def files_containing(root: Path, secret: str) -> list[str]:
    needle = secret.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.slow
def test_planted_api_keys_are_in_no_file_of_a_train_and_eval_run(tmp_path):
    behaviours = write_behaviours_csv(tmp_path / "behaviours.csv")
    judge = FakeChatCompletions()
    try:
        eval_overrides = [
            "suite=[safety]",
            f"safety.path={behaviours}",
            "safety.limit=2",
            "safety.max_new_tokens=4",
            "safety.judge=llm",
            f"safety.llm.base_url={judge.url}",
            f"safety.llm.cache_path={tmp_path}/judge-cache.sqlite",
        ]
        result = python_cli(
            "train.py",
            *tiny_overrides(),
            "trainer.max_steps=2",
            "logger=wandb",
            "logger.mode=offline",
            f"paths.log_dir={tmp_path}",
            "eval.after_train=true",
            "eval.overrides=[" + ",".join(f"'{o}'" for o in eval_overrides) + "]",
            env_extra={"WANDB_API_KEY": WANDB_KEY, "OPENAI_API_KEY": JUDGE_KEY},
        )
    finally:
        judge.close()
    assert result.returncode == 0, result.stderr[-3000:]
    # The judge key was really used: the endpoint received it, so the grep below is not vacuous.
    assert {h["Authorization"] for h in judge.headers} == {f"Bearer {JUDGE_KEY}"}
    run_dir = tmp_path / "runs" / "tiny-arithmetic-virtual_prefix-lora"
    written = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.parent.name == "eval" for p in written) and any("wandb" in p.parts for p in written)
    assert len(written) > 20
    for secret in (WANDB_KEY, JUDGE_KEY):
        assert files_containing(tmp_path, secret) == []
        assert secret not in result.stdout and secret not in result.stderr


def test_trust_remote_code_is_off_in_every_model_config():
    for path in sorted((CONFIG_DIR / "model").glob("*.yaml")):  # as composed: a model file may inherit another
        assert compose([f"model={path.stem}"]).model.trust_remote_code is False, path.name


def test_trust_remote_code_is_logged_when_set(tmp_path, caplog):
    tokenizer = load_tokenizer("chatml-style")
    cfg = compose(tiny_overrides())
    build_tiny_llama(cfg.model, tokenizer, seed=0).save_pretrained(tmp_path / "local-model")
    model_cfg = OmegaConf.merge(cfg.model, {"tiny": None, "dtype": "float32", "trust_remote_code": True})
    with caplog.at_level(logging.WARNING, logger="lookahead.models.loading"):
        load_model(model_cfg, str(tmp_path / "local-model"), tokenizer, cfg.lora, seed=0, local_rank=0)
    assert f"model.trust_remote_code=true: code from {tmp_path / 'local-model'} will run on this machine" in caplog.text


HOSTILE = "<img src=x onerror=alert(1)> | [click](javascript:alert(1)) `code` # heading"


def test_model_card_and_report_make_data_inert(tmp_path):
    cfg = compose([*tiny_overrides(), "method=virtual_prefix"])
    cfg.method.prefix, cfg.run_name = HOSTILE, f"run {HOSTILE}"
    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    summary = {"base_model": HOSTILE, "adapter": True, "data": {"train/kept": 3}, "global_step": 1}
    card = write_card(final, cfg, summary, kind="adapter", command=f"python train.py run_name={HOSTILE}").read_text()
    (tmp_path / "run" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    write_summary(tmp_path / "run", {**summary, "method": "virtual_prefix", "final_loss": 1.0})
    report = write_report([tmp_path / "run"], tmp_path / "report")["markdown"].read_text()
    # The reproduce command sits in a fenced code block, where Markdown is shown as text: it must not close the fence.
    command_block = card.split("```bash\n")[1].split("\n```")[0]
    assert "`" not in command_block and "\n" not in command_block and "<img" not in command_block
    card = card.replace(command_block, "")
    for text in (card, report):
        assert "<img" not in text and "](javascript" not in text and "`code`" not in text
        assert "&lt;img src=x onerror=alert\\(1\\)&gt;" in text
    table_row = report.splitlines()[2]
    assert table_row.count(" | ") == 14  # fifteen cells: the pipe inside the value did not split the row
