"""The one registry of algorithms: argument choices and `build_algorithm` read it; old names warn and still work."""

import pickle

import pytest
import torch

import hf_transfer_meta.meta as meta
from hf_transfer_meta.meta import ALGORITHMS, MetaTrainingArguments, build_algorithm, register_algorithm
from hf_transfer_meta.meta.algorithms import FOMAML, MAML, FineTuneBaseline, MetaAlgorithm, MetaSGD, ProtoNet
from hf_transfer_meta.meta.models import SinusoidMLP


def args(tmp_path, **kw):
    return MetaTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, **kw)


def test_build_algorithm_configures_each_registered_class(tmp_path):
    maml = build_algorithm(args(tmp_path, algorithm="maml", inner_lr=0.3, inner_steps=2, eval_inner_steps=5))
    assert type(maml) is MAML and (maml.inner_lr, maml.inner_steps, maml.eval_steps) == (0.3, 2, 5)
    assert type(build_algorithm(args(tmp_path, algorithm="maml", first_order=True))) is FOMAML
    assert build_algorithm(args(tmp_path, algorithm="anil")).adapt == "head"
    proto = build_algorithm(args(tmp_path, algorithm="protonet", protonet_distance="cosine", embedding="mean"))
    assert type(proto) is ProtoNet and (proto.distance, proto.embedding) == ("cosine", "mean")
    sgd = build_algorithm(args(tmp_path, algorithm="metasgd", metasgd_lr_shape="scalar"), SinusoidMLP())
    assert type(sgd) is MetaSGD and len(sgd.lr_names) == 6 and all(p.dim() == 0 for p in sgd.parameters())
    assert type(build_algorithm(args(tmp_path, algorithm="finetune"))) is FineTuneBaseline
    assert set(ALGORITHMS) == {"protonet", "maml", "fomaml", "anil", "metasgd", "reptile", "finetune"}


def test_a_registered_algorithm_is_an_argument_choice(tmp_path):
    @register_algorithm("tinyproto")
    class TinyProto(ProtoNet):
        pass

    try:
        algorithm = build_algorithm(args(tmp_path, algorithm="tiny-proto"))
        assert type(algorithm) is TinyProto
    finally:
        del ALGORITHMS["tinyproto"]
    with pytest.raises(ValueError, match="algorithm='tinyproto' is not one of"):
        args(tmp_path, algorithm="tinyproto")
    with pytest.raises(ValueError, match="already registered to MAML"):
        register_algorithm("maml")(MetaAlgorithm)


def test_old_names_warn_and_return_the_new_objects():
    with pytest.warns(FutureWarning, match="FineTune is deprecated.*FineTuneBaseline"):
        assert meta.FineTune is FineTuneBaseline
    from hf_transfer_meta.meta import algorithms, arguments, functional

    with pytest.warns(FutureWarning, match="FineTuneBaseline"):
        assert algorithms.FineTune is FineTuneBaseline
    with pytest.warns(FutureWarning, match="META_ALGORITHMS"):
        assert meta.META_ALGORITHMS == tuple(ALGORITHMS) == arguments.META_ALGORITHMS
    with pytest.warns(FutureWarning, match="functional_logits"):
        assert functional.forward is functional.functional_logits
    with pytest.warns(FutureWarning, match="n_query"):
        tasks = meta.SinusoidTasks(4, k_query=3)
    assert tasks.n_query == 3 and tasks[0]["query_labels"].shape == (3, 1)


def test_pickled_arguments_load_back(tmp_path):
    a = args(tmp_path, algorithm="reptile", n_way=3, eval_k_shot=5)
    torch.save(a, tmp_path / "training_args.bin")
    loaded = torch.load(tmp_path / "training_args.bin", weights_only=False)
    assert type(loaded) is MetaTrainingArguments and (loaded.algorithm, loaded.eval_k_shot) == ("reptile", 5)
    assert pickle.loads(pickle.dumps(a)).n_way == 3
