"""Meta-learning algorithms against hand computations, finite differences and each other (tiny models, float64)."""

import pytest
import tiny_models
import torch
import torch.nn.functional as F
from torch import nn

from hf_transfer_meta.meta.algorithms import (
    ALGORITHMS,
    ANIL,
    FOMAML,
    MAML,
    FineTuneBaseline,
    MetaSGD,
    ProtoNet,
    Reptile,
    embed,
    prototypes,
    squared_euclidean,
)
from hf_transfer_meta.meta.data.sinusoid import SinusoidTasks
from hf_transfer_meta.meta.functional import adapted_names, regex_selector
from hf_transfer_meta.meta.models import SinusoidMLP


# ---------------------------------------------------------------------------------------------------- helpers
def mlp(p, x):
    """The tiny SinusoidMLP(hidden=(5,)) written out by hand."""
    h = torch.relu(x @ p["body.0.linear.weight"].T + p["body.0.linear.bias"])
    return h @ p["head.weight"].T + p["head.bias"]


def mse(p, x, y):
    return ((mlp(p, x) - y) ** 2).mean()


def tiny_mlp(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return SinusoidMLP(hidden=(5,)).to(dtype)


def sin_tasks(n=3, k=4, dtype=torch.float64, seed=0):
    ds = SinusoidTasks(100, k_shot=k, n_query=k, seed=seed)
    return [_cast(ds[i], dtype) for i in range(n)]


def _cast(ep, dtype):
    return {
        "support": {k: v.to(dtype) for k, v in ep["support"].items()},
        "support_labels": ep["support_labels"].to(dtype),
        "query": {k: v.to(dtype) for k, v in ep["query"].items()},
        "query_labels": ep["query_labels"].to(dtype),
    }


def hand_maml(model, tasks, lr, steps, first_order=False):
    """Mean query loss after ``steps`` SGD steps and its gradient, by explicit autograd.grad on the formulas."""
    theta = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    total = 0.0
    for t in tasks:
        fast = dict(theta)
        for _ in range(steps):
            g = torch.autograd.grad(
                mse(fast, t["support"]["x"], t["support_labels"]), list(fast.values()), create_graph=not first_order
            )
            fast = {n: w - lr * gi for (n, w), gi in zip(fast.items(), g)}
        total = total + mse(fast, t["query"]["x"], t["query_labels"])
    loss = total / len(tasks)
    return loss, dict(zip(theta, torch.autograd.grad(loss, list(theta.values()))))


def meta_grads(algorithm, model, tasks):
    model.zero_grad(set_to_none=True)
    out = algorithm.meta_loss(model, tasks)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def directional_fd(algorithm, model, tasks, direction, eps=1e-6):
    """(L(theta + eps v) - L(theta - eps v)) / 2 eps, perturbing the model's parameters in place and restoring them."""
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in direction}
    values = []
    for sign in (1, -1):
        with torch.no_grad():
            for n, v in direction.items():
                params[n].copy_(saved[n] + sign * eps * v)
        values.append(algorithm.meta_loss(model, tasks).loss.item())
    with torch.no_grad():
        for n in direction:
            params[n].copy_(saved[n])
    return (values[0] - values[1]) / (2 * eps)


def dot(grads, direction):
    return sum((grads[n] * v).sum().item() for n, v in direction.items() if n in grads)


# ---------------------------------------------------------------------------------------------------- ProtoNet
class Project(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[1.0, 0.5], [-0.5, 2.0], [0.25, -1.0]], dtype=torch.float64))

    def forward(self, x):
        return x @ self.weight


