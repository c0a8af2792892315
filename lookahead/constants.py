"""Constants shared across the package."""

# Label value ignored by torch's cross-entropy and by the HF Trainer's token count.
IGNORE_INDEX = -100

SYSTEM = "system"
USER = "user"
ASSISTANT = "assistant"
ROLES = (SYSTEM, USER, ASSISTANT)
