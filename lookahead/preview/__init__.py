"""Preview strategies: how the start of the answer is shown inside the user turn (LookAhead Tuning)."""

from lookahead.preview.base import DEFAULT_CONNECTOR, PreviewResult, PreviewStrategy, preview_messages
from lookahead.preview.real_prefix import RealPrefix
from lookahead.preview.vanilla import Vanilla
from lookahead.preview.virtual_prefix import VirtualPrefix

__all__ = [
    "DEFAULT_CONNECTOR",
    "PreviewResult",
    "PreviewStrategy",
    "RealPrefix",
    "Vanilla",
    "VirtualPrefix",
    "preview_messages",
]
