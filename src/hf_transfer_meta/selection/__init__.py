"""Choosing the pretrained model before fine-tuning: transferability scores (LogME, a cross-validated linear probe)
of candidate checkpoints on the user's data, from frozen features alone."""

from .._lazy import lazy_exports

EXPORTS = {
    **dict.fromkeys(["LogMEResult", "log_evidence", "logme"], ".evidence"),
    **dict.fromkeys(["CandidateScore", "SelectionResult", "cross_validated_probe", "select_pretrained"], ".select"),
}
__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
