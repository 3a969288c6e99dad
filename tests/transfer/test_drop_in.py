"""The drop-in promise: with no strategy set, `TransferTrainer` is stock `Trainer` for every model, argument type and
optimizer path (same weights, param groups, callbacks, log keys and arguments object); a strategy builds a layer map
only then, and refuses what it cannot compose with, naming it."""

import dataclasses

import numpy as np
import pytest
import torch
import transformers as T
from datasets import Dataset
from tiny_models import tiny_bert
from torch import nn
from transformers import Seq2SeqTrainingArguments, Trainer, TrainingArguments
from transformers.trainer_optimizer import _OPTIMIZER_HANDLERS, _setup_low_rank_optimizer
from transformers.training_args import OptimizerNames

from hf_transfer_meta import LayerMapError, TransferArguments, TransferTrainer, TransferTrainingArguments


# ----------------------------------------------------------------------------------------------- models and data
class MLP(nn.Module):
    """A custom nn.Module: no repeated blocks, no transformers base class."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x, labels=None):
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


class RegressionConfig(T.PretrainedConfig):
    model_type = "toy-regression"

    def __init__(self, a=0.0, b=0.0, **kw):
        self.a, self.b = a, b
        super().__init__(**kw)


class RegressionModel(T.PreTrainedModel):
    """y = a * x + b as a transformers model: two scalar parameters, nothing a layer map could find."""

    config_class = RegressionConfig

    def __init__(self, config):
        super().__init__(config)
        self.a = nn.Parameter(torch.tensor(float(config.a)))
        self.b = nn.Parameter(torch.tensor(float(config.b)))
        self.post_init()

    def forward(self, x, labels=None, **kwargs):
        y = self.a * x + self.b
        loss = nn.functional.mse_loss(y, labels) if labels is not None else None
        return T.modeling_outputs.SequenceClassifierOutput(loss=loss, logits=y)


class Dicts(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def mlp_data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return Dicts(x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long())


def regression_data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g)
    return Dicts(x, 2.0 * x + 3.0 + 0.1 * torch.randn(n, generator=g))


def bert(seed=0):
    return tiny_bert(layers=2, seed=seed)


def text_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, size=(n, 8))
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": (ids[:, 0] > 25).astype(int).tolist()})


MODELS = {
    "mlp": (MLP, mlp_data),
    "regression": (lambda: RegressionModel(RegressionConfig()), regression_data),
    "bert": (bert, text_data),
}


def common(tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, learning_rate=1e-2, max_steps=6,
        report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0, logging_steps=1,
        weight_decay=0.01, dataloader_num_workers=0, lr_scheduler_type="cosine", warmup_steps=2,
    )  # fmt: skip
    base.update(kw)
    return base


def group_summary(trainer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return [
        (tuple(names[id(p)] for p in g["params"]), g["weight_decay"], g["lr"], g.get("initial_lr"))
        for g in trainer.optimizer.param_groups
    ]


def log_keys(trainer):
    return [sorted(h) for h in trainer.state.log_history]


def run_both(tmp_path, make_model, data, stock_args, ours_args, **trainer_kw):
    stock_model, our_model = make_model(), make_model()
    stock = Trainer(model=stock_model, args=stock_args, train_dataset=data, **trainer_kw)
    ours = TransferTrainer(model=our_model, args=ours_args, train_dataset=data, **trainer_kw)
    stock.train()
    ours.train()
    return stock, ours, stock_model, our_model


def assert_same_weights(a, b):
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


# ------------------------------------------------------------------------------------------------- D1 - D4, D6
@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_strategy_is_stock_trainer_for_any_model(tmp_path, name):
    make_model, make_data = MODELS[name]
    data = make_data()
    stock_args = TrainingArguments(**common(tmp_path / "stock"))
    ours_args = TransferTrainingArguments(**common(tmp_path / "ours"))
    stock, ours, sm, om = run_both(tmp_path, make_model, data, stock_args, ours_args)
    assert_same_weights(sm, om)
    assert not torch.equal(next(iter(make_model().parameters())), next(iter(om.parameters())))  # it trained
    # D3: Trainer's decay / no-decay pair, same members, same LRs
    assert group_summary(stock, sm) == group_summary(ours, om)
    assert len(ours.optimizer.param_groups) == 2
    assert ours.get_learning_rates() == stock.get_learning_rates()
    # D2: the same callbacks; D6: the same log keys (no lr/<group>)
    assert [type(c) for c in ours.callback_handler.callbacks] == [type(c) for c in stock.callback_handler.callbacks]
    assert log_keys(ours) == log_keys(stock)
    assert not any(k.startswith("lr/") for h in ours.state.log_history for k in h)
    # D1: no layer map was built
    assert ours.layer_map is None and ours.transfer_plan is None
    # D4: the arguments object the user passed
    assert ours.args is ours_args


def test_no_decay_group_at_zero_weight_decay_matches_stock(tmp_path):
    stock_args = TrainingArguments(**common(tmp_path / "s", weight_decay=0.0))
    ours_args = TrainingArguments(**common(tmp_path / "o", weight_decay=0.0))
    stock, ours, sm, om = run_both(tmp_path, bert, text_data(), stock_args, ours_args)
    assert group_summary(stock, sm) == group_summary(ours, om)
    assert_same_weights(sm, om)


def test_training_arguments_subclasses_are_held_as_given(tmp_path):
    @dataclasses.dataclass
    class MyArgs(TrainingArguments):
        my_extra_field: int = dataclasses.field(default=7)

    for cls in (Seq2SeqTrainingArguments, MyArgs, TrainingArguments):
        a = cls(**common(tmp_path / cls.__name__))
        trainer = TransferTrainer(model=MLP(), args=a, train_dataset=mlp_data())
        assert trainer.args is a
        trainer.train()
    assert trainer.args.my_extra_field == 7 if isinstance(trainer.args, MyArgs) else True


def test_strategy_from_a_separate_dataclass_beside_any_training_arguments(tmp_path):
    parser = T.HfArgumentParser((TransferArguments, Seq2SeqTrainingArguments))
    transfer, training = parser.parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path / "o"), "--layer_lr_decay", "0.5", "--max_steps", "2", "--use_cpu", "true",
         "--report_to", "none", "--save_strategy", "no", "--learning_rate", "1e-3", "--weight_decay", "0"]
    )  # fmt: skip
    trainer = TransferTrainer(model=bert(), args=training, transfer_args=transfer, train_dataset=text_data())
    assert trainer.args is training
    trainer.train()
    lrs = {g["name"]: g["initial_lr"] for g in trainer.optimizer.param_groups}
    assert lrs["00_embeddings_no_decay"] == pytest.approx(1e-3 * 0.5**3)
    assert lrs["03_head_no_decay"] == pytest.approx(1e-3)
    # the same strategy in two places is refused
    with pytest.raises(ValueError, match="give it in one place"):
        TransferTrainer(
            model=bert(), args=TransferTrainingArguments(**common(tmp_path, gradual_unfreezing=True)),
            transfer_args=transfer, train_dataset=text_data(),
        )  # fmt: skip


# ------------------------------------------------------------------------------------ strategies need a layer map
def test_strategy_on_an_unmappable_model_names_the_override(tmp_path):
    a = TransferTrainingArguments(**common(tmp_path, gradual_unfreezing=True))
    with pytest.raises(LayerMapError, match="blocks="):
        TransferTrainer(model=MLP(), args=a, train_dataset=mlp_data())
    # with the override it trains
    a = TransferTrainingArguments(
        **common(tmp_path, layer_lr_decay=0.5, layer_map_blocks=["net.0"], layer_map_head=["net.2"])
    )
    trainer = TransferTrainer(model=MLP(), args=a, train_dataset=mlp_data())
    trainer.train()
    assert trainer.layer_map.num_depths == 3


# ------------------------------------------------------------------------------------------------------- D5
def test_user_optimizer_over_part_of_the_model(tmp_path):
    def train(cls, model, **kw):
        opt = torch.optim.SGD(model.net[2].parameters(), lr=0.1)
        args_cls = TransferTrainingArguments if cls is TransferTrainer else TrainingArguments
        t = cls(model=model, args=args_cls(**common(tmp_path / cls.__name__, **kw)), train_dataset=mlp_data(),
                optimizers=(opt, None))  # fmt: skip
        t.train()
        return t

    stock_model, our_model = MLP(), MLP()
    train(Trainer, stock_model)
    train(TransferTrainer, our_model)
    assert_same_weights(stock_model, our_model)
    assert torch.equal(our_model.net[0].weight, MLP().net[0].weight)  # not in the optimizer: never moved
    # a strategy that must unfreeze parameters the user's optimizer lacks: refused, naming them
    kw = dict(gradual_unfreezing=True, layer_map_blocks=["net.0"], layer_map_head=["net.2"])
    with pytest.raises(RuntimeError, match=r"does not hold 2 parameter\(s\).*net\.0\.weight"):
        train(TransferTrainer, MLP(), **kw)
    # per-depth LRs cannot be put into a user's optimizer: refused at construction
    with pytest.raises(ValueError, match="optimizers="):
        TransferTrainer(
            model=MLP(), args=TransferTrainingArguments(**common(tmp_path, layer_lr_decay=0.5, **{k: v for k, v in kw.items() if k != "gradual_unfreezing"})),
            train_dataset=mlp_data(), optimizers=(torch.optim.SGD(MLP().parameters(), lr=0.1), None),
        )  # fmt: skip


def test_freezing_strategy_with_a_user_optimizer_holding_everything(tmp_path):
    model = bert()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    a = TransferTrainingArguments(**common(tmp_path, trainable_depths=["head"], lr_scheduler_type="linear"))
    TransferTrainer(model=model, args=a, train_dataset=text_data(), optimizers=(opt, None)).train()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == (not n.startswith("classifier")), n


class FakeGaLore(torch.optim.AdamW):
    """Stands in for galore_torch.GaLoreAdamW (whose import needs bitsandbytes): AdamW that accepts the GaLore
    group keys, so Trainer's real `optim_target_modules` path builds its groups."""


