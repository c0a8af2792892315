"""LookAhead previews as a `datasets` transform, for pipelines that keep their own trainer (TRL, LLaMA-Factory,
axolotl): `preview_dataset(dataset, method="virtual_prefix", tokenizer=tok)` returns TRL's conversational
prompt-completion format, previewed exactly as `train.py` previews it.

    >>> from lookahead import preview_dataset                                     # doctest: +SKIP
    >>> ds = Dataset.from_list([{"prompt": "What is 2+3?", "completion": "2+3 = 5. #### 5"}])
    >>> preview_dataset(ds, "virtual_prefix")[0]                                  # doctest: +SKIP
    {'prompt': [{'role': 'user', 'content': "What is 2+3?" + <connector> + "Let's solve this problem. "}],
     'completion': [{'role': 'assistant', 'content': "Let's solve this problem. 2+3 = 5. #### 5"}]}

The preview goes through the same preview classes as the CLI (`configs/method/<method>.yaml` composed with the
options as `method.<key>` overrides), so the connector, P, m and the previewed share are the CLI's. Given the tokenizer,
each example is also encoded as the CLI encodes it, and the examples the CLI would skip (a prompt longer than
`max_seq_length`, no answer token) are dropped and counted.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from lookahead.constants import ASSISTANT, SYSTEM, USER
from lookahead.errors import ConfigError
from lookahead.preview.base import preview_messages

log = logging.getLogger(__name__)

SKIP_COLUMN = "__lookahead_skip"
INPUT_SHAPES = "a `messages` column, TRL's `prompt`/`completion`, or the fields named by prompt_field/response_field"


def build_strategy(method: str, options: dict[str, Any]) -> Any:
    """The CLI's preview object for `method=<method>` with `method.<key>=<value>` for each option."""
    from lookahead.commands.compose import compose_train_config
    from lookahead.components import build_preview

    overrides = [f"method={method}", *(f"method.{k}={json.dumps(v)}" for k, v in options.items())]
    return build_preview(compose_train_config(overrides).method)


def row_messages(row: dict[str, Any], shape: str, fields: tuple[str, str], system_prompt: str | None) -> list[dict]:
    """One row as a conversation ending in the trained assistant turn."""
    if shape == "messages":
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    elif shape == "prompt_completion":
        prompt, completion = row["prompt"], row["completion"]
        prompt = [{"role": USER, "content": prompt}] if isinstance(prompt, str) else list(prompt)
        completion = [{"role": ASSISTANT, "content": completion}] if isinstance(completion, str) else list(completion)
        messages = [{"role": m["role"], "content": m["content"]} for m in [*prompt, *completion]]
    else:
        user, answer = (row[f] for f in fields)
        messages = [{"role": USER, "content": user}, {"role": ASSISTANT, "content": answer}]
    if system_prompt and messages[0]["role"] != SYSTEM:
        messages.insert(0, {"role": SYSTEM, "content": system_prompt})
    return messages


def input_shape(columns: list[str], prompt_field: str | None, response_field: str | None) -> str:
    if prompt_field or response_field:
        missing = [f for f in (prompt_field, response_field) if f not in columns]
        if missing or not (prompt_field and response_field):
            raise ConfigError(
                f"prompt_field={prompt_field!r}, response_field={response_field!r}: give both, as columns of the "
                f"dataset (it has {columns})"
            )
        return "fields"
    if "messages" in columns:
        return "messages"
    if "prompt" in columns and "completion" in columns:
        return "prompt_completion"
    raise ConfigError(f"preview_dataset: the dataset's columns {columns} are not {INPUT_SHAPES}")


