"""Losses of the first three steps on the tiny model, pinned before the package was restructured (issue 12): every
objective and preview combination must train exactly as it did."""

from __future__ import annotations

import pytest

from lookahead.training.recipe import train
from tests.conftest import compose, losses, read_metrics, requires_shared, tiny_overrides

PINNED = {
    "constrained_sft": (
        ["method=vanilla", "objective=constrained_sft"],
        [10.831405639648438, 10.816590309143066, 10.77940559387207],
    ),
    "constrained_sft+virtual": (
        ["method=virtual_prefix", "objective=constrained_sft"],
        [10.84396743774414, 10.830074310302734, 10.788640022277832],
    ),
    "constrained_sft+full": (
        ["method=vanilla", "objective=constrained_sft", "lora=none"],
        [10.831405639648438, 10.761797904968262, 10.692936897277832],
    ),
    "virtual+padding_free": (
        ["method=virtual_prefix", "trainer.padding_free=true"],
        [10.84396743774414, 10.836271286010742, 10.799474716186523],
    ),
    "sdft+real": (
        ["method=real_prefix", "objective=sdft", "objective.max_new_tokens=8", "dataset.size=16"],
        [10.813261985778809, 10.820351600646973, 10.816235542297363],
    ),
}


@requires_shared
@pytest.mark.slow
@pytest.mark.parametrize("case", list(PINNED))
def test_objective_and_preview_losses_are_pinned(case, tmp_path):
    extra, expected = PINNED[case]
    overrides = [
        *tiny_overrides("smollm2-instruct"),
        *extra,
        "trainer.max_steps=3",
        "trainer.per_device_train_batch_size=4",
    ]
    train(compose([*overrides, f"paths.cache_dir={tmp_path / 'cache'}"], output_dir=tmp_path / "run"))
    got = losses(read_metrics(tmp_path / "run" / "metrics.jsonl"))
    assert [got[s] for s in (1, 2, 3)] == pytest.approx(expected, abs=1e-5)
