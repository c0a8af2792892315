"""`evaluate(cfg)`: run the configured suites on one model (and its seed) and write results.json, the per-suite JSONL
files and the model card's scorecard."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lookahead.errors import ConfigError
from lookahead.evaluation.evaluator import Evaluator, load_task_examples
from lookahead.evaluation.gate import check_gate, limits, raise_if_failed
from lookahead.evaluation.loading import LoadedModel, load_for_evaluation
from lookahead.evaluation.safety_data import load_harmful_prompts
from lookahead.evaluation.scorecard import write_safety_section
from lookahead.evaluation.suites import SUITES

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


def out_dir_for(cfg: DictConfig) -> Path:
    if cfg.get("out_dir"):
        return Path(cfg.out_dir)
    if cfg.get("run_dir"):
        return Path(cfg.run_dir) / "eval"
    return Path(cfg.paths.log_dir) / "eval" / cfg.model.name


def check_inputs(cfg: DictConfig) -> None:
    """Read every suite's local data, and the gate's limits, before the model loads: a bad file or value fails in
    seconds with its line."""
    limits(cfg.get("gate"))
    if cfg.get("seed_model") and cfg.get("run_dir"):
        raise ConfigError("seed_model= names the seed of a model evaluated by model.path; a run_dir knows its own seed")
    for suite in cfg.suite:
        if not cfg[suite].get("path"):
            continue
        if suite in ("gsm8k", "samsum"):
            load_task_examples(cfg, suite)
        else:
            load_harmful_prompts(cfg[suite])


def run_suites(evaluator: Evaluator, suites: list[str], on_result: Any = None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for suite in suites:
        log.info("Evaluating %s (%s)", suite, evaluator.loaded.name)
        results[suite] = SUITES[suite](evaluator)
        if on_result is not None:
            on_result(results)
    return results


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def weights_stamp(model_path: str) -> list[list[Any]] | None:
    """Name, size and modification time of a local model folder's weight files: a model rebuilt at the same path (a
    seed made again) gets a new key without hashing gigabytes. None for a Hub id."""
    folder = Path(model_path)
    if not folder.is_dir():
        return None
    weights = (p for p in sorted(folder.iterdir()) if p.suffix in (".safetensors", ".bin", ".gguf", ".pt"))
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in weights]


def without_items(value: Any) -> Any:
    """`value` without its per-item outcome lists (`safe_items`, `correct_items`): results.json keeps them for the
    intervals; printed, hundreds of 0/1 lines would push the rates out of the summary."""
    if isinstance(value, dict):
        return {k: without_items(v) for k, v in value.items() if not k.endswith("_items")}
    return value


def seed_cache_key(cfg: DictConfig, loaded: LoadedModel, suite: str) -> str:
    """What decides the seed model's numbers on one suite: the model, the tokenizer's template, the suite's settings."""
    c = OmegaConf.to_container(cfg, resolve=True)
    model = OmegaConf.to_container(loaded.model_cfg, resolve=True)
    model.pop("gradient_checkpointing", None)  # a training memory switch: the seed's answers are the same without
    settings = {
        "model_path": loaded.model_path,
        "weights": weights_stamp(loaded.model_path),
        "model": model,
        # A tiny random model's weights are its seed; a pretrained seed is the same model whatever the run's seed,
        # so the runs of a sweep over training seeds share its numbers.
        "weights_seed": loaded.seed if loaded.model_cfg.get("tiny") is not None else None,
        "chat_template": loaded.tokenizer.chat_template,
        "vocab": len(loaded.tokenizer),
        "suite": [suite, c[suite]],
        # A data file rewritten in place (another n, another split) must not reuse the seed's old numbers.
        "files": {k: file_digest(v) for k, v in sorted(c[suite].items()) if isinstance(v, str) and Path(v).is_file()},
        "shared": {k: c.get(k) for k in ("max_seq_length", "system_policy")},
        "generation": c["generation"],  # the backend, and the batch that pads the prompts together
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def seed_cache_path(cfg: DictConfig, loaded: LoadedModel, suite: str) -> Path:
    return Path(cfg.seed_cache_dir) / f"{suite}-{seed_cache_key(cfg, loaded, suite)}.json"


def evaluate_seed(cfg: DictConfig, loaded: LoadedModel, out_dir: Path, judge_api_key: str | None, is_main: bool):
    """The seed model's results on the same suites (KL aside: it is 0 against itself). Each suite's result is cached
    in `seed_cache_dir`, so the runs of a sweep evaluate their seed once."""
    cache_dir = Path(cfg.seed_cache_dir)
    caches = {s: seed_cache_path(cfg, loaded, s) for s in cfg.suite if s != "kl"}
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
            seed = dataclasses.replace(loaded, adapter_enabled=False, name=f"{loaded.model_cfg.name} (seed)")
            with loaded.model.disable_adapter():
                fresh = run_suites(Evaluator(cfg, seed, out_dir, judge_api_key, is_main), todo)
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


def cache_as_seed(cfg: DictConfig, loaded: LoadedModel, results: dict[str, Any]) -> list[Path]:
    """A model evaluated as is is the seed of the runs fine-tuned from it: each suite's result goes into
    `seed_cache_dir` under the key those runs' seed comparison looks up (`evaluate_seed`), so they do not evaluate it
    again. `make demo` evaluates its seed's safety once, in `make seed`."""
    Path(cfg.seed_cache_dir).mkdir(parents=True, exist_ok=True)
    written = []
    for suite in (s for s in results if s in SUITES and s != "kl"):
        path = seed_cache_path(cfg, loaded, suite)
        path.write_text(json.dumps(results[suite], indent=2) + "\n")
        written.append(path)
    return written


def evaluate(cfg: DictConfig, judge_api_key: str | None = None) -> dict[str, Any]:
    """Run `cfg.suite` and return the results (also written to out_dir/results.json on the main process).

    For a training run (`run_dir`), the seed model is evaluated on the same suites too (`compare_seed`), and the
    scorecard goes into the run's model card (`model_card`).
    """
    import torch

    from lookahead.training.distributed import join_process_group

    suites = list(cfg.suite)
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise ConfigError(f"suite={suites}: expected a non-empty list drawn from {list(SUITES)}")
    check_inputs(cfg)
    state = join_process_group()
    out_dir = out_dir_for(cfg)
    if state.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    loaded = load_for_evaluation(cfg)
    evaluator = Evaluator(cfg, loaded, out_dir, judge_api_key, state.is_main_process)
    if evaluator.backend == "vllm" and state.num_processes > 1:
        raise ConfigError(
            "generation.backend=vllm runs in one process (vLLM places the model on the GPUs itself): start evaluate.py "
            "without accelerate launch, or use generation.backend=transformers"
        )
    # vLLM holds its own copy of the weights: the HF model goes to the GPU only where it generates or scores (KL).
    if torch.cuda.is_available() and (evaluator.backend != "vllm" or "kl" in suites):
        loaded.model.to(state.device)
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
    elif run_dir is None and cfg.get("seed_model"):  # any model (a TRL output, a Hub id) against a named seed
        seed_view = dataclasses.replace(loaded, model_path=str(cfg.seed_model), is_adapter=False)
        results["seed"] = evaluate_seed(cfg, seed_view, out_dir / "seed", judge_api_key, state.is_main_process)
    elif run_dir is None and cfg.get("seed_cache_dir") and state.is_main_process:
        try:
            log.info("Cached as a seed model's results: %s", ", ".join(map(str, cache_as_seed(cfg, loaded, results))))
        except OSError as e:  # a cache only saves time: the evaluation itself is done and written
            log.warning(
                "seed_cache_dir=%s: not written (%s); runs tuned from this model will evaluate it",
                cfg.seed_cache_dir,
                e,
            )
    verdict = check_gate(results, limits(cfg.get("gate")))
    if verdict is not None:
        results["gate"] = verdict.as_dict()
        for line in verdict.lines:
            log.info(line)
    save({})
    if state.is_main_process:
        if run_dir is not None and cfg.get("model_card", True):
            card = write_safety_section(run_dir / "final" / "README.md", results, loaded.name)
            log.info("Model card: %s", card)
        print(
            f"\nResults: {out_dir / RESULTS_FILE}\n"
            + json.dumps({k: without_items(v) for k, v in results.items() if k in suites}, indent=1)[:2000]
        )
    raise_if_failed(verdict)  # after results.json and the card are written
    return results
