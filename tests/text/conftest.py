"""Tiny random BERT classifiers with their own WordPiece tokenizers, saved with save_pretrained (fast)."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from text_helpers import WORDS, save_tiny_bert, toy_texts  # noqa: F401


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("teacher"), layers=4)


@pytest.fixture(scope="session")
def other_tok_dir(tmp_path_factory):
    """Another vocabulary (words reversed in order): the same text gives other ids."""
    return save_tiny_bert(tmp_path_factory.mktemp("other"), layers=2, words=tuple(reversed(WORDS)), seed=1)


@pytest.fixture
def toy_csv(tmp_path):
    import csv

    texts, labels, names = toy_texts()
    path = tmp_path / "toy.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for t, y in zip(texts, labels):
            w.writerow([t, names[y]])
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and much faster when the machine's cores are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
