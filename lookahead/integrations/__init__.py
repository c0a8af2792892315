"""Where lookahead meets other trainers: a `datasets` transform in TRL's format, and files for LLaMA-Factory and
axolotl."""

from lookahead.integrations.preview_dataset import preview_dataset

__all__ = ["preview_dataset"]
