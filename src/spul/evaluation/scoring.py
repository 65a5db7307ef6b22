"""Candidate scoring is a model pass and lives in ``spul.models.scoring``; this name stays importable."""

from spul.models.scoring import PromptProvider, Scores, score_prompts, score_texts

__all__ = ["PromptProvider", "Scores", "score_prompts", "score_texts"]
