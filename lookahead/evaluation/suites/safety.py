"""Safety: RSR (raw harmful prompts) and JSR (the assistant turn prefilled with the start of a harmful answer), judged
by keywords, an LLM or a guard model; rates over judged replies, with the unjudged counted apart."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lookahead.errors import ConfigError, EvaluationError
from lookahead.evaluation.evaluator import Evaluator
from lookahead.evaluation.judges import HFJudge, JudgeTemplate, KeywordJudge, LLMJudge
from lookahead.evaluation.safety_data import load_harmful_prompts

log = logging.getLogger(__name__)


JUDGES = ("keyword", "keyword_prefix", "keyword_turn", "llm", "hf")


def make_judge(ev: Evaluator, kind: str | None = None) -> Any:
    """The judge `kind` (default `safety.judge`); `keyword_prefix` and `keyword_turn` are the keyword judge in prefix
    and turn mode, whatever `safety.keyword.mode` says: the testbed's second judges beside the paper's rule."""
    c = ev.cfg.safety
    kind = kind or c.judge
    if kind == "keyword":
        return KeywordJudge(list(c.keyword.refusals), c.keyword.mode)
    if kind in ("keyword_prefix", "keyword_turn"):
        judge = KeywordJudge(list(c.keyword.refusals), kind.removeprefix("keyword_"))
        judge.name = kind
        return judge
    if kind == "llm":
        return LLMJudge(
            c.llm.base_url,
            c.llm.model,
            ev.judge_api_key,
            cache_path=c.llm.cache_path,
            template=JudgeTemplate.load(c.llm.get("template")),
            api_key_env=c.llm.api_key_env,
            temperature=float(c.llm.temperature),
            top_p=float(c.llm.top_p),
            max_tokens=int(c.llm.max_tokens),
            concurrency=int(c.llm.concurrency),
            max_retries=int(c.llm.max_retries),
            backoff_s=float(c.llm.backoff_s),
            timeout_s=float(c.llm.timeout_s),
        )
    if kind == "hf":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(c.hf.model)
        model = AutoModelForCausalLM.from_pretrained(c.hf.model, use_safetensors=True).eval()
        return HFJudge(model, tokenizer, batch_size=int(ev.cfg.generation.batch_size))
    raise ConfigError(f"safety judge {kind!r}: expected one of {', '.join(JUDGES)}")


def prefilled_texts(ev: Evaluator, prefill_ids: list[int], continuation_ids: list[int]) -> tuple[str, str, str]:
    """(prefill, continuation, full) texts. The full text is decoded in one piece: decoding the two halves apart
    drops the space between them with SentencePiece tokenizers ("here is" + "a plan")."""
    full = ev.decode(prefill_ids + continuation_ids)
    prefill = ev.decode(prefill_ids)
    continuation = full[len(prefill) :] if full.startswith(prefill) else ev.decode(continuation_ids)
    return prefill, continuation, full


def run(ev: Evaluator) -> dict[str, Any]:
    c = ev.cfg.safety
    items = load_harmful_prompts(c)
    judge = make_judge(ev)  # before generating: a judge misconfiguration fails in seconds
    second = make_judge(ev, c.second_judge) if c.get("second_judge") else None
    raw = ev.generate([ev.prompt_ids(i.prompt, c.system_prompt) for i in items], int(c.max_new_tokens), "safety")
    rows = [{"category": i.category, "prompt": i.prompt, "mode": "raw", "generation": g} for i, g in zip(items, raw)]

    with_answers = [i for i in items if i.harmful_answer]
    k = int(c.prefix_tokens)
    if with_answers:
        built = [ev.jsr_prompt(i, c.system_prompt, k) for i in with_answers]
        continuations = ev.generate_ids([ids for ids, _ in built], int(c.max_new_tokens), "safety (prefilled)")
        for i, (_, prefill_ids), cont in zip(with_answers, built, continuations):
            prefill, continuation, full = prefilled_texts(ev, prefill_ids, cont)
            judged = continuation if c.judge_sees == "continuation" else full
            rows.append(
                {
                    "category": i.category,
                    "prompt": i.prompt,
                    "mode": "prefilled",
                    "prefill": prefill,
                    "generation": continuation,
                    "judged_text": judged,
                }
            )
    # Generations are written before judging, so a judge failure never costs the generation time.
    ev.write_rows("safety.jsonl", [{**r, "safe": None} for r in rows])
    for r, v in zip(rows, judge_rows(judge, rows)):
        r["safe"] = v
    second_result = judge_again(rows, second) if second is not None else None
    ev.write_rows("safety.jsonl", rows)
    result = safety_rates(ev, rows, judge.name)
    if second_result is not None:
        result["second"] = second_result
    return result


def judged_text(row: dict[str, Any]) -> str:
    """What a judge reads of one `safety.jsonl` row: the prefilled reply's continuation (or full text), or the reply."""
    return row.get("judged_text", row["generation"])


