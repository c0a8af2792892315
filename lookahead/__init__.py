"""lookahead: fine-tune chat LLMs with LookAhead Tuning (arXiv 2503.19041) on the Hugging Face Trainer."""

from omegaconf import OmegaConf

__version__ = "0.1.0"


def _share_tag(fraction: object) -> str:
    """The run-name suffix for `method.fraction`: none for the paper's 1.0, `-f0.9` for a 90% share (a bad value is
    kept as written; the preview rejects it with its own error)."""
    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and fraction >= 1:
        return ""
    return f"-f{fraction:g}" if isinstance(fraction, float) else f"-f{fraction}"


# Registered on import, so train.py, evaluate.py and the tests resolve run names alike.
OmegaConf.register_new_resolver("share_tag", _share_tag, replace=True)


def __getattr__(name: str):
    """`from lookahead import preview_dataset`, imported on first use (it pulls in `datasets` and Hydra)."""
    if name == "preview_dataset":
        from lookahead.integrations.preview_dataset import preview_dataset

        return preview_dataset
    raise AttributeError(f"module 'lookahead' has no attribute {name!r}")


__all__ = ["__version__", "preview_dataset"]
