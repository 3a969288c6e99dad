"""EpisodeDataset / EpisodeCollator: counts, labels, determinism across instances, workers and ranks, rotations."""

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from hf_transfer_meta.meta import EpisodeCollator, EpisodeDataset, rotate_image, to_pixel_values

# ----------------------------------------------------------------------------------------------------------------------
# Tiny data sets
# ----------------------------------------------------------------------------------------------------------------------


def image_dataset(num_classes=12, per_class=6, size=6, seed=0, counts=None):
    """Random (asymmetric, so every rotation is distinguishable) float images with a row id column."""
    rng = np.random.default_rng(seed)
    counts = counts or [per_class] * num_classes
    labels = np.repeat(np.arange(len(counts)), counts)
    rng.shuffle(labels)  # rows of a class are not contiguous
    images = rng.random((len(labels), size, size), dtype=np.float32)
    features = datasets.Features(
        {
            "image": datasets.Array2D((size, size), "float32"),
            "label": datasets.Value("int64"),
            "row": datasets.Value("int64"),
        }
    )
    return datasets.Dataset.from_dict(
        {"image": images, "label": labels, "row": np.arange(len(labels))}, features=features
    ), images


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i + 2 for i in range(50)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")


def text_dataset(num_classes=8, per_class=5):
    # Class c's sentences have 1 + c words (+ the example's index), so episodes differ in their longest example.
    texts, labels = [], []
    for c in range(num_classes):
        for j in range(per_class):
            texts.append(" ".join(f"w{(c + j + t) % 50}" for t in range(1 + 2 * c + j)))
            labels.append(c)
    return datasets.Dataset.from_dict({"text": texts, "label": labels})


def assert_episodes_equal(a, b):
    assert a.keys() == b.keys()
    for key in ("support", "query"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], rtol=0, atol=0)
    assert torch.equal(a["support_labels"], b["support_labels"])
    assert torch.equal(a["query_labels"], b["query_labels"])


# ----------------------------------------------------------------------------------------------------------------------
# Shape and labels
# ----------------------------------------------------------------------------------------------------------------------


def test_counts_labels_and_class_order():
    ds, _ = image_dataset()
    episodes = EpisodeDataset(ds, n_way=5, k_shot=3, n_query=2, num_episodes=20, seed=1)
    collate = EpisodeCollator()
    for i in range(len(episodes)):
        raw = episodes[i]
        assert len(raw["support"]) == 15 and len(raw["query"]) == 10
        assert raw["support_labels"] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
        assert raw["query_labels"] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
        assert len(set(raw["classes"])) == 5
        # Every example of episode class c carries the original label classes[c]; support and query rows differ.
        for part in ("support", "query"):
            for example, c in zip(raw[part], raw[f"{part}_labels"]):
                assert example["label"] == raw["classes"][c]
        assert not {x["row"] for x in raw["support"]} & {x["row"] for x in raw["query"]}

        episode = collate([raw])["tasks"][0]
        assert set(episode) == {"support", "support_labels", "query", "query_labels"}
        assert episode["support"]["pixel_values"].shape == (15, 1, 6, 6)
        assert episode["query"]["pixel_values"].shape == (10, 1, 6, 6)
        assert episode["support_labels"].dtype == torch.long
        assert torch.equal(torch.bincount(episode["support_labels"]), torch.full((5,), 3))
        assert torch.equal(torch.bincount(episode["query_labels"]), torch.full((5,), 2))


