"""Attacks on an unlearned model: membership inference, re-phrased queries and relearning (``spul audit``)."""

from spul.evaluation.attacks.audit import AuditConfig, run_audit

__all__ = ["AuditConfig", "run_audit"]
