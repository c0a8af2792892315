"""Pushing a run's adapter or merged model to the Hugging Face Hub. The token comes from the environment (`HF_TOKEN`)
or `huggingface-cli login`, through huggingface_hub itself, and is never written anywhere."""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import Any

from lookahead.errors import ConfigError

log = logging.getLogger(__name__)

# Training state that never belongs in a published model, should any of it sit in the folder.
NEVER_UPLOADED = [
    "checkpoint-*", "optimizer.pt", "scheduler.pt", "rng_state*", "trainer_state.json", "training_args.bin", "*.log",
    "wandb/*", "events.out.tfevents.*", "metrics.jsonl", ".staging/*", "*.partial/*", "reference_logps.safetensors",
]  # fmt: skip


def files_to_upload(folder: Path) -> list[str]:
    """Every file under `folder` (relative, POSIX paths) except training state and logs."""
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if not any(fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(path.name, pattern) for pattern in NEVER_UPLOADED):
            files.append(rel)
    return files


def push_folder(folder: Path, repo_id: str, *, private: bool = False, api: Any = None) -> str:
    """Create `repo_id` if needed and upload the model files of `folder` in one commit; returns the repo URL."""
    if not (folder / "README.md").is_file():
        raise ConfigError(f"{folder}: no model card (README.md); train or export the run first")
    files = files_to_upload(folder)
    if not any(f.endswith(".safetensors") for f in files):
        raise ConfigError(f"{folder}: no .safetensors weights to push")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=str(folder),
        allow_patterns=files,
        commit_message=f"Upload {folder.name} from lookahead",
    )
    log.info("Pushed %d files of %s to %s", len(files), folder, repo_id)
    return str(url)
