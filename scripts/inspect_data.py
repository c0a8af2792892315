"""Print exactly what is trained: one JSON line per collated training example.

    python scripts/inspect_data.py <the same overrides as train.py> inspect.n=3

    python scripts/inspect_data.py <overrides> dataset.safety_mix=0.1 dataset.safety_path=refusals.jsonl \
        inspect.source=safety                   # only the mixed-in refusal examples
    python scripts/inspect_data.py <overrides> dataset.safety_recovery=0.1 dataset.recovery_path=recovery.jsonl \
        inspect.source=recovery                 # only the recovery examples: the harmful start is not trained

Keys: index, source (task, safety or recovery), input_ids, labels, text (the decoded input), trained_text (the decoded
label tokens only).
"""

import contextlib
import json
import sys

from lookahead.commands.compose import run_script
from lookahead.constants import IGNORE_INDEX


def main(argv: list[str]) -> int:
    options = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith("inspect.")}
    overrides = [a for a in argv if not a.startswith("inspect.")]
    n = int(options.get("inspect.n", 3))
    only = options.get("inspect.source")

    # stdout holds the JSON lines only: whatever the libraries print while loading (transformers announces
    # WANDB_MODE=offline on stdout when it is imported) goes to stderr.
    rows = []
    with contextlib.redirect_stdout(sys.stderr):
        from lookahead.commands.compose import compose_train_config
        from lookahead.models.loading import resolve_model_path
        from lookahead.training.recipe import build_data

        cfg = compose_train_config(overrides)
        data = build_data(cfg, resolve_model_path(cfg.model, cfg.paths.cache_dir))
        tokenizer = data.tokenizer
        shown = [(i, ex) for i, ex in enumerate(data.train) if only is None or ex.get("source", "task") == only][:n]
        for index, example in shown:
            batch = data.collator([example])
            input_ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
            trained = [t for t in labels if t != IGNORE_INDEX]
            rows.append(
                {
                    "index": index,
                    "source": example.get("source", "task"),
                    "input_ids": input_ids,
                    "labels": labels,
                    "text": tokenizer.decode(input_ids, skip_special_tokens=False),
                    "trained_text": tokenizer.decode(trained, skip_special_tokens=False),
                }
            )
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    run_script(main)