def test_protonet_loss_matches_hand_computation():
    x_s = torch.tensor([[1.0, 0, 0], [0.5, 1, 0], [0, 0, 1], [0, 1, 1], [2, 0, 1], [1, 1, 1]], dtype=torch.float64)
    y_s = torch.tensor([0, 0, 1, 1, 2, 2])
    x_q = torch.tensor([[1.0, 0.5, 0], [0, 0.5, 1], [1.5, 0.5, 1], [0, 0, 0]], dtype=torch.float64)
    y_q = torch.tensor([0, 1, 2, 1])
    model = Project()
    ep = {"support": {"x": x_s}, "support_labels": y_s, "query": {"x": x_q}, "query_labels": y_q}
    out = ProtoNet(embedding="output").meta_loss(model, [ep, ep])

    W = model.weight.detach()
    zs, zq = x_s @ W, x_q @ W
    protos = [zs[[0, 1]].mean(0), zs[[2, 3]].mean(0), zs[[4, 5]].mean(0)]
    losses = []
    for i in range(4):
        d = torch.stack([((zq[i] - p) ** 2).sum() for p in protos])
        logp = -d - torch.logsumexp(-d, 0)
        losses.append(-logp[y_q[i]])
    expected = torch.stack(losses).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-12)
    out.loss.backward()
    assert model.weight.grad.abs().sum() > 0
    acc = sum(int(torch.stack([((zq[i] - p) ** 2).sum() for p in protos]).argmin() == y_q[i]) for i in range(4)) / 4
    assert out.metrics["query_accuracy"] == pytest.approx(acc)


def test_prototypes_and_distances():
    z = torch.tensor([[0.0, 0], [2, 0], [0, 4], [0, 2]])
    p = prototypes(z, torch.tensor([0, 0, 1, 1]))
    assert torch.equal(p, torch.tensor([[1.0, 0], [0, 3]]))
    assert torch.equal(squared_euclidean(torch.tensor([[1.0, 1]]), p), torch.tensor([[1.0, 5.0]]))
    with pytest.raises(ValueError, match="no support example"):
        prototypes(z, torch.tensor([0, 0, 2, 2]))


def tiny_bert(num_labels=3, dtype=torch.float32, seed=0):
    return tiny_models.tiny_bert(1, num_labels, seed=seed, vocab_size=40, max_position_embeddings=16).to(dtype).eval()


def text_episode(n_way=3, k=2, q=2, seq=6, seed=0):
    g = torch.Generator().manual_seed(seed)

    def inputs(n):
        mask = torch.ones(n, seq, dtype=torch.long)
        mask[::2, -2:] = 0  # some padding, so the masked mean differs from the plain mean
        return {"input_ids": torch.randint(1, 40, (n, seq), generator=g), "attention_mask": mask}

    return {
        "support": inputs(n_way * k),
        "support_labels": torch.arange(n_way).repeat_interleave(k),
        "query": inputs(n_way * q),
        "query_labels": torch.arange(n_way).repeat_interleave(q),
    }


def test_protonet_embeddings_of_a_sequence_classifier():
    model = tiny_bert()
    ep = text_episode()
    inputs = ep["support"]
    with torch.no_grad():
        base = model.bert(**inputs)
        hidden, mask = base.last_hidden_state, inputs["attention_mask"].unsqueeze(-1).float()
        assert torch.allclose(embed(model, inputs, "pooled"), base.pooler_output)
        assert torch.allclose(embed(model, inputs, "cls"), hidden[:, 0])
        masked = (hidden * mask).sum(1) / mask.sum(1)
        assert torch.allclose(embed(model, inputs, "mean"), masked)
        assert not torch.allclose(masked, hidden.mean(1))
        assert torch.allclose(embed(model, inputs, "logits"), model(**inputs).logits)
        assert torch.allclose(embed(model, inputs, "auto"), base.pooler_output)
    out = ProtoNet("mean").meta_loss(model, [ep, text_episode(seed=1)])
    out.loss.backward()
    assert model.classifier.weight.grad is None  # the head is not part of the embedding
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert ProtoNet("cls").adapt_and_predict(model, ep).shape == (6, 3)


