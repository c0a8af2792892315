"""Tabulate and plot a sweep: `lookahead report <multirun dir | run dirs...> [--out DIR]`
(also `python scripts/report.py ...`).

Writes report.md and report.csv (method, m or P, RSR, JSR, utility, first-k train loss per run),
safety_utility.png (with the Pareto front) and kl_overlay.png. Run `evaluate.py run_dir=...` (or train with
eval.after_train=true) first so each run has eval/results.json.
"""

import argparse
import sys
from pathlib import Path

from lookahead.commands.compose import run_script


def report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="default: <first path>/report")
    args = parser.parse_args(argv)
    from lookahead.evaluation.report import write_report

    try:
        written = write_report(args.paths, args.out or args.paths[0] / "report")
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


def main() -> None:
    run_script(report)


if __name__ == "__main__":
    main()
