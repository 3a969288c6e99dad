"""The user's own data files for the recipes: load, check, split, and encode labels, refusing bad input early.

What every recipe needs from ``--train_file/--validation_file/--test_file`` (csv, tsv, json/jsonl, parquet) or a
Hub ``--dataset_name``: `files` reads them into a `datasets.DatasetDict`, checks the columns and splits one file
into train/validation/test by rows; `labels` finds the task (single-label, multi-label, regression) and the label
space (``label2id`` / ``id2label`` for the model config) and encodes the labels. Every check raises a `ValueError`
that names the value and the fix, before the recipe writes anything.

Names import lazily: ``import hf_transfer_meta.data`` does not import `datasets`.
"""

from .._lazy import lazy_exports

EXPORTS = {
    **dict.fromkeys(
        [
            "FILE_FORMATS",
            "check_columns",
            "load_data_files",
            "load_hub_dataset",
            "resolve_data_files",
            "split_by_rows",
        ],
        ".files",
    ),
    **dict.fromkeys(["PROBLEM_TYPES", "LabelSpace", "encode_labels", "infer_label_space"], ".labels"),
}
__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)