def test_collator_returns_tasks_list_and_images_unchanged():
    ds, images = image_dataset()
    episodes = EpisodeDataset(ds, n_way=3, k_shot=2, n_query=1, num_episodes=4)
    batch = EpisodeCollator()([episodes[0], episodes[1]])
    assert list(batch) == ["tasks"] and len(batch["tasks"]) == 2
    raw = episodes[1]
    rows = [x["row"] for x in raw["support"]]
    expected = torch.from_numpy(images[rows]).unsqueeze(1)
    torch.testing.assert_close(batch["tasks"][1]["support"]["pixel_values"], expected, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------------
# Determinism: item i depends on (seed, i) only
# ----------------------------------------------------------------------------------------------------------------------


def test_same_episode_across_instances_order_and_global_rng():
    ds, _ = image_dataset()
    a = EpisodeDataset(ds, n_way=4, k_shot=2, n_query=2, num_episodes=10, seed=7)
    b = EpisodeDataset(ds, n_way=4, k_shot=2, n_query=2, num_episodes=10, seed=7)
    forward = {i: a[i] for i in range(10)}
    np.random.seed(123)
    torch.manual_seed(123)
    for i in reversed(range(10)):
        np.random.rand(3)
        torch.rand(3)
        assert b[i]["classes"] == forward[i]["classes"]
        assert [x["row"] for x in b[i]["support"]] == [x["row"] for x in forward[i]["support"]]
        assert [x["row"] for x in b[i]["query"]] == [x["row"] for x in forward[i]["query"]]
    # ...and it does depend on the seed and the index.
    other = EpisodeDataset(ds, n_way=4, k_shot=2, n_query=2, num_episodes=10, seed=8)
    assert any(other[i]["classes"] != forward[i]["classes"] for i in range(10))
    assert len({tuple(forward[i]["classes"]) for i in range(10)}) > 1


def test_fixed_mode_stores_the_same_episodes():
    ds, _ = image_dataset()
    lazy = EpisodeDataset(ds, n_way=5, k_shot=1, n_query=3, num_episodes=600, seed=3)
    fixed = EpisodeDataset(ds, n_way=5, k_shot=1, n_query=3, num_episodes=600, seed=3, fixed=True)
    assert fixed._plans is not None and len(fixed._plans) == 600
    for i in (0, 1, 299, 599, -1):
        assert fixed.plan(i) == lazy.plan(i) == fixed.plan(i)
    with pytest.raises(IndexError, match="600"):
        fixed[600]


def test_dataloader_workers_give_the_same_episodes():
    ds, _ = image_dataset()
    episodes = EpisodeDataset(ds, n_way=3, k_shot=2, n_query=2, num_episodes=8, seed=5, rotations=(0, 90, 180, 270))
    collate = EpisodeCollator()
    single = [t for batch in DataLoader(episodes, batch_size=2, collate_fn=collate) for t in batch["tasks"]]
    workers = DataLoader(episodes, batch_size=2, collate_fn=collate, num_workers=2)
    parallel = [t for batch in workers for t in batch["tasks"]]
    assert len(single) == len(parallel) == 8
    for a, b in zip(single, parallel):
        assert_episodes_equal(a, b)


@pytest.mark.parametrize("shuffle", [False, True])
def test_two_ranks_see_the_single_process_episodes(shuffle):
    ds, _ = image_dataset()
    episodes = EpisodeDataset(ds, n_way=3, k_shot=1, n_query=2, num_episodes=10, seed=11)
    collate = EpisodeCollator()
    reference = [collate([episodes[i]])["tasks"][0] for i in range(10)]
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(episodes, num_replicas=2, rank=rank, shuffle=shuffle, seed=4)
        indices = list(sampler)
        loader = DataLoader(episodes, batch_size=1, sampler=sampler, collate_fn=collate)
        for index, batch in zip(indices, loader):
            assert_episodes_equal(batch["tasks"][0], reference[index])
        seen += indices
    assert sorted(seen) == list(range(10))


# ----------------------------------------------------------------------------------------------------------------------
# Rotations (Omniglot convention): every image of a class gets that class's rotation
# ----------------------------------------------------------------------------------------------------------------------


def test_rotation_is_per_class_not_per_episode():
    ds, images = image_dataset()
    episodes = EpisodeDataset(ds, n_way=8, k_shot=2, n_query=2, num_episodes=30, rotations=(0, 90, 180, 270))
    assert episodes.num_classes == 48
    mixed = 0
    for i in range(len(episodes)):
        raw = episodes[i]
        assert all(r in (0, 90, 180, 270) for r in raw["rotations"])
        mixed += len(set(raw["rotations"])) > 1
        for part in ("support", "query"):
            for example, c in zip(raw[part], raw[f"{part}_labels"]):
                expected = np.rot90(images[example["row"]], raw["rotations"][c] // 90)
                np.testing.assert_array_equal(example["image"], expected)
    # Most episodes mix rotations, so an implementation that gives every image one rotation fails above.
    assert mixed >= 25


def test_same_class_with_two_rotations_is_two_classes():
    ds, _ = image_dataset(num_classes=2, per_class=6)
    episodes = EpisodeDataset(ds, n_way=8, k_shot=1, n_query=1, num_episodes=3, rotations=(0, 90, 180, 270))
    raw = episodes[0]
    pairs = list(zip(raw["classes"], raw["rotations"]))
    assert len(set(pairs)) == 8 and set(raw["classes"]) == {0, 1}


def test_rotate_image_pil_tensor_and_array_agree_with_rot90():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    pil = Image.fromarray(array)
    for k in range(4):
        expected = np.rot90(array, k)
        np.testing.assert_array_equal(np.asarray(rotate_image(pil, k)), expected)
        np.testing.assert_array_equal(rotate_image(array, k), expected)
        np.testing.assert_array_equal(rotate_image(torch.from_numpy(array)[None], k)[0].numpy(), expected)


def test_pil_image_column_with_rotations():
    rng = np.random.default_rng(0)
    arrays = [(rng.random((5, 5)) * 255).astype(np.uint8) for _ in range(12)]
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(a) for a in arrays], "label": [i % 3 for i in range(12)], "row": list(range(12))},
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.Value("int64"), "row": datasets.Value("int64")}
        ),
    )
    episodes = EpisodeDataset(ds, n_way=3, k_shot=2, n_query=1, num_episodes=5, rotations=(0, 90, 180, 270), seed=2)
    collate = EpisodeCollator()
    for i in range(5):
        raw = episodes[i]
        episode = collate([raw])["tasks"][0]
        assert episode["support"]["pixel_values"].shape == (6, 1, 5, 5)
        for j, (example, c) in enumerate(zip(raw["support"], raw["support_labels"])):
            expected = np.rot90(arrays[example["row"]], raw["rotations"][c] // 90) / 255.0
            np.testing.assert_allclose(episode["support"]["pixel_values"][j, 0].numpy(), expected, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------------


def test_n_way_larger_than_the_classes():
    ds, _ = image_dataset(num_classes=12)
    with pytest.raises(ValueError, match=r"n_way=13 .*only 12 classes"):
        EpisodeDataset(ds, n_way=13, k_shot=1, n_query=1)
    with pytest.raises(ValueError, match=r"n_way=49 .*12 classes .* x 4 rotations = 48"):
        EpisodeDataset(ds, n_way=49, k_shot=1, n_query=1, rotations=(0, 90, 180, 270))
    EpisodeDataset(ds, n_way=48, k_shot=1, n_query=1, rotations=(0, 90, 180, 270))


def test_class_with_too_few_examples_is_named_at_construction():
    ds, _ = image_dataset(counts=[6, 6, 3, 6, 6])
    with pytest.raises(ValueError, match=r"class 2 has 3, but k_shot=2 \+ n_query=2 = 4"):
        EpisodeDataset(ds, n_way=2, k_shot=2, n_query=2)
    EpisodeDataset(ds, n_way=2, k_shot=2, n_query=1)  # 3 examples are enough for 2 + 1


def test_argument_errors():
    ds, _ = image_dataset()
    with pytest.raises(ValueError, match="label_column='intent'"):
        EpisodeDataset(ds, label_column="intent")
    with pytest.raises(ValueError, match="multiples of 90"):
        EpisodeDataset(ds, n_way=2, k_shot=1, n_query=1, rotations=(0, 45))
    with pytest.raises(ValueError, match="image_column='pixels'"):
        EpisodeDataset(ds, n_way=2, k_shot=1, n_query=1, rotations=(0, 90), image_column="pixels")
    with pytest.raises(ValueError, match="k_shot=0"):
        EpisodeDataset(ds, n_way=2, k_shot=0, n_query=1)
    with pytest.raises(TypeError, match="datasets.Dataset"):
        EpisodeDataset([{"label": 0}], n_way=1)


# ----------------------------------------------------------------------------------------------------------------------
# Text: tokenised and padded per episode
# ----------------------------------------------------------------------------------------------------------------------


def test_text_episodes_are_padded_per_episode():
    tokenizer = tiny_tokenizer()
    ds = text_dataset()
    episodes = EpisodeDataset(ds, n_way=3, k_shot=2, n_query=1, num_episodes=12, seed=0)
    collate = EpisodeCollator(processing_class=tokenizer)
    widths = set()
    for i in range(len(episodes)):
        raw = episodes[i]
        episode = collate([raw])["tasks"][0]
        lengths = [len(x["text"].split()) for x in raw["support"] + raw["query"]]
        support, query = episode["support"], episode["query"]
        assert set(support) == {"input_ids", "attention_mask"}
        # Support and query share the episode's longest example as their width.
        assert support["input_ids"].shape == (6, max(lengths))
        assert query["input_ids"].shape == (3, max(lengths))
        mask = torch.cat([support["attention_mask"], query["attention_mask"]])
        assert mask.sum(1).tolist() == lengths
        assert (torch.cat([support["input_ids"], query["input_ids"]])[mask == 0] == tokenizer.pad_token_id).all()
        widths.add(max(lengths))
    assert len(widths) > 1  # per-episode, not global, padding


def test_text_max_length_truncates():
    collate = EpisodeCollator(processing_class=tiny_tokenizer(), max_length=4)
    episodes = EpisodeDataset(text_dataset(), n_way=3, k_shot=1, n_query=1, num_episodes=3)
    episode = collate([episodes[0]])["tasks"][0]
    assert episode["support"]["input_ids"].shape[1] <= 4


def test_pretokenised_rows_are_padded_with_tokenizer_pad():
    tokenizer = tiny_tokenizer()
    ds = text_dataset().map(lambda x: tokenizer(x["text"]), remove_columns=["text"])
    episodes = EpisodeDataset(ds, n_way=2, k_shot=2, n_query=2, num_episodes=3)
    raw = episodes[1]
    episode = EpisodeCollator(processing_class=tokenizer)([raw])["tasks"][0]
    lengths = [len(x["input_ids"]) for x in raw["support"] + raw["query"]]
    assert episode["support"]["input_ids"].shape == (4, max(lengths))
    assert torch.cat([episode["support"]["attention_mask"], episode["query"]["attention_mask"]]).sum(1).tolist() == (
        lengths
    )


def test_real_tokenizer_keeps_token_type_ids(minilm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    episodes = EpisodeDataset(text_dataset(), n_way=3, k_shot=1, n_query=2, num_episodes=2)
    episode = EpisodeCollator(processing_class=tokenizer)([episodes[0]])["tasks"][0]
    assert set(episode["support"]) == {"input_ids", "token_type_ids", "attention_mask"}
    assert (episode["support"]["input_ids"][:, 0] == tokenizer.cls_token_id).all()


# ----------------------------------------------------------------------------------------------------------------------
# Images: the default transform
# ----------------------------------------------------------------------------------------------------------------------


def test_to_pixel_values():
    hwc = (np.arange(2 * 3 * 3) % 256).astype(np.uint8).reshape(2, 3, 3)
    x = to_pixel_values(hwc)
    assert x.shape == (3, 2, 3) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.from_numpy(hwc).permute(2, 0, 1).float() / 255)
    gray = Image.fromarray(np.full((4, 4), 255, np.uint8))
    assert to_pixel_values(gray).shape == (1, 4, 4) and to_pixel_values(gray).max() == 1.0
    assert to_pixel_values(Image.new("1", (3, 3), 1)).tolist() == [[[1.0] * 3] * 3]
    assert to_pixel_values(np.zeros((10, 10), np.float32), image_size=4).shape == (1, 4, 4)
    with pytest.raises(ValueError, match="different shapes"):
        EpisodeCollator()._encode([{"image": np.zeros((3, 3))}, {"image": np.zeros((4, 4))}])


def test_tensor_episodes_pass_through():
    episode = {
        "support": {"x": torch.zeros(2, 1)},
        "support_labels": torch.zeros(2, 1),
        "query": {"x": torch.ones(3, 1)},
        "query_labels": torch.ones(3, 1),
    }
    assert EpisodeCollator()([episode])["tasks"][0] is episode
