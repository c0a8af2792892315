"""Alignment-direction guards on a 2-layer model, checked against hand computations, and end to end through train().

The aligned model is the base plus a known V in every adapted weight, so each guard's projection and penalty can be
written out by hand here.
"""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from lookahead.errors import ConfigError
from lookahead.guards import AsFT, SafeLoRA
from lookahead.models.loading import build_tiny_llama
from lookahead.models.lora import apply_lora
from lookahead.training.recipe import train
from tests.conftest import compose, load_tokenizer, read_metrics, tiny_overrides

TARGETS = ["q_proj", "v_proj"]


def tiny_cfg():
    cfg = compose(["model=tiny", "lora=lora", "model.tiny.num_hidden_layers=2", "lora.dropout=0.0"])
    cfg.lora.target_modules = TARGETS
    return cfg


def write_pair(folder, seed: int, draw_v):
    """(aligned folder, base folder, {weight name: V}): the tiny model built with seed 0 is the aligned model, and
    the base is it minus V = draw_v(shape, generator) in every targeted weight."""
    cfg = tiny_cfg()
    tokenizer = load_tokenizer("chatml-style")
    aligned = build_tiny_llama(cfg.model, tokenizer, seed=0)
    base = build_tiny_llama(cfg.model, tokenizer, seed=0)
    generator = torch.Generator().manual_seed(seed)
    directions = {}
    with torch.no_grad():
        for name, param in base.named_parameters():
            if any(t in name for t in TARGETS):
                directions[name] = draw_v(param.shape, generator)
                param -= directions[name]  # base = aligned - V
    aligned.save_pretrained(folder / "aligned")
    base.save_pretrained(folder / "base")
    return folder / "aligned", folder / "base", directions


def rank_two(shape, generator):
    """A rank-2 alignment direction."""
    return torch.randn(shape[0], 2, generator=generator) @ torch.randn(2, shape[1], generator=generator)


@pytest.fixture
def pair(tmp_path):
    return write_pair(tmp_path, 1, rank_two)


def lora_model(seed: int = 3):
    cfg = tiny_cfg()
    model = apply_lora(build_tiny_llama(cfg.model, load_tokenizer("chatml-style"), seed=0), cfg.lora, False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    return model


def layers(model):
    return {
        name.removeprefix("base_model.model.") + ".weight": m
        for name, m in model.named_modules()
        if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})
    }


def cosine(x, y):
    return float(((x * y).sum() / (x.norm() * y.norm())).detach())


@pytest.mark.parametrize("projector", ["paper", "exact"])
def test_safe_lora_projects_exactly_the_layers_below_the_threshold(pair, projector, tmp_path):
    aligned, base, directions = pair
    model = lora_model()
    before = {
        name: (m.lora_A["default"].weight.clone(), m.lora_B["default"].weight.clone())
        for name, m in layers(model).items()
    }
    expected = {}
    for name, (a, b) in before.items():
        v = directions[name]
        if projector == "paper":  # Safe LoRA's C = V V^T / ||V||_F
            projection = (v @ v.T) / torch.linalg.matrix_norm(v)
        else:  # the orthogonal projector onto V's two columns
            u = torch.linalg.svd(v, full_matrices=False)[0][:, :2]
            projection = u @ u.T
        new_b = (projection @ b).detach()
        expected[name] = (cosine(new_b @ a, b @ a), new_b)
    threshold = sorted(s for s, _ in expected.values())[1]  # the two least aligned layers fall at or under it
    guard = SafeLoRA(str(aligned), str(base), threshold=threshold, projector=projector)
    report = guard.finalize(model, tmp_path)

    written = json.loads((tmp_path / "safe_lora.json").read_text())
    assert report["projected"] == 2 and report["layers"] == 4 == len(written["per_layer"])
    for row in written["per_layer"]:
        similarity, new_b = expected[row["layer"]]
        assert row["similarity"] == pytest.approx(similarity, abs=1e-5)
        assert row["projected"] == (similarity <= threshold)
        b_now = layers(model)[row["layer"]].lora_B["default"].weight
        target = new_b if row["projected"] else before[row["layer"]][1]
        torch.testing.assert_close(b_now, target, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layers(model)[row["layer"]].lora_A["default"].weight, before[row["layer"]][0])


