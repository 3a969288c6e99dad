"""push_to_hub through Trainer's own path, against a fake `HfApi` (the one `transformers.trainer` calls): what is
uploaded, the README it uploads, private artefacts absent, and the errors raised before the first step."""

import concurrent.futures
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_models import tiny_bert, token_dataset  # noqa: E402

import hf_transfer_meta.cards.hub as hub  # noqa: E402
from hf_transfer_meta.cards import PushToHubError  # noqa: E402
from hf_transfer_meta.meta import MetaTrainer, MetaTrainingArguments  # noqa: E402
from hf_transfer_meta.meta.sinusoid import SinusoidMLP, SinusoidTasks  # noqa: E402
from hf_transfer_meta.transfer import TransferTrainer, TransferTrainingArguments  # noqa: E402

TOKEN = "hf_PlantedArgsToken0123456789abcdefXYZ"
ENV_TOKEN = "hf_PlantedEnvToken9876543210zyxwvuQRS"
PRIVATE = ("_transfer_reference.safetensors", "_transfer_start_weights.safetensors")


class FakeHfApi:
    """Records create_repo / upload_folder / upload_file; an upload copies what it would send at that moment."""

    def __init__(self, fail_create: Exception | None = None):
        self.calls: list[tuple[str, dict]] = []
        self.uploads: list[dict] = []
        self.fail_create = fail_create

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, "token": token, "private": private}))
        if self.fail_create is not None:
            raise self.fail_create

        class RepoUrl(str):
            pass

        url = RepoUrl(f"https://huggingface.co/{repo_id}")
        url.repo_id = repo_id
        return url

    def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, commit_message=None, token=None,
                      run_as_future=False, ignore_patterns=None, revision=None, **kwargs):  # fmt: skip
        self.calls.append(("upload_folder", {"repo_id": repo_id, "token": token, "revision": revision}))
        paths = []
        for root, _, files in os.walk(folder_path):
            paths += [os.path.relpath(os.path.join(root, f), folder_path).replace(os.sep, "/") for f in files]
        patterns = list(ignore_patterns or []) + list(DEFAULT_IGNORE_PATTERNS)  # as HfApi.upload_folder filters
        sent = sorted(filter_repo_objects(paths, ignore_patterns=patterns))
        contents = {p: Path(folder_path, p).read_bytes() for p in sent}
        self.uploads.append({"path_in_repo": path_in_repo or "", "files": contents, "message": commit_message,
                             "revision": revision})  # fmt: skip
        done = concurrent.futures.Future()
        done.set_result(f"https://huggingface.co/{repo_id}/commit/{len(self.uploads)}")
        return done if run_as_future else done.result()

    def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, token=None, revision=None, **kwargs):
        self.calls.append(("upload_file", {"repo_id": repo_id, "path_in_repo": path_in_repo, "revision": revision}))
        data = Path(path_or_fileobj).read_bytes() if isinstance(path_or_fileobj, (str, os.PathLike)) else b""
        self.uploads.append({"path_in_repo": "", "files": {path_in_repo: data}, "message": None, "revision": revision})


@pytest.fixture
def online_with_fake_hub(monkeypatch):
    """The Hub "online" (HF_HUB_OFFLINE is set for the whole test session) and Trainer's HfApi replaced."""
    import transformers.trainer

    api = FakeHfApi()
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: api)
    monkeypatch.setattr("huggingface_hub.is_offline_mode", lambda: False)
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    return api


def _accuracy(p):
    return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}


def _scan_for_tokens(folder: Path) -> list[str]:
    hits = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if TOKEN.encode() in data or ENV_TOKEN.encode() in data:
                hits.append(str(path.relative_to(folder)))
    return hits


def _transfer_trainer(out, **kw):
    fields = dict(
        output_dir=str(out), report_to="none", use_cpu=True, max_steps=4, per_device_train_batch_size=16,
        logging_steps=1, save_strategy="steps", save_steps=2, eval_strategy="steps", eval_steps=2,
        disable_tqdm=True, layer_lr_decay=0.8, l2sp_alpha=0.01, push_to_hub=True, hub_model_id="someone/tiny-l2sp",
        hub_token=TOKEN, hub_private_repo=True, hub_strategy="checkpoint", hub_revision="dev",
    )  # fmt: skip
    args = TransferTrainingArguments(**{**fields, **kw})
    return TransferTrainer(tiny_bert(), args, train_dataset=token_dataset(), eval_dataset=token_dataset(32, seed=1),
                           compute_metrics=_accuracy)  # fmt: skip


