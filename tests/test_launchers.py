"""Decisions the sharded launchers depend on, against the libraries' real objects where CPU allows: DeepSpeed's
mixed-precision check and ZeRO-3 initialisation (deepspeed installs and configures on CPU; its kernels need a GPU,
scripts/gpu_check.sh), the final save under FSDP and after a finished DeepSpeed run, and guards under sharding."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from lookahead.errors import ConfigError
from lookahead.training.recipe import copy_checkpoint_weights, save_weights
from lookahead.training.trainer import check_guard_placement, weight_sharding
from tests.conftest import ROOT, load_tokenizer, tiny_overrides

requires_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="pip install deepspeed")

# What `accelerate launch --config_file configs/accelerate/deepspeed_zero{2,3}.yaml` exports to each process.
DEEPSPEED_ENV = {
    "ACCELERATE_USE_DEEPSPEED": "true",
    "ACCELERATE_MIXED_PRECISION": "bf16",
    "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "auto",
    "ACCELERATE_GRADIENT_CLIPPING": "auto",
    "HF_HUB_OFFLINE": "1",
}

# Runs in a fresh interpreter: TrainingArguments registers the DeepSpeed config process-wide.
DEEPSPEED_PROBE = """
import json, sys
from transformers import TrainingArguments
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig
from lookahead.training import recipe
from lookahead.training.config import training_arguments_kwargs
from tests.conftest import compose

overrides, out = json.loads(sys.argv[1]), sys.argv[2]
cfg = compose(overrides, output_dir=out)
result = {}
for name, launcher in (("adopted", "bf16"), ("not_adopted", None)):
    args = TrainingArguments(**training_arguments_kwargs(cfg, out, 1, launcher))
    ds = HfTrainerDeepSpeedConfig(args.deepspeed_plugin.deepspeed_config)
    try:
        ds.trainer_config_process(args)
        ds.trainer_config_finalize(args, None, 0)
        result[name] = "ok"
    except ValueError as e:
        result[name] = str(e).splitlines()[1]


class Loaded(Exception):
    pass


def load_model(*args, **kwargs):  # the recipe's model load, reached in its real order
    result["zero3_at_model_load"] = is_deepspeed_zero3_enabled()
    raise Loaded


recipe.load_model = load_model
try:
    recipe.train(cfg)
except Loaded:
    pass
