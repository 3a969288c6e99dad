"""The demo (`make demo` runs `hf-transfer-meta demo`) leaves a complete model card with its plots in every run
folder it keeps; here on a cut-down `--quick` run."""

import json
import re

from huggingface_hub import ModelCard

from hf_transfer_meta import demo

PNG = b"\x89PNG\r\n\x1a\n"


def _images(card: ModelCard) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", card.text)


def test_demo_writes_cards_with_plots(tmp_path):
    out = tmp_path / "demo"
    demo.main(["--output_dir", str(out), "--quick", "--disable_tqdm", "--tasks", "new_classes", "--strategies",
               "full_ft", "lp_ft", "--meta_methods", "protonet", "--meta_shots", "1", "--sinusoid_steps", "10"])  # fmt: skip

    transfer = sorted((out / "transfer" / "new_classes").glob("*/seed0/*/README.md"))
    meta = sorted((out / "meta").glob("**/README.md"))
    assert len(transfer) == 2 and len(meta) == 2
    for path in transfer + meta:
        run = path.parent
        card = ModelCard.load(path)
        results = json.loads((run / "all_results.json").read_text())
        values = {r.metric_name: r.metric_value for r in card.data.eval_results}
        assert values and all(values[k] == results[k] for k in values)
        assert "hf-transfer-meta" in card.data.tags
        images = _images(card)
        assert "plot_losses.png" in images
        for image in images:
            assert (run / image).read_bytes()[:8] == PNG
        assert not any(n.name.startswith("_") and n.suffix == ".tmp" for n in run.iterdir())  # no half-written file

    lp_ft = ModelCard.load(next(p for p in transfer if "/lp_ft/" in str(p)))
    assert {"test_id_accuracy", "test_ood_accuracy", "val_ood_accuracy"} <= {
        r.metric_name for r in lp_ft.data.eval_results
    }
    ood = next(r for r in lp_ft.data.eval_results if r.metric_name == "test_ood_accuracy")
    assert (ood.dataset_split, ood.dataset_config) == ("test", "ood")  # the shifted test set is its own entry
    assert str(out / "source_model") in lp_ft.text  # the base model: the demo's source model folder
    assert {"plot_learning_rates.png", "plot_depth_drift.png"} <= set(_images(lp_ft))
    assert "`linear_probe`" in lp_ft.text and "| C |" in lp_ft.text

    # Full fine-tuning (no strategy: stock Trainer's loop) measures its drift too, every depth moved.
    full_ft = next(p for p in transfer if "/full_ft/" in str(p)).parent
    drift = json.loads((full_ft / "depth_drift.json").read_text())["depths"]
    assert len(drift) == 5 and all(d["relative_change"] > 0 for d in drift)
    assert "plot_depth_drift.png" in _images(ModelCard.load(full_ft / "README.md"))

    protonet = ModelCard.load(next(p for p in meta if "protonet" in str(p)))
    assert "plot_meta_accuracy.png" in _images(protonet)
    acc = next(r for r in protonet.data.eval_results if r.metric_name == "test_accuracy")
    assert acc.metric_args["n_way"] == 4 and acc.metric_args["k_shot"] == 1 and acc.metric_args["episodes"] == 50
    assert "ci95" in acc.metric_args
    assert "meta-training classes" in protonet.text and "few-shot" in protonet.data.tags
