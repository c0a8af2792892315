"""Evaluation records: what a testbed run's evaluation measured, small enough to commit with the project.

A sweep of 90 runs takes about 20 hours on 2 cores, more than one working session, and `outputs/` is not kept
everywhere a session runs. Each finished run therefore also writes a record, `<records>/<run>/`:

- `record.json`: the seed's weight digest, the run's resolved training config, and its `eval/results.json`
  (rates, per-item outcomes of both judges, the seed model's numbers);
- `safety.jsonl.gz`: the generations the safety suite judged, so that `scripts/demo.py --judge llm` can judge them
  again without generating.

A run whose `outputs/` folder is gone but whose record matches the seed now in place and the run's config is restored
from the record instead of trained again. A record of another seed or another config stops the run with one line:
its numbers would be reported as this config's.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lookahead.errors import ConfigError

log = logging.getLogger(__name__)

RECORD = "record.json"
GENERATIONS = "safety.jsonl.gz"
RESTORED = "RESTORED"  # in a run dir restored from a record: the record it came from


def record_dir(records: str | Path, run_dir: Path) -> Path:
    return Path(records) / run_dir.name


def write_record(records: str | Path, run_dir: Path, digest: str) -> Path:
    """Record `run_dir`'s evaluation: its `config.yaml` and `eval/results.json` (a restored run keeps its record)."""
    folder = record_dir(records, run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if (run_dir / RESTORED).is_file():  # nothing new: the record it came from stands
        return folder
    record = {
        "run": run_dir.name,
        "seed_digest": digest,
        "config": (run_dir / "config.yaml").read_text(),
        "results": json.loads((run_dir / "eval" / "results.json").read_text()),
    }
    (folder / RECORD).write_text(json.dumps(record, sort_keys=True) + "\n")  # one line: the item lists are long
    generations = run_dir / "eval" / "safety.jsonl"
    if generations.is_file():  # mtime 0: the same generations give the same bytes
        (folder / GENERATIONS).write_bytes(gzip.compress(generations.read_bytes(), mtime=0))
    log.info("%s: recorded in %s", run_dir.name, folder)
    return folder


def restore_record(records: str | Path, run_dir: Path, digest: str, cfg: Any | None = None) -> bool:
    """Restore `run_dir`'s evaluation from its record, if there is one: `eval/results.json`, `eval/safety.jsonl` and
    the seed record. False when there is none. A record of another seed, or (`cfg` given) of another training config,
    is an error."""
    from lookahead.testbed.demo import write_seed_record
    from lookahead.training.checkpoints import config_changes, shown_changes

    path = record_dir(records, run_dir) / RECORD
    if not path.is_file():
        return False
    record = json.loads(path.read_text())
    if record["seed_digest"] != digest:
        raise ConfigError(
            f"{path} was measured on seed weights {record['seed_digest']}, not the seed now in place ({digest}): "
            "rebuild the recorded seed (`scripts/make_safety_seed.py --from-archive results/testbed/seed`, as `make "
            "sweep` does) or pass --records <new folder> for this seed"
        )
    if cfg is not None:
        changes = config_changes(record["config"], OmegaConf.to_yaml(cfg, resolve=True), shared_only=True)
        if changes:
            raise ConfigError(
                f"{path} records a run trained with another config ({shown_changes(changes)}); pass --records "
                "<new folder> for these settings, or remove that record to run it again"
            )
    eval_dir = run_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / "results.json").write_text(json.dumps(record["results"], indent=2) + "\n")
    generations = path.parent / GENERATIONS
    if generations.is_file():
        (eval_dir / "safety.jsonl").write_bytes(gzip.decompress(generations.read_bytes()))
    write_seed_record(run_dir, digest)
    (run_dir / RESTORED).write_text(f"{path}\n")
    log.info("%s: restored from %s (not trained again)", run_dir.name, path)
    return True