def preview_dataset(
    dataset: Any,
    method: str = "virtual_prefix",
    tokenizer: Any = None,
    *,
    prompt_field: str | None = None,
    response_field: str | None = None,
    system_prompt: str | None = None,
    max_seq_length: int = 512,
    system_policy: str = "merge",
    num_proc: int | None = None,
    load_from_cache_file: bool | None = None,
    **options: Any,
) -> Any:
    """A `datasets.Dataset` (or `DatasetDict`) previewed for training, in TRL's conversational prompt-completion format.

    Args:
        dataset: rows with a `messages` list (the last assistant turn is trained, earlier turns are context), TRL's
            `prompt` / `completion` (strings or message lists), or the two text columns named by `prompt_field` and
            `response_field`.
        method: a preview of `configs/method/`: `vanilla`, `real_prefix`, `virtual_prefix`.
        tokenizer: the model's tokenizer. `real_prefix` needs it (it previews the first m answer *tokens*). Given it,
            every example is encoded as `train.py` encodes it, and those it would skip are dropped and counted.
        system_prompt: prepended as a system turn where a row has none (`dataset.system_prompt` of the CLI).
        max_seq_length, system_policy: the CLI's `trainer.max_seq_length` and `dataset.system_policy`: the skips,
            and, for a template with no system role, where the system prompt goes (merged into the first user turn).
        num_proc, load_from_cache_file: passed to `Dataset.map`.
        **options: the preview's settings, as `method.<key>` of the CLI: `m`, `prefix`, `connector`, `fraction`.

    Returns:
        The dataset with two columns: `prompt` (the messages up to and including the previewed user turn) and
        `completion` (the trained assistant turn). Skips are logged and written, as JSON, to `info.description`.
    """
    from datasets import DatasetDict

    if isinstance(dataset, DatasetDict):
        return DatasetDict(
            {
                split: preview_dataset(
                    part,
                    method,
                    tokenizer,
                    prompt_field=prompt_field,
                    response_field=response_field,
                    system_prompt=system_prompt,
                    max_seq_length=max_seq_length,
                    system_policy=system_policy,
                    num_proc=num_proc,
                    load_from_cache_file=load_from_cache_file,
                    **options,
                )  # fmt: skip
                for split, part in dataset.items()
            }
        )
    strategy = build_strategy(method, options)
    if getattr(strategy, "train_prefix", True) is False:
        raise ConfigError(
            "method.train_prefix=false puts P in the answer without loss, which a prompt-completion dataset cannot "
            "say (every completion token is trained); use the CLI, or train_prefix=true"
        )
    if tokenizer is None and method == "real_prefix":
        raise ConfigError(
            "method=real_prefix previews the first m answer tokens: pass tokenizer=<the model's tokenizer>"
        )
    shape = input_shape(list(dataset.column_names), prompt_field, response_field)
    fields = (prompt_field or "", response_field or "")
    encoder = None
    if tokenizer is not None:
        from lookahead.data.tokenize import ChatEncoder

        encoder = ChatEncoder(tokenizer, max_seq_length, system_policy)

    def preview_batch(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"prompt": [], "completion": [], SKIP_COLUMN: []}
        for i in range(len(next(iter(batch.values())))):
            messages = row_messages({k: v[i] for k, v in batch.items()}, shape, fields, system_prompt)
            previewed, _ = preview_messages(messages, strategy, tokenizer)
            skip = ""
            if encoder is not None:
                from lookahead.data.tokenize import Skip

                # A template with no system role (Mistral): the system prompt goes where train.py puts it
                # (`system_policy`), so another trainer renders the conversation the CLI trains.
                previewed = encoder.fit_system(previewed)
                encoded = encoder.encode(previewed)
                skip = encoded.value if isinstance(encoded, Skip) else ""
            out["prompt"].append(previewed[:-1])
            out["completion"].append(previewed[-1:])
            out[SKIP_COLUMN].append(skip)
        return out

    mapped = dataset.map(
        preview_batch,
        batched=True,
        remove_columns=list(dataset.column_names),
        num_proc=num_proc,
        load_from_cache_file=load_from_cache_file,
        desc=f"LookAhead preview ({method})",
    )
    skipped = Counter(r for r in mapped[SKIP_COLUMN] if r)
    if skipped:
        mapped = mapped.filter(lambda r: not r[SKIP_COLUMN], num_proc=num_proc, desc="Dropping what train.py skips")
        log.warning(
            "preview_dataset: skipped %d of %d examples (%s)", sum(skipped.values()), len(dataset), dict(skipped)
        )
    mapped = mapped.remove_columns(SKIP_COLUMN)
    mapped.info.description = json.dumps(
        {"lookahead": {"method": method, "options": options, "examples": len(dataset), "skipped": dict(skipped)}}
    )
    return mapped
