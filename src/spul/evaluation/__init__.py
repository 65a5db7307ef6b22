"""Evaluation: score answers by likelihood, compute the paper's metrics, write reports."""
