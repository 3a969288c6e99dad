"""select_pretrained on tiny candidates whose order is known: a model whose features see the words beats the same
model with every word embedded alike (features independent of the input: chance), on both scores; a candidate that
cannot load is a row with its error; the table and JSON are written."""

import json
import random

import numpy as np
import pytest
import torch

from hf_transfer_meta.selection import cross_validated_probe, select_pretrained

TOPICS = {"sport": "goal", "world": "treaty", "tech": "laptop"}
FILLER = [f"w{i}" for i in range(20)]
WORDS = [f"{stem}{i}" for stem in TOPICS.values() for i in range(4)]


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    from tiny_models import tiny_bert
    from transformers import BertTokenizerFast

    root = tmp_path_factory.mktemp("candidates")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER, *WORDS]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    good = tiny_bert(layers=1, num_labels=3, vocab_size=len(vocab), hidden_act="relu", initializer_range=0.2)
    _pretrain(good, tokenizer)  # "pretrained" on a related task: its features see the topics
    blind = tiny_bert(layers=1, num_labels=3, vocab_size=len(vocab), hidden_act="relu", initializer_range=0.2)
    with torch.no_grad():  # every word the same vector: the features cannot depend on the text
        blind.bert.embeddings.word_embeddings.weight.copy_(blind.bert.embeddings.word_embeddings.weight[:1].clone())
    for name, model in (("good", good), ("blind", blind)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    (root / "broken").mkdir()
    return {name: str(root / name) for name in ("good", "blind", "broken")}


def _pretrain(model, tokenizer, steps=60):
    data = _texts(240, seed=7)
    names = sorted(TOPICS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    model.train()
    for step in range(steps):
        rows = [(step * 16 + i) % len(data) for i in range(16)]
        batch = tokenizer([data[r]["text"] for r in rows], return_tensors="pt", padding=True)
        labels = torch.tensor([names.index(data[r]["topic"]) for r in rows])
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def _texts(n, seed=0):
    import datasets

    rng = random.Random(seed)
    rows = {"text": [], "topic": []}
    for _ in range(n):
        topic = rng.choice(sorted(TOPICS))
        words = [f"{TOPICS[topic]}{rng.randrange(4)}" for _ in range(3)] + rng.choices(FILLER, k=3)
        rng.shuffle(words)
        rows["text"].append(" ".join(words))
        rows["topic"].append(topic)
    return datasets.Dataset.from_dict(rows)


def test_known_order_on_both_scores_and_a_failed_candidate_is_reported(candidates, tmp_path):
    result = select_pretrained(
        [candidates["blind"], candidates["broken"], candidates["good"]],
        _texts(150),
        text_column_names=["text"],
        label_column="topic",
        folds=3,
        output_dir=str(tmp_path),
        progress=False,
    )
    assert [r.candidate for r in result.rows] == [candidates["good"], candidates["blind"], candidates["broken"]]
    good, blind, broken = result.rows
    assert good.cv_accuracy > 0.8 and len(good.cv_fold_accuracies) == 3
    assert blind.cv_accuracy < 0.5  # three balanced-ish classes: chance is about 1/3
    assert good.logme > blind.logme
    assert broken.cv_accuracy is None and broken.logme is None and "config.json" in broken.error, broken.error
    assert good.num_examples == 150 and good.feature_dim == 16 and good.num_parameters > 0
    saved = json.loads((tmp_path / "selection.json").read_text())
    assert [c["candidate"] for c in saved["candidates"]] == [r.candidate for r in result.rows]
    assert saved["num_classes"] == 3 and saved["ranked_by"] == "cv_accuracy"
    table = (tmp_path / "selection.md").read_text()
    assert "| 1 | " + candidates["good"] in table and "failed:" in table


def test_rank_by_logme_and_finetune_top(candidates, tmp_path):
    """--finetune_top 2: both candidates fine-tuned the same way; the one the scores put first also fine-tunes
    better here (its features already separate the topics)."""
    from transformers import TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path / "ft"), num_train_epochs=2, learning_rate=1e-3, per_device_train_batch_size=16,
        save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, remove_unused_columns=False,
    )  # fmt: skip
    result = select_pretrained(
        [candidates["blind"], candidates["good"]], _texts(90, seed=1), text_column_names=["text"],
        label_column="topic", folds=3, rank_by="logme", finetune_top=2, eval_dataset=_texts(60, seed=2),
        finetune_args=args, progress=False,
    )  # fmt: skip
    good, blind = result.rows
    assert result.best.candidate == candidates["good"] and blind.candidate == candidates["blind"]
    assert good.finetune["eval_accuracy"] > 0.8 > blind.finetune["eval_accuracy"]
    assert good.finetune["epochs"] == 2.0 and good.finetune["learning_rate"] == 1e-3
    assert "fine-tuned accuracy" in result.table()
    with pytest.raises(ValueError, match="eval_dataset"):
        select_pretrained([candidates["good"]], _texts(30), text_column_names=["text"], label_column="topic",
                          finetune_top=1)  # fmt: skip


def test_cross_validated_probe_never_scores_on_what_chose_c():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 30)
    separable = rng.normal(size=(60, 4)) + labels[:, None] * 4.0
    noise = rng.normal(size=(60, 4))
    assert np.mean(cross_validated_probe(separable, labels, folds=3)) > 0.95
    assert np.mean(cross_validated_probe(noise, labels, folds=3)) < 0.75
    with pytest.raises(ValueError, match="smallest class has 2"):
        cross_validated_probe(separable[:32], np.r_[np.zeros(30, int), np.ones(2, int)], folds=3)


def test_bad_arguments_are_refused_before_loading(candidates):
    data = _texts(20)
    with pytest.raises(ValueError, match="no column 'sentence'.*'text', 'topic'"):
        select_pretrained([candidates["good"]], data, text_column_names=["sentence"], label_column="topic")
    with pytest.raises(ValueError, match="rank_by='speed'"):
        select_pretrained(
            [candidates["good"]], data, text_column_names=["text"], label_column="topic", rank_by="speed"
        )
    with pytest.raises(ValueError, match="No candidates"):
        select_pretrained([], data, text_column_names=["text"], label_column="topic")
