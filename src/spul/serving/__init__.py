"""Serving unlearned models: one frozen base model, many artifacts, policies bound to API keys."""
