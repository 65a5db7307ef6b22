"""Unlearning and fine-tuning methods. Each is a small ``Trainer`` subclass over shared, pure losses."""
