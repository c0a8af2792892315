"""Every config group option composes; run dirs are deterministic; trainer settings translate as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lookahead.commands.compose import CONFIG_DIR
from lookahead.errors import ConfigError
from lookahead.preview import RealPrefix, Vanilla, VirtualPrefix
from lookahead.training.config import batch_layout, training_arguments_kwargs, validate
from tests.conftest import compose

TABLE1_METHODS = ("vanilla", "sdft", "constrained_sft", "real_prefix", "virtual_prefix")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


class TestConfigGroups:
    def test_groups_offer_the_documented_options(self):
        assert options("model") == ["llama2", "llama2_reference", "llama3", "mistral", "qwen2_5", "smollm2", "tiny"]
        assert options("dataset") == ["arithmetic", "gsm8k", "jsonl", "samsum"]
        assert options("method") == [
            "constrained_sft", "real_prefix", "sdft", "vanilla", "virtual_prefix", "virtual_prefix_untrained",
        ]  # fmt: skip
        assert options("lora") == ["lora", "none", "qlora"]
        assert options("logger") == ["none", "tensorboard", "wandb"]
        table1 = [f"table1_{d}_{m}" for d in ("gsm8k", "samsum") for m in TABLE1_METHODS]
        assert options("experiment") == sorted(["paper_gsm8k", "paper_samsum", *table1, "testbed_preview_recovery"])

    @pytest.mark.parametrize("model", options("model"))
    def test_every_model_exposes_the_loading_knobs(self, model):
        cfg = compose([f"model={model}"]).model
        for key in ("path", "dtype", "attn_implementation", "gradient_checkpointing", "trust_remote_code"):
            assert key in cfg
        assert cfg.trust_remote_code is False

    @pytest.mark.parametrize("dataset", options("dataset"))
    def test_every_dataset_carries_its_system_prompt(self, dataset):
        cfg = compose([f"dataset={dataset}"]).dataset
        assert "system_prompt" in cfg
        expected = {
            "gsm8k": "You are a helpful assistant.",
            "samsum": "You are a helpful assistant for dialog summarization.",
        }
        if dataset in expected:
            assert cfg.system_prompt == expected[dataset]

    def test_methods_instantiate_with_paper_defaults(self):
        assert instantiate(compose(["method=vanilla"]).method) == Vanilla(tag="vanilla")
        real = instantiate(compose(["method=real_prefix", "method.m=2"]).method)
        assert isinstance(real, RealPrefix) and real.m == 2 and real.connector == " The answer begins with: "
        virtual = instantiate(compose(["method=virtual_prefix"]).method)
        assert isinstance(virtual, VirtualPrefix) and virtual.prefix == "Let's solve this problem. "

    def test_default_job_is_smollm2_arithmetic_virtual_lora_wandb_offline(self):
        cfg = compose([])
        assert (cfg.model.name, cfg.dataset.name, cfg.method.name, cfg.lora.name) == (
            "smollm2",
            "arithmetic",
            "virtual_prefix",
            "lora",
        )
        assert (cfg.logger.name, cfg.logger.mode) == ("wandb", "offline")
        assert cfg.run_name == "smollm2-arithmetic-virtual_prefix-lora"

    @pytest.mark.parametrize("experiment", [e for e in options("experiment") if e.startswith(("paper_", "table1_"))])
    def test_paper_experiments_follow_the_recipe(self, experiment):
        cfg = compose([f"experiment={experiment}"])
        t = cfg.trainer
        assert cfg.model.path == "meta-llama/Llama-2-7b-chat-hf" and cfg.lora.r is None
        assert (t.learning_rate, t.num_train_epochs, t.effective_batch_size, t.adam_beta1) == (2e-5, 3, 64, 0.5)
        assert t.bf16 and t.warmup_steps == 0 and t.max_seq_length == {"gsm8k": 512, "samsum": 1024}[cfg.dataset.name]
        for processes in (1, 2, 4, 8, 16, 32, 64):  # one GPU to 8 nodes x 8: the recipe keeps its batch of 64
            per_device, accumulation = batch_layout(t, world_size=processes)
            assert per_device * accumulation * processes == 64 and per_device <= t.per_device_train_batch_size
        if experiment.startswith("table1_"):  # a row of the paper's Table 1: its dataset and method
            _, dataset, method = experiment.split("_", 2)
            run = (cfg.dataset.name, cfg.objective.name if cfg.objective.name != "sft" else cfg.method.name)
            assert (*run, cfg.run_name) == (dataset, method, f"{dataset}-{method}")
            if cfg.objective.name != "sft":  # the objective rows train on unpreviewed data, as in the paper
                assert cfg.method.name == "vanilla"
            if method == "real_prefix":
                assert cfg.method.m == 6


class TestRunDir:
    def test_run_dir_has_no_timestamp_so_every_rank_agrees(self):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra_compose("train", overrides=["method=real_prefix", "method.m=4"], return_hydra_config=True)
        assert "now" not in OmegaConf.to_yaml(cfg.hydra.run) + OmegaConf.to_yaml(cfg.hydra.sweep)
        assert cfg.hydra.job.chdir is False
        run_dir = OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
        assert run_dir == "${paths.log_dir}/runs/${run_name}"
        assert cfg.run_name == "smollm2-arithmetic-real_prefix-m4-lora"

    @pytest.mark.parametrize(
        "overrides, run_name",
        [
            (["method=real_prefix", "method.fraction=1"], "smollm2-arithmetic-real_prefix-m6-lora"),
            (["method=real_prefix", "method.fraction=0.5"], "smollm2-arithmetic-real_prefix-m6-f0.5-lora"),
            (["method=virtual_prefix", "method.fraction=0.75"], "smollm2-arithmetic-virtual_prefix-f0.75-lora"),
            (
                ["method=virtual_prefix_untrained", "method.fraction=0.9"],
                "smollm2-arithmetic-virtual_prefix-untrainedP-f0.9-lora",
            ),
        ],
    )
    def test_a_previewed_share_names_its_own_run(self, overrides, run_name):
        # Without the share in the name, `method.fraction=0.9` after `=0.75` would land in the first run's folder.
        assert compose(overrides).run_name == run_name


class TestTrainerArguments:
    def test_training_arguments_kwargs_build_real_training_arguments(self, tmp_path):
        from transformers import TrainingArguments

        cfg = compose(["logger=tensorboard", "trainer.max_steps=3"])
        args = TrainingArguments(**training_arguments_kwargs(cfg, str(tmp_path), world_size=1))
        assert args.max_steps == 3 and args.report_to == ["tensorboard"] and not args.remove_unused_columns
        assert Path(args.output_dir) == tmp_path

    def test_wandb_disabled_reports_nowhere(self, tmp_path):
        cfg = compose(["logger=wandb", "logger.mode=disabled"])
        assert training_arguments_kwargs(cfg, str(tmp_path), world_size=1)["report_to"] == []

    def test_effective_batch_size_must_divide(self):
        t = OmegaConf.create(
            {"per_device_train_batch_size": 16, "gradient_accumulation_steps": 1, "effective_batch_size": 64}
        )
        assert batch_layout(t, world_size=2) == (16, 2)
        with pytest.raises(ConfigError, match="effective_batch_size=64 is not a multiple of the 3 processes"):
            batch_layout(t, world_size=3)
        t.per_device_train_batch_size = 12
        with pytest.raises(ConfigError, match="effective_batch_size=64 is not a multiple of per_device"):
            batch_layout(t, world_size=2)

    def test_processes_beyond_the_effective_batch_shrink_the_per_device_batch(self, tmp_path):
        """The paper's recipe on 8 GPUs: 16 per device x 8 = 128 > 64 used to stop the run at start."""
        cfg = compose(["experiment=paper_gsm8k"])
        assert batch_layout(cfg.trainer, world_size=8) == (8, 1)
        kwargs = training_arguments_kwargs(cfg, str(tmp_path), world_size=8)
        assert (kwargs["per_device_train_batch_size"], kwargs["gradient_accumulation_steps"]) == (8, 1)

    def test_every_trainable_weight_is_used_so_ddp_skips_its_unused_parameter_search(self, tmp_path):
        kwargs = training_arguments_kwargs(compose([]), str(tmp_path), world_size=2)
        assert kwargs["ddp_find_unused_parameters"] is False and kwargs["ddp_timeout"] == 7200

    @pytest.mark.parametrize(
        ("overrides", "launcher", "expected"),
        [
            ([], "bf16", {"bf16": True, "fp16": False}),
            ([], "no", {"bf16": False, "fp16": False}),
            ([], None, {"bf16": False, "fp16": False}),
            (["trainer.bf16=true"], "bf16", {"bf16": True, "fp16": False}),
            (["trainer.bf16=true"], None, {"bf16": True, "fp16": False}),
            (["trainer.fp16=true"], "bf16", "trainer.fp16=true but the launcher's mixed_precision is bf16"),
        ],
    )
    def test_the_launchers_mixed_precision_becomes_the_runs(self, tmp_path, overrides, launcher, expected):
        cfg = compose(overrides)
        if isinstance(expected, str):
            with pytest.raises(ConfigError, match=expected):
                training_arguments_kwargs(cfg, str(tmp_path), world_size=1, launcher_precision=launcher)
            return
        kwargs = training_arguments_kwargs(cfg, str(tmp_path), world_size=1, launcher_precision=launcher)
        assert {k: kwargs[k] for k in ("bf16", "fp16")} == expected

    @pytest.mark.parametrize(
        ("override", "message"),
        [
            ("trainer.learning_rate=-1", r"trainer.learning_rate=-1: must be > 0"),
            ("trainer.per_device_train_batch_size=0", r"per_device_train_batch_size=0"),
            ("trainer.max_seq_length=1", r"max_seq_length=1"),
            ("method=constrained_sft", r"method=constrained_sft is now objective=constrained_sft: `method=` picks"),
            ("method.prefix=' '", r"method.prefix=' ': the virtual prefix must be non-empty text"),
            pytest.param(
                "trainer.use_liger_kernel=true",
                r"use_liger_kernel=true needs a CUDA GPU",
                marks=pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU message"),
            ),
        ],
    )
    def test_validate_rejects_bad_values(self, override, message):
        with pytest.raises(ConfigError, match=message):
            validate(compose([override]))

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            (["objective=constrained_sft", "objective.beta=0"], r"objective.beta=0: must be > 0"),
            (["objective=constrained_sft", "objective.bias_length=0"], r"objective.bias_length=0: must be an integer"),
        ],
    )
    def test_validate_builds_the_objective_so_its_checks_run_first(self, overrides, message):
        with pytest.raises(ConfigError, match=message):
            validate(compose(overrides))
