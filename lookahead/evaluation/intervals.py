"""Paired bootstrap intervals over prompts and training seeds, and the verdict a bar reads from them.

A sweep row is a fine-tune measured on the same prompts and questions as vanilla and the seed model, on the same
training seeds. One bootstrap replicate draws the training seeds (with replacement, from those the compared rows
share) and the prompts and questions (with replacement, the same draw for every model: paired), and recomputes every
rate and every ratio from the per-item outcomes `evaluate()` writes (`safe_items`, `correct_items`). The 2.5 and 97.5
percentiles of B replicates make the 95% interval. A bar is then read three ways:

- clears: the whole interval is on the right side of the bar;
- misses: the whole interval is on the wrong side;
- within noise: the interval straddles the bar; these data cannot tell.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

CLEARS, WITHIN_NOISE, MISSES = "clears", "within noise", "misses"
METRICS = ("rsr", "jsr", "utility")

# runs[seed][metric]: per-item outcomes (1, 0, or None for an unjudged reply), in the evaluation file's order.
Outcomes = Mapping[int, Mapping[str, Sequence[float | None]]]


def as_array(items: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in items], dtype=float)


def check_aligned(models: Mapping[str, Outcomes]) -> dict[str, int]:
    """The number of items per metric, the same for every model and seed (else the pairing would be wrong)."""
    sizes: dict[str, int] = {}
    for name, runs in models.items():
        for seed, outcomes in runs.items():
            for metric, items in outcomes.items():
                if sizes.setdefault(metric, len(items)) != len(items):
                    raise ValueError(
                        f"{name} (seed {seed}): {len(items)} {metric} items, others have {sizes[metric]}: paired "
                        "intervals need every model evaluated on the same prompts"
                    )
    return sizes


def bootstrap(
    models: Mapping[str, Outcomes],
    seeds: Sequence[int],
    statistics: Mapping[str, Callable[[Mapping[str, Mapping[str, np.ndarray]]], np.ndarray]],
    replicates: int = 2000,
    random_seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Point estimate and 95% interval of each statistic. A statistic maps {model: {metric: rate per replicate}} to
    one value per replicate (a model evaluated once, like the seed model, is the same for every training seed: give
    it one run under any key). Rates are percentages over the judged items."""
    sizes = check_aligned(models)
    rng = np.random.default_rng(random_seed)
    seed_draw = rng.integers(0, len(seeds), size=(replicates, len(seeds)))
    item_draw = {metric: rng.integers(0, n, size=(replicates, n)) for metric, n in sizes.items()}

    def rates(draw: bool) -> dict[str, dict[str, np.ndarray]]:
        out: dict[str, dict[str, np.ndarray]] = {}
        for name, runs in models.items():
            own = list(runs) if len(runs) == 1 else list(seeds)  # a model measured once stands for every seed
            out[name] = {}
            for metric in runs[own[0]]:  # a model may have fewer metrics (a second judge: no utility)
                table = np.stack([as_array(runs[s][metric]) for s in own])  # (seeds, items)
                if not draw:
                    out[name][metric] = np.array([100 * np.nanmean(table)])
                    continue
                rows = seed_draw if len(own) > 1 else np.zeros_like(seed_draw)
                picked = table[rows[:, :, None], item_draw[metric][:, None, :]]  # (replicates, seeds, items)
                with warnings.catch_warnings():  # an all-unjudged draw is NaN ("Mean of empty slice")
                    warnings.simplefilter("ignore", RuntimeWarning)
                    out[name][metric] = 100 * np.nanmean(picked, axis=(1, 2))
        return out

    point, drawn = rates(False), rates(True)
    result = {}
    for key, statistic in statistics.items():
        estimate = float(statistic(point)[0])
        values = statistic(drawn)
        finite = values[np.isfinite(values)]
        interval = (
            [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]
            if len(finite) >= 0.95 * len(values)
            else None  # the ratio is undefined on too many replicates (a denominator near 0): no interval
        )
        result[key] = {"estimate": estimate if np.isfinite(estimate) else None, "interval": interval}
    return result


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def verdict(interval: Sequence[float] | None, bar: float) -> str | None:
    """clears / within noise / misses of `value >= bar`, read from the interval; None without one."""
    if interval is None:
        return None
    low, high = interval
    return CLEARS if low >= bar else MISSES if high < bar else WITHIN_NOISE


def above_zero(interval: Sequence[float] | None) -> str | None:
    """clears / within noise / misses of "a difference is above 0", read from its interval: an interval touching 0
    (two rows that never differ: [0, 0]) is within noise."""
    if interval is None:
        return None
    low, high = interval
    return CLEARS if low > 0 else MISSES if high < 0 else WITHIN_NOISE


def all_bars(verdicts: Sequence[str | None]) -> str | None:
    """Several bars that must all hold: misses if any misses, clears if all clear, else within noise."""
    if any(v is None for v in verdicts):
        return None
    if MISSES in verdicts:
        return MISSES
    return CLEARS if all(v == CLEARS for v in verdicts) else WITHIN_NOISE


def shown(stat: Mapping[str, Any], digits: int = 1) -> str:
    """`62.0 [55.1, 68.9]`: the estimate and its 95% interval."""
    if stat.get("estimate") is None:
        return ""
    interval = stat.get("interval")
    bounds = "" if interval is None else f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return f"{stat['estimate']:.{digits}f}{bounds}"