def _fake_galore_handler(ctx):
    kwargs = {"rank": 4, "update_proj_gap": 10, "scale": 0.25, "proj_type": "std"}
    return _setup_low_rank_optimizer(
        ctx.args, ctx.model, ctx.args.optim, {OptimizerNames.GALORE_ADAMW: FakeGaLore}, kwargs, ctx.optimizer_kwargs
    )


class AdamWFactory:
    """An optimizer factory as Trainer supports them (Muon, Dion): called with the model."""

    def __call__(self, model, **kwargs):
        return torch.optim.AdamW(model.parameters(), **kwargs)


def _factory_handler(ctx):
    return AdamWFactory, ctx.optimizer_kwargs


@pytest.mark.parametrize("path", ["galore", "factory"])
def test_trainer_optimizer_paths_pass_through(tmp_path, monkeypatch, path):
    if path == "galore":
        monkeypatch.setitem(_OPTIMIZER_HANDLERS, OptimizerNames.GALORE_ADAMW, _fake_galore_handler)
        kw = dict(optim="galore_adamw", optim_target_modules=["attention", "intermediate"])
    else:
        monkeypatch.setitem(_OPTIMIZER_HANDLERS, OptimizerNames.SGD, _factory_handler)
        kw = dict(optim="sgd")
    stock_args = TrainingArguments(**common(tmp_path / "s", **kw))
    ours_args = TransferTrainingArguments(**common(tmp_path / "o", **kw))
    stock, ours, sm, om = run_both(tmp_path, bert, text_data(), stock_args, ours_args)
    assert type(ours.optimizer.optimizer if hasattr(ours.optimizer, "optimizer") else ours.optimizer) is (
        FakeGaLore if path == "galore" else torch.optim.AdamW
    )
    if path == "galore":
        assert any("rank" in g for g in ours.optimizer.param_groups)
    assert group_summary(stock, sm) == group_summary(ours, om)
    assert_same_weights(sm, om)
    # a freezing strategy composes with them: Trainer builds the optimizer, the schedule freezes
    model = bert()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    a = TransferTrainingArguments(**common(tmp_path / "f", trainable_depths=["head"], **kw))
    TransferTrainer(model=model, args=a, train_dataset=text_data()).train()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == (not n.startswith("classifier")), n
    # per-depth LRs cannot: refused with the optimizer's name
    a = TransferTrainingArguments(**common(tmp_path / "l", layer_lr_decay=0.5, **kw))
    with pytest.raises(ValueError, match=f"optim='{kw['optim']}' builds its own parameter groups"):
        TransferTrainer(model=bert(), args=a, train_dataset=text_data()).train()