print(json.dumps(result))
"""


@requires_deepspeed
@pytest.mark.parametrize("stage", [2, 3])
def test_a_deepspeed_launch_in_bf16_trains_and_zero3_loads_partitioned(stage, tmp_path):
    """The accelerate YAMLs say mixed_precision: bf16 while trainer.bf16 defaults to false: transformers refused the
    mismatch at start. And ZeRO-3 must be registered before the model loads, or every rank loads the whole model."""
    env = {**os.environ, **DEEPSPEED_ENV, "ACCELERATE_DEEPSPEED_ZERO_STAGE": str(stage)}
    if stage == 3:
        env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] = "true"
    overrides = [*tiny_overrides(), "lora=none"]
    out = subprocess.run(
        [sys.executable, "-c", DEEPSPEED_PROBE, json.dumps(overrides), str(tmp_path / "run")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["adopted"] == "ok"
    assert result["not_adopted"] == "- ds bf16.enabled=True vs hf bf16|bf16_full_eval=False"  # what users hit
    assert result["zero3_at_model_load"] is (stage == 3)


def trainer_stub(**kwargs):
    defaults = {"is_fsdp_enabled": False, "is_deepspeed_enabled": False, "deepspeed": None}
    return SimpleNamespace(**{**defaults, **kwargs})


class TestSharding:
    def test_sharded_strategies_are_named(self):
        zero = lambda stage: SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=stage)))  # noqa: E731
        assert weight_sharding(trainer_stub(is_fsdp_enabled=True)) == "FSDP"
        assert weight_sharding(trainer_stub(is_deepspeed_enabled=True, accelerator=zero(3))) == "DeepSpeed ZeRO-3"
        assert weight_sharding(trainer_stub(is_deepspeed_enabled=True, accelerator=zero(2))) is None
        assert weight_sharding(trainer_stub()) is None

    @pytest.mark.parametrize("guard", ["asft", "safe_lora"])
    def test_a_guard_under_sharded_weights_stops_with_one_line(self, guard):
        with pytest.raises(ConfigError, match=f"guard={guard} reads whole weights .* which FSDP shards"):
            check_guard_placement(SimpleNamespace(name=guard), "FSDP")
        check_guard_placement(SimpleNamespace(name=guard), None)  # DDP / ZeRO-2: whole weights on every rank
        check_guard_placement(SimpleNamespace(name="none"), "DeepSpeed ZeRO-3")


class TestFinalWeights:
    def tiny(self):
        from lookahead.models.loading import build_tiny_llama
        from tests.conftest import compose

        return build_tiny_llama(compose(["model=tiny"]).model, load_tokenizer("chatml-style"), seed=0)

    def test_fsdp_gathers_the_full_state_dict_whatever_the_checkpoint_format(self, tmp_path):
        """`Trainer.save_model` writes no weights under SHARDED_STATE_DICT: final/ held a card and a tokenizer only."""
        model = self.tiny()
        gathered = {k: v.clone() + 1.0 for k, v in model.state_dict().items()}  # what the gather returns
        calls = []

        def get_state_dict(m):
            calls.append(m)
            return dict(gathered)  # save_pretrained consumes the dict it is given

        accelerator = SimpleNamespace(get_state_dict=get_state_dict, unwrap_model=lambda m: m)
        trainer = trainer_stub(
            is_fsdp_enabled=True, model=model, accelerator=accelerator, is_world_process_zero=lambda: True,
            save_model=lambda *a: pytest.fail("Trainer.save_model saves nothing under SHARDED_STATE_DICT"),
        )  # fmt: skip
        save_weights(trainer, tmp_path / "final", finished_from=None)
        from safetensors.torch import load_file

        saved = load_file(tmp_path / "final" / "model.safetensors")
        assert calls == [model]
        name = "model.layers.0.self_attn.q_proj.weight"
        assert torch.equal(saved[name], gathered[name])

    def test_fsdp_gathers_on_every_rank_and_writes_on_rank_zero(self, tmp_path):
        calls = []
        accelerator = SimpleNamespace(get_state_dict=lambda m: calls.append(m) or {}, unwrap_model=lambda m: m)
        trainer = trainer_stub(
            is_fsdp_enabled=True, model="m", accelerator=accelerator, is_world_process_zero=lambda: False
        )
        save_weights(trainer, tmp_path / "final", finished_from=None)
        assert calls == ["m"] and not (tmp_path / "final").exists()

    def test_a_finished_deepspeed_run_takes_the_checkpoints_consolidated_weights(self, tmp_path):
        """Resumed at max_steps, no DeepSpeed engine exists and `Trainer.save_model` would fail on it."""
        checkpoint = tmp_path / "checkpoint-4"
        self.tiny().save_pretrained(checkpoint)
        (checkpoint / "optimizer.pt").write_bytes(b"x")
        trainer = trainer_stub(is_deepspeed_enabled=True, is_world_process_zero=lambda: True,
                               save_model=lambda *a: pytest.fail("no engine to gather from"))  # fmt: skip
        save_weights(trainer, tmp_path / "final", finished_from=checkpoint)
        assert sorted(p.name for p in (tmp_path / "final").iterdir()) == [
            "config.json", "generation_config.json", "model.safetensors"
        ]  # fmt: skip
        assert (tmp_path / "final" / "model.safetensors").read_bytes() == (
            checkpoint / "model.safetensors"
        ).read_bytes()

    def test_a_checkpoint_without_consolidated_weights_is_refused_with_one_line(self, tmp_path):
        (tmp_path / "checkpoint-4" / "global_step4").mkdir(parents=True)
        with pytest.raises(ConfigError, match="holds no consolidated weights .* zero_to_fp32.py"):
            copy_checkpoint_weights(tmp_path / "checkpoint-4", tmp_path / "final")
