"""Evaluation: utility (GSM8K, SAMSum), safety (RSR, JSR) with pluggable judges, and per-position KL drift."""
