"""C-way K-shot over every test class at once (meta/evaluation/all_classes.py)."""

import datasets
import numpy as np
import pytest
import torch
from torch import nn

from hf_transfer_meta.meta import FOMAML, ProtoNet, all_classes_accuracy, embed_rows, evaluate_all_classes


def clusters(num_classes=6, per_class=10, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(num_classes) * 3
    labels = [c for c in range(num_classes) for _ in range(per_class)]
    z = centres[labels] + spread * torch.randn(len(labels), num_classes, generator=g)
    return z, labels


def test_separated_classes_score_one_and_noise_scores_chance():
    z, labels = clusters()
    run = all_classes_accuracy(z, labels, k_shot=1, draws=20, seed=0)
    assert run.num_classes == 6 and run.queries_per_draw == 6 * 9 and len(run.accuracies) == 20
    assert run.accuracies.min() == 1.0
    noise = torch.randn(3000, 8, generator=torch.Generator().manual_seed(1))
    labels = [i % 30 for i in range(3000)]
    chance = all_classes_accuracy(noise, labels, k_shot=1, draws=10, seed=0).metrics("x")
    assert abs(chance["x_accuracy"] - 1 / 30) < 0.02 and chance["x_num_classes"] == 30


def test_draws_are_seeded_supports_and_queries_are_disjoint():
    z, labels = clusters(spread=2.0)
    a = all_classes_accuracy(z, labels, k_shot=2, draws=5, seed=3, n_query=4)
    b = all_classes_accuracy(z, labels, k_shot=2, draws=5, seed=3, n_query=4)
    c = all_classes_accuracy(z, labels, k_shot=2, draws=5, seed=4, n_query=4)
    assert np.array_equal(a.accuracies, b.accuracies) and not np.array_equal(a.support_rows, c.support_rows)
    assert len(a.support_rows) == 12 and len(a.query_rows) == 24 and a.queries_per_draw == 24
    assert not set(a.support_rows) & set(a.query_rows)
    assert [labels[r] for r in a.query_rows] == [a.classes[y] for y in a.query_labels]
    metrics = a.metrics("eval_all_classes")
    assert set(metrics) == {f"eval_all_classes_{k}" for k in ("accuracy", "accuracy_ci95", "num_classes", "k_shot",
                                                                  "draws", "queries")}  # fmt: skip


def test_a_class_without_a_query_is_named():
    z, labels = clusters(num_classes=3, per_class=3)
    with pytest.raises(ValueError, match=r"k_shot=3 support examples and at least one query per class: class 0 has 3"):
        all_classes_accuracy(z, labels, k_shot=3)


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 3)
        self.drop = nn.Dropout(0.9)

    def forward(self, pixel_values):
        return self.drop(self.layer(pixel_values))


def test_embed_rows_in_row_order_in_eval_mode_and_the_algorithm_check():
    torch.manual_seed(0)
    model = Linear().train()
    ds = datasets.Dataset.from_dict(
        {"x": [[float(i), float(-i)] for i in range(10)], "label": [i % 2 for i in range(10)]}
    )

    def encode(rows):
        return {"pixel_values": torch.tensor([r["x"] for r in rows])}

    z = embed_rows(model, ds, encode, embedding="output", batch_size=3, seed=0)
    with torch.no_grad():
        expected = model.layer(torch.tensor(ds["x"][:]))
    assert torch.allclose(z, expected) and model.training  # dropout off while embedding, mode restored
    runs = evaluate_all_classes(ProtoNet("output"), model, ds, encode, "label", k_shots=[1, 2], draws=3)
    assert set(runs) == {1, 2} and runs[2].k_shot == 2 and runs[1].queries_per_draw == 8
    with pytest.raises(ValueError, match="needs nearest-prototype classification"):
        evaluate_all_classes(FOMAML(), model, ds, encode, "label")
    with pytest.raises(ValueError, match="k_shot=5 support examples"):
        evaluate_all_classes(ProtoNet("output"), model, ds, encode, "label", k_shots=[5])
