"""Rewrite a json/jsonl file offline with a LookAhead preview (the same semantics as training's data pass).

    python scripts/preview_data.py --input train.jsonl --output train.virtual.jsonl --method virtual_prefix
    python scripts/preview_data.py --input train.jsonl --output train.real6.jsonl --method real_prefix method.m=6 \\
        --tokenizer meta-llama/Llama-2-7b-chat-hf

For LLaMA-Factory and axolotl (docs/other-trainers.md), `--format alpaca|sharegpt|openai` writes their records and
prints the `dataset_info.json` entry and the axolotl `datasets:` block to paste:

    python scripts/preview_data.py --input train.jsonl --output data/train.virtual.json --method virtual_prefix \
        --format sharegpt --system "You are a helpful assistant."

`--method` is any preview of `configs/method/` and the `method.<key>=<value>` arguments are the same overrides
train.py takes, so a new preview works here without an edit. With the default `--format fields`, the prompt field
gets what the preview puts in the user turn, the response field what it trains as the answer; other fields are kept.
A preview that counts tokens (real_prefix) needs the model's tokenizer. `--mode real|virtual`, `--m`, `--prefix` and
`--connector` are the older spellings of the same.
"""

import argparse
import json
import sys
from pathlib import Path

from lookahead.commands.compose import run_script
from lookahead.data.sources import read_records, require_text
from lookahead.errors import ConfigError
from lookahead.integrations.formats import FORMATS, convert, snippets


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help=".jsonl, .json or .csv")
    p.add_argument("--output", required=True, help=".jsonl or .json")
    p.add_argument("--prompt-field", default="question")
    p.add_argument("--response-field", default="answer")
    p.add_argument("--method", help="a preview of configs/method/ (vanilla, real_prefix, virtual_prefix, ...)")
    p.add_argument("--mode", choices=["real", "virtual"], help="older spelling of --method")
    p.add_argument("--m", type=int, help="method.m")
    p.add_argument("--prefix", help="method.prefix")
    p.add_argument("--connector", help="method.connector")
    p.add_argument("--tokenizer", help="tokenizer path or Hub id (for previews that count tokens)")
    p.add_argument("--format", default="fields", choices=["fields", *FORMATS], help="what to write (default: fields)")
    p.add_argument("--system", help="a system prompt for every conversation (alpaca, sharegpt, openai)")
    p.add_argument("--name", help="the dataset's name in the printed snippets (default: the output's stem)")
    p.add_argument("overrides", nargs="*", help="method.<key>=<value>")
    return p.parse_args(argv)


def build(args: argparse.Namespace):
    from lookahead.commands.compose import compose_train_config
    from lookahead.components import build_preview

    method = args.method or {"real": "real_prefix", "virtual": "virtual_prefix", None: None}[args.mode]
    if method is None:
        raise ConfigError("give --method <preview>, e.g. --method virtual_prefix")
    overrides = [f"method={method}", *args.overrides]
    for key in ("m", "prefix", "connector"):
        if getattr(args, key) is not None:
            overrides.append(f"method.{key}={json.dumps(getattr(args, key))}")
    if any(not o.startswith("method") for o in overrides):
        raise ConfigError(f"only method.<key>=<value> overrides apply here, got {args.overrides}")
    return build_preview(compose_train_config(overrides).method)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    strategy = build(args)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)

    rows, whole = [], 0
    for line, record in read_records(args.input):
        user = require_text(record, args.prompt_field, args.input, line)
        answer = require_text(record, args.response_field, args.input, line)
        try:
            result = strategy.apply(user, answer, tokenizer)
        except (AttributeError, TypeError) as e:
            if tokenizer is None:
                raise ConfigError(f"method={strategy.name} counts tokens: pass --tokenizer <path or Hub id>") from e
            raise
        whole += result.whole_answer_previewed
        if args.format == "fields":
            rows.append({**record, args.prompt_field: result.user, args.response_field: result.answer})
        else:
            system = [{"role": "system", "content": args.system}] if args.system else []
            messages = [
                *system,
                {"role": "user", "content": result.user},
                {"role": "assistant", "content": result.answer},
            ]
            rows.append(convert(messages, args.format))

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        out.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    else:
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} rows to {out} ({strategy.describe()}; {whole} answers previewed whole)", file=sys.stderr)
    if args.format != "fields":
        print(snippets(args.name or out.stem.replace(".", "_"), str(out), args.format), end="")
    return 0


if __name__ == "__main__":
    run_script(main)
