"""scripts/gpu_check.sh is a verdict: it asserts, fails loudly (a removed spelling stops it), refuses a used output
folder (a rerun cannot pass on old results), and in --dry-run runs every step a CPU can run."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT, run_cli

SCRIPT = ["bash", str(ROOT / "scripts" / "gpu_check.sh")]


def test_every_planned_command_composes(tmp_path):
    result = run_cli([*SCRIPT, "--dry-run", "--only", "compose", "--out", str(tmp_path / "out")])
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "PASS compose" in result.stdout and "gpu_check: 0 failed" in result.stdout


def test_a_removed_spelling_fails_loudly(tmp_path):
    result = run_cli([*SCRIPT, "--dry-run", "--only", "compose", "--out", str(tmp_path / "out"),
                      "--extra", "method=constrained_sft"])  # fmt: skip
    assert result.returncode == 1
    assert (
        "FAIL compose" in result.stdout and "method=constrained_sft is now objective=constrained_sft" in result.stdout
    )


def test_a_used_output_folder_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_text("a previous check")
    result = run_cli([*SCRIPT, "--dry-run", "--out", str(tmp_path / "out")])
    assert result.returncode == 2 and "is not empty" in result.stdout


@pytest.mark.slow
def test_the_dry_run_passes_every_check_a_cpu_can_run(tmp_path):
    result = run_cli([*SCRIPT, "--dry-run", "--out", str(tmp_path / "out")], timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    verdicts = {
        line.split()[1].rstrip(":"): line.split()[0]
        for line in result.stdout.splitlines()
        if line[:5] in ("PASS ", "SKIP ")
    }
    assert verdicts == {
        "compose": "PASS", "chunked": "PASS", "train": "PASS", "resume": "PASS", "launchers": "SKIP",
        "guards": "PASS", "evaluate": "PASS", "throughput": "SKIP",
    }  # fmt: skip
