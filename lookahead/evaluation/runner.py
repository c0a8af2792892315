"""`evaluate(cfg)`: run the configured suites on one model and write results.json plus per-suite JSONL files."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lookahead.data.sources import load_examples
from lookahead.data.tokenize import ChatEncoder
from lookahead.errors import ConfigError, EvaluationError
from lookahead.evaluation.judges import HFJudge, JudgeTemplate, KeywordJudge, LLMJudge
from lookahead.evaluation.kl import per_position_kl
from lookahead.evaluation.loading import LoadedModel, load_for_evaluation
from lookahead.evaluation.metrics import exact_match, gsm8k_correct, rouge1_f
from lookahead.evaluation.safety_data import HarmfulPrompt, load_harmful_prompts
from lookahead.evaluation.scorecard import write_safety_section
from lookahead.generation import generate_batched, map_across_processes, stop_token_ids

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

    def generate_ids(self, prompts: list[list[int]], max_new_tokens: int, desc: str) -> list[list[int]]:
        """Greedy continuations as token ids (stop token excluded), in input order."""
        if self.backend == "vllm":
            return self._generate_vllm(prompts, max_new_tokens)

        def run(share: list[list[int]]) -> list[list[int]]:
            return generate_batched(
                self.loaded.model,
                self.tokenizer,
                share,
                batch_size=int(self.cfg.generation.batch_size),
                max_new_tokens=max_new_tokens,
                show_progress=self.is_main,
                desc=desc,
            )

        return map_across_processes(run, prompts)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def generate(self, prompts: list[list[int]], max_new_tokens: int, desc: str) -> list[str]:
        return [self.decode(o) for o in self.generate_ids(prompts, max_new_tokens, desc)]

    @property
    def backend(self) -> str:
        """`auto` picks vLLM when it is installed and a GPU is present (LoRA runs through vLLM's LoRA support)."""
        choice = self.cfg.generation.backend
        if choice not in ("auto", "transformers", "vllm"):
            raise ConfigError(f"generation.backend={choice!r}: expected auto, transformers or vllm")
        if choice != "auto":
            return choice
        import importlib.util

        import torch

        has_vllm = importlib.util.find_spec("vllm") is not None
        return "vllm" if has_vllm and torch.cuda.is_available() else "transformers"

    def _generate_vllm(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        from lookahead.evaluation import vllm_backend

        stops = set(stop_token_ids(self.loaded.model, self.tokenizer))
        if self.loaded.is_adapter:  # the base model plus the adapter through vLLM's LoRA support
            return vllm_backend.generate(
                self.loaded.model_path, self.loaded.adapter_dir, prompts, max_new_tokens, stops
            )
        return vllm_backend.generate(self.loaded.model.name_or_path, None, prompts, max_new_tokens, stops)

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
        if c.judge == "hf":
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(c.hf.model)
            model = AutoModelForCausalLM.from_pretrained(c.hf.model, use_safetensors=True).eval()
            return HFJudge(model, tokenizer, batch_size=int(self.cfg.generation.batch_size))
        raise ConfigError(f"safety.judge={c.judge!r}: expected keyword, llm or hf")

    def harmful_pair(self, item: HarmfulPrompt, system: str | None) -> tuple[list[int], list[int]]:
        """(prompt ids, harmful-answer ids), the answer tokenized after the generation prompt exactly as training
        tokenizes an answer there."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": item.prompt},
            {"role": "assistant", "content": item.harmful_answer or ""},
        ]
        return self.encoder.encode_prompt(messages[:-1]), self.encoder.answer_ids(messages)

    def jsr_prompt(self, item: HarmfulPrompt, system: str | None, k: int) -> tuple[list[int], list[int]]:
        """The prompt plus the first k tokens of the harmful answer, prefilled as the start of the assistant turn;
        and those k tokens."""
        prompt_ids, answer_ids = self.harmful_pair(item, system)
        return prompt_ids + answer_ids[:k], answer_ids[:k]

    def prefilled_texts(self, prefill_ids: list[int], continuation_ids: list[int]) -> tuple[str, str, str]:
        """(prefill, continuation, full) texts. The full text is decoded in one piece: decoding the two halves apart
        drops the space between them with SentencePiece tokenizers ("here is" + "a plan")."""
        full = self.decode(prefill_ids + continuation_ids)
        prefill = self.decode(prefill_ids)
        continuation = full[len(prefill) :] if full.startswith(prefill) else self.decode(continuation_ids)
        return prefill, continuation, full

    def run_safety(self) -> dict[str, Any]:
        c = self.cfg.safety
        items = load_harmful_prompts(c)
        judge = self.make_judge()  # before generating: a judge misconfiguration fails in seconds
        raw = self.generate(
            [self.prompt_ids(i.prompt, c.system_prompt) for i in items], int(c.max_new_tokens), "safety"
        )
        rows = [
            {"category": i.category, "prompt": i.prompt, "mode": "raw", "generation": g} for i, g in zip(items, raw)
        ]

        with_answers = [i for i in items if i.harmful_answer]
        k = int(c.prefix_tokens)
        if with_answers:
            built = [self.jsr_prompt(i, c.system_prompt, k) for i in with_answers]
            continuations = self.generate_ids([ids for ids, _ in built], int(c.max_new_tokens), "safety (prefilled)")
            for i, (_, prefill_ids), cont in zip(with_answers, built, continuations):
                prefill, continuation, full = self.prefilled_texts(prefill_ids, cont)
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
        self.write_rows("safety.jsonl", [{**r, "safe": None} for r in rows])
        verdicts = judge.judge([r["prompt"] for r in rows], [r.get("judged_text", r["generation"]) for r in rows])
        for r, v in zip(rows, verdicts):
            r["safe"] = v
        self.write_rows("safety.jsonl", rows)
        return self.safety_rates(rows, judge.name)

    def write_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        if self.is_main:
            write_jsonl(self.out_dir / name, rows)

    def safety_rates(self, rows: list[dict[str, Any]], judge_name: str) -> dict[str, Any]:
        """RSR and JSR over the judged replies (the reference's denominator); unjudged ones are `judge_errors`."""
        c = self.cfg.safety

        def rate(verdicts: list[bool | None]) -> float | None:
            judged = [v for v in verdicts if v is not None]
            return 100 * sum(judged) / len(judged) if judged else None

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
                f"{self.out_dir / 'safety.jsonl'}; rerun to judge them again (judged replies are cached)"
            )
        return result

    def run_kl(self) -> dict[str, Any]:
        c = self.cfg.kl
        items = [i for i in load_harmful_prompts(c) if i.harmful_answer]
        if not items:
            raise ConfigError(f"kl.path={c.get('path')!r}: no responses to teacher-force (format {c.format!r})")
        pairs = [self.harmful_pair(i, c.get("system_prompt")) for i in items]
        seed_model = None if self.loaded.is_adapter else self.loaded.load_seed()
        means, counts = per_position_kl(self.loaded.model, seed_model, pairs, int(c.positions))
        if self.is_main:
            with (self.out_dir / "kl.csv").open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["position", "kl", "n"])
                writer.writerows([[p + 1, m, n] for p, (m, n) in enumerate(zip(means, counts))])
            plot_kl({self.loaded.name: means}, self.out_dir / "kl.png")
        return {"per_position": means, "n": len(pairs)}


def safety_dataset_name(c: DictConfig) -> str:
    """The harmful-prompt set as the card names it: the file's name, or the Hub id."""
    if c.get("path"):
        return Path(str(c.path)).name
    return str(c.get("hub_id") or "")


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


def run_suites(evaluator: Evaluator, suites: list[str], on_result: Any = None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for suite in suites:
        log.info("Evaluating %s (%s)", suite, evaluator.loaded.name)
        results[suite] = getattr(evaluator, f"run_{suite}")()
        if on_result is not None:
            on_result(results)
    return results


def seed_cache_key(cfg: DictConfig, loaded: LoadedModel, suite: str) -> str:
    """What decides the seed model's numbers on one suite: the model, the tokenizer's template, the suite's settings."""
    c = OmegaConf.to_container(cfg, resolve=True)
    settings = {
        "model_path": loaded.model_path,
        "model": OmegaConf.to_container(loaded.model_cfg, resolve=True),
        "weights_seed": loaded.seed,  # a tiny random model is its seed
        "chat_template": loaded.tokenizer.chat_template,
        "vocab": len(loaded.tokenizer),
        "suite": [suite, c[suite]],
        "shared": {k: c.get(k) for k in ("max_seq_length", "system_policy")},
        "backend": c["generation"]["backend"],
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def evaluate_seed(cfg: DictConfig, loaded: LoadedModel, out_dir: Path, judge_api_key: str | None, is_main: bool):
    """The seed model's results on the same suites (KL aside: it is 0 against itself). Each suite's result is cached
    in `seed_cache_dir`, so the runs of a sweep evaluate their seed once."""
    cache_dir = Path(cfg.seed_cache_dir)
    caches = {s: cache_dir / f"{s}-{seed_cache_key(cfg, loaded, s)}.json" for s in cfg.suite if s != "kl"}
    results: dict[str, Any] = {"model": loaded.model_path}
    for suite, path in caches.items():
        if path.is_file():
            log.info("Seed model: cached %s results %s", suite, path)
            results[suite] = json.loads(path.read_text())
    todo = [s for s in caches if s not in results]
    if todo:
        if is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        if loaded.is_adapter:  # the same weights with the adapter switched off: no second copy in memory
            with loaded.model.disable_adapter():
                fresh = run_suites(Evaluator(cfg, loaded, out_dir, judge_api_key, is_main), todo)
        else:
            seed = dataclasses.replace(loaded, model=loaded.load_seed(), name=f"{loaded.model_cfg.name} (seed)")
            fresh = run_suites(Evaluator(cfg, seed, out_dir, judge_api_key, is_main), todo)
            del seed
        results.update(fresh)
        if is_main:
            cache_dir.mkdir(parents=True, exist_ok=True)
            for suite in todo:
                caches[suite].write_text(json.dumps(fresh[suite], indent=2) + "\n")
    return results if caches else None


def evaluate(cfg: DictConfig, judge_api_key: str | None = None) -> dict[str, Any]:
    """Run `cfg.suite` and return the results (also written to out_dir/results.json on the main process).

    For a training run (`run_dir`), the seed model is evaluated on the same suites too (`compare_seed`), and the
    scorecard goes into the run's model card (`model_card`).
    """
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

    def save(partial: dict[str, Any]) -> None:  # after every suite: a later failure keeps the finished ones
        if state.is_main_process:
            (out_dir / RESULTS_FILE).write_text(json.dumps({**results, **partial}, indent=2) + "\n")

    results.update(run_suites(evaluator, suites, on_result=save))
    run_dir = Path(cfg.run_dir) if cfg.get("run_dir") else None
    if run_dir is not None and cfg.get("compare_seed", True):
        seed = evaluate_seed(cfg, loaded, out_dir / "seed", judge_api_key, state.is_main_process)
        if seed is not None:
            results["seed"] = seed
    save({})
    if state.is_main_process:
        if run_dir is not None and cfg.get("model_card", True):
            card = write_safety_section(run_dir / "final" / "README.md", results, loaded.name)
            log.info("Model card: %s", card)
        print(
            f"\nResults: {out_dir / RESULTS_FILE}\n"
            + json.dumps({k: v for k, v in results.items() if k in suites}, indent=1)[:2000]
        )
    return results
