"""ECO's corruption functions now live with the other inference-time interventions (``spul.interventions.corruption``)."""

from spul.interventions.corruption import CORRUPTIONS, USES_SIGMA, Corruption, CorruptionFn, register_corruption

__all__ = ["CORRUPTIONS", "USES_SIGMA", "Corruption", "CorruptionFn", "register_corruption"]
