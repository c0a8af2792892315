"""One run dir, one writer: the run dir lock (a second launch stops, a killed run's lock is taken over) and the
process-group check (a process that is not the rank its launcher announced stops)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from lookahead.errors import ConfigError
from lookahead.training.runlock import LOCK_FILE, RunDirLock, check_process_group
from tests.conftest import ROOT, losses, one_line_error, read_metrics, tiny_overrides

HOLD = (
    "import sys, time\n"
    "from lookahead.training.runlock import RunDirLock\n"
    "lock = RunDirLock(sys.argv[1], 2).acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def hold_lock(run_dir) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


class TestRunDirLock:
    def test_a_second_writer_is_refused_naming_the_live_run(self, tmp_path):
        first = RunDirLock(tmp_path, world_size=4).acquire()
        with pytest.raises(ConfigError) as refused:
            RunDirLock(tmp_path).acquire()
        message = str(refused.value)
        assert message.startswith(f"{tmp_path} is in use by a live run (pid {os.getpid()} on {socket.gethostname()}")
        assert "4 process(es)" in message and "\n" not in message
        first.release()
        with RunDirLock(tmp_path):  # free again once released
            assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        assert (tmp_path / LOCK_FILE).read_text() == ""

    def test_the_lock_of_a_killed_run_is_stale_and_taken_over(self, tmp_path, caplog):
        holder = hold_lock(tmp_path)
        try:
            with pytest.raises(ConfigError, match=f"in use by a live run \\(pid {holder.pid} on "):
                RunDirLock(tmp_path).acquire()
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
        with caplog.at_level("INFO"), RunDirLock(tmp_path):
            assert f"pid {holder.pid}" in caplog.text  # the dead holder is named as taken over
            assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


class TestProcessGroup:
    def state(self, world: int, rank: int, local: int):
        return SimpleNamespace(num_processes=world, process_index=rank, local_process_index=local)

    def test_a_process_alone_where_two_were_announced_stops(self):
        with pytest.raises(ConfigError, match=r"WORLD_SIZE=2 announced, 1 joined"):
            check_process_group(self.state(1, 0, 0), {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0"})

    def test_the_announced_group_or_none_passes(self):
        check_process_group(self.state(2, 1, 0), {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0"})
        check_process_group(self.state(1, 0, 0), {})


@pytest.mark.slow
def test_two_launches_into_one_run_dir_leave_one_writer(tmp_path):
    """Two `python train.py` started into one run dir used to both finish, interleaving metrics.jsonl."""
    # A wider tiny model and enough steps that the first run is still training when the second has started up.
    steps = 40
    args = [sys.executable, str(ROOT / "train.py"), *tiny_overrides(), "model.tiny.hidden_size=256",
            "model.tiny.intermediate_size=1024", "model.tiny.num_hidden_layers=4", f"trainer.max_steps={steps}",
            f"paths.log_dir={tmp_path}"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "runs" / "tiny-arithmetic-virtual_prefix-lora"
    deadline = time.monotonic() + 120
    while not ((run_dir / LOCK_FILE).is_file() and (run_dir / LOCK_FILE).read_text()):
        assert time.monotonic() < deadline and first.poll() is None, first.stderr.read()[-2000:]
        time.sleep(0.05)
    second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    error = one_line_error(second.returncode, second.stderr)
    assert error.startswith(f"error: {run_dir} is in use by a live run (pid {first.pid} on {socket.gethostname()}")
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    logged = [m["step"] for m in read_metrics(run_dir / "metrics.jsonl") if "loss" in m]
    assert logged == list(range(1, steps + 1)) and len(losses(read_metrics(run_dir / "metrics.jsonl"))) == steps
