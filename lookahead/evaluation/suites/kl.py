"""KL: per-position KL(seed || fine-tuned) on teacher-forced (prompt, harmful answer) pairs at the first answer
positions, where LookAhead Tuning expects the drift to be small."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lookahead.errors import ConfigError
from lookahead.evaluation.evaluator import Evaluator
from lookahead.evaluation.kl import per_position_kl
from lookahead.evaluation.safety_data import load_harmful_prompts


def run(ev: Evaluator) -> dict[str, Any]:
    c = ev.cfg.kl
    items = [i for i in load_harmful_prompts(c) if i.harmful_answer]
    if not items:
        raise ConfigError(f"kl.path={c.get('path')!r}: no responses to teacher-force (format {c.format!r})")
    pairs = [ev.harmful_pair(i, c.get("system_prompt")) for i in items]
    seed_model = None if ev.loaded.is_adapter else ev.loaded.load_seed()
    means, counts = per_position_kl(ev.loaded.model, seed_model, pairs, int(c.positions))
    if ev.is_main:
        with (ev.out_dir / "kl.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["position", "kl", "n"])
            writer.writerows([[p + 1, m, n] for p, (m, n) in enumerate(zip(means, counts))])
        plot_kl({ev.loaded.name: means}, ev.out_dir / "kl.png")
    return {"per_position": means, "n": len(pairs)}


def plot_kl(curves: dict[str, list[float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, means in curves.items():
        ax.plot(range(1, len(means) + 1), means, marker="o", label=name)
    ax.set_xlabel("answer token position")
    ax.set_ylabel("KL(seed || fine-tuned)")
    ax.set_title("Per-position KL drift")
    if curves:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