def test_safe_lora_top_fraction_projects_the_least_aligned_layers(pair, tmp_path):
    aligned, base, _ = pair
    guard = SafeLoRA(str(aligned), str(base), threshold=None, top_fraction=0.25)
    report = guard.finalize(lora_model(), tmp_path)
    rows = json.loads((tmp_path / "safe_lora.json").read_text())["per_layer"]
    lowest = min(rows, key=lambda r: r["similarity"])
    assert report["projected"] == 1 and [r["layer"] for r in rows if r["projected"]] == [lowest["layer"]]


def test_asft_penalty_is_zero_along_v_and_the_squared_orthogonal_norm_otherwise(pair):
    aligned, base, directions = pair
    model = lora_model()
    guard = AsFT(str(aligned), str(base), lam=2.0, projector="exact", energy=1.0)
    guard.prepare(model, is_lora=True)
    modules = layers(model)
    with torch.no_grad():  # every B inside V's column space: the update B A lies along V
        for name, m in modules.items():
            u = torch.linalg.svd(directions[name], full_matrices=False)[0][:, :2]
            m.lora_B["default"].weight.copy_(u @ torch.randn(2, m.lora_B["default"].weight.shape[1]))
    assert guard.penalty(model).detach().item() == pytest.approx(0.0, abs=1e-8)

    model = lora_model(seed=5)
    by_hand = 0.0
    for name, m in layers(model).items():
        u = torch.linalg.svd(directions[name], full_matrices=False)[0][:, :2]
        update = m.scaling["default"] * m.lora_B["default"].weight @ m.lora_A["default"].weight
        by_hand += ((update - u @ (u.T @ update)) ** 2).sum().item()
    guard.prepare(model, is_lora=True)
    penalty = guard.penalty(model)
    assert penalty.detach().item() == pytest.approx(2.0 * by_hand, rel=1e-5)
    penalty.backward()  # differentiable in the adapter
    assert all(m.lora_B["default"].weight.grad is not None for m in layers(model).values())


def test_asft_on_a_full_finetune_measures_the_update_from_the_seed(pair):
    aligned, base, directions = pair
    cfg = tiny_cfg()
    model = build_tiny_llama(cfg.model, load_tokenizer("chatml-style"), seed=0)
    guard = AsFT(str(aligned), str(base), lam=1.0, projector="exact", energy=1.0, target_modules=TARGETS)
    guard.prepare(model, is_lora=False)
    assert guard.penalty(model).detach().item() == 0.0  # no update yet
    name, param = next((n, p) for n, p in model.named_parameters() if "q_proj" in n)
    with torch.no_grad():
        param += 0.5 * directions[name]  # along V: free
    assert guard.penalty(model).detach().item() == pytest.approx(0.0, abs=1e-6)
    orthogonal = torch.linalg.svd(directions[name], full_matrices=True)[0][:, 2:3] @ torch.ones(1, param.shape[1])
    with torch.no_grad():
        param += orthogonal
    assert guard.penalty(model).detach().item() == pytest.approx(float((orthogonal**2).sum()), rel=1e-4)


def full_rank(shape, generator):
    """V at full rank, as RLHF moves every weight, with decaying singular values (a share of the energy sits in a
    few leading directions)."""
    u = torch.linalg.qr(torch.randn(shape[0], shape[0], generator=generator))[0]
    w = torch.linalg.qr(torch.randn(shape[1], shape[1], generator=generator))[0]
    k = min(shape)
    return u[:, :k] @ torch.diag(torch.tensor([0.9**i for i in range(k)])) @ w[:, :k].T


