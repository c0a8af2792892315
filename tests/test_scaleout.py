"""Scale-out: accelerate configs, the multi-node launcher, the SLURM scripts, cluster sweeps, SLURM task ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lookahead.training.distributed import adopt_slurm_tasks, first_host
from tests.conftest import ROOT, free_port, losses, read_metrics, run_cli, tiny_overrides

ACCELERATE_CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=[p.stem for p in ACCELERATE_CONFIGS])
def test_every_accelerate_config_resolves(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    expected = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed": "DEEPSPEED", "zero": "DEEPSPEED"}
    kind = next(v for k, v in expected.items() if k in path.stem)
    assert str(config.distributed_type).endswith(kind) and config.mixed_precision == "bf16"
    assert config.num_machines == (2 if path.stem.startswith("multinode") else 1)
    assert config.num_processes == 8 * config.num_machines if path.stem.startswith("multinode") else 4


def test_multinode_launcher_takes_the_topology_from_the_environment():
    env = {**os.environ, "ACCELERATE": "echo accelerate", "NUM_MACHINES": "2", "MACHINE_RANK": "1",
           "MAIN_PROCESS_IP": "10.0.0.7", "GPUS_PER_NODE": "4"}  # fmt: skip
    script = str(ROOT / "scripts" / "launch_multinode.sh")
    out = subprocess.run(
        [script, "configs/accelerate/multinode_fsdp.yaml", "model=llama3"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "accelerate", "launch", "--config_file", "configs/accelerate/multinode_fsdp.yaml", "--num_machines", "2",
        "--machine_rank", "1", "--main_process_ip", "10.0.0.7", "--main_process_port", "29500",
        "--num_processes", "8", "train.py", "model=llama3",
    ]  # fmt: skip
    missing = subprocess.run([script, "x.yaml"], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True)
    assert missing.returncode != 0 and "NUM_MACHINES" in missing.stderr


def test_slurm_scripts_parse():
    for script in ("scripts/slurm/train.sbatch", "scripts/launch_multinode.sh", "scripts/reproduce_paper.sh"):
        result = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
        assert result.returncode == 0, (script, result.stderr)
    sbatch = (ROOT / "scripts" / "slurm" / "train.sbatch").read_text()
    assert "srun" in sbatch and "SLURM_NODEID" in sbatch and "--signal=TERM@" in sbatch


def test_torchrun_waits_for_the_checkpoint_within_slurms_warning():
    """torchrun SIGKILLs its workers 30 s after it forwards SIGTERM: too soon for a 7B checkpoint. The scripts give
    them longer, and under SLURM less than the `--signal=TERM@<s>` warning."""
    import re

    sbatch = (ROOT / "scripts" / "slurm" / "train.sbatch").read_text()
    warning = int(re.search(r"--signal=TERM@(\d+)", sbatch).group(1))
    grace = int(re.search(r"TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-(\d+)", sbatch).group(1))
    assert 30 < grace < warning
    env = {**os.environ, "ACCELERATE": "bash -c env", "NUM_MACHINES": "1", "MACHINE_RANK": "0", "MAIN_PROCESS_IP": "x"}
    env.pop("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", None)
    launched = subprocess.run([str(ROOT / "scripts" / "launch_multinode.sh"), "c.yaml"], env=env, capture_output=True,
                              text=True)  # fmt: skip
    assert "TORCH_ELASTIC_SHUTDOWN_TIMEOUT=300" in launched.stdout.splitlines()


def test_the_run_waits_trainer_ddp_timeout_in_collectives(monkeypatch, tmp_path):
    """Rank 0 alone writes SDFT's rewrites while the others wait at a barrier: NCCL's default 10 minutes was used."""
    from lookahead.training import recipe
    from tests.conftest import compose

    seen = []

    def join(timeout_s=None):
        seen.append(timeout_s)
        raise KeyboardInterrupt  # stop here: only the argument matters

    monkeypatch.setattr(recipe, "join_process_group", join)
    with pytest.raises(KeyboardInterrupt):
        recipe.train(compose([*tiny_overrides(), "trainer.ddp_timeout=5400"], output_dir=tmp_path / "run"))
    assert seen == [5400]


def test_submitit_launcher_config_resolves():
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_class

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"
    assert launcher.nodes == 1 and launcher.tasks_per_node == launcher.gpus_per_node == 8
    assert launcher.signal_delay_s == 120 and launcher.max_num_timeout == 3


class TestSlurmTasks:
    def test_first_host_of_a_node_list(self):
        assert first_host("gpu[07-09,12],cpu01") == "gpu07"
        assert first_host("node3") == "node3"
        assert first_host("a-b[1,2]") == "a-b1"

    def test_slurm_tasks_become_ranks(self):
        env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "8(x2)",
               "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "123456"}  # fmt: skip
        assert adopt_slurm_tasks(env)
        assert {k: env[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")} == {
            "RANK": "5", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": "gpu07"
        }  # fmt: skip
        assert env["MASTER_PORT"] == str(20000 + 123456 % 20000)

    def test_a_launcher_or_a_single_task_is_left_alone(self):
        launched = {"RANK": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}
        single = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
        assert not adopt_slurm_tasks(launched) and launched == {"RANK": "0", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}
        assert not adopt_slurm_tasks(single) and "RANK" not in single


@pytest.mark.slow
def test_two_slurm_tasks_on_cpu_form_one_run_like_accelerate(tmp_path):
    """What a submitit job with tasks_per_node=2 starts: two plain `python train.py` processes with SLURM variables."""
    common = [*tiny_overrides(), "lora=none", "trainer.max_steps=3"]
    two_dir, one_dir = tmp_path / "two", tmp_path / "one"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
           "SLURM_JOB_NODELIST": "127.0.0.1", "SLURM_JOB_ID": str(os.getpid()),
           "MASTER_PORT": str(free_port())}  # fmt: skip
    args = [sys.executable, str(ROOT / "train.py"), *common, "trainer.per_device_train_batch_size=4"]
    procs = [
        subprocess.Popen(
            [*args, f"paths.log_dir={two_dir}"],
            env={**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    one = run_cli([sys.executable, str(ROOT / "train.py"), *common, "trainer.per_device_train_batch_size=8",
                   f"paths.log_dir={one_dir}"])  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]

    runs = list((two_dir / "runs").iterdir())
    assert len(runs) == 1
    two_losses = losses(read_metrics(runs[0] / "metrics.jsonl"))
    one_losses = losses(read_metrics(next((one_dir / "runs").iterdir()) / "metrics.jsonl"))
    assert list(two_losses) == [1, 2, 3]
    for step, loss in two_losses.items():
        assert loss == pytest.approx(one_losses[step], abs=1e-5)


def test_the_process_group_is_destroyed_at_exit_not_left_to_finalisation(tmp_path):
    """A gloo group left to interpreter finalisation can abort a rank after its work is saved (SIGABRT in CI)."""
    script = (
        "import atexit, torch\n"
        "atexit.register(lambda: print('initialised at exit:', torch.distributed.is_initialized()))\n"
        "from lookahead.training.distributed import join_process_group\n"
        "state = join_process_group(); join_process_group()\n"
        "print('world', state.num_processes, torch.distributed.is_initialized())\n"
    )
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[-3:] == ["world 1 True", "initialised at exit: False", ""]


@pytest.mark.slow
def test_multinode_launcher_runs_one_machine_of_two_processes_on_cpu(tmp_path):
    """The multi-node code path (launcher script, multinode config, static rendezvous) with one machine on CPU."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NUM_MACHINES": "1", "MACHINE_RANK": "0",
           "MAIN_PROCESS_IP": "127.0.0.1", "MAIN_PROCESS_PORT": str(free_port()), "GPUS_PER_NODE": "2",
           "ACCELERATE": f"{sys.executable} -m accelerate.commands.accelerate_cli",
           "ACCELERATE_ARGS": "--mixed_precision no --dynamo_backend no"}  # fmt: skip
    result = subprocess.run(
        [str(ROOT / "scripts" / "launch_multinode.sh"), "configs/accelerate/multinode_ddp.yaml", *tiny_overrides(),
         "lora=none", "trainer.max_steps=2", f"paths.log_dir={tmp_path}"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and list(losses(read_metrics(runs[0] / "metrics.jsonl"))) == [1, 2]
    assert json.loads((runs[0] / "checkpoint-2" / "lookahead_checkpoint.json").read_text()) == {"world_size": 2}
