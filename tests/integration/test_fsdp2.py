"""FSDP2 (torch `fully_shard`) with 2 gloo processes on CPU, driving lookahead's FSDP code at the lowest layer that
runs it (tests/integration/fsdp2_worker.py): the final weights gathered into final/ equal a single-process run of the
same steps, and a run resumed from a sharded checkpoint ends at the same weights."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from tests.conftest import ROOT, free_port, run_cli

pytestmark = pytest.mark.slow

WORKER = str(ROOT / "tests" / "integration" / "fsdp2_worker.py")


# Seen once (2026-12-06, a full-suite run on the 2-core VM; the file passed when run again): a rank aborted in torch's
# C++ as the sharded checkpoint loaded, before the worker trained a step ("terminate called without an active
# exception", SIGABRT). The launch is repeated once for that signature alone; the second launch is checked as before.
TORCH_ABORT = "terminate called without an active exception"


def two_ranks(*args: str):
    for attempt in (1, 2):
        result = run_cli([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                          "127.0.0.1", "--master_port", str(free_port()), WORKER, *args])  # fmt: skip
        if result.returncode == 0 or TORCH_ABORT not in result.stderr or attempt == 2:
            break
    assert result.returncode == 0, result.stderr[-3000:]


def weights(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).state_dict()


def test_fsdp2_final_weights_equal_one_process_and_resume_from_a_sharded_checkpoint(tmp_path):
    single, whole, cut = tmp_path / "single", tmp_path / "whole", tmp_path / "cut"
    result = run_cli([sys.executable, WORKER, str(single), "1", "4", "--single"])
    assert result.returncode == 0, result.stderr[-3000:]
    two_ranks(str(whole), "1", "4")
    two_ranks(str(cut), "1", "2")  # stops after step 2 with a sharded checkpoint
    assert sorted(p.name for p in (cut / "checkpoint").iterdir() if p.suffix == ".distcp") == [
        "__0_0.distcp", "__1_0.distcp"
    ]  # fmt: skip
    two_ranks(str(cut), "3", "4")  # resumes from it

    report = json.loads((whole / "report-1-4.json").read_text())
    assert report["dtensor_params"] and report["guard_refused"] and report["chunk_tokens"] == 0
    reference = json.loads((single / "report-1-4.json").read_text())
    assert reference["chunk_tokens"] == 256 and not reference["guard_refused"]
    assert report["losses"] == pytest.approx(reference["losses"], abs=1e-5)
    resumed = json.loads((cut / "report-1-2.json").read_text())["losses"]
    resumed += json.loads((cut / "report-3-4.json").read_text())["losses"]
    assert resumed == pytest.approx(report["losses"], abs=1e-6)

    want = weights(single / "final")
    for run in (whole, cut):
        got = weights(run / "final")
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=2e-5, rtol=0, msg=f"{run.name}: {name}")
