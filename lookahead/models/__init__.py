"""Models: loading (Hub, local, GGUF, tiny random), LoRA and QLoRA."""
