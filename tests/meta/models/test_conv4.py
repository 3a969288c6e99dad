"""Conv4 as a plain module and as a transformers model, and the algorithms on it."""

import pytest
import torch

from hf_transfer_meta.meta.algorithms import ANIL, MAML, FineTuneBaseline, ProtoNet, embed
from hf_transfer_meta.meta.models import (
    BatchStatNorm2d,
    Conv4,
    Conv4Backbone,
    Conv4Config,
    Conv4ForImageClassification,
    Conv4Model,
    conv4_feature_size,
)
from hf_transfer_meta.transfer.layer_map import LayerMap


def image_episode(n_way=3, k=2, q=2, size=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {
        "support": {"pixel_values": torch.randn(n_way * k, 1, size, size, generator=g, dtype=dtype)},
        "support_labels": torch.arange(n_way).repeat_interleave(k),
        "query": {"pixel_values": torch.randn(n_way * q, 1, size, size, generator=g, dtype=dtype)},
        "query_labels": torch.arange(n_way).repeat_interleave(q),
    }


def test_plain_conv4_is_the_papers_network():
    model = Conv4(num_labels=5)
    # 4 x [conv3x3 64 + BN(64)] + linear 64 -> 5 on 28x28 Omniglot
    expected = (64 * 9 + 64 + 128) + 3 * (64 * 64 * 9 + 64 + 128) + (64 * 5 + 5)
    assert sum(p.numel() for p in model.parameters()) == expected == 112261
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 5)
    assert conv4_feature_size(28) == 64 and conv4_feature_size(84) == 1600
    assert Conv4Backbone(num_channels=3)(torch.randn(2, 3, 84, 84)).shape == (2, 1600)
    assert list(model.buffers()) == []  # batch statistics always (MAML convention): no running averages
    with pytest.raises(ValueError, match="too small"):
        conv4_feature_size(8)
    lm = LayerMap.from_model(model)
    assert lm.num_blocks == 4 and lm.names_at(lm.head_depth) == ["classifier.weight", "classifier.bias"]


def test_batch_statistics_are_transductive_in_eval_mode_too():
    model = Conv4(hidden_size=8, image_size=16).eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(model(x)[:2], model(x[:2]))  # each batch is normalised by its own statistics
    tracked = Conv4(hidden_size=8, image_size=16, bn_track_running_stats=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(tracked(x)[:2], tracked(x[:2]))


def test_hf_conv4_matches_plain_and_saves_and_loads(tmp_path):
    from transformers import AutoConfig, AutoModelForImageClassification

    config = Conv4Config(num_labels=3, hidden_size=8, image_size=16)
    hf = Conv4ForImageClassification(config)
    plain = Conv4(num_labels=3, hidden_size=8, image_size=16)
    plain.load_state_dict({k.replace("conv4.blocks", "backbone.blocks"): v for k, v in hf.state_dict().items()})
    x = torch.randn(4, 1, 16, 16)
    labels = torch.tensor([0, 1, 2, 0])
    out = hf(pixel_values=x, labels=labels)
    torch.testing.assert_close(out.logits, plain(x))
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    assert hf.conv4(x).pooler_output.shape == (4, 8)

    hf.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "conv4"
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert isinstance(loaded, Conv4ForImageClassification)
    torch.testing.assert_close(loaded(pixel_values=x).logits, out.logits)
    lm = LayerMap.from_model(hf)
    assert lm.block_names == [f"conv4.blocks.{i}" for i in range(4)] and lm.head_names == ["classifier"]


def test_hf_conv4_trains_with_trainer(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = Conv4ForImageClassification(Conv4Config(num_labels=3, hidden_size=8, image_size=16))
    g = torch.Generator().manual_seed(0)
    data = [{"pixel_values": torch.randn(1, 16, 16, generator=g), "labels": i % 3} for i in range(8)]
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, use_cpu=True, report_to="none",
        save_strategy="no", learning_rate=1e-2,
    )  # fmt: skip
    before = model.classifier.weight.detach().clone()
    Trainer(model=model, args=args, train_dataset=data).train()
    assert not torch.equal(before, model.classifier.weight.detach())
    model.save_pretrained(tmp_path / "final")
    reloaded = Conv4ForImageClassification.from_pretrained(tmp_path / "final")
    torch.testing.assert_close(reloaded.classifier.weight, model.classifier.weight)


@pytest.mark.parametrize("hf", [False, True], ids=["plain", "transformers"])
def test_second_order_maml_through_batchnorm_matches_finite_differences(hf):
    torch.manual_seed(0)
    if hf:
        model = Conv4ForImageClassification(Conv4Config(num_labels=3, hidden_size=4, image_size=16))
    else:
        model = Conv4(num_labels=3, hidden_size=4, image_size=16)
    model = model.double()
    tasks = [image_episode(seed=s, dtype=torch.float64) for s in range(2)]
    algo = MAML(inner_lr=0.4)
    assert not algo.use_vmap(model, tasks)  # second order through BatchNorm: the loop (vmap is wrong there)
    out = algo.meta_loss(model, tasks)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(out.loss, list(params.values()))
    v = {n: torch.randn_like(p) for n, p in params.items()}
    analytic = sum((g * v[n]).sum().item() for n, g in zip(params, grads))
    saved = {n: p.detach().clone() for n, p in params.items()}
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n] + sign * 1e-6 * v[n])
        values.append(algo.meta_loss(model, tasks).loss.item())
    assert analytic == pytest.approx((values[0] - values[1]) / 2e-6, rel=1e-5)