@pytest.fixture
def full_rank_pair(tmp_path):
    return write_pair(tmp_path / "full", 7, full_rank)


class TestAsftOnAFullRankDirection:
    """An RLHF'd model's V has full numerical rank. With every direction kept, P = I and AsFT silently did nothing."""

    def test_the_default_guard_penalises_a_generic_update(self, full_rank_pair):
        aligned, base, _ = full_rank_pair
        model = lora_model(seed=5)
        for guard in (AsFT(str(aligned), str(base)), AsFT(str(aligned), str(base), projector="exact")):
            guard.prepare(model, is_lora=True)
            assert guard.penalty(model).detach().item() > 1e-3, guard.projector

    def test_exact_keeps_the_energy_share_and_an_update_inside_it_costs_nothing(self, full_rank_pair):
        aligned, base, directions = full_rank_pair
        model = lora_model(seed=5)
        guard = AsFT(str(aligned), str(base), projector="exact", energy=0.9)
        guard.prepare(model, is_lora=True)
        kept = guard.kept_ranks()
        for name, (k, full) in kept.items():
            s = torch.linalg.svdvals(directions[name])
            share = torch.cumsum(s**2, 0) / (s**2).sum()
            assert k == int((share < 0.9).sum()) + 1 and 1 <= k < full  # the fewest that reach 90%
        assert guard.finalize(model, None)["kept"] == kept
        with torch.no_grad():  # every B inside the kept directions
            for name, m in layers(model).items():
                u = torch.linalg.svd(directions[name], full_matrices=False)[0][:, : kept[name][0]]
                m.lora_B["default"].weight.copy_(u @ torch.randn(u.shape[1], m.lora_B["default"].weight.shape[1]))
        assert guard.penalty(model).detach().item() == pytest.approx(0.0, abs=1e-6)

    def test_keeping_every_direction_is_the_identity_and_is_warned_about(self, full_rank_pair, caplog):
        aligned, base, _ = full_rank_pair
        model = lora_model(seed=5)
        guard = AsFT(str(aligned), str(base), projector="exact", energy=1.0)
        with caplog.at_level("WARNING"):
            guard.prepare(model, is_lora=True)
        assert guard.penalty(model).detach().item() == pytest.approx(0.0, abs=1e-6)
        assert "every layer's projector is the identity" in caplog.text
        with pytest.raises(ConfigError, match=r"guard.energy=0: must be in \(0, 1\]"):
            AsFT(str(aligned), str(base), energy=0)


