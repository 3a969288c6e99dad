import numpy as np
import pytest
import torch
import transformers as T
from peft import LoraConfig, get_peft_model

from hf_transfer_meta import LayerMap
from hf_transfer_meta.transfer.strategies.linear_probe import (
    extract_features,
    final_linear,
    fit_linear_probe,
    linear_probe,
)

SMALL = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
CS = np.logspace(-7, 2, 25)


def _examples(n_per_class, classes, seed, seq_len=8):
    """Token sequences whose class is told by a class token repeated in them (separable by any random encoder)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for c in classes:
        for _ in range(n_per_class):
            ids = torch.randint(20, 50, (seq_len,), generator=g)
            ids[torch.randperm(seq_len, generator=g)[:6]] = 10 + c
            rows.append({"input_ids": ids, "attention_mask": torch.ones(seq_len, dtype=torch.long), "labels": c})
    return rows


def _roberta(num_labels=3, seed=0):
    torch.manual_seed(seed)
    return T.RobertaForSequenceClassification(T.RobertaConfig(num_labels=num_labels, pad_token_id=1, **SMALL))


def _logits(model, rows):
    model.eval()
    with torch.no_grad():
        batch = T.default_data_collator(rows)
        batch.pop("labels")
        return model(**batch).logits.double().numpy()


def _assert_head_matches_sklearn(model, result, rows, features):
    logits = _logits(model, rows)
    sk = result.classifier.predict(result.normalize(features))
    np.testing.assert_array_equal(logits.argmax(-1), sk)
    expected = result.logits(features)
    tol = 1e-4 * np.abs(expected).max()  # relative: a strongly regularised probe has tiny logits
    np.testing.assert_allclose(logits, expected, rtol=0, atol=tol)
    # sklearn's own scores, up to the per-row constant that softmax ignores
    decision = result.classifier.decision_function(result.normalize(features))
    if decision.ndim == 1:
        np.testing.assert_allclose(logits[:, 1] - logits[:, 0], decision, rtol=0, atol=tol)
    else:
        centred = logits - logits.mean(1, keepdims=True)
        np.testing.assert_allclose(centred, decision - decision.mean(1, keepdims=True), rtol=0, atol=tol)


def test_probe_writes_the_last_linear_and_matches_sklearn():
    model = _roberta()
    model.train()
    lm = LayerMap.from_model(model)
    name, linear = final_linear(model, lm)
    assert name == "classifier.out_proj" and linear is model.classifier.out_proj  # not classifier.dense
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train, val = _examples(30, range(3), seed=1), _examples(15, range(3), seed=2)

    result = linear_probe(model, train, val, layer_map=lm, Cs=CS)

    # the backbone (and the head's dense layer) are bit-identical, only out_proj was written
    for n, p in model.named_parameters():
        if n.startswith("classifier.out_proj."):
            assert not torch.equal(p, before[n]), n
        else:
            assert torch.equal(p, before[n]), n
    assert model.training and model.roberta.encoder.layer[0].output.dropout.training  # modes restored

    train_x, train_y = extract_features(model, train, layer_map=lm)
    assert train_x.shape == (90, 32) and train_y.tolist() == [r["labels"] for r in train]
    _assert_head_matches_sklearn(model, result, train, train_x)
    val_x, val_y = extract_features(model, val, layer_map=lm)
    _assert_head_matches_sklearn(model, result, val, val_x)

    # C is the first argmax of validation accuracy over the sweep, and the written head is the one fit at that C
    accs = [s["val_accuracy"] for s in result.all_scores]
    assert [s["C"] for s in result.all_scores] == pytest.approx(CS.tolist())
    assert result.C == result.all_scores[int(np.argmax(accs))]["C"]
    assert result.val_accuracy == max(accs) == pytest.approx(np.mean(result.predict(val_x) == val_y))
    assert result.train_accuracy == pytest.approx(np.mean(result.predict(train_x) == train_y))
    assert result.val_accuracy > 0.6  # chance is 1/3


def test_c_is_chosen_on_validation():
    # Imbalanced training classes and many noise dimensions: strong regularisation predicts the majority class,
    # weak regularisation overfits the noise; a balanced validation set prefers a C in between.
    rng = np.random.default_rng(0)
    shift = np.zeros(50)
    shift[:3] = 1.5

    def make(n0, n1):
        y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
        return rng.normal(size=(n0 + n1, 50)) + shift * y[:, None], y

    (tx, ty), (vx, vy) = make(80, 20), make(200, 200)
    result = fit_linear_probe(tx, ty, vx, vy, Cs=CS)
    accs = [s["val_accuracy"] for s in result.all_scores]
    best = int(np.argmax(accs))
    assert 0 < best < len(CS) - 1 and accs[0] < accs[best] and accs[-1] < accs[best]
    assert result.C == pytest.approx(CS[best]) and result.val_accuracy == accs[best]
    assert np.mean(result.predict(vx) == vy) == pytest.approx(accs[best])  # the written weights are those at C


def test_binary_probe_and_fewer_classes_in_validation():
    torch.manual_seed(0)
    model = T.BertForSequenceClassification(T.BertConfig(num_labels=2, **SMALL))
    lm = LayerMap.from_model(model)
    train = _examples(30, range(2), seed=3)
    val = _examples(15, [1], seed=4)  # validation without class 0
    result = linear_probe(model, train, val, layer_map=lm, Cs=CS)
    assert result.weight.shape == (2, 32)
    np.testing.assert_allclose(result.weight[0], -result.weight[1])  # [-w/2, w/2]: softmax = sklearn's sigmoid
    x, _ = extract_features(model, train, layer_map=lm)
    _assert_head_matches_sklearn(model, result, train, x)


def test_fit_linear_probe_pads_missing_classes_and_follows_the_paper():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 6)) * 3
    y = np.repeat([0, 1, 3], 20)  # class 2 of a 4-way head has no training example
    x = centers[y] + rng.normal(size=(60, 6)) + 5.0  # offset: the normalisation must be undone in the bias
    result = fit_linear_probe(x, y, x, y, Cs=[1e-3, 1.0], num_classes=4)
    assert result.weight.shape == (4, 6) and not result.weight[2].any() and result.bias[2] == 0
    assert result.feature_mean == pytest.approx(x.mean()) and result.feature_std == pytest.approx(x.std())
    np.testing.assert_array_equal(result.predict(x), result.classifier.predict(result.normalize(x)))
    with pytest.raises(ValueError, match="validation set"):
        fit_linear_probe(x, y, Cs=[1e-3, 1.0])
    with pytest.raises(ValueError, match="single class"):
        fit_linear_probe(x, np.zeros(60, dtype=int), Cs=[1.0])
    with pytest.raises(ValueError, match="class ids"):
        fit_linear_probe(x, y + 0.5, Cs=[1.0])
    assert len(fit_linear_probe(x, y, x, y, max_iter=50).all_scores) == 100  # logspace(-7, 2, 100) by default


def test_probe_on_a_peft_model_writes_the_trained_copy():
    model = get_peft_model(_roberta(), LoraConfig(task_type="SEQ_CLS", target_modules=["query", "value"], r=4))
    lm = LayerMap.from_model(model)
    name, linear = final_linear(model, lm)
    assert name.endswith("classifier.modules_to_save.default.out_proj"), name
    original = model.base_model.model.classifier.original_module.out_proj.weight.detach().clone()
    train, val = _examples(20, range(3), seed=5), _examples(10, range(3), seed=6)
    result = linear_probe(model, train, val, layer_map=lm, Cs=CS)
    assert torch.equal(model.base_model.model.classifier.original_module.out_proj.weight, original)
    x, _ = extract_features(model, train, layer_map=lm)
    _assert_head_matches_sklearn(model, result, train, x)


def test_decoder_classifier_pools_the_returned_token_and_has_no_bias():
    torch.manual_seed(0)
    cfg = T.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, num_labels=3, pad_token_id=0)
    model = T.GPT2ForSequenceClassification(cfg)
    rows = _examples(20, range(3), seed=7)
    for i, r in enumerate(rows):  # right padding of varying length: the model keeps the last non-pad token
        n_pad = i % 3
        if n_pad:
            r["input_ids"] = r["input_ids"].clone()
            r["input_ids"][-n_pad:] = 0
            r["attention_mask"] = r["attention_mask"].clone()
            r["attention_mask"][-n_pad:] = 0
    lm = LayerMap.from_model(model)
    result = linear_probe(model, rows, rows, layer_map=lm, Cs=CS)
    assert result.bias is None and model.score.bias is None
    x, _ = extract_features(model, rows, layer_map=lm)
    _assert_head_matches_sklearn(model, result, rows, x)


def test_datasets_columns_the_model_does_not_take_are_dropped():
    datasets = pytest.importorskip("datasets")
    torch.manual_seed(0)
    model = T.BertForSequenceClassification(T.BertConfig(num_labels=2, **SMALL))
    rows = _examples(5, range(2), seed=8)
    ds = datasets.Dataset.from_list(
        [{"sentence": "raw text", "input_ids": r["input_ids"].tolist(), "label": r["labels"]} for r in rows]
    )
    x, y = extract_features(model, ds, batch_size=4)
    assert x.shape == (10, 32) and y.tolist() == [0] * 5 + [1] * 5


def test_head_without_linear_is_refused():
    from torch import nn

    model = nn.Sequential(nn.Embedding(10, 4), nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Sequential(nn.ReLU()))
    lm = LayerMap.from_model(model, blocks=["1"], head=["2"])
    with pytest.raises(ValueError, match="holds no nn.Linear"):
        final_linear(model, lm)
