"""Objectives: what the loss does with the answer tokens' log-probs (plain SFT, constrained SFT, SDFT).

Each is one class with the `lookahead.objectives.base.Objective` shape plus one YAML in `configs/objective/`.
"""

from lookahead.objectives.base import Objective, PrepareContext
from lookahead.objectives.constrained_sft import ConstrainedSFT
from lookahead.objectives.sdft import SDFT
from lookahead.objectives.sft import SFT

__all__ = ["SDFT", "SFT", "ConstrainedSFT", "Objective", "PrepareContext"]
