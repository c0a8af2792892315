"""Data: sources -> conversations -> (preview) -> token ids and labels -> batches."""
