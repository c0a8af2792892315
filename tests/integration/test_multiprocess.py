"""Several processes and machines on CPU (gloo): two simulated nodes through torchrun, SIGTERM to a launcher, SDFT's
rewrites spread over ranks, and a multi-node launch whose machines never meet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lookahead.training.checkpoints import complete_checkpoints
from tests.conftest import (
    ROOT,
    accelerate_two_processes,
    free_port,
    losses,
    read_metrics,
    run_cli,
    tiny_overrides,
)

pytestmark = pytest.mark.slow

RUN = "tiny-arithmetic-virtual_prefix-lora"
STEPS = 4
COMMON = [*tiny_overrides(), f"trainer.max_steps={STEPS}", "trainer.per_device_train_batch_size=4"]


def train_args(log_dir, *extra) -> list[str]:
    return [str(ROOT / "train.py"), *COMMON, f"paths.log_dir={log_dir}", *extra]


def metrics_of(log_dir):
    return read_metrics(log_dir / "runs" / RUN / "metrics.jsonl")


@pytest.fixture(scope="module")
def one_node_two_processes(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("one-node")
    result = run_cli([*accelerate_two_processes(), *train_args(log_dir)])
    assert result.returncode == 0, result.stderr[-3000:]
    return metrics_of(log_dir)


def test_two_simulated_nodes_train_like_one_node_of_two_processes(tmp_path, one_node_two_processes):
    """`torchrun --nnodes 2` on localhost, one process a node: one process group, one run dir, one metrics line a
    step, the losses of one machine with two processes."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node_rank",
                str(rank),
                "--nproc_per_node",
                "1",
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                str(port),
                *train_args(tmp_path),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    errors = [n.communicate(timeout=600)[1] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [RUN]
    got = metrics_of(tmp_path)
    assert [m["step"] for m in got if "loss" in m] == list(range(1, STEPS + 1))  # no line twice
    want = losses(one_node_two_processes)
    for step, loss in losses(got).items():
        assert loss == pytest.approx(want[step], abs=1e-5)
    checkpoint = complete_checkpoints(tmp_path / "runs" / RUN)[-1]
    assert json.loads((checkpoint / "lookahead_checkpoint.json").read_text()) == {"world_size": 2}


def test_a_multinode_launch_whose_machines_never_meet_leaves_one_writer(tmp_path):
    """Found on CPU: `scripts/launch_multinode.sh` with `--cpu` on two "machines" ran two independent single-process
    runs into one run dir, both rank 0, interleaving metrics.jsonl (8 loss lines for 4 steps)."""
    common = {**os.environ, "HF_HUB_OFFLINE": "1", "NUM_MACHINES": "2", "MAIN_PROCESS_IP": "127.0.0.1",
              "MAIN_PROCESS_PORT": str(free_port()), "GPUS_PER_NODE": "1",
              "ACCELERATE": f"{sys.executable} -m accelerate.commands.accelerate_cli",
              "ACCELERATE_ARGS": "--cpu --mixed_precision no --dynamo_backend no"}  # fmt: skip
    machines = [
        subprocess.Popen(
            [
                str(ROOT / "scripts" / "launch_multinode.sh"),
                "configs/accelerate/multinode_ddp.yaml",
                *COMMON,
                "model.tiny.hidden_size=256",
                "model.tiny.num_hidden_layers=4",
                f"paths.log_dir={tmp_path}",
            ],
            cwd=ROOT,
            env={**common, "MACHINE_RANK": str(rank)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    errors = [m.communicate(timeout=600)[1] for m in machines]
    codes = sorted(m.returncode for m in machines)
    assert codes[0] == 0 and codes[1] != 0, (codes, errors[0][-1500:], errors[1][-1500:])
    refused = errors[[m.returncode for m in machines].index(codes[1])]
    assert f"error: {tmp_path / 'runs' / RUN}" in refused, refused[-2000:]
    assert [m["step"] for m in metrics_of(tmp_path) if "loss" in m] == list(range(1, STEPS + 1))


def test_sigterm_to_the_launcher_saves_a_checkpoint_and_resume_ends_where_an_uninterrupted_run_does(tmp_path):
    """What a scheduler's preemption does: SIGTERM to `accelerate launch`, which forwards it to both ranks."""
    steps = 8
    extra = ["model.tiny.hidden_size=256", "model.tiny.intermediate_size=1024", "model.tiny.num_hidden_layers=4",
             f"trainer.max_steps={steps}", "trainer.save_steps=100"]  # fmt: skip
    whole = run_cli([*accelerate_two_processes(), *train_args(tmp_path / "whole", *extra)])
    assert whole.returncode == 0, whole.stderr[-2000:]

    log_dir = tmp_path / "cut"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    launcher = subprocess.Popen([*accelerate_two_processes(), *train_args(log_dir, *extra)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = log_dir / "runs" / RUN / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and '"loss"' in metrics.read_text() and metrics.read_text().count('"loss"') >= 2):
        assert time.monotonic() < deadline and launcher.poll() is None, launcher.stderr.read()[-2000:]
        time.sleep(0.05)
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode != 0
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped: ")]
    assert len(stopped) == 1 and "stopped by SIGTERM at step" in stopped[0], stderr[-3000:]
    saved = complete_checkpoints(log_dir / "runs" / RUN)
    assert saved, stderr[-2000:]
    step = json.loads((saved[-1] / "trainer_state.json").read_text())["global_step"]
    assert 2 <= step < steps and saved[-1].name == f"checkpoint-{step}"

    resumed = run_cli([*accelerate_two_processes(), *train_args(log_dir, *extra, "resume=auto")])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got, want = losses(metrics_of(log_dir)), losses(metrics_of(tmp_path / "whole"))
    assert list(got) == list(range(1, steps + 1))
    assert got[steps] == pytest.approx(want[steps], abs=1e-5)


def test_sdft_rewrites_are_spread_over_the_ranks_and_equal_one_process(tmp_path):
    sdft = ["method=vanilla", "objective=sdft", "objective.max_new_tokens=8", "objective.batch_size=4",
            "dataset.size=16", "trainer.max_steps=1"]  # fmt: skip
    two = run_cli([*accelerate_two_processes(), *train_args(tmp_path / "two", *sdft,
                                                              f"paths.cache_dir={tmp_path / 'cache2'}")])  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_cli([sys.executable, *train_args(tmp_path / "one", *sdft, f"paths.cache_dir={tmp_path / 'cache1'}")])
    assert one.returncode == 0, one.stderr[-3000:]
    run = "tiny-arithmetic-vanilla-sdft-lora"
    first = [read_metrics(tmp_path / d / "runs" / run / "metrics.jsonl")[0] for d in ("two", "one")]
    assert first[0]["train/sdft_generated_per_process"] == [8, 8]
    assert first[1]["train/sdft_generated_per_process"] == [16]
    caches = [next((tmp_path / c / "sdft").glob("*.jsonl")).read_text() for c in ("cache2", "cache1")]
    assert len(caches[0].splitlines()) == 16 and caches[0] == caches[1]
