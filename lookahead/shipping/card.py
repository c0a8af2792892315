"""The model card of a run, built with `huggingface_hub.ModelCard`: Hub metadata (base model, library, pipeline,
tags, datasets, licence) and a body that says what was trained, with which preview, how to load it and how to
reproduce it. Values from data or config are escaped; nothing secret is read here.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lookahead.components import describe_run
from lookahead.training.summary import escape_markdown

log = logging.getLogger(__name__)

TAGS = ["lookahead", "lookahead-tuning", "safety", "text-generation"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_id(path: str | None) -> str | None:
    """`path` when it names a Hub repository (`org/name`) rather than an existing local folder."""
    if not path or Path(str(path)).exists() or not _HUB_ID.match(str(path)):
        return None
    return str(path)


def base_model_license(model_path: str | None) -> str | None:
    """The base model's licence from its own card (a README.md with metadata in the local folder), if there is one."""
    from huggingface_hub import ModelCard

    readme = Path(str(model_path or "")) / "README.md"
    if not readme.is_file():
        return None
    try:
        return ModelCard.load(readme).data.license
    except Exception:  # a README without valid metadata says nothing about the licence
        return None


def dataset_ids(dataset: DictConfig) -> list[str]:
    """The Hub dataset the run trained on, when it came from the Hub (a local file is not named)."""
    if dataset.get("path"):
        return []
    return [str(dataset.hub_id)] if dataset.get("hub_id") else []


def build_card(
    cfg: DictConfig,
    summary: dict[str, Any],
    *,
    kind: str,
    command: str | None = None,
    existing: Path | None = None,
) -> Any:
    """The card for `kind` = "adapter" (a LoRA adapter), "merged" (the adapter merged into the base) or "full".

    peft writes its own card next to an adapter; its metadata is kept and extended, never dropped."""
    from huggingface_hub import ModelCard, ModelCardData

    base = hub_id(cfg.model.get("path"))
    license_ = base_model_license(summary.get("base_model")) or ("other" if base else None)
    data = ModelCard.load(existing).data if existing is not None and existing.is_file() else ModelCardData()
    data.base_model = base or data.base_model
    data.library_name = "peft" if kind == "adapter" else "transformers"
    data.pipeline_tag = "text-generation"
    run = describe_run(cfg)
    extra = {run["preview"], run["objective"], run["guard"], *(["lora"] if summary.get("adapter") else [])}
    extra -= {"sft", "none"}
    data.tags = sorted(set(data.tags or []) | set(TAGS) | extra)
    datasets = dataset_ids(cfg.dataset)
    if datasets:
        data.datasets = datasets
    data.license = data.license or license_ or "other"

    name = escape_markdown(cfg.run_name)
    loads = base or "its base model"
    lines = [
        f"# {name}",
        "",
        f"{'A LoRA adapter for' if kind == 'adapter' else 'A fine-tune of'} {escape_markdown(loads)}, trained with "
        "[LookAhead Tuning](https://arxiv.org/abs/2503.19041) (safer fine-tuning by previewing the start of each "
        "answer in the prompt) by the `lookahead` framework"
        + (", with the adapter merged into the base weights." if kind == "merged" else "."),
        "",
        "## Training",
        "",
        f"- preview: {escape_markdown(run['preview_words'])}",
        f"- objective: {escape_markdown(run['objective_words'])}",
        *([f"- guard: {escape_markdown(run['guard_words'])}"] if run["guard"] != "none" else []),
        f"- data: {escape_markdown(cfg.dataset.name)}, {summary.get('data', {}).get('train/kept')} training examples",
        f"- {'LoRA r=' + str(cfg.lora.get('r')) if summary.get('adapter') else 'full fine-tune'}; "
        f"{summary.get('global_step')} steps; final training loss {summary.get('final_loss')}; loss on the first "
        f"{cfg.trainer.first_k} answer tokens {summary.get('loss_first_k')}",
        "",
        "Prompts at inference are **not** previewed: use the chat template as usual.",
        "",
        "## Use",
        "",
        "```python",
    ]
    if kind == "adapter":
        lines += [
            "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer",
            "",
            'model = AutoPeftModelForCausalLM.from_pretrained("<this repo or folder>")',
            'tokenizer = AutoTokenizer.from_pretrained("<this repo or folder>")',
        ]
    else:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            'model = AutoModelForCausalLM.from_pretrained("<this repo or folder>")',
            'tokenizer = AutoTokenizer.from_pretrained("<this repo or folder>")',
        ]
    lines += ["```", ""]
    if kind == "adapter":
        lines += [
            "A merged model (for vLLM, TGI or llama.cpp's converter): `lookahead export run_dir=<run dir>`.",
            "",
        ]
    if data.license == "other" and license_ is None:
        lines += ["Licence: that of the base model; see its card.", ""]
    # A command line from the config: backticks and newlines could close the code block, and HTML must stay inert.
    command = html.escape(command or "python train.py  # the resolved config: lookahead_config.yaml", quote=False)
    command = command.replace("`", "'")
    lines += ["## Reproduce", "", "```bash", *(" ".join(c.split()) for c in command.splitlines()), "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(lines))


def write_card(directory: Path, cfg: DictConfig, summary: dict[str, Any], *, kind: str, command: str | None) -> Path:
    path = directory / "README.md"
    card = build_card(cfg, summary, kind=kind, command=command, existing=path)
    card.save(path)
    return path
