"""Rewrite a json/jsonl file offline with LookAhead previews (the same semantics as the training collator).

    python scripts/preview_data.py --input train.jsonl --output train.virtual.jsonl --mode virtual
    python scripts/preview_data.py --input train.jsonl --output train.real6.jsonl --mode real --m 6 \\
        --tokenizer meta-llama/Llama-2-7b-chat-hf

The prompt field gets instruction + connector + preview; for --mode virtual the response field gets P + answer.
Other fields are kept. --mode real needs the model's tokenizer, since m counts its tokens.
"""

import argparse
import json
import sys
from pathlib import Path

from lookahead.cli import run_script
from lookahead.data.sources import read_records, require_text
from lookahead.preview import RealPrefix, VirtualPrefix
from lookahead.preview.real_prefix import DEFAULT_CONNECTOR
from lookahead.preview.virtual_prefix import DEFAULT_PREFIX


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help=".jsonl, .json or .csv")
    p.add_argument("--output", required=True, help=".jsonl or .json")
    p.add_argument("--prompt-field", default="question")
    p.add_argument("--response-field", default="answer")
    p.add_argument("--mode", choices=["real", "virtual"], required=True)
    p.add_argument("--m", type=int, default=6, help="previewed answer tokens (real)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="the virtual prefix P (virtual)")
    p.add_argument("--connector", default=DEFAULT_CONNECTOR)
    p.add_argument("--tokenizer", help="tokenizer path or Hub id (required for real)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    tokenizer = None
    if args.mode == "real":
        if not args.tokenizer:
            raise SystemExit("error: --mode real needs --tokenizer (m counts the model's tokens)")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        strategy = RealPrefix(m=args.m, connector=args.connector)
    else:
        strategy = VirtualPrefix(prefix=args.prefix, connector=args.connector)

    rows, whole = [], 0
    for line, record in read_records(args.input):
        user = require_text(record, args.prompt_field, args.input, line)
        answer = require_text(record, args.response_field, args.input, line)
        result = strategy.apply(user, answer, tokenizer)
        whole += result.whole_answer_previewed
        rows.append({**record, args.prompt_field: result.user, args.response_field: result.answer})

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".json":
        out.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    else:
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} rows to {out} ({args.mode}; {whole} answers previewed whole)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_script(main)
