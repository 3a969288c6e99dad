import pytest
import torch
import transformers as T
from torch import nn

from hf_transfer_meta import LayerMap
from hf_transfer_meta.transfer.strategies.l2sp import L2SP
from hf_transfer_meta.transfer.strategies.wise_ft import select_wise_alpha, state_dict_copy, wise_ft_interpolate

SMALL = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20)


def _bert(seed=0, **kw):
    torch.manual_seed(seed)
    return T.BertForSequenceClassification(T.BertConfig(num_labels=3, **SMALL, **kw))


class _Wrapper(nn.Module):
    """Stands in for DistributedDataParallel: one child called `module`."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def test_l2sp_is_zero_at_start_and_matches_the_formula():
    model = _bert()
    l2sp = L2SP(model, LayerMap.from_model(model), alpha=0.3, beta=0.05)
    assert l2sp.head_names == ["classifier.weight", "classifier.bias"]
    head_sq = sum(p.pow(2).sum() for p in model.classifier.parameters())
    assert l2sp.penalty(model).item() == pytest.approx(0.025 * head_sq.item(), rel=1e-6)
    assert L2SP(model, alpha=0.3, beta=0.0).penalty(model).item() == 0.0

    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    expected = 0.0
    for n, p in model.named_parameters():
        if n.startswith("classifier."):
            expected += 0.05 / 2 * p.double().pow(2).sum().item()
        else:
            expected += 0.3 / 2 * (p.double() - w0[n].double()).pow(2).sum().item()
    assert l2sp.penalty(model).item() == pytest.approx(expected, rel=1e-5)
    # the same object works on the model behind a DDP-like wrapper (names with `module.`)
    assert l2sp.penalty(_Wrapper(model)).item() == pytest.approx(expected, rel=1e-5)
    assert l2sp.distance(model) > 0


def test_l2sp_gradient_pulls_towards_the_pretrained_weights():
    model = _bert()
    l2sp = L2SP(model, alpha=1.0, beta=0.5)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2)
    model.zero_grad()
    l2sp.penalty(model).backward()
    for n, p in model.named_parameters():
        if n.startswith("classifier."):
            torch.testing.assert_close(p.grad, 0.5 * p.detach())  # weight decay of the new head
        else:
            torch.testing.assert_close(p.grad, p.detach() - w0[n])  # towards w0, not towards 0
    # one SGD step on the penalty alone halves the distance to w0 (lr 0.5, alpha 1)
    before = l2sp.distance(model)
    with torch.no_grad():
        for p in model.parameters():
            p.sub_(0.5 * p.grad)
    assert l2sp.distance(model) == pytest.approx(before / 2, rel=1e-5)


def test_l2sp_snapshot_is_a_copy_built_on_a_wrapped_model():
    model = _bert()
    wrapped = _Wrapper(model)
    l2sp = L2SP(wrapped, LayerMap.from_model(model), alpha=1.0, beta=0.0)
    assert "bert.embeddings.word_embeddings.weight" in l2sp.backbone_names  # keyed without `module.`
    assert all(not t.requires_grad for t in l2sp.reference.values())
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.add_(1.0)  # the snapshot must not follow in-place updates
    assert l2sp.penalty(model).item() == pytest.approx(0.5 * model.bert.embeddings.word_embeddings.weight.numel())
    with pytest.raises(ValueError, match="alpha"):
        L2SP(model, alpha=-1)


def test_l2sp_can_skip_frozen_parameters():
    model = _bert()
    l2sp = L2SP(model, alpha=1.0, beta=0.0, only_trainable=True)
    with torch.no_grad():
        model.bert.encoder.layer[0].output.dense.bias.add_(1.0)
    model.bert.encoder.layer[0].output.dense.bias.requires_grad_(False)
    assert l2sp.penalty(model).item() == 0.0


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _bn_net(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    net.train()
    net(torch.randn(16, 4))  # running statistics and num_batches_tracked move away from their init
    return net


def test_wise_ft_endpoints_are_exact_and_midpoint_is_the_mean():
    model = _bn_net(seed=0)
    theta_0 = state_dict_copy(model)
    theta_1 = _state(_bn_net(seed=1))
    int_keys = [k for k, v in theta_0.items() if not v.is_floating_point()]
    assert int_keys == ["1.num_batches_tracked"]
    theta_1["1.num_batches_tracked"] += 4  # make it differ, to see which end it comes from

    wise_ft_interpolate(model, theta_0, theta_1, 0.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, theta_1[k] if k in int_keys else theta_0[k]), k
    wise_ft_interpolate(model, theta_0, theta_1, 1.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, theta_1[k]), k
    merged = wise_ft_interpolate(model, theta_0, theta_1, 0.5)
    for k, v in model.state_dict().items():
        if k in int_keys:
            assert torch.equal(v, theta_1[k])
        else:
            torch.testing.assert_close(v, (theta_0[k] + theta_1[k]) / 2, rtol=0, atol=1e-7)
        assert torch.equal(v, merged[k])
    w = wise_ft_interpolate(model, theta_0, theta_1, 0.25)["3.weight"]
    torch.testing.assert_close(w, 0.75 * theta_0["3.weight"] + 0.25 * theta_1["3.weight"])


def test_wise_ft_refuses_mismatched_heads_and_keys():
    model = _bert()
    theta_0 = _state(model)
    other = T.BertForSequenceClassification(T.BertConfig(num_labels=5, **SMALL))
    with pytest.raises(ValueError, match="'classifier.weight'"):
        wise_ft_interpolate(model, theta_0, _state(other), 0.5)
    partial = dict(theta_0)
    partial.pop("classifier.bias")
    with pytest.raises(KeyError, match="classifier.bias"):
        wise_ft_interpolate(model, theta_0, partial, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wise_ft_interpolate(model, theta_0, theta_0, 1.5)
    # DDP-style `module.` prefixes on either side are accepted
    wise_ft_interpolate(_Wrapper(model), {f"module.{k}": v for k, v in theta_0.items()}, theta_0, 0.5)


def test_select_wise_alpha_picks_the_best_and_leaves_the_model_there():
    model = _bert(seed=0)
    theta_0, theta_1 = _state(model), _state(_bert(seed=1))
    key = "classifier.weight"
    target = 0.3 * theta_0[key] + 0.7 * theta_1[key]  # the evaluation prefers alpha = 0.7

    def evaluate(m):
        return -(m.state_dict()[key] - target).norm().item()

    best, scores = select_wise_alpha(model, theta_0, theta_1, evaluate)
    assert best == 0.7
    assert list(scores) == [i / 10 for i in range(11)] and max(scores, key=scores.get) == 0.7
    torch.testing.assert_close(model.state_dict()[key], target)
    best, _ = select_wise_alpha(model, theta_0, theta_1, lambda m: 1.0, alphas=(0.5, 0.2, 0.9))
    assert best == 0.2  # ties go to the smallest alpha (closest to the starting model)
    torch.testing.assert_close(model.state_dict()[key], 0.8 * theta_0[key] + 0.2 * theta_1[key])