def test_push_every_checkpoint_and_at_the_end(online_with_fake_hub, tmp_path):
    api, out = online_with_fake_hub, tmp_path / "run"
    trainer = _transfer_trainer(out)
    assert api.calls == [("create_repo", {"repo_id": "someone/tiny-l2sp", "token": TOKEN, "private": True})]
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_metrics("all", metrics)
    trainer.push_to_hub(dataset="random tokens")

    roots = [u for u in api.uploads if u["path_in_repo"] == ""]
    checkpoints = [u for u in api.uploads if u["path_in_repo"] == "last-checkpoint"]
    assert len(roots) == 3 and len(checkpoints) == 2  # saves at steps 2 and 4 (checkpoint strategy), then the end
    assert {u["revision"] for u in api.uploads} == {"dev"}
    assert all(c[1]["token"] == TOKEN for c in api.calls if c[0] == "upload_folder")  # the push itself has it

    for upload in api.uploads:
        names = set(upload["files"])
        assert not any(os.path.basename(n).startswith("_") for n in names), names  # private artefacts
        assert not any(n.startswith("checkpoint-") for n in names)
        for name, data in upload["files"].items():
            assert TOKEN.encode() not in data and ENV_TOKEN.encode() not in data, name
    # Every intermediate push sends a card of the run so far, with its records.
    for upload, step in zip(roots[:2], (2, 4)):
        assert {"README.md", "run_info.json", "transfer_summary.json", "model.safetensors"} <= set(upload["files"])
        assert f"| global_step | {step} |" in upload["files"]["README.md"].decode()
    final = roots[-1]["files"]
    expected = {"README.md", "all_results.json", "config.json", "model.safetensors", "run_info.json",
                "trainer_state.json", "training_args.bin", "transfer_summary.json", "depth_drift.json",
                "plot_learning_rates.png", "plot_losses.png", "plot_depth_drift.png"}  # fmt: skip
    assert set(final) == expected
    assert {"optimizer.pt", "trainer_state.json", "model.safetensors"} <= set(checkpoints[-1]["files"])

    card = ModelCard(final["README.md"].decode())
    assert {"hf-transfer-meta", "discriminative_lr", "l2sp"} <= set(card.data.tags)
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert values == {"eval_accuracy": metrics["eval_accuracy"], "eval_loss": metrics["eval_loss"]}
    assert "L2-SP" in card.text and "l2sp_alpha: 0.01" in card.text
    for image in ("plot_learning_rates.png", "plot_losses.png", "plot_depth_drift.png"):
        assert f"]({image})" in card.text
    # The private files are on disk (resume needs them), just never sent; no file of the run holds a token.
    assert all((out / name).is_file() for name in PRIVATE)
    assert _scan_for_tokens(out) == []


def test_every_save_pushes_no_checkpoint_folder(online_with_fake_hub, tmp_path):
    api = online_with_fake_hub
    trainer = _transfer_trainer(tmp_path / "run", hub_strategy="every_save", hub_revision=None, l2sp_alpha=0.0)
    trainer.train()
    assert [u["path_in_repo"] for u in api.uploads] == ["", ""]
    assert all("README.md" in u["files"] and "training_args.bin" in u["files"] for u in api.uploads)
    assert _scan_for_tokens(tmp_path / "run") == []


def test_meta_trainer_pushes_its_card(online_with_fake_hub, tmp_path):
    api, out = online_with_fake_hub, tmp_path / "meta"
    args = MetaTrainingArguments(
        output_dir=str(out), report_to="none", use_cpu=True, algorithm="maml", inner_lr=0.01, max_steps=3,
        per_device_train_batch_size=4, logging_steps=1, save_strategy="no", disable_tqdm=True, push_to_hub=True,
        hub_model_id="someone/sinusoid", hub_token=TOKEN,
    )  # fmt: skip
    trainer = MetaTrainer(model=SinusoidMLP(), args=args, train_dataset=SinusoidTasks(12, k_shot=5, n_query=5))
    trainer.train()
    metrics = trainer.evaluate(SinusoidTasks(20, k_shot=5, n_query=10, seed=7), metric_key_prefix="test")
    trainer.save_metrics("all", metrics)
    trainer.push_to_hub()
    (final,) = api.uploads
    assert {"README.md", "meta_summary.json", "run_info.json", "all_results.json"} <= set(final["files"])
    card = ModelCard(final["files"]["README.md"].decode())
    assert {"hf-transfer-meta", "few-shot", "maml"} <= set(card.data.tags)
    results = {r.metric_name: r for r in card.data.eval_results}
    assert results["test_mse"].metric_value == metrics["test_mse"]
    assert results["test_mse"].metric_args == {"k_shot": 5, "episodes": 20, "ci95": metrics["test_mse_ci95"]}
    assert "5-shot regression tasks (5 query points per task)" in card.text
    assert "12 training episodes seen" in card.text  # 3 meta-batches of 4 tasks
    assert _scan_for_tokens(out) == []


# ------------------------------------------------------------------ errors before the first step
def test_no_token_fails_at_init_before_anything_is_written(monkeypatch, tmp_path):
    import transformers.trainer

    api = FakeHfApi()
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: api)
    monkeypatch.setattr("huggingface_hub.is_offline_mode", lambda: False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = tmp_path / "run"
    with pytest.raises(PushToHubError, match="no Hugging Face token was found.*hf auth login.*--push_to_hub False"):
        _transfer_trainer(out, hub_token=None)
    assert api.calls == [] and not out.exists()


def test_offline_fails_at_init(tmp_path):
    # HF_HUB_OFFLINE=1 for the whole test session (conftest), and no fake: the real check.
    out = tmp_path / "run"
    with pytest.raises(PushToHubError, match="repo 'someone/tiny-l2sp'.*HF_HUB_OFFLINE is set.*--push_to_hub False"):
        _transfer_trainer(out)
    assert not out.exists()


def test_unreachable_hub_is_one_clear_error(monkeypatch, tmp_path):
    import transformers.trainer

    httpx = pytest.importorskip("httpx2")  # huggingface_hub 2.x's HTTP client
    api = FakeHfApi(fail_create=httpx.ConnectError("[Errno -3] Temporary failure in name resolution"))
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: api)
    monkeypatch.setattr("huggingface_hub.is_offline_mode", lambda: False)
    with pytest.raises(PushToHubError, match="could not be reached to create 'someone/tiny-l2sp'.*ConnectError"):
        _transfer_trainer(tmp_path / "run")
    assert [c[0] for c in api.calls] == ["create_repo"]


def test_uploaded_files_mirrors_trainer_filter(tmp_path):
    for name in ("README.md", "_transfer_reference.safetensors", "model.safetensors", ".git/config",
                 "checkpoint-2/model.safetensors", "plot_losses.png"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    sent = hub.uploaded_files(str(tmp_path), hub.TRAINER_IGNORE_PATTERNS)
    assert sent == ["README.md", "model.safetensors", "plot_losses.png"]
