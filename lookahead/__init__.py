"""lookahead: fine-tune chat LLMs with LookAhead Tuning (arXiv 2503.19041) on the Hugging Face Trainer."""

__version__ = "0.1.0"
