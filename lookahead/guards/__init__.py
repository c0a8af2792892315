"""Guards: alignment-direction methods that combine with any preview and objective (Safe LoRA, AsFT)."""

from lookahead.guards.asft import AsFT
from lookahead.guards.base import Guard, NoGuard
from lookahead.guards.safe_lora import SafeLoRA

__all__ = ["AsFT", "Guard", "NoGuard", "SafeLoRA"]
