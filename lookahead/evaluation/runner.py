"""`evaluate(cfg)`: run the configured suites on one model and write results.json plus per-suite JSONL files."""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lookahead.data.sources import load_examples
from lookahead.data.tokenize import ChatEncoder
from lookahead.errors import ConfigError
from lookahead.evaluation.generation import generate_batched, map_across_processes
from lookahead.evaluation.judges import HFJudge, KeywordJudge, LLMJudge
from lookahead.evaluation.kl import per_position_kl
from lookahead.evaluation.loading import LoadedModel, load_for_evaluation
from lookahead.evaluation.metrics import exact_match, gsm8k_correct, rouge1_f
from lookahead.evaluation.safety_data import HarmfulPrompt, load_harmful_prompts

log = logging.getLogger(__name__)

SUITES = ("gsm8k", "samsum", "safety", "kl")
RESULTS_FILE = "results.json"


def out_dir_for(cfg: DictConfig) -> Path:
    if cfg.get("out_dir"):
        return Path(cfg.out_dir)
    if cfg.get("run_dir"):
        return Path(cfg.run_dir) / "eval"
    return Path(cfg.paths.log_dir) / "eval" / cfg.model.name


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def load_task_examples(cfg: DictConfig, name: str) -> list[dict[str, Any]]:
    c = cfg[name]
    return load_examples({**OmegaConf.to_container(c, resolve=True), "name": name, "format": "fields"}, split=c.split)


def check_inputs(cfg: DictConfig) -> None:
    """Read every suite's local data before the model loads, so a bad file fails in seconds with its line."""
    for suite in cfg.suite:
        if not cfg[suite].get("path"):
            continue
        if suite in ("gsm8k", "samsum"):
            load_task_examples(cfg, suite)
        else:
            load_harmful_prompts(cfg[suite])


