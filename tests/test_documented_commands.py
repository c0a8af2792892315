"""Every training command the README, the docs, the config headers and the launch scripts show composes and passes
validation at the process count it is shown with (nothing trains). `experiment=paper_gsm8k` on the documented 2 x 8
GPUs used to stop at start: 16 per device x 16 processes > the recipe's batch of 64."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from lookahead.training.config import batch_layout, validate
from tests.conftest import ROOT, compose

SOURCES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "lookahead" / "configs").rglob("*.yaml")),
    ROOT / "scripts" / "slurm" / "train.sbatch",
    ROOT / "scripts" / "launch_multinode.sh",
]
ANCHORS = ("train.py", "launch_multinode.sh", "train.sbatch")


def logical_lines(path: Path) -> list[str]:
    """Lines with shell continuations joined; YAML and shell comments read as the commands they show."""
    lines = []
    for line in path.read_text().splitlines():
        if path.suffix in (".yaml", ".sbatch", ".sh"):
            if not line.lstrip().startswith("#") or line.startswith("#!") or line.startswith("#SBATCH"):
                continue
            line = line.lstrip().lstrip("#")
        lines.append(line)
    return re.sub(r"\\\n\s*", " ", "\n".join(lines)).splitlines()


def command_spans(line: str) -> list[str]:
    """The parts of a line that are commands: backtick spans when the line has them, else the line."""
    spans = re.findall(r"`([^`]+)`", line) if "`" in line else [line]
    return [s.split("  #")[0] for s in spans if any(a in s for a in ANCHORS)]


def process_count(before: list[str], after: list[str]) -> int:
    env = dict(t.split("=", 1) for t in before if re.fullmatch(r"[A-Z_]+=\S+", t))
    if "--num_processes" in before:
        return int(before[before.index("--num_processes") + 1])
    if "--config_file" in before:
        config = yaml.safe_load((ROOT / before[before.index("--config_file") + 1]).read_text())
        return int(config["num_processes"])
    if any(t.endswith("launch_multinode.sh") for t in before):
        return int(env.get("NUM_MACHINES", 2)) * int(env.get("GPUS_PER_NODE", 8))
    if any(t.endswith("train.sbatch") for t in before):
        flags = dict(t.split("=", 1) for t in before if t.startswith("--") and "=" in t)
        return int(flags.get("--nodes", 2)) * int(flags.get("--gpus-per-node", 8))
    if "hydra/launcher=slurm" in after:
        per_node = [t.split("=", 1)[1] for t in after if t.startswith("hydra.launcher.gpus_per_node=")]
        return int(per_node[0]) if per_node else 8
    return 1


def documented_commands() -> list[tuple[str, list[str], int]]:
    found = []
    for path in SOURCES:
        for line in logical_lines(path):
            for span in command_spans(line):
                try:
                    tokens = shlex.split(span)
                except ValueError:
                    continue
                anchor = next((i for i, t in enumerate(tokens) if t.endswith(ANCHORS)), None)
                if anchor is None:
                    continue
                start = anchor + (1 if tokens[anchor].endswith("train.py") else 2)  # the scripts take a config first
                if any("<" in t for t in tokens[:start]):
                    continue  # a template (`--config_file configs/accelerate/<config>.yaml`), not a command
                overrides = []
                for token in tokens[start:]:
                    if token in ("&&", "|", ";", "#") or token.startswith("#"):
                        break
                    if token in ("...", "-m") or "<" in token or "=" not in token:
                        continue
                    key, value = token.split("=", 1)
                    if "," in value and not value.startswith(("[", "'", '"')) and not key.startswith("eval."):
                        value = value.split(",")[0]  # a multirun's first point
                    overrides.append(f"{key}={value}")
                if not overrides and tokens[anchor].endswith("train.py") and start == len(tokens):
                    overrides = []  # plain `python train.py`: the default job
                where = f"{path.relative_to(ROOT)}: {span.strip()[:200]}"
                found.append((where, overrides, process_count(tokens[:start], tokens[start:])))
    return found


COMMANDS = documented_commands()


def test_the_documented_commands_are_found():
    where = [w for w, _, _ in COMMANDS]
    assert len(COMMANDS) >= 20
    assert any("multinode_fsdp.yaml" in w and "paper_gsm8k" in w for w in where)
    assert any(n == 16 for _, _, n in COMMANDS) and any(n == 4 for _, _, n in COMMANDS)


@pytest.mark.parametrize(("where", "overrides", "processes"), COMMANDS, ids=[c[0][:80] for c in COMMANDS])
def test_a_documented_command_composes_at_its_process_count(where, overrides, processes):
    cfg = compose([o for o in overrides if not o.startswith(("hydra/", "hydra."))])
    validate(cfg)
    per_device, accumulation = batch_layout(cfg.trainer, processes)
    effective = cfg.trainer.get("effective_batch_size")
    if effective is not None:
        assert per_device * accumulation * processes == effective, where