def test_optimizer_cls_and_kwargs_pass_through(tmp_path):
    kw = {"optimizer_cls_and_kwargs": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9})}
    stock, ours, sm, om = run_both(
        tmp_path, bert, text_data(), TrainingArguments(**common(tmp_path / "s")),
        TransferTrainingArguments(**common(tmp_path / "o")), **kw,
    )  # fmt: skip
    assert isinstance(ours.optimizer.optimizer, torch.optim.SGD)  # inside accelerate's wrapper
    assert group_summary(stock, sm) == group_summary(ours, om)
    assert_same_weights(sm, om)
    # with a strategy: per-depth groups, the class and kwargs kept
    a = TransferTrainingArguments(**common(tmp_path / "l", layer_lr_decay=0.5))
    t = TransferTrainer(model=bert(), args=a, train_dataset=text_data(), **kw)
    t.train()
    assert isinstance(t.optimizer.optimizer, torch.optim.SGD) and t.optimizer.param_groups[0]["momentum"] == 0.9
    assert len(t.optimizer.param_groups) > 2


# ------------------------------------------------------------------------ model_init and hyper-parameter search
def test_hyperparameter_search_with_model_init_matches_stock(tmp_path):
    pytest.importorskip("optuna")

    def hp_space(trial):
        return {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)}

    def search(cls, args_cls, **kw):
        a = args_cls(**common(tmp_path / cls.__name__, eval_strategy="no", **kw))
        trainer = cls(
            model_init=lambda trial=None: bert(), args=a, train_dataset=text_data(), eval_dataset=text_data(seed=1)
        )
        best = trainer.hyperparameter_search(
            backend="optuna", hp_space=hp_space, n_trials=2, direction="minimize",
            compute_objective=lambda metrics: metrics["eval_loss"], sampler=__import__("optuna").samplers.RandomSampler(seed=0),
        )  # fmt: skip
        return best, trainer

    stock_best, _ = search(Trainer, TrainingArguments)
    our_best, _ = search(TransferTrainer, TransferTrainingArguments)
    assert our_best.hyperparameters == stock_best.hyperparameters
    assert our_best.objective == pytest.approx(stock_best.objective, abs=1e-7)
    # with a strategy: the plan is built on the model model_init made, for every trial
    best, trainer = search(
        TransferTrainer, TransferTrainingArguments, layer_lr_decay=0.5, trainable_depths=["last", "head"]
    )
    assert trainer.transfer_plan is not None and trainer.transfer_plan.layer_map.num_depths == 4
    assert len(trainer.optimizer.param_groups) > 2
