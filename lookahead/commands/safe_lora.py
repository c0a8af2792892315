"""Safe LoRA after training: project a finished LoRA run's adapter into a new run folder (lookahead.guards.posthoc).

    lookahead safe-lora run_dir=<run> out_dir=<new run> base_model=<pre-alignment model> [threshold=0.35]
    lookahead safe-lora run_dir=<run> out_dir=<new run> base_model=<...> top_fraction=0.1 [projector=exact]

Options: run_dir, out_dir (both required; out_dir must not exist), aligned_model (default: the run's model.path),
base_model (required: a Hub id or folder), threshold (0.35) or top_fraction, projector (paper | exact), rank. The
result is the run `guard=safe_lora` with these settings would have trained, bit for bit; evaluate it with
`lookahead eval run_dir=<new run>`.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lookahead.commands.compose import run_script
from lookahead.errors import ConfigError


def parse(argv: list[str]) -> tuple[Path, Path, dict[str, object]]:
    from lookahead.guards.posthoc import KEYS

    options: dict[str, object] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in ("run_dir", "out_dir", *KEYS):
            raise ConfigError(f"{arg!r}: expected key=value with key one of {['run_dir', 'out_dir', *KEYS]}")
        options[key] = value if key in ("run_dir", "out_dir", "aligned_model", "base_model") else yaml.safe_load(value)
    missing = [k for k in ("run_dir", "out_dir", "base_model") if k not in options]
    if missing:
        raise ConfigError(f"{missing}: required (see `lookahead safe-lora --help`)")
    return Path(str(options.pop("run_dir"))), Path(str(options.pop("out_dir"))), options


def safe_lora(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from lookahead.guards.posthoc import project_run

    run_dir, out_dir, options = parse(argv)
    summary = project_run(run_dir, out_dir, options)
    report = summary["guard_report"]
    print(f"projected {report['projected']} of {report['layers']} layers: {out_dir} (per layer: safe_lora.json)")
    return 0


def main() -> None:
    run_script(safe_lora)


if __name__ == "__main__":
    main()