# ---------------------------------------------------------------------------------------------------- MAML family
@pytest.mark.parametrize("vmap", [False, True])
def test_maml_matches_hand_written_second_order_update(vmap):
    model = tiny_mlp()
    tasks = sin_tasks(3)
    algo = MAML(inner_lr=0.05, inner_steps=2, vmap=vmap)
    expected_loss, expected = hand_maml(model, tasks, lr=0.05, steps=2)
    assert algo.use_vmap(model, tasks) is vmap
    out, grads = meta_grads(algo, model, tasks)
    assert out.loss.item() == pytest.approx(expected_loss.item(), abs=1e-10)
    for n in expected:
        torch.testing.assert_close(grads[n], expected[n], atol=1e-6, rtol=0)
    # the outer step itself (plain SGD) equals the hand update
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n] - 0.1 * expected[n], atol=1e-7, rtol=0)


def test_maml_meta_gradient_matches_finite_differences():
    model = tiny_mlp(seed=1)
    tasks = sin_tasks(2, seed=1)
    algo = MAML(inner_lr=0.1, inner_steps=2, vmap=False)
    _, grads = meta_grads(algo, model, tasks)
    torch.manual_seed(3)
    for _ in range(2):
        v = {n: torch.randn_like(p) for n, p in model.named_parameters()}
        assert dot(grads, v) == pytest.approx(directional_fd(algo, model, tasks, v), rel=1e-6, abs=1e-9)


def test_fomaml_gradient_is_query_gradient_at_adapted_params():
    model = tiny_mlp(seed=2)
    tasks = sin_tasks(3, seed=2)
    lr = 0.1
    _, fo = meta_grads(FOMAML(inner_lr=lr, vmap=False), model, tasks)
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for t in tasks:
        theta = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
        g = torch.autograd.grad(mse(theta, t["support"]["x"], t["support_labels"]), list(theta.values()))
        adapted = {n: (w - lr * gi).detach().requires_grad_() for (n, w), gi in zip(theta.items(), g)}
        gq = torch.autograd.grad(mse(adapted, t["query"]["x"], t["query_labels"]), list(adapted.values()))
        for n, gi in zip(adapted, gq):
            expected[n] += gi / len(tasks)
    for n in expected:
        torch.testing.assert_close(fo[n], expected[n], atol=1e-10, rtol=0)
    _, so = meta_grads(MAML(inner_lr=lr, vmap=False), model, tasks)
    diff = max((so[n] - fo[n]).abs().max().item() for n in so)
    assert diff > 1e-3  # the second-order terms are really dropped on a nonlinear model


def test_meta_sgd_learning_rate_gradient_and_training():
    model = tiny_mlp(seed=3)
    tasks = sin_tasks(4, seed=3)
    algo = MetaSGD(model=model, inner_lr=0.05, vmap=False)
    assert [p.shape for p in algo.lrs] == [p.shape for p in model.parameters()]
    assert all(torch.all(lr == 0.05) for lr in algo.lrs)
    out = algo.meta_loss(model, tasks)
    out.loss.backward()
    # one step: d L_q(theta - alpha * g_s) / d alpha = -g_s * grad L_q at the adapted params
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for t in tasks:
        theta = {n: p.detach().clone() for n, p in model.named_parameters()}
        for v in theta.values():
            v.requires_grad_()
        gs = torch.autograd.grad(mse(theta, t["support"]["x"], t["support_labels"]), list(theta.values()))
        adapted = {n: (w - 0.05 * g).detach().requires_grad_() for (n, w), g in zip(theta.items(), gs)}
        gq = torch.autograd.grad(mse(adapted, t["query"]["x"], t["query_labels"]), list(adapted.values()))
        for n, a, b in zip(theta, gs, gq):
            expected[n] -= a * b / len(tasks)
    for n, lr in zip(algo.lr_names, algo.lrs):
        torch.testing.assert_close(lr.grad, expected[n], atol=1e-10, rtol=0)

    opt = torch.optim.Adam([*model.parameters(), *algo.parameters()], lr=0.01)
    first = algo.meta_loss(model, tasks).loss.item()
    for _ in range(15):
        opt.zero_grad()
        algo.meta_loss(model, tasks).loss.backward()
        opt.step()
    assert algo.meta_loss(model, tasks).loss.item() < 0.8 * first
    assert max((lr - 0.05).abs().max().item() for lr in algo.lrs) > 0.05
    assert len(list(algo.parameters())) == len(list(model.parameters()))


