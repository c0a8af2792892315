"""Sweep reports: one row per run (method, m or P, RSR, JSR, utility, first-k train loss, and each run's change from
its seed model), a safety-utility scatter with its Pareto front, and the KL curves overlaid."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lookahead.components import describe_run
from lookahead.errors import LookaheadError
from lookahead.evaluation.scorecard import utility_metric
from lookahead.evaluation.suites.kl import plot_kl
from lookahead.training.summary import SUMMARY_FILE, escape_markdown

COLUMNS = [
    "run",
    "method",
    "preview",
    "objective",
    "guard",
    "rsr",
    "jsr",
    "judge",
    "utility",
    "utility_metric",
    "loss_first_k",
    "final_loss",
]
CHANGES = ["rsr_change", "jsr_change", "utility_change"]  # this run minus its seed model


def find_runs(paths: list[Path]) -> list[Path]:
    """Run dirs under the given paths: a run dir itself, a sweep dir, or a folder of runs."""
    runs: list[Path] = []
    for path in paths:
        if (path / SUMMARY_FILE).is_file() or (path / "eval" / "results.json").is_file():
            runs.append(path)
        else:
            found = {p.parent for p in path.glob(f"*/{SUMMARY_FILE}")} | {
                p.parent.parent for p in path.glob("*/eval/results.json")
            }
            runs += sorted(found)
    return runs


def run_row(run_dir: Path) -> dict[str, Any]:
    summary = json.loads((run_dir / SUMMARY_FILE).read_text()) if (run_dir / SUMMARY_FILE).is_file() else {}
    results_path = run_dir / "eval" / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    cfg = OmegaConf.load(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else OmegaConf.create({})
    # A dir with results but no training run is a seed-model evaluation.
    method, preview, objective, guard = "seed", "", "", ""
    if OmegaConf.select(cfg, "method") is not None:
        try:
            run = describe_run(cfg)
            method, preview = run["preview"], run["preview_label"]
            objective = run["objective"] if run["objective"] != "sft" else ""
            guard = run["guard"] if run["guard"] != "none" else ""
        except LookaheadError:  # a run dir from an older version whose config names no preview class
            method = str(OmegaConf.select(cfg, "method.name", default=summary.get("method")) or "unknown")
    utility, metric = _utility(results)
    safety = results.get("safety", {})
    row = {
        "run": run_dir.name,
        "method": method,
        "preview": preview,
        "objective": objective,
        "guard": guard,
        "rsr": safety.get("rsr"),
        "jsr": safety.get("jsr"),
        "judge": safety.get("judge"),  # keyword- and LLM-judged rates are not comparable: every row names its judge
        "utility": utility,
        "utility_metric": metric,
        "loss_first_k": summary.get("loss_first_k"),
        "final_loss": summary.get("final_loss"),
    }
    # evaluate.py stores the seed model's numbers next to a run's own (compare_seed).
    seed = results.get("seed")
    row["_seed"] = (
        {
            "rsr": seed.get("safety", {}).get("rsr"),
            "jsr": seed.get("safety", {}).get("jsr"),
            "utility": _utility(seed)[0],
        }
        if seed
        else None
    )
    return row


def _utility(results: dict[str, Any]) -> tuple[float | None, str]:
    """(utility, metric id such as gsm8k_accuracy), or (None, "")."""
    metric = utility_metric(results)
    return (results[metric[0]].get(metric[1]), f"{metric[0]}_{metric[1]}") if metric else (None, "")


def add_changes(rows: list[dict[str, Any]]) -> None:
    """Each run's change from its seed: the seed numbers stored with the run, else the report's one seed row with
    the same utility metric (a seed-model evaluation such as reproduce_paper.sh's `<dataset>-seed`)."""
    seed_rows = [r for r in rows if r["method"] == "seed"]
    for row in rows:
        seed = row.pop("_seed")
        if seed is None and row["method"] != "seed":
            same = [s for s in seed_rows if s["utility_metric"] == row["utility_metric"]]
            seed = same[0] if len(same) == 1 else None
        for key in ("rsr", "jsr", "utility"):
            ok = seed is not None and row[key] is not None and seed.get(key) is not None
            row[f"{key}_change"] = row[key] - seed[key] if ok else None


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both axes (higher is better on both)."""
    return [
        i
        for i, (x, y) in enumerate(points)
        if not any(ox >= x and oy >= y and (ox > x or oy > y) for j, (ox, oy) in enumerate(points) if j != i)
    ]


def _fmt(value: Any, signed: bool = False) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and signed:
        return f"{value:+.2f}"
    return f"{value:.2f}" if isinstance(value, float) else ("" if value is None else str(value))


def _cell(value: Any, signed: bool = False) -> str:
    return escape_markdown(_fmt(value, signed))


def write_report(paths: list[Path], out_dir: Path) -> dict[str, Path]:
    runs = find_runs(paths)
    if not runs:
        raise FileNotFoundError(
            f"no run dirs (with {SUMMARY_FILE} or eval/results.json) under {[str(p) for p in paths]}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [run_row(r) for r in runs]
    add_changes(rows)
    columns = COLUMNS + CHANGES
    written = {"csv": out_dir / "report.csv", "markdown": out_dir / "report.md"}
    with written["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    # Table cells come from data and config: escaped, so a value can neither run as markup nor break the table.
    lines += ["| " + " | ".join(_cell(r[c], signed=c in CHANGES) for c in columns) + " |" for r in rows]
    written["markdown"].write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r["rsr"] is not None and r["utility"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    points = [(r["utility"], r["rsr"]) for r in scored]
    front = set(pareto_front(points))
    for i, (r, (x, y)) in enumerate(zip(scored, points)):
        ax.scatter([x], [y], marker="*" if i in front else "o", s=120 if i in front else 40)
        ax.annotate(
            " ".join(x for x in (r["method"], r.get("objective", ""), r.get("guard", ""), r["preview"]) if x),
            (x, y),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    if front:
        xs, ys = zip(*sorted(points[i] for i in front))
        ax.plot(xs, ys, linestyle="--", linewidth=1, label="Pareto front")
        ax.legend(fontsize=7)
    ax.set_xlabel("utility (%)")
    ax.set_ylabel("raw safe rate (%)")
    ax.set_title("Safety against utility")
    fig.tight_layout()
    written["scatter"] = out_dir / "safety_utility.png"
    fig.savefig(written["scatter"], dpi=120)
    plt.close(fig)

    curves = {}
    for run in runs:
        kl_csv = run / "eval" / "kl.csv"
        if kl_csv.is_file():
            curves[run.name] = [float(row["kl"]) for row in csv.DictReader(kl_csv.open())]
    written["kl"] = plot_kl(curves, out_dir / "kl_overlay.png")
    return written
