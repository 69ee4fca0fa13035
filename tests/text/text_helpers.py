"""Helpers of the text tests: tiny random BERTs with WordPiece tokenizers, toy texts (a module, not
conftest, so an import never picks another folder's conftest)."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

WORDS = (
    "a an the of to in and is are was animal plant dog cat tree flower bird fish grow run move "
    "speak talk think know eat drink water food red green small large fast slow"
).split()


def save_tiny_bert(folder, *, layers=4, num_labels=3, words=WORDS, hidden=32, seed=0, lower=True):
    """A random BertForSequenceClassification (``layers`` layers) + BertTokenizerFast over ``words``."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(words)
    tok = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=lower)
    tok.save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=num_labels,
    )
    torch.manual_seed(seed)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def toy_texts(n_per_class=20, seed=0):
    """Three classes of short texts whose words give the class away: animals, plants, verbs."""
    g = torch.Generator().manual_seed(seed)
    pools = [["dog", "cat", "bird", "fish"], ["tree", "flower", "plant", "green"], ["run", "move", "talk", "eat"]]
    texts, labels = [], []
    for c, pool in enumerate(pools):
        for _ in range(n_per_class):
            picks = [pool[int(i)] for i in torch.randint(0, 4, (3,), generator=g)]
            texts.append(f"the {picks[0]} and a {picks[1]} {picks[2]}")
            labels.append(c)
    return texts, labels, ["animal", "plant", "verb"]