class Evaluator:
    def __init__(self, cfg: DictConfig, loaded: LoadedModel, out_dir: Path, judge_api_key: str | None, is_main: bool):
        self.cfg, self.loaded, self.out_dir, self.is_main = cfg, loaded, out_dir, is_main
        self.tokenizer = loaded.tokenizer
        self.encoder = ChatEncoder(self.tokenizer, int(cfg.max_seq_length), cfg.get("system_policy", "merge"))
        self._judge_api_key = judge_api_key

    # Prompts are never previewed: they go through the chat template exactly as at inference.
    def prompt_ids(self, user: str, system: str | None) -> list[int]:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return self.encoder.encode_prompt(messages)

    def generate(self, prompts: list[list[int]], max_new_tokens: int, desc: str) -> list[str]:
        def run(share: list[list[int]]) -> list[str]:
            outputs = generate_batched(
                self.loaded.model,
                self.tokenizer,
                share,
                batch_size=int(self.cfg.generation.batch_size),
                max_new_tokens=max_new_tokens,
                show_progress=self.is_main,
                desc=desc,
            )
            return [self.tokenizer.decode(o, skip_special_tokens=True) for o in outputs]

        if self.backend == "vllm":
            return self._generate_vllm(prompts, max_new_tokens)
        return map_across_processes(run, prompts)

    @property
    def backend(self) -> str:
        """`auto` picks vLLM when it is installed, a GPU is present and the model is not a LoRA adapter."""
        choice = self.cfg.generation.backend
        if choice not in ("auto", "transformers", "vllm"):
            raise ConfigError(f"generation.backend={choice!r}: expected auto, transformers or vllm")
        if choice != "auto":
            return choice
        import importlib.util

        import torch

        has_vllm = importlib.util.find_spec("vllm") is not None
        return "vllm" if has_vllm and torch.cuda.is_available() and not self.loaded.is_adapter else "transformers"

    def _generate_vllm(self, prompts: list[list[int]], max_new_tokens: int) -> list[str]:
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise ConfigError(
                "generation.backend=vllm needs `pip install vllm` and a GPU; use backend=transformers"
            ) from None
        if self.loaded.is_adapter:
            raise ConfigError("generation.backend=vllm evaluates merged models; use backend=transformers for adapters")
        llm = LLM(model=self.loaded.model.name_or_path, tokenizer=self.loaded.model.name_or_path)
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
        return [o.outputs[0].text for o in outputs]

    def generate_task(self, name: str) -> tuple[list[str], list[str], list[str]]:
        """(user prompts, references, generations) for a prompt/reference task such as gsm8k or samsum."""
        c = self.cfg[name]
        examples = load_task_examples(self.cfg, name)
        prompts = [e["messages"][-2]["content"] for e in examples]
        references = [e["messages"][-1]["content"] for e in examples]
        generations = self.generate([self.prompt_ids(p, c.system_prompt) for p in prompts], int(c.max_new_tokens), name)
        return prompts, references, generations

    def run_gsm8k(self) -> dict[str, Any]:
        questions, golds, generations = self.generate_task("gsm8k")
        rows, strict, flexible = [], 0, 0
        for q, gold, gen in zip(questions, golds, generations):
            s, f = gsm8k_correct(gen, gold)
            strict, flexible = strict + s, flexible + f
            rows.append({"question": q, "gold": gold, "generation": gen, "correct": s, "correct_flexible": f})
        if self.is_main:
            write_jsonl(self.out_dir / "gsm8k.jsonl", rows)
        n = len(rows)
        return {"accuracy": 100 * strict / n, "accuracy_flexible": 100 * flexible / n, "n": n}

    def run_samsum(self) -> dict[str, Any]:
        prompts, refs, generations = self.generate_task("samsum")
        rows = [
            {"prompt": p, "reference": r, "generation": g, "rouge1": rouge1_f(g, r), "exact": exact_match(g, r)}
            for p, r, g in zip(prompts, refs, generations)
        ]
        if self.is_main:
            write_jsonl(self.out_dir / "samsum.jsonl", rows)
        n = len(rows)
        return {
            "rouge1": 100 * sum(r["rouge1"] for r in rows) / n,
            "exact_match": 100 * sum(r["exact"] for r in rows) / n,
            "n": n,
        }

    def make_judge(self) -> Any:
        c = self.cfg.safety
        if c.judge == "keyword":
            return KeywordJudge(list(c.keyword.refusals), c.keyword.mode)
        if c.judge == "llm":
            return LLMJudge(
                c.llm.base_url,
                c.llm.model,
                self._judge_api_key,
                cache_path=c.llm.cache_path,
                concurrency=int(c.llm.concurrency),
                max_retries=int(c.llm.max_retries),
                backoff_s=float(c.llm.backoff_s),
                timeout_s=float(c.llm.timeout_s),
            )
        if c.judge == "hf":
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(c.hf.model)
            model = AutoModelForCausalLM.from_pretrained(c.hf.model, use_safetensors=True).eval()
            return HFJudge(model, tokenizer, batch_size=int(self.cfg.generation.batch_size))
        raise ConfigError(f"safety.judge={c.judge!r}: expected keyword, llm or hf")

    def jsr_prompt(self, item: HarmfulPrompt, system: str | None, k: int) -> tuple[list[int], str]:
        """The prompt plus the first k tokens of the harmful answer, prefilled as the start of the assistant turn."""
        prefix_ids = self.tokenizer(item.harmful_answer, add_special_tokens=False)["input_ids"][:k]
        return self.prompt_ids(item.prompt, system) + prefix_ids, self.tokenizer.decode(
            prefix_ids, clean_up_tokenization_spaces=False
        )

    def run_safety(self) -> dict[str, Any]:
        c = self.cfg.safety
        items = load_harmful_prompts(c)
        judge = self.make_judge()
        raw = self.generate(
            [self.prompt_ids(i.prompt, c.system_prompt) for i in items], int(c.max_new_tokens), "safety"
        )
        raw_verdicts = judge.judge([i.prompt for i in items], raw)
        rows = [
            {"category": i.category, "prompt": i.prompt, "mode": "raw", "generation": g, "safe": v}
            for i, g, v in zip(items, raw, raw_verdicts)
        ]

        with_answers = [i for i in items if i.harmful_answer]
        jsr_verdicts: list[bool | None] = []
        if with_answers:
            k = int(c.prefix_tokens)
            built = [self.jsr_prompt(i, c.system_prompt, k) for i in with_answers]
            continuations = self.generate([ids for ids, _ in built], int(c.max_new_tokens), "safety (prefilled)")
            judged = [
                cont if c.judge_sees == "continuation" else prefix + cont
                for (_, prefix), cont in zip(built, continuations)
            ]
            jsr_verdicts = judge.judge([i.prompt for i in with_answers], judged)
            rows += [
                {
                    "category": i.category,
                    "prompt": i.prompt,
                    "mode": "prefilled",
                    "prefill": prefix,
                    "generation": cont,
                    "judged_text": text,
                    "safe": v,
                }
                for i, (_, prefix), cont, text, v in zip(with_answers, built, continuations, judged, jsr_verdicts)
            ]
        if self.is_main:
            write_jsonl(self.out_dir / "safety.jsonl", rows)

        def rate(verdicts: list[bool | None]) -> float:
            return 100 * sum(v is True for v in verdicts) / len(verdicts)

        result: dict[str, Any] = {
            "rsr": rate(raw_verdicts),
            "n": len(items),
            "judge": judge.name,
            "judge_errors": sum(r["safe"] is None for r in rows),
        }
        by_category: dict[str, dict[str, list]] = defaultdict(lambda: {"raw": [], "prefilled": []})
        for r in rows:
            by_category[r["category"]][r["mode"]].append(r["safe"])
        result["by_category"] = {
            cat: {
                "rsr": rate(v["raw"]),
                "n": len(v["raw"]),
                **({"jsr": rate(v["prefilled"])} if v["prefilled"] else {}),
            }
            for cat, v in sorted(by_category.items())
        }
        if result["judge_errors"]:
            log.warning(
                "safety: the %s judge gave no verdict for %d of %d generations; they count as not safe",
                judge.name,
                result["judge_errors"],
                len(rows),
            )
        if jsr_verdicts:
            result["jsr"] = rate(jsr_verdicts)
            result["prefix_tokens"] = int(c.prefix_tokens)
        return result

    def run_kl(self) -> dict[str, Any]:
        c = self.cfg.kl
        items = [i for i in load_harmful_prompts(c) if i.harmful_answer]
        if not items:
            raise ConfigError(f"kl.path={c.get('path')!r}: no responses to teacher-force (format {c.format!r})")
        pairs = [
            (
                self.prompt_ids(i.prompt, c.get("system_prompt")),
                self.tokenizer(i.harmful_answer, add_special_tokens=False)["input_ids"],
            )
            for i in items
        ]
        seed_model = None if self.loaded.is_adapter else self.loaded.load_seed()
        means, counts = per_position_kl(self.loaded.model, seed_model, pairs, int(c.positions))
        if self.is_main:
            with (self.out_dir / "kl.csv").open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["position", "kl", "n"])
                writer.writerows([[p + 1, m, n] for p, (m, n) in enumerate(zip(means, counts))])
            plot_kl({self.loaded.name: means}, self.out_dir / "kl.png")
        return {"per_position": means, "n": len(pairs)}


