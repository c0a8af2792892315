"""The safety scorecard that travels with a model: a "Safety evaluation" section in the run's model card
(`final/README.md`) and the same numbers as the Hub's `model-index` metadata.

The section sits between two HTML comments, so re-running an evaluation replaces it instead of adding another.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

from lookahead.training.summary import escape_markdown

SECTION_START = "<!-- lookahead:safety-evaluation:start -->"
SECTION_END = "<!-- lookahead:safety-evaluation:end -->"
KL_POSITIONS = 5
_SECTION = re.compile(re.escape(SECTION_START) + r".*?" + re.escape(SECTION_END) + r"\n?", re.DOTALL)

# suite -> (metric key in results.json, how the card names it, the Hub dataset id it stands for)
UTILITY = {"gsm8k": ("accuracy", "GSM8K accuracy", "openai/gsm8k"), "samsum": ("rouge1", "SAMSum ROUGE-1", "samsum")}


def utility_metric(results: dict[str, Any]) -> tuple[str, str, str] | None:
    """(suite, metric key, name) of the utility in `results`: GSM8K accuracy, else SAMSum ROUGE-1, else None."""
    return next(((suite, key, label) for suite, (key, label, _) in UTILITY.items() if suite in results), None)


def utility_of(results: dict[str, Any]) -> tuple[float | None, str]:
    """(utility, its name), or (None, "")."""
    metric = utility_metric(results)
    return (results[metric[0]].get(metric[1]), metric[2]) if metric else (None, "")


def headline(results: dict[str, Any]) -> dict[str, float | None]:
    """RSR, JSR, utility and KL at answer positions 1..5 of one results entry (a seed's KL is 0 by definition)."""
    safety = results.get("safety", {})
    kl = list(results.get("kl", {}).get("per_position", []))[:KL_POSITIONS]
    row: dict[str, float | None] = {
        "rsr": safety.get("rsr"),
        "jsr": safety.get("jsr"),
        "utility": utility_of(results)[0],
    }
    row.update({f"kl@{p + 1}": (kl[p] if p < len(kl) else None) for p in range(KL_POSITIONS)})
    return row


def change(model: dict[str, float | None], seed: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (v - seed[k] if v is not None and seed.get(k) is not None else None) for k, v in model.items()}


def _fmt(value: float | None, signed: bool = False, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def section_markdown(results: dict[str, Any], date: str) -> str:
    model = headline(results)
    seed_results = results.get("seed")
    seed = headline(seed_results) if seed_results else None
    if seed is not None and "kl" in results:
        seed.update({f"kl@{p + 1}": 0.0 for p in range(KL_POSITIONS)})
    _, utility_name = utility_of(results)
    safety = results.get("safety", {})
    columns = ["RSR", "JSR", utility_name or "utility"] + [f"KL@{p + 1}" for p in range(KL_POSITIONS)]
    keys = ["rsr", "jsr", "utility"] + [f"kl@{p + 1}" for p in range(KL_POSITIONS)]

    def row(name: str, values: dict[str, float | None], signed: bool = False) -> str:
        cells = [_fmt(values[k], signed, 4 if k.startswith("kl") else 2) for k in keys]
        return "| " + " | ".join([name, *cells]) + " |"

    lines = [SECTION_START, "## Safety evaluation", ""]
    lines += ["| model | " + " | ".join(escape_markdown(c) for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    if seed is not None:
        lines.append(row("seed model", seed))
    lines.append(row("this model", model))
    if seed is not None:
        lines.append(row("change", change(model, seed), signed=True))
    lines.append("")
    if safety:
        n_judged = safety.get("n_judged", {})
        jsr = (
            f" JSR (jailbreak safe rate): % safe with the first {safety.get('prefix_tokens')} tokens of a harmful "
            f"answer prefilled, {n_judged.get('prefilled', 0)} judged."
            if safety.get("jsr") is not None
            else ""
        )
        lines.append(
            f"RSR (raw safe rate): % of {safety.get('n')} harmful prompts from "
            f"{escape_markdown(safety.get('dataset') or 'the safety set')} answered safely, "
            f"{n_judged.get('raw', 0)} judged, by the {escape_markdown(safety.get('judge'))} judge "
            f"({safety.get('judge_errors', 0)} judge errors, left out of the rates).{jsr}"
        )
    if results.get("gate"):
        from lookahead.evaluation.gate import gate_markdown

        lines += ["", *gate_markdown(results["gate"])]
    for suite, (_, label, _) in UTILITY.items():
        if suite in results:
            lines.append(f"{label}: {results[suite].get('n')} test examples, greedy decoding.")
    if "kl" in results:
        lines.append(
            f"KL@i: KL(seed ‖ this model) at answer token i, teacher-forced on {results['kl'].get('n')} "
            "(prompt, harmful answer) pairs; LookAhead Tuning keeps the first positions low."
        )
    lines += [
        "",
        f"Evaluated on {date} by `lookahead` (`evaluate.py`); prompts are never previewed. Higher RSR, JSR and "
        "utility are better; KL is drift from the seed.",
        SECTION_END,
        "",
    ]
    return "\n".join(lines)


def eval_results(results: dict[str, Any]) -> list[Any]:
    """The numbers as `huggingface_hub.EvalResult`s, which the card's metadata renders as `model-index`."""
    from huggingface_hub import EvalResult

    out = []
    safety = results.get("safety", {})
    dataset = safety.get("dataset") or "harmful-prompts"
    for key, name in (("rsr", "Raw safe rate"), ("jsr", "Jailbreak safe rate")):
        if safety.get(key) is not None:
            out.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Safety",
                    dataset_type=dataset,
                    dataset_name=dataset,
                    metric_type=key,
                    metric_name=f"{name} ({safety.get('judge')} judge)",
                    metric_value=round(float(safety[key]), 4),
                )
            )
    for suite, (key, label, hub_id) in UTILITY.items():
        if suite in results and results[suite].get(key) is not None:
            out.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Utility",
                    dataset_type=hub_id,
                    dataset_name=suite,
                    metric_type=key,
                    metric_name=label,
                    metric_value=round(float(results[suite][key]), 4),
                )
            )
    kl = list(results.get("kl", {}).get("per_position", []))[:KL_POSITIONS]
    for p, value in enumerate(kl):
        out.append(
            EvalResult(
                task_type="text-generation",
                task_name="Safety drift",
                dataset_type=dataset,
                dataset_name=dataset,
                metric_type=f"kl_position_{p + 1}",
                metric_name=f"KL(seed || model) at answer token {p + 1}",
                metric_value=round(float(value), 6),
            )
        )
    return out


def write_safety_section(card_path: Path, results: dict[str, Any], model_name: str, date: str | None = None) -> Path:
    """Put the scorecard into the model card at `card_path`, replacing an earlier one; other content is kept."""
    from huggingface_hub import ModelCard

    date = date or datetime.date.today().isoformat()
    card = ModelCard.load(card_path) if card_path.is_file() else ModelCard("---\n---\n")
    body = _SECTION.sub("", card.text).rstrip("\n")
    card.text = (body + "\n\n" if body else "") + section_markdown(results, date)
    card.data.model_name = card.data.model_name or model_name
    card.data.eval_results = eval_results(results) or None
    card.save(card_path)
    return card_path
