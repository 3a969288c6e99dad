"""hf_transfer_meta.data: every format reads to the same rows, splits are seeded and disjoint, label spaces are
found from the labels, and bad input is refused with the value and the fix."""

import json
import subprocess
import sys

import pytest

from hf_transfer_meta.data import (
    LabelSpace,
    check_columns,
    encode_labels,
    infer_label_space,
    load_data_files,
    resolve_data_files,
    split_by_rows,
)

ROWS = [{"text": 'a "quoted" word', "label": "pos"}, {"text": "b, with comma", "label": "neg"},
        {"text": "c", "label": "pos"}]  # fmt: skip


def _write_all_formats(tmp_path):
    import pandas as pd

    df = pd.DataFrame(ROWS)
    paths = {fmt: tmp_path / f"data.{fmt}" for fmt in ("csv", "tsv", "json", "jsonl", "parquet")}
    df.to_csv(paths["csv"], index=False)
    paths["tsv"].write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in ROWS))
    paths["json"].write_text(json.dumps(ROWS))
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    df.to_parquet(paths["parquet"])
    return paths


def test_import_is_light():
    code = "import sys, hf_transfer_meta.data as d; assert 'datasets' not in sys.modules; d.LabelSpace"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_every_format_reads_the_same_rows(tmp_path):
    for fmt, path in _write_all_formats(tmp_path).items():
        ds = load_data_files(resolve_data_files(str(path)))["train"]
        assert ds.to_list() == ROWS, fmt  # the tsv keeps its quotes as text


def test_headerless_tsv_takes_column_names(tmp_path):
    path = tmp_path / "raw.tsv"
    path.write_text("first news story here\tWorld\nsecond one\tSports\n")
    raw = load_data_files(resolve_data_files(str(path)))
    with pytest.raises(ValueError, match="no header row: name its columns with --column_names"):
        check_columns(raw, ["text"], "topic")
    named = load_data_files(resolve_data_files(str(path)), column_names=["text", "topic"])
    assert named["train"].to_list() == [{"text": "first news story here", "topic": "World"},
                                        {"text": "second one", "topic": "Sports"}]  # fmt: skip
    check_columns(named, ["text"], "topic")


def test_bad_files_are_named(tmp_path):
    (tmp_path / "a.csv").write_text("text,label\nx,1\n")
    with pytest.raises(ValueError, match=r"--test_file .*nope\.csv: no such file"):
        resolve_data_files(str(tmp_path / "a.csv"), test_file=str(tmp_path / "nope.csv"))
    (tmp_path / "a.txt").write_text("x\n")
    with pytest.raises(ValueError, match=r"'\.txt' is not read here; use one of \.csv, \.tsv"):
        resolve_data_files(str(tmp_path / "a.txt"))
    with pytest.raises(ValueError, match="that is a folder"):
        resolve_data_files(str(tmp_path))
    with pytest.raises(ValueError, match="No data: give --train_file"):
        resolve_data_files()


def test_split_by_rows_is_seeded_disjoint_and_complete():
    from datasets import Dataset

    ds = Dataset.from_dict({"i": list(range(100))})
    a, b = split_by_rows(ds, 0.2, 10, seed=3), split_by_rows(ds, 0.2, 10, seed=3)
    assert {k: len(v) for k, v in a.items()} == {"train": 70, "validation": 20, "test": 10}
    rows = {k: list(v["i"]) for k, v in a.items()}
    assert all(rows[k] == list(b[k]["i"]) for k in a)
    assert sorted(rows["train"] + rows["validation"] + rows["test"]) == list(range(100))
    assert list(split_by_rows(ds, 0.2, 10, seed=4)["test"]["i"]) != rows["test"]
    assert list(split_by_rows(ds, 0.1, 0)) == ["train", "validation"]
    with pytest.raises(ValueError, match="leaving none to train on"):
        split_by_rows(ds, 60, 40)


def _dd(**splits):
    from datasets import Dataset, DatasetDict

    return DatasetDict({k: Dataset.from_dict(v) for k, v in splits.items()})


def test_label_spaces_follow_the_labels():
    strings = infer_label_space(_dd(train={"y": ["b", "a", "c", "a"]}), "y")
    assert strings == LabelSpace("single_label_classification", ("a", "b", "c"))
    assert strings.config_kwargs()["id2label"] == {0: "a", 1: "b", 2: "c"}
    ints = infer_label_space(_dd(train={"y": [10, 2, 2, 1]}), "y")
    assert ints.names == ("1", "2", "10") and ints.encode(10) == 2  # numeric order, not string order
    multi = infer_label_space(_dd(train={"y": [["x"], ["z", "x"], []]}), "y")
    assert multi.problem_type == "multi_label_classification" and multi.names == ("x", "z")
    assert multi.encode(["z"]) == [0.0, 1.0]
    reg = infer_label_space(_dd(train={"y": [0.5, 1.5]}), "y")
    assert reg.problem_type == "regression" and reg.num_labels == 1 and "label2id" not in reg.config_kwargs()
    whole = infer_label_space(_dd(train={"y": [0.0, 1.0]}), "y", "single_label_classification")
    assert whole.names == ("0", "1")


def test_encoded_labels_have_the_dtypes_the_losses_want():
    data = _dd(train={"t": ["a", "b"], "y": [["x"], ["x", "y"]]}, test={"t": ["c"]})
    out = encode_labels(data, infer_label_space(data, "y"), "y")
    assert list(out["train"]["labels"]) == [[1.0, 0.0], [1.0, 1.0]]
    assert out["train"].features["labels"].feature.dtype == "float32"
    assert out["test"].column_names == ["t"]  # unlabelled test: predictions only
    reg = _dd(train={"y": [0.25, 2.0]})
    assert encode_labels(reg, infer_label_space(reg, "y"), "y")["train"].features["labels"].dtype == "float32"


def test_bad_labels_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"float labels \(e\.g\. 0\.5\).*--problem_type regression"):
        infer_label_space(_dd(train={"y": [0.5, 1.0]}), "y", "single_label_classification")
    with pytest.raises(ValueError, match="needs numeric labels"):
        infer_label_space(_dd(train={"y": ["a", "b"]}), "y", "regression")
    with pytest.raises(ValueError, match=r"Row 1 of the train data has no label"):
        infer_label_space(_dd(train={"y": ["a", None, "b"]}), "y")
    with pytest.raises(ValueError, match=r"validation data has labels the training data lacks: \['d'\]"):
        infer_label_space(_dd(train={"y": ["a", "b"]}, validation={"y": ["a", "d"]}), "y")
    with pytest.raises(ValueError, match=r"single label \('a'\)"):
        infer_label_space(_dd(train={"y": ["a", "a"]}), "y")
    with pytest.raises(ValueError, match="holds lists of labels, which is multi_label_classification"):
        infer_label_space(_dd(train={"y": [["a"], ["b"]]}), "y", "single_label_classification")


def test_check_columns():
    data = _dd(train={"q": ["x"], "p": ["y"], "label": [0]}, test={"q": ["x"], "p": ["y"]})
    check_columns(data, ["q", "p"], "label")  # a sentence pair; the test split may lack labels
    with pytest.raises(ValueError, match=r"one text column, or two"):
        check_columns(data, ["q", "p", "label"], "label")
    with pytest.raises(
        ValueError, match=r"train data has no column 'sentence'; its columns are \['q', 'p', 'label'\]"
    ):
        check_columns(data, ["sentence"], "label")
    with pytest.raises(ValueError, match="is also a text column"):
        check_columns(data, ["q"], "q")
