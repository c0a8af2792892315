"""Run summaries, the model card, and the sweep.csv written at the end of a Hydra multirun."""

from __future__ import annotations

import csv
import html
import json
import logging
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
SWEEP_COLUMNS = ["job", "overrides", "final_loss", "loss_first_k", "loss_rest", "global_step", "run_dir"]


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]()#|!{}])")


def escape_markdown(value: object) -> str:
    """Text from data or config, made inert in Markdown: no HTML, no links or images, no code spans, one line."""
    text = html.escape(str(value), quote=False).replace("\n", " ")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def last_logged(log_history: list[dict[str, Any]], key: str) -> float | None:
    return next((entry[key] for entry in reversed(log_history) if key in entry), None)


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    path = run_dir / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def collect_sweep(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder of a multirun that wrote a summary."""
    rows = []
    for summary_path in sorted(sweep_dir.glob(f"*/{SUMMARY_FILE}")):
        job_dir = summary_path.parent
        summary = json.loads(summary_path.read_text())
        overrides_path = job_dir / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(overrides_path) if overrides_path.is_file() else []
        row = {"job": job_dir.name, "overrides": " ".join(overrides), "run_dir": str(job_dir)}
        row.update({k: summary.get(k) for k in SWEEP_COLUMNS if k not in row})
        rows.append(row)
    return rows


def write_sweep_csv(sweep_dir: Path) -> Path:
    path = sweep_dir / "sweep.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SWEEP_COLUMNS)
        writer.writeheader()
        writer.writerows(collect_sweep(sweep_dir))
    return path


class SweepSummaryCallback(Callback):
    """Hydra callback: after `python train.py -m ...`, write `<sweep dir>/sweep.csv`."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = write_sweep_csv(Path(config.hydra.sweep.dir))
        log.info("Sweep summary: %s", path)