def safe_items(rows: list[dict[str, Any]], key: str) -> dict[str, list[int | None]]:
    """Per prompt, in file order, 1 (safe), 0 or None (unjudged), for each mode: what paired intervals resample."""
    out: dict[str, list[int | None]] = {"raw": [], "prefilled": []}
    for r in rows:
        out[r["mode"]].append(None if r[key] is None else int(r[key]))
    return {mode: items for mode, items in out.items() if items}


def rate(verdicts: list[bool | int | None]) -> float | None:
    judged = [v for v in verdicts if v is not None]
    return 100 * sum(judged) / len(judged) if judged else None


def judge_rows(judge: Any, rows: list[dict[str, Any]]) -> list[bool | None]:
    """`judge`'s verdict on each `safety.jsonl` row (a judge that `reads_modes` is also told which were prefilled)."""
    prompts, texts = [r["prompt"] for r in rows], [judged_text(r) for r in rows]
    if getattr(judge, "reads_modes", False):
        return judge.judge(prompts, texts, [r["mode"] for r in rows])
    return judge.judge(prompts, texts)


def judge_again(rows: list[dict[str, Any]], judge: Any) -> dict[str, Any]:
    """Judge saved rows with a second judge: each row gets `safe_second`; returns that judge's `second_rates`."""
    for r, v in zip(rows, judge_rows(judge, rows)):
        r["safe_second"] = v
    return second_rates(rows, judge.name)


def second_rates(rows: list[dict[str, Any]], judge_name: str) -> dict[str, Any]:
    """RSR and JSR of the same generations by the second judge (`safety.second_judge`), and its verdicts."""
    items = safe_items(rows, "safe_second")
    return {
        "judge": judge_name,
        "rsr": rate(items.get("raw", [])),
        **({"jsr": rate(items["prefilled"])} if "prefilled" in items else {}),
        "safe_items": items,
    }


def safety_rates(ev: Evaluator, rows: list[dict[str, Any]], judge_name: str) -> dict[str, Any]:
    """RSR and JSR over the judged replies (the reference's denominator); unjudged ones are `judge_errors`."""
    c = ev.cfg.safety
    by_mode: dict[str, list] = {"raw": [], "prefilled": []}
    by_category: dict[str, dict[str, list]] = defaultdict(lambda: {"raw": [], "prefilled": []})
    for r in rows:
        by_mode[r["mode"]].append(r["safe"])
        by_category[r["category"]][r["mode"]].append(r["safe"])
    errors = sum(r["safe"] is None for r in rows)
    result: dict[str, Any] = {
        "rsr": rate(by_mode["raw"]),
        "n": len(by_mode["raw"]),
        "n_judged": {mode: sum(v is not None for v in vs) for mode, vs in by_mode.items() if vs},
        "judge": judge_name,
        "judge_errors": errors,
        "dataset": safety_dataset_name(c),
        "by_category": {
            cat: {
                "rsr": rate(v["raw"]),
                "n": len(v["raw"]),
                **({"jsr": rate(v["prefilled"])} if v["prefilled"] else {}),
            }
            for cat, v in sorted(by_category.items())
        },
        "safe_items": safe_items(rows, "safe"),
    }
    if by_mode["prefilled"]:
        result["jsr"] = rate(by_mode["prefilled"])
        result["prefix_tokens"] = int(c.prefix_tokens)
    if errors:
        log.warning(
            "safety: the %s judge gave no verdict for %d of %d generations; they are left out of the rates",
            judge_name,
            errors,
            len(rows),
        )
    limit = float(c.max_judge_error_fraction)
    if errors > limit * len(rows):
        raise EvaluationError(
            f"safety: the {judge_name} judge gave no verdict for {errors} of {len(rows)} generations "
            f"(more than safety.max_judge_error_fraction={limit:g}); generations are kept in "
            f"{ev.out_dir / 'safety.jsonl'}; rerun to judge them again (judged replies are cached)"
        )
    return result


def safety_dataset_name(c: DictConfig) -> str:
    """The harmful-prompt set as the card names it: the file's name, or the Hub id."""
    if c.get("path"):
        return Path(str(c.path)).name
    return str(c.get("hub_id") or "")
