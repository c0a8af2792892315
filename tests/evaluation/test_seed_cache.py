"""The seed model's cached results are keyed by everything that decides them, the data file's content included."""

from __future__ import annotations

from types import SimpleNamespace

from omegaconf import OmegaConf

from lookahead.evaluation.runner import seed_cache_key


def safety_settings():
    """An evaluation config with the safety suite and the settings the key reads."""
    return OmegaConf.create(
        {
            "safety": {"path": None, "max_new_tokens": 8},
            "max_seq_length": 512,
            "system_policy": "merge",
            "generation": {"backend": "hf"},
        }
    )


def stub_tokenizer():
    return type("Tokenizer", (), {"chat_template": "{{ messages }}", "__len__": lambda self: 10})()


def test_a_data_file_rewritten_in_place_gets_a_new_seed_cache_key(tmp_path):
    data = tmp_path / "arithmetic_test.jsonl"
    data.write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    cfg = OmegaConf.create(
        {
            "gsm8k": {"path": str(data), "max_new_tokens": 8},
            "safety": {"path": None, "max_new_tokens": 8},
            "max_seq_length": 512,
            "system_policy": "merge",
            "generation": {"backend": "hf"},
        }
    )
    tokenizer = type("Tokenizer", (), {"chat_template": "{{ messages }}", "__len__": lambda self: 10})()
    loaded = SimpleNamespace(
        model_path="seed", model_cfg=OmegaConf.create({"name": "tiny"}), seed=0, tokenizer=tokenizer
    )
    first = seed_cache_key(cfg, loaded, "gsm8k")
    assert seed_cache_key(cfg, loaded, "gsm8k") == first  # stable
    assert seed_cache_key(cfg, loaded, "safety") != first
    data.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?", "answer": "#### 4"}\n')
    assert seed_cache_key(cfg, loaded, "gsm8k") != first  # same path and settings, other questions


def test_the_runs_training_seed_keys_a_tiny_random_seed_model_only():
    cfg, tokenizer = safety_settings(), stub_tokenizer()

    def key(model_cfg: dict, seed: int) -> str:
        loaded = SimpleNamespace(
            model_path="seed", model_cfg=OmegaConf.create(model_cfg), seed=seed, tokenizer=tokenizer
        )
        return seed_cache_key(cfg, loaded, "safety")

    pretrained = {"name": "smollm2", "path": "outputs/testbed/seed/model"}
    assert key(pretrained, 1) == key(pretrained, 2)  # the same weights whatever the fine-tune's seed
    tiny = {"name": "tiny", "tiny": {"hidden_size": 64}}
    assert key(tiny, 1) != key(tiny, 2)  # random weights drawn from the seed


def test_a_seed_model_rebuilt_at_the_same_path_gets_a_new_seed_cache_key(tmp_path):
    import os

    cfg, tokenizer = safety_settings(), stub_tokenizer()
    model_dir = tmp_path / "seed" / "model"
    model_dir.mkdir(parents=True)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(b"old weights")
    loaded = SimpleNamespace(
        model_path=str(model_dir), model_cfg=OmegaConf.create({"name": "smollm2"}), seed=0, tokenizer=tokenizer
    )
    first = seed_cache_key(cfg, loaded, "safety")
    (model_dir / "README.md").write_text("a card written later")  # not a weight file
    assert seed_cache_key(cfg, loaded, "safety") == first
    weights.write_bytes(b"new weights")  # `make seed` again: same size, same path
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000))
    assert seed_cache_key(cfg, loaded, "safety") != first
