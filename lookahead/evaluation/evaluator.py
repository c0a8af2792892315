"""The evaluator every suite runs on: one loaded model, its chat template, batched greedy generation (transformers or
vLLM, sharded across processes), and the per-suite JSONL files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lookahead.data.sources import load_examples
from lookahead.data.tokenize import ChatEncoder
from lookahead.errors import ConfigError
from lookahead.evaluation.loading import LoadedModel
from lookahead.evaluation.safety_data import HarmfulPrompt
from lookahead.generation import generate_batched, map_across_processes, stop_token_ids


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def load_task_examples(cfg: DictConfig, name: str) -> list[dict[str, Any]]:
    c = cfg[name]
    return load_examples({**OmegaConf.to_container(c, resolve=True), "name": name, "format": "fields"}, split=c.split)


class Evaluator:
    """What every suite uses: the loaded model, prompt building (never previewed), batched generation and the
    per-suite JSONL files. The suites themselves live in `lookahead/evaluation/suites/`, one module each."""

    def __init__(self, cfg: DictConfig, loaded: LoadedModel, out_dir: Path, judge_api_key: str | None, is_main: bool):
        self.cfg, self.loaded, self.out_dir, self.is_main = cfg, loaded, out_dir, is_main
        self.tokenizer = loaded.tokenizer
        self.encoder = ChatEncoder(self.tokenizer, int(cfg.max_seq_length), cfg.get("system_policy", "merge"))
        self.judge_api_key = judge_api_key  # read by the llm judge, never written anywhere

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
        loaded = self.loaded
        stops = set(stop_token_ids(loaded.model, self.tokenizer))
        if loaded.is_adapter:  # the base model plus the adapter through vLLM's LoRA support; the seed without it
            return loaded.engines.generate(
                loaded.model_path, loaded.adapter_dir, prompts, max_new_tokens, stops, loaded.adapter_enabled
            )
        return loaded.engines.generate(loaded.model.name_or_path, None, prompts, max_new_tokens, stops)

    def generate_task(self, name: str) -> tuple[list[str], list[str], list[str]]:
        """(user prompts, references, generations) for a prompt/reference task such as gsm8k or samsum."""
        c = self.cfg[name]
        examples = load_task_examples(self.cfg, name)
        prompts = [e["messages"][-2]["content"] for e in examples]
        references = [e["messages"][-1]["content"] for e in examples]
        generations = self.generate([self.prompt_ids(p, c.system_prompt) for p in prompts], int(c.max_new_tokens), name)
        return prompts, references, generations

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

    def write_rows(self, name: str, rows: list[dict[str, Any]]) -> None:
        if self.is_main:
            write_jsonl(self.out_dir / name, rows)
