"""The vLLM backend's decisions, against a stand-in `vllm` module: which model and adapter each request names, how
many engines an evaluation builds, and where generation stops. The engine itself needs a GPU (scripts/gpu_check.sh).
"""

from __future__ import annotations

import contextlib
import json
import sys
import types
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from lookahead.evaluation import runner
from lookahead.evaluation.evaluator import Evaluator
from lookahead.evaluation.loading import LoadedModel
from tests.conftest import load_tokenizer

BASE_IDS, ADAPTER_IDS = [11, 12, 13], [21, 22, 23]


class FakeVllm:
    """A TEST DOUBLE of the `vllm` package: records every engine built and every request; answers BASE_IDS without
    a LoRA request and ADAPTER_IDS with one, each followed by the first stop id and a token after it."""

    def __init__(self):
        self.engines: list[dict] = []
        self.requests: list[dict] = []
        double = self

        class LLM:
            def __init__(self, **kwargs):
                double.engines.append(kwargs)

            def generate(self, prompts, params, lora_request=None):
                double.requests.append({"n": len(prompts), "lora": lora_request, "params": params.kwargs})
                ids = ADAPTER_IDS if lora_request is not None else BASE_IDS
                stop = params.kwargs["stop_token_ids"][0]
                return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[*ids, stop, 99])]) for _ in prompts]

        class SamplingParams:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

        class LoRARequest:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

        self.module = types.ModuleType("vllm")
        self.module.LLM, self.module.SamplingParams = LLM, SamplingParams
        lora = types.ModuleType("vllm.lora")
        request = types.ModuleType("vllm.lora.request")
        request.LoRARequest = LoRARequest
        lora.request = request
        self.modules = {"vllm": self.module, "vllm.lora": lora, "vllm.lora.request": request}


@pytest.fixture
def fake_vllm(monkeypatch):
    double = FakeVllm()
    for name, module in double.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return double


class PeftStandIn:
    """What the evaluator touches of a PeftModel when vLLM generates: its generation config and disable_adapter()."""

    def __init__(self, eos: int):
        self.generation_config = SimpleNamespace(eos_token_id=eos)
        self.adapter_on = True

    @contextlib.contextmanager
    def disable_adapter(self):
        self.adapter_on = False
        try:
            yield
        finally:
            self.adapter_on = True


def lora_run(tmp_path) -> LoadedModel:
    tokenizer = load_tokenizer("chatml-style")
    adapter = tmp_path / "final"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    return LoadedModel(
        model=PeftStandIn(tokenizer.eos_token_id), tokenizer=tokenizer, name="run", is_adapter=True,
        model_cfg=OmegaConf.create({"name": "tiny"}), model_path=str(tmp_path / "base"), seed=0,
        adapter_dir=str(adapter),
    )  # fmt: skip


def eval_cfg(tmp_path):
    return OmegaConf.create(
        {
            "suite": ["probe"],
            "probe": {"max_new_tokens": 5},
            "max_seq_length": 64,
            "system_policy": "merge",
            "generation": {"backend": "vllm", "batch_size": 2},
            "seed_cache_dir": str(tmp_path / "seed-cache"),
        }
    )


def probe(ev: Evaluator) -> dict:
    return {"ids": ev.generate_ids([ev.prompt_ids("1+1?", None)] * 3, 5, "probe")}


class TestVllmSeed:
    def test_the_seed_of_a_lora_run_is_served_without_the_adapter_from_the_run_engine(
        self, tmp_path, fake_vllm, monkeypatch
    ):
        """The bug: the seed row passed the adapter to vLLM, so it scored the fine-tuned model and cached that."""
        monkeypatch.setitem(runner.SUITES, "probe", probe)
        cfg, loaded = eval_cfg(tmp_path), lora_run(tmp_path)
        run = runner.run_suites(Evaluator(cfg, loaded, tmp_path, None, True), ["probe"])
        seed = runner.evaluate_seed(cfg, loaded, tmp_path / "seed", None, True)

        assert run["probe"]["ids"] == [ADAPTER_IDS] * 3  # cut at the stop id
        assert seed["probe"]["ids"] == [BASE_IDS] * 3
        cached = json.loads(next((tmp_path / "seed-cache").glob("probe-*.json")).read_text())
        assert cached["ids"] == [BASE_IDS] * 3
        assert [r["lora"] is not None for r in fake_vllm.requests] == [True, False]
        assert len(fake_vllm.engines) == 1 and fake_vllm.engines[0]["enable_lora"] is True
        assert fake_vllm.engines[0]["model"] == str(tmp_path / "base")

    def test_generation_stops_at_every_end_of_turn_id(self, tmp_path, fake_vllm):
        loaded = lora_run(tmp_path)
        loaded.model.generation_config.eos_token_id = [loaded.tokenizer.eos_token_id, 3]
        Evaluator(eval_cfg(tmp_path), loaded, tmp_path, None, True).generate_ids([[1, 2]], 5, "x")
        assert fake_vllm.requests[0]["params"]["stop_token_ids"] == sorted({loaded.tokenizer.eos_token_id, 3})

    def test_a_full_model_and_its_seed_get_one_engine_at_a_time(self, tmp_path, fake_vllm):
        loaded = lora_run(tmp_path)
        engines = loaded.engines
        engines.generate("/run/final", None, [[1]], 4, {2})
        engines.generate("/run/final", None, [[1]], 4, {2})
        assert [e["model"] for e in fake_vllm.engines] == ["/run/final"]
        engines.generate("/seed", None, [[1]], 4, {2})
        assert [e["model"] for e in fake_vllm.engines] == ["/run/final", "/seed"]
        assert engines._key == ("/seed", None)
