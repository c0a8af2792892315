"""The console commands. `pip install lookahead` puts them on the PATH:

    lookahead train  <overrides>     (also lookahead-train;  python train.py in a checkout)
    lookahead eval   <overrides>     (also lookahead-eval;   python evaluate.py)
    lookahead report <run dirs>      (also lookahead-report; python scripts/report.py)
    lookahead export run_dir=<run>   (also lookahead-export; python scripts/export.py)
    lookahead safe-lora run_dir=<run> out_dir=<new run> base_model=<model>   (Safe LoRA after training)

Hydra finds its configs inside the package (`pkg://lookahead.configs`), so the commands run from any directory.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": "lookahead.commands.train",
    "eval": "lookahead.commands.evaluate",
    "report": "lookahead.commands.report",
    "export": "lookahead.commands.export",
    "safe-lora": "lookahead.commands.safe_lora",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    name, rest = argv[0], argv[1:]
    sys.argv = [f"lookahead-{name}", *rest]  # Hydra and argparse read sys.argv
    importlib.import_module(COMMANDS[name]).main()
