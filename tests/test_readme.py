"""Every Python example of the README runs as written, from a folder beside `../shared` as the repository is.

The first example is the README's ULMFiT run on a 1-epoch budget: it must end with every depth of MiniLM trained and
an accuracy on SST-2 that an untrained head (about 50%) does not reach.
"""

import os
import re
from pathlib import Path

import pytest
import torch
from conftest import REPO, shared_data_path

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


@pytest.fixture
def beside_shared(tmp_path, monkeypatch):
    """A working folder whose `../shared` is the real one, so that the README's relative paths resolve."""
    data = shared_data_path()  # fails under CI=true when missing
    (tmp_path / "shared").symlink_to(data.parent)
    work = tmp_path / "repo"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_readme_has_the_examples():
    assert len(BLOCKS) >= 3
    assert "TransferTrainer(" in BLOCKS[0] and "MetaTrainer(" in "".join(BLOCKS)


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_example_runs_as_written(beside_shared, minilm_path, index):
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(BLOCKS[index], f"README.md:python-block-{index}", "exec"), namespace)
    if "TransferTrainer(" in BLOCKS[index] and "trainer" in namespace:
        _check_ulmfit_example(namespace)


def _check_ulmfit_example(ns):
    from transformers import AutoModelForSequenceClassification

    from hf_transfer_meta import LayerMap

    trainer, model = ns["trainer"], ns["model"]
    assert trainer.state.global_step == 32  # 512 examples, batch 16, one epoch
    pretrained = dict(
        AutoModelForSequenceClassification.from_pretrained(ns["checkpoint"], num_labels=2).named_parameters()
    )
    lm = LayerMap.from_model(model)
    moved = dict.fromkeys(range(lm.num_depths), False)
    for n, p in model.named_parameters():
        if not n.startswith("classifier"):  # the head starts random: compare the pretrained depths
            moved[lm.depth_of[n]] |= not torch.equal(p.detach(), pretrained[n].detach())
    moved[lm.head_depth] = True
    assert all(moved.values()), moved  # every depth trained within the one epoch (U1)
    phases = trainer.transfer_schedule.describe()
    assert phases[-1]["name"] == "all_depths" and phases[-1]["steps"] == [16, 32]
    accuracy = trainer.evaluate()["eval_accuracy"]
    assert accuracy > 0.65, accuracy
    assert os.path.isdir(Path("runs") / "minilm-sst2-ulmfit")
