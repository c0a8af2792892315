"""Safe LoRA after the fact: project a finished LoRA run's adapter into a new run folder, training nothing.

Safe LoRA is a post-training projection, so a run trained without it and projected here gives the same adapter, bit
for bit, as the run trained with `guard=safe_lora` and the same settings (its training is identical; the projection
runs on the final adapter). One fine-tune can then be projected at several thresholds, or an adapter trained
elsewhere with this project be projected before it ships.

The new folder is a finished run like any other (`config.yaml` with the guard filled in, `final/`, `summary.json`,
`safe_lora.json`), so `lookahead eval run_dir=...`, `lookahead report` and `lookahead export` take it as they are.
The source run is never written to.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lookahead.errors import ConfigError

log = logging.getLogger(__name__)

GUARD_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "guard" / "safe_lora.yaml"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
KEYS = ("aligned_model", "base_model", "threshold", "top_fraction", "projector", "rank")


def guard_config(train_cfg: Any, options: dict[str, Any]) -> Any:
    """The run's `guard` block as `guard=safe_lora` with `options` would have composed it."""
    unknown = sorted(set(options) - set(KEYS))
    if unknown:
        raise ConfigError(f"{unknown}: not Safe LoRA options; expected some of {list(KEYS)}")
    guard = OmegaConf.load(GUARD_CONFIG)
    guard.aligned_model = train_cfg.model.get("path")  # the YAML's `${model.path}`: the chat model fine-tuned
    for key, value in options.items():
        guard[key] = value
    return guard


def project_run(run_dir: Path, out_dir: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Project `run_dir`'s adapter with Safe LoRA (`options`: guard keys) into the new run folder `out_dir`."""
    from transformers import AutoTokenizer

    from lookahead.components import build_guard
    from lookahead.models.runs import is_adapter, load_adapter_model, read_run
    from lookahead.shipping.card import write_card

    train_cfg, final, summary = read_run(run_dir)
    if not is_adapter(final):
        raise ConfigError(f"run_dir={run_dir}: a full fine-tune; Safe LoRA projects a LoRA adapter (use guard=asft)")
    trained_with = OmegaConf.select(train_cfg, "guard.name") or "none"
    if trained_with != "none":
        raise ConfigError(
            f"run_dir={run_dir}: trained with guard={trained_with}; project a run trained with guard=none"
        )
    if out_dir.exists():
        raise ConfigError(f"out_dir={out_dir}: exists; projecting never overwrites a run")
    guard_cfg = guard_config(train_cfg, options)
    guard = build_guard(guard_cfg)

    tokenizer = AutoTokenizer.from_pretrained(final)
    model, _ = load_adapter_model(train_cfg, final, tokenizer, train_cfg.paths.cache_dir)

    partial = out_dir.with_name(out_dir.name + ".partial")  # a stopped projection leaves no half-written run
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    report = guard.finalize(model, partial)
    shutil.copytree(final, partial / "final")  # tokenizer, template, portable adapter_config.json
    model.save_pretrained(partial / "weights")
    (partial / "weights" / ADAPTER_WEIGHTS).replace(partial / "final" / ADAPTER_WEIGHTS)
    shutil.rmtree(partial / "weights")
    cfg = OmegaConf.merge(train_cfg, {"guard": guard_cfg})
    cfg.run_name = out_dir.name
    cfg.paths.output_dir = str(out_dir)
    (partial / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (partial / "final" / "lookahead_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    new_summary = {
        **summary, "run_dir": str(out_dir), "final_dir": str(out_dir / "final"), "config": str(out_dir / "config.yaml"),
        "guard": guard.name, "guard_report": report, "projected_from": str(run_dir),
    }  # fmt: skip
    (partial / "final" / "README.md").unlink(missing_ok=True)  # the card names the guard: written anew
    write_card(partial / "final", cfg, new_summary, kind="adapter", command=summary.get("command"))
    (partial / "summary.json").write_text(json.dumps(new_summary, indent=2) + "\n")
    partial.rename(out_dir)
    log.info("Projected %s into %s: %d of %d layers", run_dir, out_dir, report["projected"], report["layers"])
    return new_summary
