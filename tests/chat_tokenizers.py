"""Small chat tokenizers built at test time, so the masking, preview, bad-input and training tests run without
../shared. A byte-level BPE is trained with `tokenizers` on a few KB of generated text and saved with a chat template:

- `llama3`: a Llama-3-style template that trims each turn and writes the BOS itself, while the tokenizer also adds a
  BOS (the double-BOS trap), with a separate end-of-turn token and no pad token;
- `chatml`: a ChatML template (Qwen, SmolLM2) with a default system turn and pad == eos.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from lookahead.data.arithmetic import generate_arithmetic

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
STYLES = {
    "llama3": {
        "special": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "bos": "<|begin_of_text|>",
        "eos": "<|eot_id|>",
        "pad": None,
        "template": LLAMA3_TEMPLATE,
        "add_bos": True,
    },
    "chatml": {
        "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "bos": None,
        "eos": "<|im_end|>",
        "pad": "<|im_end|>",
        "template": CHATML_TEMPLATE,
        "add_bos": False,
    },
}


def corpus() -> list[str]:
    """A few KB of text like the tests' data: arithmetic problems and answers, refusals, everyday phrases."""
    lines = []
    for example in generate_arithmetic(150, seed=7):
        lines += [example["question"], example["answer"]]
    lines += [
        "The answer begins with: Let's solve this problem.",
        "I'm sorry, but I cannot help with that. As an AI, I must decline this request.",
        "Hello! How can I help you today? Hi there friend, hello to you.",
        "You are a helpful assistant. Be brief. Summarize the dialogue. Count one two three four five six.",
        "A: lunch at noon? B: sure. They have lunch at noon.",
    ] * 4
    return lines


def build(style: str, out_dir: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    spec = STYLES[style]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=spec["special"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer)
    if spec["add_bos"]:
        bos = spec["bos"]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=spec["bos"],
        eos_token=spec["eos"],
        pad_token=spec["pad"],
        chat_template=spec["template"],
        model_max_length=4096,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
    (out_dir / "SOURCE.txt").write_text(f"built at test time by tests/chat_tokenizers.py ({style} style)\n")
    return out_dir


@functools.cache
def built_tokenizer_dir(style: str = "chatml") -> Path:
    """The folder of a test-time tokenizer, built once per process (well under a second)."""
    root = Path(tempfile.mkdtemp(prefix="lookahead-test-tokenizers-"))
    return build(style, root / style)
