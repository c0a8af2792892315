"""Stop signals: the first SIGTERM / SIGINT asks for a checkpoint and a stop; a repeated SIGTERM (SLURM's, then
torchrun's forwarded copy) must not abort that checkpoint; a second Ctrl-C still aborts at once."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import os, signal, sys, time
from lookahead.training.safeguards import StopRequest
first, second = (getattr(signal, name) for name in sys.argv[1:3])
request = StopRequest()
with request.installed():
    os.kill(os.getpid(), first)
    os.kill(os.getpid(), second)
    time.sleep(0.2)
    print("alive", request.name, flush=True)
"""


def probe(first: str, second: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, first, second], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_a_repeated_sigterm_keeps_the_run_saving_its_checkpoint():
    result = probe("SIGTERM", "SIGTERM")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "alive SIGTERM"
    assert "SIGTERM received again: still saving a checkpoint" in result.stderr


def test_a_second_ctrl_c_aborts_at_once():
    result = probe("SIGINT", "SIGINT")
    assert result.returncode == -signal.SIGINT and "alive" not in result.stdout


def test_ctrl_c_after_a_sigterm_aborts_too():
    result = probe("SIGTERM", "SIGINT")
    assert result.returncode == -signal.SIGINT
