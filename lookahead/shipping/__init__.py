"""Shipping a trained run: the model card, the merged export, and the Hub upload."""
