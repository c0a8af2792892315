"""The CPU safety testbed: a small seed model with a (shallow) safety alignment to lose, built offline, and the demo
that shows what fine-tuning does to it with and without a preview or a guard."""
