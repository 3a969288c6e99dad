"""Every card in `model_cards/` (cards of real runs): it parses back with `ModelCard.load` into the eval results of
that run's `all_results.json`, names its base model, embeds only images that exist, and names its command and
commit; the index lists every folder."""

import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_transfer_meta.cards import parse_metric_key

FOLDER = Path(__file__).resolve().parents[2] / "model_cards"
RUNS = sorted(p.parent for p in FOLDER.glob("*/README.md")) if FOLDER.is_dir() else []


def test_there_are_cards_and_an_index():
    assert FOLDER.is_dir() and RUNS, "model_cards/ must hold the cards of real runs"
    index = (FOLDER / "README.md").read_text()
    for run in RUNS:
        assert f"({run.name}/README.md)" in index, f"{run.name} is not in model_cards/README.md"


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_card(run):
    card = ModelCard.load(run / "README.md")
    results = json.loads((run / "all_results.json").read_text())
    info = json.loads((run / "run_info.json").read_text())

    evals = {r.metric_name: r.metric_value for r in card.data.eval_results or []}
    expected = {k: v for k, v in results.items() if parse_metric_key(k) and isinstance(v, (int, float))}
    assert evals == expected and evals, run.name

    base = info["card"]["base_model"]
    assert base.get("id") or base.get("name"), "the run recorded no base model"
    if base.get("id"):
        assert card.data.base_model == base["id"]
    assert (base.get("id") or base["name"]) in card.text

    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", card.text)
    assert images, "a card of a real run embeds its plots"
    for image in images:
        path = run / image
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image

    assert "```bash\n" in card.text and info["command"]
    assert info["git"] and re.fullmatch(r"[0-9a-f]{40}", info["git"]["commit"])
    assert f"Git commit of the code: `{info['git']['commit']}`" in card.text
