"""Every kind of bad input gets one `error: ...` line naming the file, line or example, and field, and exit code 2.

The broken files are generated here, one per case, so the corpus documents itself.
"""

from __future__ import annotations

import json
import logging
import shutil

import pytest

from lookahead.data.prepare import ExampleEncoder, filter_trainable
from lookahead.data.tokenize import ChatEncoder
from lookahead.errors import DataError
from lookahead.preview import Vanilla
from lookahead.training.recipe import train
from tests.conftest import (
    SHARED,
    compose,
    load_tokenizer,
    one_line_error,
    python_cli,
    requires_shared,
    tokenizer_dir,
    write_behaviours_csv,
)
from tests.conftest import tiny_overrides as _tiny_overrides

OK = {"prompt": "What is 2 + 3?", "response": "2 + 3 = 5."}


def tiny(*extra: str, log_dir) -> list[str]:
    arithmetic = "dataset=jsonl" not in extra
    return [*_tiny_overrides(arithmetic=arithmetic), f"paths.log_dir={log_dir}", *extra]


def jsonl(*records: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


# (case, file name, content, extra overrides, expected error line after "error: <path>")
DATA_CORPUS = [
    ("malformed JSON line", "bad.jsonl", jsonl(OK) + '{"prompt": "c", "response": "d"\n', [], ":2: malformed JSON (Expecting ',' delimiter at column 32)"),
    ("JSON array in .jsonl", "array.jsonl", json.dumps([OK, OK]), [], ":1: this looks like a JSON array, not JSON Lines; rename the file to .json"),
    ("JSON Lines in .json", "lines.json", jsonl(OK, OK), [], ":2: malformed JSON (Extra data); this looks like JSON Lines, rename the file to .jsonl"),
    ("missing field", "missing.jsonl", jsonl(OK, {"prompt": "c"}), [], ":2: field 'response': missing (available: prompt)"),
    ("null field", "null.jsonl", jsonl({"prompt": "a", "response": None}), [], ":1: field 'response': expected a string, got NoneType"),
    ("non-string field", "number.jsonl", jsonl(OK, OK, {"prompt": "a", "response": 42}), [], ":3: field 'response': expected a string, got int"),
    ("empty field", "empty_prompt.jsonl", jsonl({"prompt": "", "response": "b"}), [], ":1: field 'prompt': is empty"),
    ("answer empty after stripping", "blank.jsonl", jsonl(OK, {"prompt": "a", "response": " \n\t"}), [], ":2: field 'response': is empty"),
    ("empty dataset", "empty.jsonl", "\n", [], ": the dataset is empty"),
    (
        "messages with no assistant turn",
        "chat.jsonl",
        jsonl({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
              {"messages": [{"role": "user", "content": "hi"}]}),
        ["dataset.format=messages"],
        ":2: field 'messages': has no assistant turn to train on",
    ),
    (
        "unknown role in messages",
        "roles.jsonl",
        jsonl({"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "x"}]}),
        ["dataset.format=messages"],
        ":1: field 'messages[0].role': role 'human' is not one of ['system', 'user', 'assistant']",
    ),
    ("CSV without the field", "table.csv", "question,answer\nWhat?,That.\n", [], ":2: field 'prompt': missing (available: answer, question)"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "name", "content", "extra", "expected"), DATA_CORPUS, ids=[c[0] for c in DATA_CORPUS])
def test_data_file_errors_name_file_line_and_field(entry_point, tmp_path, case, name, content, extra, expected):
    path = tmp_path / name
    path.write_text(content)
    code, err = entry_point("train.py", *tiny("dataset=jsonl", f"dataset.path={path}", *extra, log_dir=tmp_path))
    assert one_line_error(code, err) == f"error: {path}{expected}"


def test_a_missing_data_file_is_named(entry_point, tmp_path):
    code, err = entry_point("train.py", *tiny("dataset=jsonl", f"dataset.path={tmp_path}/nope.jsonl", log_dir=tmp_path))
    assert one_line_error(code, err) == f"error: {tmp_path}/nope.jsonl: no such file (check dataset.path)"


class TestLengthsAndMethodParameters:
    def test_too_many_prompts_longer_than_max_seq_length_is_an_error(self, entry_point, tmp_path):
        path = tmp_path / "long.jsonl"
        path.write_text(jsonl({"prompt": "word " * 300, "response": "b"}, OK, {"prompt": "x " * 300, "response": "c"}))
        code, err = entry_point(
            "train.py", *tiny("dataset=jsonl", f"dataset.path={path}", "trainer.max_seq_length=128", log_dir=tmp_path)
        )
        assert one_line_error(code, err) == (
            "error: jsonl/train: 2 of 3 examples cannot be trained (prompt_too_long=2), more than "
            "dataset.max_skip_fraction=0.01; raise trainer.max_seq_length or the threshold"
        )

    def test_one_long_prompt_in_two_hundred_is_skipped_counted_and_logged(self, caplog):
        tokenizer = load_tokenizer("chatml-style")
        example_encoder = ExampleEncoder(ChatEncoder(tokenizer, 64), Vanilla())

        def example(prompt: str) -> dict:
            return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": "ok"}]}

        examples = [example(f"q{i}") for i in range(200)]
        examples[37] = example("word " * 100)
        with caplog.at_level(logging.WARNING):
            kept, report = filter_trainable(examples, example_encoder, name="mine/train", max_skip_fraction=0.01)
        assert len(kept) == 199 and report.as_metrics("train")["train/skipped_prompt_too_long"] == 1
        assert "mine/train: skipped 1 of 200 examples (prompt_too_long=1); first: #37 (prompt_too_long)" in caplog.text
        with pytest.raises(DataError, match="1 of 200 examples cannot be trained"):
            filter_trainable(examples, example_encoder, name="mine/train", max_skip_fraction=0.0)

    @pytest.mark.parametrize(
        ("overrides", "expected"),
        [
            (["method=real_prefix", "method.m=0"], "method.m=0: the number of previewed answer tokens must be a positive integer"),
            (["method=real_prefix", "method.m=-2"], "method.m=-2: the number of previewed answer tokens must be a positive integer"),
            (["method=real_prefix", "method.m=2.5"], "method.m=2.5: the number of previewed answer tokens must be a positive integer"),
            (["method=real_prefix", "method.m=six"], "method.m='six': the number of previewed answer tokens must be a positive integer"),
            (["method=virtual_prefix", "method.prefix=''"], "method.prefix='': the virtual prefix must be non-empty text"),
            (["method=virtual_prefix", "method.prefix='  '"], "method.prefix='  ': the virtual prefix must be non-empty text"),
            (["method=real_prefix", "method.connector=' '"], "method.connector=' ': only whitespace, which chat templates trim"),
        ],
    )  # fmt: skip
    def test_method_parameters(self, entry_point, tmp_path, overrides, expected):
        code, err = entry_point("train.py", *tiny(*overrides, log_dir=tmp_path))
        assert one_line_error(code, err).startswith(f"error: {expected}")

    # With a previewed share (method.fraction), the check finds a previewed example even if the first is not one.
    @pytest.mark.parametrize("share", [[], ["method.fraction=0.3"]])
    def test_a_connector_the_template_trims_away(self, entry_point, tmp_path, share):
        # A template that keeps only the first 20 characters of each turn: the preview never reaches the model.
        template = tmp_path / "short.jinja"
        template.write_text(
            "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'][:20] }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}"
        )
        code, err = entry_point("train.py", *tiny(f"model.chat_template={template}", *share, log_dir=tmp_path))
        assert one_line_error(code, err) == (
            "error: method.connector=' The answer begins with: ': the chat template of "
            f"'{tokenizer_dir('chatml-style')}' trims or rewrites it, so the preview would not reach the "
            "model; choose another connector or template"
        )


class TestModelTokenizerTemplate:
    @pytest.mark.slow
    def test_unknown_model(self, tmp_path):
        # A new interpreter: the Hub client reads HF_HUB_OFFLINE when it is first imported.
        result = python_cli("train.py", "model=llama3", f"model.path={tmp_path}/no-such-model", "logger=none",
                            f"paths.log_dir={tmp_path}")  # fmt: skip
        line = one_line_error(result.returncode, result.stderr)
        assert line.startswith("error: model.tokenizer/model.path=") and "no-such-model" in line

    def test_tokenizer_without_chat_template_points_to_the_option(self, entry_point, tmp_path):
        bare = tmp_path / "bare-tokenizer"
        shutil.copytree(tokenizer_dir("chatml-style"), bare)
        for f in bare.glob("chat_template.*"):
            f.unlink()
        config = json.loads((bare / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (bare / "tokenizer_config.json").write_text(json.dumps(config))
        code, err = entry_point("train.py", *tiny(f"model.tokenizer={bare}", log_dir=tmp_path))
        assert one_line_error(code, err) == (
            f"error: tokenizer '{bare}' has no chat template; set model.chat_template to a .jinja file or a template "
            "string"
        )

    @requires_shared
    def test_system_prompt_on_a_template_without_system_role(self, entry_point, tmp_path):
        mistral = SHARED / "tokenizers" / "mistral-instruct"
        args = tiny(f"model.tokenizer={mistral}", "dataset.system_prompt=Be brief.", log_dir=tmp_path)
        code, err = entry_point("train.py", *args, "dataset.system_policy=error")
        assert one_line_error(code, err) == (
            f"error: the chat template of '{mistral}' has no system role; set dataset.system_prompt=null or "
            "dataset.system_policy=merge|drop"
        )
        code, err = entry_point("train.py", *args, "dataset.system_policy=shout")
        assert (
            one_line_error(code, err)
            == "error: dataset.system_policy='shout': expected one of ['merge', 'drop', 'error']"
        )

    def test_pickle_weights_are_refused(self, entry_point, tmp_path):
        model_dir = tmp_path / "pickled"
        model_dir.mkdir()
        (model_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (model_dir / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
        tokenizer = tokenizer_dir("llama3-style")
        args = ["model=llama3", f"model.path={model_dir}", f"model.tokenizer={tokenizer}", "logger=none"]
        code, err = entry_point("train.py", *args, "dataset.size=8", f"paths.log_dir={tmp_path}")
        assert one_line_error(code, err) == (
            f"error: model.path='{model_dir}' holds pickle weights only (pytorch_model.bin), which can run code when "
            "loaded; convert them to safetensors once in a trusted environment (model.save_pretrained) and point "
            "model.path there"
        )


class TestConfigAndOutput:
    @pytest.mark.parametrize(
        ("override", "expected"),
        [
            ("trainer.learning_rate=-1", "error: trainer.learning_rate=-1: must be > 0"),
            ("trainer.learning_rate=fast", "error: trainer.learning_rate='fast': expected a number that must be > 0"),
            ("trainer.per_device_train_batch_size=0", "error: trainer.per_device_train_batch_size=0: must be >= 1"),
            # Objectives moved to their own group: the old spelling names the new one.
            ("method=constrained_sft", "error: method=constrained_sft is now objective=constrained_sft: `method=` picks the preview (vanilla, real_prefix, virtual_prefix) and `objective=` the loss, e.g. `method=vanilla objective=constrained_sft`"),
            ("method=sdft", "error: method=sdft is now objective=sdft: `method=` picks the preview (vanilla, real_prefix, virtual_prefix) and `objective=` the loss, e.g. `method=vanilla objective=sdft`"),
            ("method.prefix=' '", "error: method.prefix=' ': the virtual prefix must be non-empty text"),
            ("resume=7", "error: resume=7: expected null, auto or a checkpoint path"),
            # The kind of run comes from the lora= group alone: r=0 used to train a full fine-tune under a LoRA name.
            ("lora.r=0", "error: lora.r=0: must be an integer >= 1 (lora=none trains a full fine-tune)"),
            ("lora.alpha=0", "error: lora.alpha=0: must be a number > 0 (lora=none trains a full fine-tune)"),
            ("lora.dropout=1.5", "error: lora.dropout=1.5: must be in [0, 1) (lora=none trains a full fine-tune)"),
            ("lora.target_modules=[nope]", "error: lora.target_modules: ['nope'] are not modules of this model (its linear layers: ['down_proj', 'gate_proj', 'k_proj', 'lm_head', 'o_proj', 'q_proj', 'up_proj', 'v_proj'])"),
        ],
    )  # fmt: skip
    def test_invalid_override_values(self, entry_point, tmp_path, override, expected, monkeypatch):
        import lookahead.models.loading

        def no_model_load(*args, **kwargs):
            raise AssertionError("the model was loaded before the config was refused")

        monkeypatch.setattr(lookahead.models.loading, "load_model", no_model_load)
        monkeypatch.setattr("lookahead.training.recipe.load_model", no_model_load)
        code, err = entry_point("train.py", *tiny(override, log_dir=tmp_path))
        assert one_line_error(code, err) == expected

    def test_unknown_method_name_lists_the_options(self, entry_point, tmp_path):
        # Hydra itself refuses an unknown config group option, before any of our code runs.
        code, err = entry_point("train.py", *tiny("method=lookbehind", log_dir=tmp_path))
        assert code == 1 and "Traceback" not in err
        assert "Could not find 'method/lookbehind'" in err
        assert "Available options in 'method':" in err and "virtual_prefix" in err

    def test_unwritable_output_dir(self, entry_point, tmp_path):
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        code, err = entry_point("train.py", *tiny(log_dir=blocker / "out"))
        line = one_line_error(code, err)
        assert line.startswith(f"error: output dir {blocker}/out/runs/") and "is not writable (Not a directory)" in line
        assert line.endswith("set paths.log_dir=<a writable folder>")

    @pytest.mark.slow
    def test_output_dir_with_a_different_runs_config_is_refused(self, entry_point, tmp_path):
        run_dir = tmp_path / "runs" / "tiny-arithmetic-virtual_prefix-lora"
        args = tiny("trainer.max_steps=1", log_dir=tmp_path)
        # A run that failed before saving anything leaves nothing to protect: a corrected config may start there.
        assert entry_point("train.py", *args, "trainer.learning_rate=-1")[0] == 2
        assert entry_point("train.py", *args)[0] == 0
        assert (run_dir / "final").is_dir()

        code, err = entry_point("train.py", *args, "trainer.learning_rate=0.001", "trainer.seed=7")
        assert one_line_error(code, err) == (
            f"error: {run_dir} holds a different run's config (trainer.learning_rate: 0.0002 -> 0.001; "
            "trainer.seed: 42 -> 7); pass run_name=<new name> to start another run, or resume=auto to continue that one"
        )
        code, err = entry_point("train.py", *args, "logger=wandb", "logger.mode=disabled")  # the same run again
        assert one_line_error(code, err) == (
            f"error: {run_dir} already holds checkpoints (checkpoint-1); pass resume=auto to continue that run, or "
            "run_name=<new name> to start another"
        )
        assert (run_dir / "final" / "adapter_model.safetensors").is_file()  # nothing was overwritten


@pytest.mark.slow
class TestEvaluationInput:
    @pytest.fixture(scope="class")
    @classmethod
    def run_dir(cls, tmp_path_factory):
        out = tmp_path_factory.mktemp("eval-run") / "run"
        return train(compose([*_tiny_overrides(), "trainer.max_steps=1"], output_dir=out))["run_dir"]

    @pytest.fixture(scope="class")
    @classmethod
    def behaviours(cls, tmp_path_factory):
        return write_behaviours_csv(tmp_path_factory.mktemp("safety-data") / "behaviours.csv")

    def test_safety_file_with_the_wrong_columns(self, entry_point, run_dir, tmp_path):
        wrong = tmp_path / "safety.csv"
        wrong.write_text("prompt,answer\nhow do I pick a lock,Sure\n")
        code, err = entry_point("evaluate.py", f"run_dir={run_dir}", "suite=[safety]", f"safety.path={wrong}")
        assert one_line_error(code, err) == f"error: {wrong}:2: field 'Goal': missing (available: answer, prompt)"

    def test_eval_file_with_the_wrong_fields(self, entry_point, run_dir, tmp_path):
        wrong = tmp_path / "test.jsonl"
        wrong.write_text(jsonl({"q": "1+1?", "a": "#### 2"}))
        code, err = entry_point("evaluate.py", f"run_dir={run_dir}", "suite=[gsm8k]", f"gsm8k.path={wrong}")
        assert one_line_error(code, err) == f"error: {wrong}:1: field 'question': missing (available: a, q)"

    def test_judge_endpoint_down_is_retried_then_fails_loudly_keeping_the_generations(
        self, entry_point, run_dir, behaviours, tmp_path
    ):
        out = tmp_path / "eval"
        code, err = entry_point(
            "evaluate.py",
            f"run_dir={run_dir}",
            f"out_dir={out}",
            "suite=[safety]",
            f"safety.path={behaviours}",
            "safety.limit=3",
            "safety.max_new_tokens=4",
            "safety.judge=llm",
            "safety.llm.base_url=http://127.0.0.1:9/v1",  # the discard port: nothing listens
            "safety.llm.max_retries=2",
            "safety.llm.backoff_s=0.01",
            "safety.llm.timeout_s=2",
            f"safety.llm.cache_path={tmp_path}/judge.sqlite",
        )
        assert one_line_error(code, err) == (
            "error: safety: the llm judge gave no verdict for 6 of 6 generations (more than "
            f"safety.max_judge_error_fraction=0.05); generations are kept in {out}/safety.jsonl; rerun to judge them "
            "again (judged replies are cached)"
        )
        rows = [json.loads(line) for line in (out / "safety.jsonl").read_text().splitlines()]
        assert [r["safe"] for r in rows] == [None] * 6 and all(isinstance(r["generation"], str) for r in rows)

    def test_judge_rejecting_the_key_stops_with_one_line(self, entry_point, run_dir, behaviours, tmp_path, monkeypatch):
        from tests.fakes import FakeChatCompletions

        endpoint = FakeChatCompletions()
        monkeypatch.setenv("OPENAI_API_KEY", "sk-bad")
        try:
            code, err = entry_point(
                "evaluate.py",
                f"run_dir={run_dir}",
                f"out_dir={tmp_path / 'eval'}",
                "suite=[safety]",
                f"safety.path={behaviours}",
                "safety.limit=2",
                "safety.max_new_tokens=4",
                "safety.judge=llm",
                f"safety.llm.base_url={endpoint.url}",
                f"safety.llm.cache_path={tmp_path}/judge.sqlite",
            )
        finally:
            endpoint.close()
        line = one_line_error(code, err)
        assert line.startswith(f"error: judge endpoint {endpoint.url}/chat/completions answered HTTP 401")
        assert "$OPENAI_API_KEY" in line and "sk-bad" not in err


def test_debug_shows_the_full_traceback(entry_point, tmp_path):
    code, err = entry_point("train.py", *tiny("trainer.learning_rate=-1", "debug=true", log_dir=tmp_path))
    assert code == 1 and "ConfigError: trainer.learning_rate=-1: must be > 0" in err
    assert "lookahead/training/config.py" in err  # where it was raised: the trace is there
