"""The sweep's choice of a recipe: a rule fixed before the sweep under the protocol had run (2026-12-07, 9 of its 90
runs evaluated, all three rows already read), so that validation picks mechanically and no reading of the table can
steer it. docs/demo.md, "The sweep under the protocol", states it in words; this module is the rule.

1. **Pending** while any row of the sweep lacks a training seed: a choice among a partial sweep would depend on which
   rows happened to run first.
2. **Eligible**: the rows whose recipe bar *clears* (keeps >= 2/3 of vanilla's RSR loss at >= 0.9 of its utility
   gain, both intervals past their bars). None eligible: the sweep names no recipe.
3. **The safest eligible row**: the highest mean of RSR and JSR by the first judge (the paper's keyword judge; the
   bar already holds the utility). Rows within `TIE` points of the safest count as tied, and the tie goes to the
   highest utility, then to the earlier row of the sweep.
4. Shown beside it: the runner-up (the next row by the same order), and the row the second judge's RSR and JSR would
   choose from the same eligible rows, so that a choice only one judge makes is visible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lookahead.evaluation import intervals

TIE = 1.0  # points of mean safety within which two rows count as equally safe


def safety(band: Mapping[str, Any], judge: str = "") -> float:
    """The mean of a row's RSR and JSR estimates by the first judge (`judge=""`) or the second (`"second_"`)."""
    return (band[f"{judge}rsr"]["estimate"] + band[f"{judge}jsr"]["estimate"]) / 2


def ranked(bands: Mapping[str, Mapping[str, Any]], names: Sequence[str], judge: str = "") -> list[str]:
    """`names` in the rule's order: the safest first; within `TIE` points of the row ahead's safest, by utility."""
    order = {name: i for i, name in enumerate(names)}
    by_safety = sorted(names, key=lambda n: (-safety(bands[n], judge), order[n]))
    out: list[str] = []
    rest = list(by_safety)
    while rest:
        top = safety(bands[rest[0]], judge)
        tied = [n for n in rest if top - safety(bands[n], judge) <= TIE]
        best = max(tied, key=lambda n: (bands[n]["utility"]["estimate"], -order[n]))
        out.append(best)
        rest.remove(best)
    return out


def choose(bands: Mapping[str, Mapping[str, Any]], variants: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """The rule applied to `interval_summary`'s bands of the sweep's `variants` (vanilla among them), each due on
    every one of `seeds`: `{"status": "pending", "missing": [...]}`, `{"status": "none", ...}` (no row clears the
    bar) or `{"status": "chosen", "choice": ..., "runner_up": ..., "second_judge_choice": ..., "eligible": [...]}`,
    with the eligible rows in the rule's order and each one's mean safety and utility."""
    missing = [n for n in variants if n not in bands or set(bands[n]["seeds"]) != set(seeds)]
    if missing:
        return {"status": "pending", "missing": missing, "rows_complete": len(variants) - len(missing)}
    eligible = [n for n in variants if n != "vanilla" and bands[n].get("recipe") == intervals.CLEARS]
    order = ranked(bands, eligible)
    if not order:
        return {"status": "none", "eligible": {}, "rows_complete": len(variants)}
    rows = {
        n: {"safety": safety(bands[n]), "second_safety": safety(bands[n], "second_"),
            "utility": bands[n]["utility"]["estimate"]}
        for n in order
    }  # fmt: skip
    return {
        "status": "chosen",
        "choice": order[0],
        "runner_up": order[1] if len(order) > 1 else None,
        "second_judge_choice": ranked(bands, eligible, "second_")[0],
        "eligible": rows,
        "rows_complete": len(variants),
    }


def described(choice: Mapping[str, Any]) -> list[str]:
    """The choice as sweep.md prints it, under the table."""
    head = "Choice (the rule fixed 2026-12-07; docs/demo.md, The sweep under the protocol): "
    if choice["status"] == "pending":
        missing = choice["missing"]
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        return [f"{head}pending: {choice['rows_complete']} of {choice['rows_complete'] + len(missing)} rows have "
                f"every seed; still missing a seed: {shown}."]  # fmt: skip
    if choice["status"] == "none":
        return [f"{head}none: no row clears the recipe bar, so the sweep names no recipe."]
    name, rows = choice["choice"], choice["eligible"]
    lines = [
        f"{head}**{name}** (mean of RSR and JSR {rows[name]['safety']:.1f}, utility {rows[name]['utility']:.1f}), "
        f"the safest of the {len(rows)} rows whose bar clears."
    ]
    if choice["runner_up"]:
        runner = choice["runner_up"]
        versus = choice.get("versus_runner_up")
        gap = (
            "; ".join(
                f"{m.upper()} {intervals.shown(versus[m])} ({versus['above'][m]})" for m in ("rsr", "jsr", "utility")
            )
            if versus and not versus.get("pending")
            else "not computed"
        )
        lines.append(
            f"Runner-up: {runner} ({rows[runner]['safety']:.1f}, utility {rows[runner]['utility']:.1f}); the choice "
            f"minus it, paired, first judge: {gap}."
        )
    second = choice["second_judge_choice"]
    lines.append(
        "The second judge would choose the same row."
        if second == name
        else f"The second judge would choose {second} ({rows[second]['second_safety']:.1f} against "
        f"{rows[name]['second_safety']:.1f}): the choice rests on the first judge."
    )
    return lines
