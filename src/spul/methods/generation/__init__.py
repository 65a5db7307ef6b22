"""Training on generative examples (qa answers of any length): the familiarisation / retain-only fine-tunes and
SPUL toward refusals. The examples are ``EncodedExample``s from ``spul.data.generation``; the trainers, collator and
answer-position losses are the ones in ``spul.methods.training`` (every answer token carries the loss)."""