def test_first_order_conv4_vmap_matches_loop():
    torch.manual_seed(0)
    model = Conv4(num_labels=3, hidden_size=4, image_size=16)
    tasks = [image_episode(seed=s) for s in range(3)]
    results = []
    for vmap in (True, False):
        algo = ANIL(inner_lr=0.4, first_order=True, vmap=vmap)
        assert algo.use_vmap(model, tasks) is vmap
        out = algo.meta_loss(model, tasks)
        results.append((out.loss, torch.autograd.grad(out.loss, list(model.parameters()))))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=0)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_tracked_batchnorm_is_not_updated_by_meta_learning():
    model = Conv4(num_labels=3, hidden_size=4, image_size=16, bn_track_running_stats=True).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = MAML(inner_lr=0.4, inner_steps=2).meta_loss(model, [image_episode(seed=0), image_episode(seed=1)])
    out.loss.backward()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_protonet_and_finetune_use_backbone_features():
    hf = Conv4ForImageClassification(Conv4Config(num_labels=3, hidden_size=8, image_size=16)).eval()
    plain = Conv4(num_labels=3, hidden_size=8, image_size=16).eval()
    ep = image_episode()
    x = ep["support"]["pixel_values"]
    with torch.no_grad():
        torch.testing.assert_close(embed(hf, ep["support"]), hf.conv4(x).pooler_output)
        torch.testing.assert_close(embed(plain, ep["support"]), plain.backbone(x))
        assert embed(Conv4Model(hf.config), ep["support"]).shape == (6, 8)
    out = ProtoNet().meta_loss(hf, [ep, image_episode(seed=1)])
    out.loss.backward()
    assert hf.classifier.weight.grad is None and hf.conv4.blocks[0].conv.weight.grad is not None
    assert FineTuneBaseline(steps=5).adapt_and_predict(plain, ep).shape == (6, 3)
    assert FineTuneBaseline(train="all", steps=2).adapt_and_predict(hf, ep).shape == (6, 3)


def test_strided_conv4_is_mamls_omniglot_network():
    """downsample="stride": four stride-2 3x3 convs (28 -> 14 -> 7 -> 4 -> 2), no pooling, 64 * 2 * 2 features."""
    config = Conv4Config(num_channels=1, image_size=28, num_labels=5, downsample="stride")
    model = Conv4ForImageClassification(config)
    assert model.classifier.in_features == 64 * 2 * 2
    assert [b.conv.stride for b in model.conv4.blocks] == [(2, 2)] * 4
    out = model(pixel_values=torch.randn(3, 1, 28, 28), output_hidden_states=True)
    assert [tuple(h.shape[-2:]) for h in out.hidden_states] == [(28, 28), (14, 14), (7, 7), (4, 4), (2, 2)]
    assert out.logits.shape == (3, 5)
    with pytest.raises(ValueError, match="downsample"):
        Conv4ForImageClassification(Conv4Config(downsample="avgpool"))


def test_batch_ops_norm_equals_torch_batchnorm_in_values_and_gradients():
    torch.manual_seed(0)
    torch_bn = Conv4(num_labels=3, hidden_size=4, image_size=16, downsample="stride")
    ops = Conv4(num_labels=3, hidden_size=4, image_size=16, downsample="stride", norm="batch_ops")
    ops.load_state_dict(torch_bn.state_dict())  # same parameter names: weight/bias, no buffers
    assert any(isinstance(m, BatchStatNorm2d) for m in ops.modules())
    with torch.no_grad():  # random affine parameters, so the scale and shift are checked too
        for p in ops.parameters():
            p.add_(0.1 * torch.randn_like(p))
    torch_bn.load_state_dict(ops.state_dict())
    x = torch.randn(6, 1, 16, 16)
    torch.testing.assert_close(ops(x), torch_bn(x), atol=1e-5, rtol=1e-5)
    g_ops = torch.autograd.grad(ops(x).square().sum(), list(ops.parameters()))
    g_bn = torch.autograd.grad(torch_bn(x).square().sum(), list(torch_bn.parameters()))
    for a, b in zip(g_ops, g_bn):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="running statistics"):
        Conv4(norm="batch_ops", bn_track_running_stats=True)
    with pytest.raises(ValueError, match="norm='group'"):
        Conv4(norm="group")
    hf = Conv4ForImageClassification(Conv4Config(num_labels=3, hidden_size=4, image_size=16, norm="batch_ops"))
    assert sum(isinstance(m, BatchStatNorm2d) for m in hf.modules()) == 4


def test_second_order_maml_vmaps_through_batch_ops_norm_and_matches_the_torch_batchnorm_loop():
    # the loop through nn.BatchNorm2d matches finite differences (test above); vmap through BatchStatNorm2d must give
    # the same second-order meta-gradients, which vmap through nn.BatchNorm2d does not (functorch#534)
    torch.manual_seed(0)
    reference = Conv4(num_labels=3, hidden_size=4, image_size=16, downsample="stride").double()
    fast = Conv4(num_labels=3, hidden_size=4, image_size=16, downsample="stride", norm="batch_ops").double()
    fast.load_state_dict(reference.state_dict())
    tasks = [image_episode(seed=s, dtype=torch.float64) for s in range(3)]
    loop, vmapped = MAML(inner_lr=0.4, inner_steps=2), MAML(inner_lr=0.4, inner_steps=2)
    assert not loop.use_vmap(reference, tasks) and vmapped.use_vmap(fast, tasks)
    out_loop, out_vmap = loop.meta_loss(reference, tasks), vmapped.meta_loss(fast, tasks)
    torch.testing.assert_close(out_vmap.loss, out_loop.loss, atol=1e-10, rtol=1e-10)
    g_loop = torch.autograd.grad(out_loop.loss, list(reference.parameters()))
    g_vmap = torch.autograd.grad(out_vmap.loss, list(fast.parameters()))
    for a, b in zip(g_vmap, g_loop):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)