def test_meta_sgd_needs_setup():
    with pytest.raises(RuntimeError, match="setup"):
        MetaSGD().meta_loss(tiny_mlp(), sin_tasks(1))


def test_anil_adapts_only_the_head():
    model = tiny_mlp(seed=4)
    ep = sin_tasks(1, seed=4)[0]
    algo = ANIL(inner_lr=0.1, inner_steps=3)
    assert algo.adapted_names(model) == ["head.weight", "head.bias"]
    adapted = algo.adapt_params(model, ep)
    for n, p in model.named_parameters():
        if n.startswith("head."):
            assert not torch.equal(adapted[n], p)
        else:
            assert adapted[n] is p
    tasks = sin_tasks(2, seed=4)
    _, grads = meta_grads(algo, model, tasks)
    assert grads["body.0.linear.weight"].abs().sum() > 0  # the shared body is meta-trained...
    v = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    assert dot(grads, v) == pytest.approx(directional_fd(algo, model, tasks, v), rel=1e-6)  # ...second order


def test_inner_loop_never_mutates_the_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1)).double().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    tasks = sin_tasks(2)
    algo = MAML(inner_lr=0.1, inner_steps=2)
    assert not algo.use_vmap(model, tasks)  # second order through BatchNorm is never vmapped
    algo.meta_loss(model, tasks).loss.backward()
    algo.adapt_and_predict(model, tasks[0], steps=5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # weights and BatchNorm running statistics untouched


# ---------------------------------------------------------------------------------------------------- Reptile
@pytest.mark.parametrize("adapt", ["all", "head"])
def test_reptile_grad_is_mean_parameter_difference(adapt):
    model = tiny_mlp(seed=5)
    tasks = sin_tasks(3, seed=5)
    algo = Reptile(inner_lr=0.05, inner_steps=3, adapt=adapt, vmap=False)
    out, grads = meta_grads(algo, model, tasks)
    names = [n for n, _ in model.named_parameters() if adapt == "all" or n.startswith("head.")]
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters() if n in names}
    post = 0.0
    for t in tasks:
        phi = {n: p.detach().clone() for n, p in model.named_parameters()}
        for _ in range(3):
            leaf = {n: w.requires_grad_() if n in names else w for n, w in ((n, w.detach()) for n, w in phi.items())}
            g = torch.autograd.grad(mse(leaf, t["support"]["x"], t["support_labels"]), [leaf[n] for n in names])
            phi = {
                **{n: w.detach() for n, w in leaf.items()},
                **{n: leaf[n].detach() - 0.05 * gi for n, gi in zip(names, g)},
            }
        for n in names:
            expected[n] += (dict(model.named_parameters())[n].detach() - phi[n]) / len(tasks)
        post += mse(phi, t["query"]["x"], t["query_labels"]).item() / len(tasks)
    assert sorted(grads) == sorted(names)  # non-adapted parameters get no gradient
    for n in names:
        torch.testing.assert_close(grads[n], expected[n], atol=1e-12, rtol=0)
    assert out.loss.item() == pytest.approx(post, rel=1e-10)  # the logged value is the post-adaptation loss
    torch.testing.assert_close(algo.meta_gradient(model, tasks)[names[0]], expected[names[0]], atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------------- vmap vs loop
@pytest.mark.parametrize(
    "make",
    [
        lambda m: MAML(inner_lr=0.01, inner_steps=2),
        lambda m: FOMAML(inner_lr=0.01),
        lambda m: ANIL(inner_lr=0.05),
        lambda m: MetaSGD(model=m, inner_lr=0.01),
        lambda m: Reptile(inner_lr=0.02, inner_steps=3),
    ],
    ids=["maml", "fomaml", "anil", "metasgd", "reptile"],
)
def test_vmap_and_loop_agree(make):
    torch.manual_seed(0)
    model = SinusoidMLP()  # float32, the paper's 40-40
    tasks = [SinusoidTasks(50, seed=7)[i] for i in range(6)]
    results = []
    for vmap in (True, False):
        algo = make(model)
        algo.vmap = vmap
        assert algo.use_vmap(model, tasks) is vmap
        out, grads = meta_grads(algo, model, tasks)
        extra = [p.grad.clone() for p in algo.parameters()]
        results.append((out, grads, extra))
    (a, ga, ea), (b, gb, eb) = results
    assert a.loss.item() == pytest.approx(b.loss.item(), abs=1e-5)
    assert a.metrics["query_loss_pre"] == pytest.approx(b.metrics["query_loss_pre"], abs=1e-5)
    assert sorted(ga) == sorted(gb)
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], atol=1e-5, rtol=1e-5)
    for x, y in zip(ea, eb):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_vmap_draws_different_dropout_masks_per_task():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 32), nn.Dropout(0.5), nn.ReLU(), nn.Linear(32, 1)).train()
    ep = SinusoidTasks(5)[0]
    out = FOMAML(vmap=True).meta_loss(model, [ep, ep, ep])
    assert not torch.allclose(out.query_logits[0], out.query_logits[1])


