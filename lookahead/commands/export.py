"""Export a finished run: merge its LoRA adapter into the base model, and push to the Hugging Face Hub.

    lookahead export run_dir=<run>                        # <run>/merged/: safetensors shards, tokenizer, card
    lookahead export run_dir=<run> dtype=bfloat16 out_dir=<dir>
    lookahead export run_dir=<run> push_to_hub=<org/name> [private=true]               # the adapter (final/)
    lookahead export run_dir=<run> push_to_hub=<org/name> merged=true [private=true]   # the merged model

Options: run_dir (required), dtype=auto|float32|bfloat16|float16 (auto: the training dtype; QLoRA: bfloat16),
out_dir (default <run>/merged), merged (default true, or false when pushing), push_to_hub, private (false),
max_shard_size (2GB). The Hub token comes from HF_TOKEN or `huggingface-cli login` and is never written.
"""

from __future__ import annotations

from pathlib import Path

from lookahead.commands.compose import run_script
from lookahead.errors import ConfigError

OPTIONS = ("run_dir", "dtype", "out_dir", "merged", "push_to_hub", "private", "max_shard_size")


def parse(argv: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in OPTIONS:
            raise ConfigError(f"{arg!r}: expected key=value with key one of {list(OPTIONS)}")
        options[key] = value
    if "run_dir" not in options:
        raise ConfigError("run_dir=<run dir> is required")
    return options


def flag(options: dict[str, str], key: str, default: bool) -> bool:
    value = options.get(key)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise ConfigError(f"{key}={value!r}: expected true or false")
    return value.lower() == "true"


def export(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from lookahead.models.runs import read_run
    from lookahead.shipping.export import export_merged
    from lookahead.shipping.hub import push_folder

    options = parse(argv)
    run_dir = Path(options["run_dir"])
    read_run(run_dir)  # a clear error before any model loads
    repo = options.get("push_to_hub")
    merged = flag(options, "merged", default=repo is None)
    folder = run_dir / "final"
    if merged:
        folder = export_merged(
            run_dir,
            options.get("dtype", "auto"),
            Path(options["out_dir"]) if options.get("out_dir") else None,
            options.get("max_shard_size", "2GB"),
        )
        print(f"merged: {folder}")
    if repo:
        url = push_folder(folder, repo, private=flag(options, "private", default=False))
        print(f"pushed {folder} to {url}")
    return 0


def main() -> None:
    run_script(export)


if __name__ == "__main__":
    main()
