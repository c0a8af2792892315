"""The portable testbed seed (lookahead/testbed/seed_archive.py): an exact LoRA merge, and an archive that rebuilds
the same seed weights, or stops with one line when it cannot."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lookahead.errors import ConfigError
from lookahead.testbed import seed_archive
from lookahead.testbed.demo import seed_digest

R, ALPHA = 3, 6
SHAPES = {"model.layers.0.self_attn.q_proj.weight": (6, 5), "model.layers.0.mlp.down_proj.weight": (5, 7)}


def _base(folder: Path, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    weights = {name: torch.randn(shape, generator=g) for name, shape in SHAPES.items()}
    weights["model.norm.weight"] = torch.ones(5)  # not adapted: must come through as it is
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def _adapter(folder: Path) -> Path:
    g = torch.Generator().manual_seed(1)
    tensors = {}
    for name, (out, inp) in SHAPES.items():
        stem = "base_model.model." + name.removesuffix(".weight")
        tensors[f"{stem}.lora_A.weight"] = torch.randn(R, inp, generator=g)
        tensors[f"{stem}.lora_B.weight"] = torch.randn(out, R, generator=g)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"r": R, "lora_alpha": ALPHA, "use_rslora": False, "use_dora": False, "bias": "none"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def _exactly_rounded(base: Path, adapter: Path, name: str) -> np.ndarray:
    """W + (alpha / r) B A with each entry summed exactly (math.fsum), then rounded to float32 once."""
    w = load_file(str(base / "model.safetensors"))[name].double().numpy()
    stem = "base_model.model." + name.removesuffix(".weight")
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    a, b = tensors[f"{stem}.lora_A.weight"].double().numpy(), tensors[f"{stem}.lora_B.weight"].double().numpy()
    out = np.empty(w.shape)
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            out[i, j] = math.fsum([w[i, j], *((ALPHA / R) * b[i, k] * a[k, j] for k in range(R))])
    return out.astype(np.float32)


def test_exact_merge_rounds_each_weight_once_and_leaves_the_others(tmp_path):
    base, adapter = _base(tmp_path / "base"), _adapter(tmp_path / "final")
    model = tmp_path / "model"
    model.mkdir()
    stale = {k: v + 1e-3 for k, v in load_file(str(base / "model.safetensors")).items()}  # e.g. a kernel's rounding
    stale["model.norm.weight"] = torch.full((5,), 2.0)
    save_file(stale, str(model / "model.safetensors"), metadata={"format": "pt"})
    assert seed_archive.exact_merge(model, base, adapter) == 2
    merged = load_file(str(model / "model.safetensors"))
    for name in SHAPES:
        assert np.array_equal(merged[name].numpy(), _exactly_rounded(base, adapter, name)), name
        assert merged[name].dtype == torch.float32
    assert torch.equal(merged["model.norm.weight"], torch.full((5,), 2.0))
    torch.set_num_threads(1)  # another thread count (another kernel split) gives the same bits
    try:
        save_file(stale, str(model / "model.safetensors"), metadata={"format": "pt"})
        seed_archive.exact_merge(model, base, adapter)
        assert all(torch.equal(load_file(str(model / "model.safetensors"))[n], merged[n]) for n in merged)
    finally:
        torch.set_num_threads(2)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ConfigError, match="exact_merge handles plain LoRA only"):
        seed_archive.exact_merge(model, base, adapter)


def _fake_export(run_dir, out_dir=None, **kwargs):
    """export_merged at its boundary: the base model the run's config names, copied (the merge is exact_merge's)."""
    from omegaconf import OmegaConf

    base = OmegaConf.load(Path(run_dir) / "config.yaml").model.path
    out_dir.mkdir(parents=True)
    shutil.copy2(Path(base) / "model.safetensors", out_dir / "model.safetensors")
    (out_dir / "config.json").write_text("{}")
    return out_dir


def _seed(tmp_path: Path, base: Path) -> Path:
    seed = tmp_path / "seed"
    final = _adapter(seed / "run" / "final")
    for name in seed_archive.FINAL_FILES:
        if not (final / name).exists():
            (final / name).write_text(f"{name}\n")
    (seed / "run" / "config.yaml").write_text(f"model:\n  path: {base}\npaths:\n  output_dir: {seed / 'run'}\n")
    (seed / "run" / "summary.json").write_text('{"global_step": 39}\n')
    for name in seed_archive.POOLS:
        (seed / name).write_text(f"{name} rows\n")
    report = {"data": {"seed_refusals": 150}, "train": {"steps": 39}, "settings": {"benign": 160}, "seed": {}}
    (seed / "seed_report.json").write_text(json.dumps(report))
    _fake_export(seed / "run", out_dir=seed / "model")
    seed_archive.exact_merge(seed / "model", base, final)
    return seed


def test_an_archived_seed_rebuilds_to_the_same_weights_elsewhere_or_stops(tmp_path, monkeypatch):
    import lookahead.shipping.export

    monkeypatch.setattr(lookahead.shipping.export, "export_merged", _fake_export)
    base = _base(tmp_path / "base")
    seed = _seed(tmp_path, base)
    archive = seed_archive.write_archive(seed, tmp_path / "archive")
    manifest = json.loads((archive / "seed.json").read_text())
    assert manifest["weights_digest"] == seed_digest(seed)
    assert manifest["report"] == {"data": {"seed_refusals": 150}, "train": {"steps": 39}, "settings": {"benign": 160}}
    assert sorted(manifest["files"]) == sorted(
        [*(f"run/{n}" for n in seed_archive.RUN_FILES), *(f"run/final/{n}" for n in seed_archive.FINAL_FILES),
         *seed_archive.POOLS]
    )  # fmt: skip

    # Another machine: the base model converted in another folder, no outputs. Nothing trains; the digest holds.
    elsewhere = tmp_path / "elsewhere"
    other_base = _base(elsewhere / "cache" / "base")
    seed_archive.restore_archive(archive, elsewhere / "seed", other_base)
    assert seed_digest(elsewhere / "seed") == manifest["weights_digest"]
    assert (elsewhere / "seed" / "recovery.jsonl").read_text() == "recovery.jsonl rows\n"
    restored = (elsewhere / "seed" / "run" / "config.yaml").read_text()
    assert f"path: {other_base}" in restored and f"output_dir: {elsewhere / 'seed' / 'run'}" in restored

    # Another base model file gives other weights: refused, never a silently different seed under the old name.
    _base(other_base, seed=7)
    with pytest.raises(ConfigError, match=r"the rebuilt seed's weights are [0-9a-f]{16}, not the archived"):
        seed_archive.restore_archive(archive, elsewhere / "seed2", other_base)
    (archive / "refusals.jsonl").write_text("edited\n")
    with pytest.raises(ConfigError, match=r"refusals.jsonl: its sha256 is not the one .*seed.json records"):
        seed_archive.restore_archive(archive, elsewhere / "seed3", other_base)