def test_second_order_vmap_through_norm_layers_is_refused():
    # torch's vmap batching rule for the layer-norm backward is wrong w.r.t. the input (functorch#534); the loop is
    # right (it matches finite differences), so "auto" loops and vmap=True raises.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 6), nn.LayerNorm(6), nn.Linear(6, 1)).double()
    tasks = sin_tasks(3)
    auto = MAML(inner_lr=0.4)
    assert not auto.use_vmap(model, tasks)
    assert FOMAML().use_vmap(model, tasks)  # first order through the norm is fine
    with pytest.raises(ValueError, match="functorch#534"):
        MAML(vmap=True).meta_loss(model, tasks)
    _, grads = meta_grads(auto, model, tasks)
    v = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    assert dot(grads, v) == pytest.approx(directional_fd(auto, model, tasks, v), rel=1e-6)


# ---------------------------------------------------------------------------------------------------- transformers
def test_second_order_maml_on_bert_with_sdpa_matches_finite_differences():
    model = tiny_bert(dtype=torch.float64)
    assert model.config._attn_implementation == "sdpa"  # the kernel whose CPU backward is not differentiable
    tasks = [text_episode(seed=0), text_episode(seed=1)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    algo = MAML(inner_lr=0.5, inner_steps=1)
    assert not algo.use_vmap(model, tasks)
    out, grads = meta_grads(algo, model, tasks)
    assert set(out.metrics) >= {"query_loss", "query_accuracy", "query_loss_pre", "query_accuracy_pre"}
    torch.manual_seed(0)
    v = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    assert dot(grads, v) == pytest.approx(directional_fd(algo, model, tasks, v), rel=1e-5)
    _, fo = meta_grads(FOMAML(inner_lr=0.5), model, tasks)
    assert max((grads[n] - fo[n]).abs().max().item() for n in fo) > 1e-6
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert algo.adapt_and_predict(model, tasks[0], steps=3).shape == (6, 3)


def test_lora_adapt_changes_only_lora_parameters():
    from peft import LoraConfig, get_peft_model

    bert = tiny_bert(dtype=torch.float64)
    model = get_peft_model(bert, LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS"))
    algo = MAML(inner_lr=5.0, inner_steps=2, adapt="lora")
    names = algo.adapted_names(model)
    assert names and all("lora_" in n for n in names)
    adapted = algo.adapt_params(model, text_episode())
    for n, p in model.named_parameters():
        if "lora_" in n:
            assert not torch.equal(adapted[n], p), n  # two steps: lora_B moves first, then lora_A
        else:
            assert adapted[n] is p, n
    out, grads = meta_grads(algo, model, [text_episode(seed=0), text_episode(seed=1)])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(grads) <= trainable and any("lora_A" in n for n in grads)
    with pytest.raises(ValueError, match="get_peft_model"):
        MAML(adapt="lora").meta_loss(tiny_bert(), [text_episode()])


def test_tasks_of_different_shapes_loop():
    model = tiny_bert()
    tasks = [text_episode(seq=6), text_episode(n_way=2, k=3, q=1, seq=9, seed=1)]
    # the model's head has 3 outputs; ProtoNet has one logit per prototype (2 in the 2-way task)
    for algo, n_out in ((MAML(inner_lr=0.1), 3), (Reptile(inner_steps=2), 3), (ProtoNet(), 2)):
        out = algo.meta_loss(model, tasks)
        out.loss.backward()
        assert [tuple(lg.shape) for lg in out.query_logits] == [(6, 3), (2, n_out)]


def test_adapt_specs():
    model = tiny_mlp()
    assert adapted_names(model, "head") == ["head.weight", "head.bias"]
    assert adapted_names(model, "last-2") == ["body.0.linear.weight", "body.0.linear.bias", "head.weight", "head.bias"]
    assert adapted_names(model, ["head.bias"]) == ["head.bias"]
    assert adapted_names(model, "body.0") == ["body.0.linear.weight", "body.0.linear.bias"]
    assert adapted_names(model, regex_selector(r"\.bias$")) == ["body.0.linear.bias", "head.bias"]
    model.head.weight.requires_grad_(False)
    assert "head.weight" not in adapted_names(model, "all")
    with pytest.raises(ValueError, match="selects no parameter"):
        adapted_names(model, lambda n: False)
    plain = nn.Sequential(nn.Linear(1, 2), nn.Linear(2, 1))
    with pytest.raises(ValueError, match="layer_map"):
        adapted_names(plain, "head")
    assert adapted_names(plain, "head", layer_map={"depths": {r"^0\.": 0, r"^1\.": 1}}) == ["1.weight", "1.bias"]


def test_episode_errors_are_clear():
    with pytest.raises(KeyError, match="query_labels"):
        MAML().meta_loss(tiny_mlp(), [{"support": {}, "support_labels": 0, "query": {}}])
    with pytest.raises(ValueError, match="empty"):
        MAML().meta_loss(tiny_mlp(), [])


# ---------------------------------------------------------------------------------------------------- fine-tune baseline
def test_finetune_baseline_fits_a_linear_head_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
    centers = torch.randn(3, 4) * 3

    def make(n):  # noqa: E306
        y = torch.arange(3).repeat(n)
        return centers[y] + 0.1 * torch.randn(len(y), 4), y

    xs, ys = make(5)
    xq, yq = make(10)
    ep = {"support": {"input": xs}, "support_labels": ys, "query": {"input": xq}, "query_labels": yq}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for train in ("head", "all"):
        logits = FineTuneBaseline(train=train, steps=100, lr=0.1).adapt_and_predict(model, ep)
        assert logits.shape == (30, 3)
        assert (logits.argmax(-1) == yq).float().mean() > 0.9
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    untrained = FineTuneBaseline(steps=0).adapt_and_predict(model, ep)
    assert torch.equal(untrained, FineTuneBaseline(steps=0).adapt_and_predict(model, ep))  # seeded head
    with pytest.raises(TypeError, match="evaluation baseline"):
        FineTuneBaseline().meta_loss(model, [ep])


def test_registry_names_every_algorithm():
    assert set(ALGORITHMS) == {"protonet", "maml", "fomaml", "anil", "metasgd", "reptile", "finetune"}
    assert MAML().second_order and not FOMAML().second_order and not Reptile().second_order
    assert F.mse_loss is not None