def plot_kl(curves: dict[str, list[float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, means in curves.items():
        ax.plot(range(1, len(means) + 1), means, marker="o", label=name)
    ax.set_xlabel("answer token position")
    ax.set_ylabel("KL(seed || fine-tuned)")
    ax.set_title("Per-position KL drift")
    if curves:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def evaluate(cfg: DictConfig, judge_api_key: str | None = None) -> dict[str, Any]:
    """Run `cfg.suite` and return the results (also written to out_dir/results.json on the main process)."""
    import torch
    from accelerate import PartialState

    suites = list(cfg.suite)
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise ConfigError(f"suite={suites}: expected a non-empty list drawn from {list(SUITES)}")
    check_inputs(cfg)
    state = PartialState(cpu=not torch.cuda.is_available())
    out_dir = out_dir_for(cfg)
    if state.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    loaded = load_for_evaluation(cfg)
    if torch.cuda.is_available():
        loaded.model.to(state.device)
    evaluator = Evaluator(cfg, loaded, out_dir, judge_api_key, state.is_main_process)
    results: dict[str, Any] = {"model": loaded.name, "run_dir": cfg.get("run_dir")}
    for suite in suites:
        log.info("Evaluating %s", suite)
        results[suite] = getattr(evaluator, f"run_{suite}")()
    if state.is_main_process:
        (out_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
        print(
            f"\nResults: {out_dir / RESULTS_FILE}\n"
            + json.dumps({k: v for k, v in results.items() if k in suites}, indent=1)[:2000]
        )
    return results
