"""Model cards and Hub publishing that say exactly what a run did.

The path of data: the trainer records the run (``record.py``: command line, versions, commit, hyper-parameters,
the strategy or meta-training summary; ``drift.py``: how far each depth moved), ``results.py`` turns its metrics into
``model-index`` entries, ``plots.py`` draws its figures, ``card.py`` builds the card from the records alone (so
``hf-transfer-meta card RUN_DIR`` writes the same card again), ``hub.py`` says before the first step why a push could
not work, and ``hooks.py`` wires it all into the trainers. Names import lazily.
"""

from .._lazy import lazy_exports

EXPORTS = {
    **dict.fromkeys(["CARD_FILE", "build_card", "write_card"], ".card"),
    **dict.fromkeys(["START_WEIGHTS_FILE", "measure_drift"], ".drift"),
    **dict.fromkeys(["PushToHubError", "TRAINER_IGNORE_PATTERNS", "check_push_ready", "uploaded_files"], ".hub"),
    **dict.fromkeys(["RunCardMixin", "resolve_base_model"], ".hooks"),
    "draw_figures": ".plots",
    **dict.fromkeys(
        ["DRIFT_FILE", "META_SUMMARY_FILE", "RUN_INFO_FILE", "TRANSFER_SUMMARY_FILE", "RunRecord", "load_run",
         "redact"],
        ".record",
    ),
    **dict.fromkeys(["eval_results", "parse_metric_key"], ".results"),
}  # fmt: skip
__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
