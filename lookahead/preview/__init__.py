"""Preview strategies: how the start of the answer is shown inside the user turn (LookAhead Tuning)."""

from lookahead.preview.base import PreviewResult, PreviewStrategy, preview_messages
from lookahead.preview.real_prefix import RealPrefix
from lookahead.preview.vanilla import Vanilla
from lookahead.preview.virtual_prefix import VirtualPrefix

__all__ = [
    "PreviewResult",
    "PreviewStrategy",
    "RealPrefix",
    "Vanilla",
    "VirtualPrefix",
    "preview_by_name",
    "preview_messages",
]


def preview_by_name(name: str, m: int = 6, prefix: str | None = None, connector: str | None = None) -> PreviewStrategy:
    """A strategy from its name, for methods that combine an objective with a preview (`method.preview=...`).

    `prefix` and `connector` left as None keep the strategy's own defaults.
    """
    from lookahead.errors import ConfigError

    texts = {k: v for k, v in {"prefix": prefix, "connector": connector}.items() if v is not None}
    if name == "vanilla":
        return Vanilla()
    if name == "real_prefix":
        return RealPrefix(m=m, **{k: v for k, v in texts.items() if k == "connector"})
    if name == "virtual_prefix":
        return VirtualPrefix(**texts)
    raise ConfigError(f"method.preview={name!r}: expected vanilla, real_prefix or virtual_prefix")
