import math

import pytest
import torch
import transformers as T

from hf_transfer_meta import LayerMap, depth_learning_rates, slanted_triangular
from hf_transfer_meta.transfer.param_groups import build_param_groups
from hf_transfer_meta.transfer.schedules import Phase, TransferSchedule
from hf_transfer_meta.transfer.strategies.gradual_unfreezing import gradual_unfreezing_phases
from hf_transfer_meta.transfer.strategies.lp_ft import lp_ft_phases


def _bert(layers=4):
    cfg = T.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32
    )
    return T.BertForSequenceClassification(cfg)


def test_stlr_matches_the_ulmfit_formula():
    T_, cut_frac, ratio = 1000, 0.1, 32
    cut = math.floor(T_ * cut_frac)
    for t in [0, 1, 50, 99, 100, 101, 500, 999, 1000]:
        p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
        assert slanted_triangular(t, T_, cut_frac, ratio) == pytest.approx((1 + p * (ratio - 1)) / ratio)
    assert slanted_triangular(0, T_) == pytest.approx(1 / 32)
    assert slanted_triangular(cut, T_) == pytest.approx(1.0)
    assert slanted_triangular(T_, T_) == pytest.approx(1 / 32)


def test_llrd_slice_and_head_multiplier():
    lm = LayerMap.from_model(_bert(4))  # depths 0..5
    lrs = depth_learning_rates(lm, 1e-3, layer_lr_decay=0.8)
    assert lrs == pytest.approx({d: 1e-3 * 0.8 ** (5 - d) for d in range(6)})
    ulmfit = depth_learning_rates(lm, 1e-2, layer_lr_decay=1 / 2.6)
    assert ulmfit[4] / ulmfit[3] == pytest.approx(2.6)
    sl = depth_learning_rates(lm, 123.0, lr_slice=(1e-5, 1e-3), head_lr_multiplier=10)
    assert sl[0] == pytest.approx(1e-5) and sl[4] == pytest.approx(1e-5 * 100**0.8)
    assert sl[5] == pytest.approx(1e-2)
    for d in range(4):
        assert sl[d + 1] / sl[d] == pytest.approx(100**0.2)
    with pytest.raises(ValueError, match="either"):
        depth_learning_rates(lm, 1e-3, layer_lr_decay=0.8, lr_slice=(1e-5, 1e-3))
    with pytest.raises(ValueError, match="layer_lr_decay"):
        depth_learning_rates(lm, 1e-3, layer_lr_decay=1.5)


def test_param_groups_cover_every_parameter_once():
    model = _bert(2)
    lm = LayerMap.from_model(model)
    groups = build_param_groups(
        model, lm, depth_learning_rates(lm, 1.0, layer_lr_decay=0.5), weight_decay=0.01,
        decay_parameter_names=[n for n, _ in model.named_parameters() if "bias" not in n and "LayerNorm" not in n],
    )  # fmt: skip
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    for g in groups:
        assert g["lr"] == 0.5 ** (lm.head_depth - g["depth"])
        assert all(lm.depth_of[n] == g["depth"] for n in g["param_names"])
        assert (g["weight_decay"] == 0.0) == g["name"].endswith("_no_decay")
    torch.optim.AdamW(groups)  # torch accepts the extra keys


def test_gradual_unfreezing_phases():
    s = TransferSchedule(gradual_unfreezing_phases(5, every=10), total_steps=100, num_depths=5, base="constant")
    assert s.trainable_depths(0) == {4}
    assert s.trainable_depths(9) == {4}
    assert s.trainable_depths(10) == {3, 4}
    assert s.trainable_depths(39) == {1, 2, 3, 4}
    assert s.trainable_depths(40) == {0, 1, 2, 3, 4} == s.trainable_depths(99)
    assert s.lr_multiplier(0, 5) == 0.0 and s.lr_multiplier(4, 5) == 1.0


def test_restarting_phases_restart_the_base_schedule():
    s = TransferSchedule(
        lp_ft_phases(4, 20, lp_lr_multiplier=3.0), total_steps=100, num_depths=4, base="linear", warmup=0.1
    )
    # LP: 20 steps, warmup 2, linear decay; FT: 80 steps, warmup 8
    assert s.lr_multiplier(3, 0) == 0.0  # warmup starts at 0
    assert s.lr_multiplier(3, 1) == pytest.approx(3.0 * 0.5)
    assert s.lr_multiplier(3, 10) == pytest.approx(3.0 * (20 - 10) / (20 - 2))
    assert s.lr_multiplier(0, 10) == 0.0  # frozen during LP
    assert s.lr_multiplier(0, 20) == 0.0 and s.lr_multiplier(0, 24) == pytest.approx(4 / 8)
    assert s.lr_multiplier(0, 60) == pytest.approx((80 - 40) / (80 - 8))
    s2 = TransferSchedule(gradual_unfreezing_phases(3, 10, restart=True), 30, 3, base="slanted_triangular",
                          base_kwargs={"cut_frac": 0.1, "ratio": 32})  # fmt: skip
    for step in range(30):
        local = step % 10
        assert s2.lr_multiplier(2, step) == pytest.approx(slanted_triangular(local, 10, 0.1, 32))


def test_schedule_errors():
    with pytest.raises(ValueError, match="step 0"):
        TransferSchedule([Phase(5, frozenset({1}))], 10, 2)
    with pytest.raises(ValueError, match="cannot be combined"):
        TransferSchedule([Phase(0, frozenset({1}))], 10, 2, base="polynomial").lr_multiplier(1, 3)
