"""spul: inference-time unlearning for large language models, without touching the weights."""

__version__ = "0.1.0"
