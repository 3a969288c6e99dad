"""Copy the cards of finished runs into `model_cards/<name>/` and write the index `model_cards/README.md`.

    python model_cards/collect.py NAME=RUN_DIR [NAME=RUN_DIR ...]

Each run's card is first written again from its records (`hf-transfer-meta card RUN_DIR`), then the card, its plots
and the records it is built from are copied (never the weights, never a `_`-prefixed private file). The index lists
every folder of `model_cards/`: the run, its command, its commit and its main results, read from the copied records.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from hf_transfer_meta.cards.card import _shown_command, write_card
from hf_transfer_meta.cards.results import parse_metric_key

HERE = Path(__file__).resolve().parent
RECORDS = ("README.md", "all_results.json", "run_info.json", "trainer_state.json", "transfer_summary.json",
           "meta_summary.json", "depth_drift.json")  # fmt: skip


def collect(name: str, run_dir: str) -> Path:
    write_card(run_dir)
    target = HERE / name
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for entry in sorted(os.listdir(run_dir)):
        if entry in RECORDS or (entry.endswith(".png") and not entry.startswith("_")):
            shutil.copy2(os.path.join(run_dir, entry), target / entry)
    return target


def _main_results(results: dict) -> str:
    shown = []
    for key in sorted(results):
        parsed = parse_metric_key(key)
        if parsed is None or parsed.ci95 or parsed.metric == "loss" or not isinstance(results[key], (int, float)):
            continue
        ci = results.get(f"{key}_ci95")
        shown.append(f"{key} {results[key]:.4g}" + (f" ± {ci:.2g}" if isinstance(ci, (int, float)) else ""))
    return "; ".join(shown[:6])


def write_index() -> None:
    rows = []
    for card in sorted(HERE.glob("*/README.md")):
        run = card.parent
        info = json.loads((run / "run_info.json").read_text())
        results = json.loads((run / "all_results.json").read_text())
        git = info.get("git") or {}
        commit = git.get("commit", "none")[:10] + (" (uncommitted changes)" if git.get("dirty") else "")
        command = _shown_command(info).replace("|", "\\|")
        rows.append(f"| [{run.name}]({run.name}/README.md) | `{command}` | `{commit}` | {_main_results(results)} |")
    text = (
        "# Model cards of real runs\n\n"
        "Each folder holds the card a run wrote (`README.md`), its plots and the records the card is built from "
        "(`run_info.json`: command, versions, commit, hyper-parameters; `all_results.json`; `trainer_state.json`; "
        "the strategy or meta-training summary; `depth_drift.json`), without the weights. "
        "`hf-transfer-meta card RUN_DIR` writes a card again from these records; "
        "`python model_cards/collect.py NAME=RUN_DIR ...` copies runs here and rewrites this index; "
        "`bash model_cards/make_cards.sh` makes every run below again (about 7 minutes on 2 CPU cores) and collects "
        'it. A commit marked "uncommitted changes" ran from a working tree with changes to tracked files. '
        "`tests/cards/test_model_cards_folder.py` checks every card against its run's `all_results.json`.\n\n"
        "| run | command | commit | results |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    (HERE / "README.md").write_text(text)


def main(argv: list[str]) -> int:
    for pair in argv:
        name, sep, run_dir = pair.partition("=")
        if not sep or not os.path.isdir(run_dir):
            print(f"error: {pair!r}: pass NAME=RUN_DIR with an existing run folder.", file=sys.stderr)
            return 2
        print(collect(name, run_dir))
    write_index()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
