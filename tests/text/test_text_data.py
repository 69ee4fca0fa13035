import json
from pathlib import Path

import pytest
import torch

from text_helpers import toy_texts
from transfuse.data import build_data
from transfuse.data._text import TextTensors, teacher_view, tokenize_splits
from transfuse.errors import TransfuseError


def test_csv_classes_split_and_labelled(toy_csv):
    d = build_data("text_table", {"path": str(toy_csv), "labelled": 12, "test_fraction": 0.25, "max_length": 16})
    assert d.class_names == ["animal", "plant", "verb"] and d.num_classes == 3 and d.in_shape == (16,)
    assert len(d.train) == 45 and len(d.test) == 15
    assert int((d.train.labels >= 0).sum()) == 12
    assert torch.bincount(d.test.labels).tolist() == [5, 5, 5]  # stratified
    texts, labels, names = toy_texts()
    for text, y in zip(d.test.texts, d.test.labels.tolist()):
        assert labels[texts.index(text)] == y  # each text keeps its own label
    again = build_data("text_table", {"path": str(toy_csv), "labelled": 12, "test_fraction": 0.25, "max_length": 16})
    assert again.fingerprint == d.fingerprint and again.train.texts == d.train.texts
    other = build_data("text_table", {"path": str(toy_csv), "labelled": 12, "test_fraction": 0.25, "seed": 1})
    assert other.fingerprint != d.fingerprint


def test_jsonl_and_tsv_with_test_file(tmp_path):
    texts, labels, names = toy_texts(5)
    rows = [{"sentence": t, "y": int(y)} for t, y in zip(texts, labels)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "b.tsv").write_text("sentence\ty\n" + "".join(f"{r['sentence']}\t{r['y']}\n" for r in rows[:6]))
    d = build_data("text_table", {"path": str(tmp_path / "a.jsonl"), "test_path": str(tmp_path / "b.tsv"),
                                  "text_column": "sentence", "label_column": "y"})
    assert d.class_names == ["0", "1", "2"] and len(d.train) == 15 and len(d.test) == 6
    assert d.test.texts == texts[:6] and d.test.labels.tolist() == labels[:6]


def test_table_errors(tmp_path, toy_csv):
    with pytest.raises(TransfuseError, match="name the text and label columns"):
        build_data("text_table", {"path": str(toy_csv), "text_column": "sentence"})
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\nnot json\n')
    with pytest.raises(TransfuseError, match="line 2 of .* is not JSON"):
        build_data("text_table", {"path": str(tmp_path / "bad.jsonl")})
    with pytest.raises(TransfuseError, match="is a folder"):
        build_data("text_table", {"path": str(tmp_path)})
    with pytest.raises(TransfuseError, match="must end in .csv, .tsv or .jsonl"):
        build_data("text_table", {"path": str(_touch(tmp_path / "x.txt"))})
    with pytest.raises(TransfuseError, match="label 'rock', which no training sample has"):
        build_data("text_table", {"path": str(toy_csv), "test_path": str(_write(tmp_path / "t2.csv", "text,label\na,rock\n"))})


def _touch(path: Path) -> Path:
    path.write_text("")
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_folder_per_class(tmp_path):
    texts, labels, names = toy_texts(4)
    for i, (t, y) in enumerate(zip(texts, labels)):
        part = "test" if i % 4 == 0 else "train"
        (tmp_path / part / names[y]).mkdir(parents=True, exist_ok=True)
        (tmp_path / part / names[y] / f"{i}.txt").write_text(t)
    d = build_data("text_folder", {"root": str(tmp_path)})
    assert d.class_names == names and len(d.train) == 9 and len(d.test) == 3
    flat = build_data("text_folder", {"root": str(tmp_path / "train"), "test_fraction": 0.0})
    assert flat.test is None and len(flat.train) == 9
    with pytest.raises(TransfuseError, match="has no class folders"):
        build_data("text_folder", {"root": str(tmp_path / "train" / "animal")})


def test_tokenised_batches_carry_masks_and_teacher_ids(toy_csv, teacher_dir, other_tok_dir):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(teacher_dir))
    other = transformers.AutoTokenizer.from_pretrained(str(other_tok_dir))
    d = build_data("text_table", {"path": str(toy_csv), "max_length": 12})
    same = tokenize_splits(d, tok, transformers.AutoTokenizer.from_pretrained(str(teacher_dir)))
    assert same.train.teacher_inputs is None  # the same vocabulary: the teacher reads the student's ids
    both = tokenize_splits(d, tok, other)
    assert isinstance(both.train, TextTensors) and both.train.inputs.shape == (len(d.train), 12)
    batch = both.train.__getitems__([0, 3])
    assert set(batch) == {"inputs", "labels", "index", "attention_mask", "teacher_inputs", "teacher_attention_mask"}
    text = d.train.texts[3]
    assert batch["inputs"][1].tolist() == tok(text, padding="max_length", max_length=12)["input_ids"]
    assert batch["teacher_inputs"][1].tolist() == other(text, padding="max_length", max_length=12)["input_ids"]
    assert batch["inputs"][1].tolist() != batch["teacher_inputs"][1].tolist()
    assert batch["attention_mask"][1].tolist() == [int(i != tok.pad_token_id) for i in batch["inputs"][1]]
    assert torch.equal(teacher_view(both.train), both.train.extra["teacher_inputs"])
    sub = both.train.subset(torch.tensor([3]))
    assert sub.texts == [text] and torch.equal(sub.extra["teacher_inputs"][0], batch["teacher_inputs"][1])
    assert both.fingerprint != same.fingerprint


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(), reason="wordnet-base is not installed (make data)")
def test_wordnet_glosses():
    d = build_data("wordnet", {"pos": "noun", "categories": ["noun.animal", "noun.plant"], "per_class": 50})
    assert d.class_names == ["noun.animal", "noun.plant"] and len(d.train) + len(d.test) == 100
    text = d.train.texts[0]
    assert "|" not in text and len(text) > 3
    full = build_data("wordnet", {"test_fraction": 0.0})
    assert full.num_classes == 45 and len(full.train) == 117659
    with pytest.raises(TransfuseError, match="no category 'noun.rock'"):
        build_data("wordnet", {"categories": ["noun.rock"]})


@pytest.mark.skipif(not Path("/usr/share/games/fortunes/fortunes").is_file(), reason="fortunes are not installed (make data)")
def test_fortunes():
    d = build_data("fortunes", {"categories": ["fortunes", "riddles"], "test_fraction": 0.0})
    assert d.class_names == ["fortunes", "riddles"]
    assert all("\n%\n" not in t and t for t in d.train.texts)
    assert int((d.train.labels == 1).sum()) == len([t for t in Path("/usr/share/games/fortunes/riddles").read_text().split("\n%\n") if t.strip().strip("%").strip()])
    with pytest.raises(TransfuseError, match="no fortune category 'nope'"):
        build_data("fortunes", {"categories": ["nope"]})


def test_hf_datasets(tmp_path, toy_csv):
    pytest.importorskip("datasets")
    d = build_data("hf_datasets", {"path": "csv", "data_files": str(toy_csv), "split": "train"})
    assert d.class_names == ["animal", "plant", "verb"] and len(d.train) + len(d.test) == 60
    with pytest.raises(TransfuseError, match="not 'sentence'"):
        build_data("hf_datasets", {"path": "csv", "data_files": str(toy_csv), "text_column": "sentence"})
