"""The CPU safety demo (make demo): the testbed seed, fine-tuned with and without a preview, evaluated and reported.

    python scripts/make_safety_seed.py            # once (make seed)
    python scripts/demo.py [--seeds 1 2 3] [--variant guard_safe_lora "method=virtual_prefix guard=safe_lora"]
    python scripts/demo.py --sweep                # previews x protections x seeds on validation (make sweep; hours)
    python scripts/demo.py --sweep --report-only  # the reports from the runs complete so far (make sweep-report)
    python scripts/demo.py --judge llm            # judge the saved generations again with the LLM judge

`make demo` reads the test split; `--sweep` reads validation, where every choice is made (`--split` overrides).
Writes outputs/testbed/demo/report/{report.md,report.csv,safety_utility.png,sweep.md,sweep.png} and demo.json
(means, paired bootstrap 95% intervals over prompts and seeds, both judges, whether the paper's direction holds, each
variant against vanilla). See docs/demo.md.
"""

import argparse
import json
import logging
import shlex

from lookahead.commands.compose import run_script
from lookahead.testbed.demo import SECOND_JUDGE, DemoSettings, collect_demo, rejudge, run_demo, sweep_variants

# The sweep's bars (>= 90% of vanilla's utility gain) need utility resolved to a couple of points: 100 questions
# measure it to about +-5 (docs/demo.md), 400 to about +-2.5.
SWEEP_UTILITY_N = 400
# The sweep spans sessions: its runs' evaluation records are committed here (lookahead/testbed/records.py).
SWEEP_RECORDS = "results/testbed/sweep"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-dir", default=DemoSettings.seed_dir)
    parser.add_argument("--out", default=DemoSettings.out_dir)
    parser.add_argument("--seeds", type=int, nargs="+", default=DemoSettings().seeds)
    parser.add_argument(
        "--split", choices=("validation", "test"), default=None, help="default test; validation with --sweep"
    )
    parser.add_argument(
        "--judge",
        choices=("keyword_turn", "keyword_prefix", "llm"),
        default=None,
        help="judge every run's saved generations again with this second judge, generating nothing, then report it: "
        "keyword_turn (the one every evaluation computes), keyword_prefix, or llm (safety.llm's endpoint)",
    )
    parser.add_argument("--train-size", type=int, default=DemoSettings.train_size)
    parser.add_argument("--epochs", type=float, default=DemoSettings.epochs)
    parser.add_argument("--learning-rate", type=float, default=DemoSettings.learning_rate)
    parser.add_argument(
        "--utility-n", type=int, default=None, help=f"default {DemoSettings.utility_n}; {SWEEP_UTILITY_N} with --sweep"
    )
    parser.add_argument("--safety-limit", type=int, default=None)
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "OVERRIDES"), default=[])
    parser.add_argument("--preview", default=DemoSettings.preview, help="the variant checked against vanilla")
    parser.add_argument("--only-variants", action="store_true", help="drop the default rows")
    parser.add_argument(
        "--compare", nargs=2, action="append", metavar=("A", "B"), default=[],
        help="also give row A minus row B paired intervals (RSR, JSR, utility; both judges)",
    )  # fmt: skip
    parser.add_argument(
        "--sweep", action="store_true", help="previews x {none, safe_lora, asft, constrained_sft, safety_mix}"
    )
    parser.add_argument(
        "--records",
        default=None,
        help=f"a folder of per-run evaluation records to restore from and write to (default {SWEEP_RECORDS} with "
        "--sweep, none otherwise; 'none' turns them off)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="report the runs already complete; train and evaluate nothing"
    )
    args = parser.parse_args(argv)
    settings = DemoSettings(
        seed_dir=args.seed_dir, out_dir=args.out, seeds=args.seeds, train_size=args.train_size, epochs=args.epochs,
        learning_rate=args.learning_rate, safety_limit=args.safety_limit,
        utility_n=args.utility_n or (SWEEP_UTILITY_N if args.sweep else DemoSettings.utility_n),
        preview=args.preview, split=args.split or ("validation" if args.sweep else "test"),
        second_judge=args.judge or SECOND_JUDGE, compare=[tuple(p) for p in args.compare], choose=args.sweep,
        records_dir=None if args.records == "none" else args.records or (SWEEP_RECORDS if args.sweep else None),
    )  # fmt: skip
    if args.only_variants:
        settings.variants = {}
    if args.sweep:
        settings.variants = sweep_variants()
    settings.variants.update({name: shlex.split(overrides) for name, overrides in args.variant})
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    if args.judge:  # re-judge what the runs generated, then report; train nothing
        rejudge(settings, args.judge)
        args.report_only = True
    summary = (collect_demo if args.report_only else run_demo)(settings)
    keys = ("split", "variants", "paper_direction", "against_vanilla", "pairs", "choice", "minutes")
    shown = {k: summary[k] for k in keys if k in summary}
    shown["intervals"] = {
        name: {k: band[k] for k in ("rsr", "jsr", "utility", "keeps", "gain", "recipe", "direction") if k in band}
        for name, band in summary.get("intervals", {}).items()
    }
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    run_script(main)
