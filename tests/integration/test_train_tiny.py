"""End-to-end training of a tiny random Llama, in process: outputs, loss invariants, resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lookahead.errors import ConfigError
from lookahead.training.recipe import train
from tests.conftest import compose, losses, read_metrics, tiny_overrides

pytestmark = pytest.mark.slow


def run(tmp_path, name, *overrides):
    cfg = compose([*tiny_overrides(), *overrides], output_dir=tmp_path / name)
    return train(cfg), tmp_path / name


def test_train_tiny_writes_adapter_metrics_config_and_checkpoints(tmp_path):
    summary, run_dir = run(tmp_path, "run", "trainer.max_steps=4", "trainer.save_steps=2")
    final = run_dir / "final"
    assert (final / "adapter_model.safetensors").is_file() and (final / "adapter_config.json").is_file()
    assert (final / "tokenizer.json").is_file() and (final / "README.md").is_file()
    assert (run_dir / "config.yaml").is_file() and (run_dir / "train.log").is_file()
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert metrics[0]["step"] == 0 and metrics[0]["train/kept"] == 64
    trained = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in trained] == [1, 2, 3, 4]
    assert all(m["loss_first_k"] > 0 and m["loss_rest"] > 0 for m in trained)
    assert summary["global_step"] == 4 and summary["final_loss"] == trained[-1]["loss"]
    assert json.loads((run_dir / "summary.json").read_text())["loss_first_k"] == trained[-1]["loss_first_k"]


def test_train_tiny_full_finetune_saves_a_loadable_model(tmp_path):
    from transformers import AutoModelForCausalLM

    _, run_dir = run(tmp_path, "full", "lora=none", "trainer.max_steps=2")
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    assert model.config.hidden_size == 64


def test_gradient_accumulation_8x1_equals_2x4(tmp_path):
    """Loss is normalised by the label tokens of the whole effective batch, so the trajectory is the same."""
    common = ["lora=none", "trainer.max_steps=4"]
    _, a = run(
        tmp_path, "8x1", *common, "trainer.per_device_train_batch_size=8", "trainer.gradient_accumulation_steps=1"
    )
    _, b = run(
        tmp_path, "2x4", *common, "trainer.per_device_train_batch_size=2", "trainer.gradient_accumulation_steps=4"
    )
    la, lb = losses(read_metrics(a / "metrics.jsonl")), losses(read_metrics(b / "metrics.jsonl"))
    assert list(la) == [1, 2, 3, 4] and list(lb) == [1, 2, 3, 4]
    for step in la:
        assert la[step] == pytest.approx(lb[step], abs=1e-5), step
    # Examples differ in length, so only a token mean over the whole effective batch makes these agree.
    from safetensors.torch import load_file

    sa, sb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], atol=1e-5, rtol=0)


def test_resume_auto_continues_at_step_n_with_the_same_losses(tmp_path):
    common = ["trainer.max_steps=6", "trainer.save_steps=3", "trainer.save_total_limit=null"]
    _, ref = run(tmp_path, "reference", *common)
    reference = losses(read_metrics(ref / "metrics.jsonl"))

    _, crashed = run(tmp_path, "crashed", *common)
    # Simulate a crash after the step-3 checkpoint: everything written later is lost.
    shutil.rmtree(crashed / "checkpoint-6")
    shutil.rmtree(crashed / "final")
    (crashed / "summary.json").unlink()

    with pytest.raises(ConfigError, match="resume=auto"):
        run(tmp_path, "crashed", *common)  # resume=null never overwrites a run's checkpoints

    summary, _ = run(tmp_path, "crashed", *common, "resume=auto")
    metrics = read_metrics(crashed / "metrics.jsonl")
    resumed = losses(metrics)
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4, 5, 6]  # no step logged twice
    assert summary["global_step"] == 6
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-5), step


def test_train_with_eval_split_never_previews_eval(tmp_path):
    summary, run_dir = run(tmp_path, "eval", "dataset.eval_size=8", "trainer.max_steps=2", "trainer.eval_steps=2")
    metrics = read_metrics(run_dir / "metrics.jsonl")
    assert metrics[0]["eval/examples"] == 8 and metrics[0]["train/examples"] == 56
    assert any("eval_loss" in m for m in metrics)


def test_tensorboard_logger_writes_event_files_next_to_metrics(tmp_path):
    _, run_dir = run(tmp_path, "tb", "logger=tensorboard", "trainer.max_steps=2")
    assert list(run_dir.rglob("events.out.tfevents.*"))
    assert [m["step"] for m in read_metrics(run_dir / "metrics.jsonl") if "loss" in m] == [1, 2]


def test_packing_and_length_grouping_train_like_padding(tmp_path):
    common = ["lora=none", "trainer.max_steps=3"]
    _, padded = run(tmp_path, "padded", *common)
    _, packed = run(tmp_path, "packed", *common, "trainer.packing=true")
    lp, lk = losses(read_metrics(padded / "metrics.jsonl")), losses(read_metrics(packed / "metrics.jsonl"))
    for step in (1, 2, 3):
        assert lk[step] == pytest.approx(lp[step], abs=1e-4), step
    _, grouped = run(tmp_path, "grouped", *common, "trainer.packing=true", "trainer.group_by_length=true")
    assert [m["step"] for m in read_metrics(grouped / "metrics.jsonl") if "loss" in m] == [1, 2, 3]


def test_a_partial_preview_trains_and_reports_its_share(tmp_path):
    """`method.fraction`: 2 steps end to end; the share previewed is logged, and the card says it."""
    summary, run_dir = run(
        tmp_path, "partial", "method=virtual_prefix_untrained", "method.fraction=0.5", "trainer.max_steps=2"
    )
    first = read_metrics(run_dir / "metrics.jsonl")[0]
    assert 16 < first["train/previewed"] < 48 and first["train/kept"] == 64
    assert summary["global_step"] == 2
    assert "only on a fixed 50% of the examples" in (run_dir / "final" / "README.md").read_text()
