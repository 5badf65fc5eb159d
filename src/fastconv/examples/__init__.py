"""Runnable examples: ``python -m fastconv.examples.train_digits``."""
