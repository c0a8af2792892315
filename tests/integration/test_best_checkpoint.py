"""load_best_model_at_end with an eval set: the Trainer writes the checkpoints in place, so the best one keeps its
real path, rotation never deletes it, and the final model is that checkpoint's."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from lookahead.training.recipe import train
from tests.conftest import compose, read_metrics, tiny_overrides

pytestmark = pytest.mark.slow


def test_best_checkpoint_is_restored_at_the_end_and_survives_rotation(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        *tiny_overrides(),
        "dataset.eval_size=8",
        "trainer.max_steps=6",
        "trainer.learning_rate=5e-3",
        "trainer.eval_steps=2",
        "trainer.save_steps=2",
        "trainer.save_total_limit=1",
        "+trainer.load_best_model_at_end=true",
        "+trainer.metric_for_best_model=eval_loss",
        # "Best" is the highest eval loss: the first checkpoint, while training lowers the loss. So the best model is
        # not the last one, and restoring it is visible in the weights.
        "+trainer.greater_is_better=true",
    ]
    summary = train(compose(overrides, output_dir=run_dir))
    evals = {m["step"]: m["eval_loss"] for m in read_metrics(run_dir / "metrics.jsonl") if "eval_loss" in m}
    assert sorted(evals) == [2, 4, 6] and evals[2] > evals[4] > evals[6]

    state = json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"] == str(run_dir / "checkpoint-2")  # a real path, not a staging one
    # save_total_limit=1 keeps the newest checkpoint, and the best one beside it.
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-6"]

    final = load_file(run_dir / "final" / "adapter_model.safetensors")
    best = load_file(run_dir / "checkpoint-2" / "adapter_model.safetensors")
    last = load_file(run_dir / "checkpoint-6" / "adapter_model.safetensors")
    assert final.keys() == best.keys()
    assert all((final[k] == best[k]).all() for k in final)
    assert any(not (final[k] == last[k]).all() for k in final)
    assert summary["global_step"] == 6