def test_guards_refuse_what_they_cannot_do(pair):
    aligned, base, _ = pair
    with pytest.raises(ConfigError, match="guard=safe_lora needs guard.aligned_model and guard.base_model"):
        SafeLoRA(str(aligned), None)
    with pytest.raises(ConfigError, match=r"guard.top_fraction=1.5: must be in \(0, 1\]"):
        SafeLoRA(str(aligned), str(base), top_fraction=1.5)
    with pytest.raises(ConfigError, match="guard.lam=-1: must be >= 0"):
        AsFT(str(aligned), str(base), lam=-1)
    with pytest.raises(ConfigError, match="guard.aligned_model='/no/such/model': not a local model folder"):
        AsFT("/no/such/model", str(base)).prepare(lora_model(), is_lora=True)
    with pytest.raises(ConfigError, match="guard=safe_lora projects a LoRA update"):
        from lookahead.training.config import validate

        validate(compose(["lora=none", "guard=safe_lora", f"guard.base_model={base}"]))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("guard", "extra"),
    [
        ("safe_lora", ["method=virtual_prefix", "guard.threshold=1.0"]),  # every layer projected
        ("asft", ["method=real_prefix", "objective=constrained_sft", "guard.lam=10"]),
        ("asft", ["method=vanilla", "lora=none"]),
    ],
)
def test_guards_train_end_to_end_with_any_preview_and_objective(pair, guard, extra, tmp_path):
    aligned, base, _ = pair
    overrides = [
        *tiny_overrides(), "model.tiny.num_hidden_layers=2", *extra, f"guard={guard}",
        f"guard.aligned_model={aligned}", f"guard.base_model={base}", "trainer.max_steps=2",
    ]  # fmt: skip
    cfg = compose(overrides, output_dir=tmp_path / "run")
    assert cfg.run_name.endswith({"safe_lora": "-safelora-lora", "asft": "-asft-" + cfg.lora.name}[guard])
    summary = train(cfg)
    assert summary["global_step"] == 2 and summary["guard"] == guard
    card = (tmp_path / "run" / "final" / "README.md").read_text()
    assert "- guard: " in card
    if guard == "safe_lora":
        report = json.loads((tmp_path / "run" / "safe_lora.json").read_text())
        assert summary["guard_report"]["projected"] == report["projected"] == report["layers"] > 0
    else:
        logged = [m["guard_penalty"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if "guard_penalty" in m]
        assert len(logged) == 2 and logged[0] >= 0.0
    assert OmegaConf.load(tmp_path / "run" / "config.yaml").guard.name == guard


def test_safe_lora_after_training_gives_the_guarded_runs_adapter_bit_for_bit(pair, tmp_path):
    """`lookahead safe-lora` on a run trained with guard=none = the run trained with guard=safe_lora, same settings."""
    from safetensors.torch import load_file

    from lookahead.commands.compose import compose_evaluate_config
    from lookahead.commands.safe_lora import safe_lora
    from lookahead.evaluation.loading import load_for_evaluation

    aligned, base, _ = pair
    common = [*tiny_overrides(), "model.tiny.num_hidden_layers=2", "method=vanilla", "trainer.max_steps=2"]
    guard = [f"guard.aligned_model={aligned}", f"guard.base_model={base}", "guard.top_fraction=0.5"]
    train(compose(common, output_dir=tmp_path / "plain"))
    train(compose([*common, "guard=safe_lora", *guard], output_dir=tmp_path / "guarded"))
    source_weights = (tmp_path / "plain" / "final" / "adapter_model.safetensors").read_bytes()

    argv = [
        f"run_dir={tmp_path / 'plain'}",
        f"out_dir={tmp_path / 'projected'}",
        *[g.removeprefix("guard.") for g in guard],
    ]
    assert safe_lora(argv) == 0
    projected, guarded = (
        load_file(tmp_path / r / "final" / "adapter_model.safetensors") for r in ("projected", "guarded")
    )
    assert projected.keys() == guarded.keys() and all(torch.equal(projected[k], guarded[k]) for k in guarded)
    reports = [json.loads((tmp_path / r / "safe_lora.json").read_text()) for r in ("projected", "guarded")]
    assert reports[0] == reports[1] and reports[0]["projected"] == reports[0]["layers"] // 2 > 0
    plain = load_file(tmp_path / "plain" / "final" / "adapter_model.safetensors")
    assert sum(not torch.equal(plain[k], guarded[k]) for k in guarded) == reports[0]["projected"]  # their B only
    assert (tmp_path / "plain" / "final" / "adapter_model.safetensors").read_bytes() == source_weights  # untouched
    cfg = OmegaConf.load(tmp_path / "projected" / "config.yaml")
    assert (cfg.guard.name, cfg.guard.top_fraction, cfg.run_name) == ("safe_lora", 0.5, "projected")
    summary = json.loads((tmp_path / "projected" / "summary.json").read_text())
    assert summary["guard_report"]["projected"] == reports[0]["projected"] and summary["projected_from"].endswith(
        "plain"
    )
    assert "- guard: " in (tmp_path / "projected" / "final" / "README.md").read_text()
    loaded = load_for_evaluation(compose_evaluate_config([f"run_dir={tmp_path / 'projected'}"]))
    assert loaded.is_adapter and loaded.name == "projected"

    with pytest.raises(ConfigError, match="exists; projecting never overwrites"):
        safe_lora(argv)
    with pytest.raises(ConfigError, match="trained with guard=safe_lora"):
        safe_lora([f"run_dir={tmp_path / 'guarded'}", f"out_dir={tmp_path / 'again'}", f"base_model={base}"])
    with pytest.raises(ConfigError, match=r"\['base_model'\]: required"):
        safe_lora([f"run_dir={tmp_path / 'plain'}", f"out_dir={tmp_path / 'x'}"])
    with pytest.raises(ConfigError, match="'lam=1': expected key=value"):
        safe_lora([f"run_dir={tmp_path / 'plain'}", f"out_dir={tmp_path / 'x'}", f"base_model={base}", "lam=1"])
    assert not (tmp_path / "x").exists() and not (tmp_path / "again").exists()


def test_the_lookahead_command_dispatches_safe_lora(capsys):
    from lookahead.commands import main

    with pytest.raises(SystemExit) as exit_info:
        main(["safe-lora", "--help"])
    assert exit_info.value.code == 0
    assert "lookahead safe-lora run_dir=<run> out_dir=<new run>" in capsys.readouterr().out


SHARED_DIRECTIONS = """
import json, sys
sys.path.insert(0, sys.argv[4])
from accelerate import PartialState
state = PartialState(cpu=True)
from lookahead.guards.directions import shared_directions
names = json.loads(sys.argv[3])
directions, here = shared_directions(sys.argv[1], sys.argv[2], names, "exact", None, 1.0, None)
# One file per rank: two ranks' lines of about 9 KB on one shared pipe interleave (a write over PIPE_BUF is not atomic).
with open(f"{sys.argv[5]}/rank{state.process_index}.json", "w") as f:
    json.dump({"rank": state.process_index, "here": here,
               "bases": {n: d.basis.tolist() for n, d in directions.items()}}, f)
# Leave the group before exit: gloo threads still running at interpreter shutdown can abort both ranks ("terminate
# called without an active exception", SIGABRT; seen once in a full CI run, 2026-12-07).
import torch.distributed as dist
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_each_process_computes_a_share_of_the_directions_and_all_get_them_all(pair, tmp_path):
    """Every rank used to read and decompose every layer at once (8 x the host memory and CPU at 8 GPUs)."""
    import sys

    from lookahead.guards.directions import shared_directions
    from tests.conftest import ROOT, free_port, run_cli

    aligned, base, directions = pair
    names = sorted(directions)
    script = tmp_path / "shared_directions.py"
    script.write_text(SHARED_DIRECTIONS)
    result = run_cli([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                      "127.0.0.1", "--master_port", str(free_port()), str(script), str(aligned), str(base),
                      json.dumps(names), str(ROOT), str(tmp_path)])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert sorted(r["here"] for r in ranks) == [len(names) // 2, len(names) - len(names) // 2]
    alone, here = shared_directions(str(aligned), str(base), names, "exact", None, 1.0, None)
    assert here == len(names)
    for r in ranks:
        assert set(r["bases"]) == set(names)
        for name in names:
            torch.testing.assert_close(torch.tensor(r["bases"][name]), alone[name].basis)


def test_directions_too_large_for_the_gpu_stay_in_cpu_memory(monkeypatch):
    """At 7B the paper's C matrices are about 42 GB: moved onto a 40 GB GPU they would not fit beside the model."""
    from types import SimpleNamespace

    from lookahead.guards import directions as module

    big = SimpleNamespace(basis=None, matrix=torch.zeros(1000, 1000))  # 4 MB
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (6_000_000, 80_000_000_000))
    assert not module.fits_on("cuda:0", [big])  # 4 MB > half of 6 MB free
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10_000_000, 80_000_000_000))
    assert module.fits_on("cuda:0", [big])
    assert module.fits_on("cpu", [big]) and module.fits_on(None, [big])
