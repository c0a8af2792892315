"""The testbed seed, portable: the same seed weights on every machine, so a sweep can span machines and sessions.

`make seed` trains the seed on whatever CPU it runs on, and float kernels differ between CPUs (AVX2 against AVX-512):
the same code and command built seed weights `c8efad20a397667e` on one VM and `d842cae0e2d4ad24` on another. A sweep
keyed on the seed's weight digest (as it must be: runs of two seeds are two experiments) then cannot outlive the
machine it started on. What the seed needs to be rebuilt exactly is small, and is committed (`results/testbed/seed/`):

- the trained LoRA adapter and the run's config and summary (`run/`), about 20 MB;
- the safety-mix and recovery pools (`refusals.jsonl`, `recovery.jsonl`): the base model's own generations went into
  them, so they are machine-dependent too;
- `seed.json`: the merged weights' digest, checked after every rebuild, and `seed_report.json`'s build fields.

The merge itself is made exact (`exact_merge`): W + (alpha / r) * sum_k B[:, k] A[k, :], accumulated in float64 one
rank at a time in a fixed order (elementwise operations only, each correctly rounded), then rounded to float32 once,
so no matmul kernel's summation order reaches the weights. The base is SmolLM2-135M-Instruct as the packaged GGUF
de-quantizes it (elementwise too). `make_safety_seed.py --from-archive` rebuilds; a digest that differs stops it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lookahead.errors import ConfigError

log = logging.getLogger(__name__)

ARCHIVE_FILE = "seed.json"
RUN_FILES = ("config.yaml", "summary.json")
FINAL_FILES = ("adapter_model.safetensors", "adapter_config.json", "lookahead_config.yaml", "chat_template.jinja",
               "tokenizer_config.json", "tokenizer.json", "README.md")  # fmt: skip
POOLS = ("refusals.jsonl", "recovery.jsonl", "seed_requests.csv", "validation.csv", "test.csv")


def exact_merge(model_dir: Path, base_dir: str | Path, adapter_dir: Path) -> int:
    """Rewrite every LoRA-adapted weight in `model_dir/model.safetensors` as the base weight plus the adapter's
    update, computed the same way on every CPU; returns how many weights it rewrote."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("use_rslora") or config.get("use_dora") or config.get("bias", "none") != "none":
        raise ConfigError(f"{adapter_dir}: exact_merge handles plain LoRA only (no rsLoRA, DoRA or bias)")
    scaling = config["lora_alpha"] / config["r"]
    adapter = load_file(str(adapter_dir / "adapter_model.safetensors"))
    model_file = model_dir / "model.safetensors"
    with safe_open(str(model_file), "pt") as f:
        metadata = f.metadata()
    merged = load_file(str(model_file))
    base = load_file(str(Path(base_dir) / "model.safetensors"))
    done = 0
    for key in sorted(k for k in adapter if k.endswith(".lora_A.weight")):
        name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight") + ".weight"
        if name not in merged or name not in base:
            raise ConfigError(f"{adapter_dir}: adapter weight {key} has no {name} in the model")
        a = adapter[key].to(torch.float64)  # r x in
        b = adapter[key.replace(".lora_A.", ".lora_B.")].to(torch.float64)  # out x r
        total = base[name].to(torch.float64).clone()
        for k in range(a.shape[0]):  # fixed order, one correctly rounded multiply and add at a time
            total += (b[:, k : k + 1] * scaling) * a[k : k + 1, :]
        merged[name] = total.to(merged[name].dtype).contiguous()
        done += 1
    save_file(merged, str(model_file), metadata=metadata)
    return done


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def write_archive(seed_dir: str | Path, archive: str | Path) -> Path:
    """Copy what rebuilds the seed in `seed_dir` exactly into `archive`, with the digests a rebuild must match."""
    from lookahead.testbed.demo import seed_digest

    seed_dir, archive = Path(seed_dir), Path(archive)
    report = json.loads((seed_dir / "seed_report.json").read_text())
    shutil.rmtree(archive, ignore_errors=True)
    (archive / "run" / "final").mkdir(parents=True)
    for name in RUN_FILES:
        shutil.copy2(seed_dir / "run" / name, archive / "run" / name)
    for name in FINAL_FILES:
        shutil.copy2(seed_dir / "run" / "final" / name, archive / "run" / "final" / name)
    for name in POOLS:
        shutil.copy2(seed_dir / name, archive / name)
    manifest = {
        "weights_digest": seed_digest(seed_dir),
        "files": {p.relative_to(archive).as_posix(): _sha(p) for p in sorted(archive.rglob("*")) if p.is_file()},
        "report": {k: report[k] for k in ("data", "train", "settings") if k in report},
    }
    (archive / ARCHIVE_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log.info("Seed %s archived in %s", manifest["weights_digest"], archive)
    return archive


def restore_archive(archive: str | Path, seed_dir: str | Path, base_dir: str | Path) -> dict[str, Any]:
    """Rebuild the seed of `archive` in `seed_dir` (its run, merged model and pools), training nothing; returns the
    archive's manifest. A file that does not match its recorded digest, or merged weights that do not, stop it."""
    from lookahead.shipping.export import export_merged
    from lookahead.testbed.demo import seed_digest

    archive, seed_dir = Path(archive), Path(seed_dir)
    manifest = json.loads((archive / ARCHIVE_FILE).read_text())
    for name, digest in manifest["files"].items():
        if _sha(archive / name) != digest:
            raise ConfigError(f"{archive / name}: its sha256 is not the one {archive / ARCHIVE_FILE} records")
    seed_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(seed_dir / "run", ignore_errors=True)
    shutil.copytree(archive / "run", seed_dir / "run")
    config = OmegaConf.load(seed_dir / "run" / "config.yaml")  # this machine's base model and folders
    config.model.path, config.paths.output_dir = str(base_dir), str(seed_dir / "run")
    OmegaConf.save(config, seed_dir / "run" / "config.yaml")
    for name in POOLS:
        shutil.copy2(archive / name, seed_dir / name)
    model_dir = seed_dir / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    export_merged(seed_dir / "run", out_dir=model_dir)
    exact_merge(model_dir, base_dir, seed_dir / "run" / "final")
    found = seed_digest(seed_dir)
    if found != manifest["weights_digest"]:
        raise ConfigError(
            f"{archive}: the rebuilt seed's weights are {found}, not the archived {manifest['weights_digest']} "
            "(another base model file, or a merge this CPU rounds differently): its runs would not be the archive's"
        )
    log.info("Seed %s rebuilt from %s", found, archive)
    return manifest
