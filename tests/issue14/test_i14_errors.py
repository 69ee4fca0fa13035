"""Issue 14 item 6: the mistakes that were tracebacks or silent are one clear error, before training."""
import os

import numpy as np
import pytest
import torch

from transfuse.data import build_data
from transfuse.distill import checkpoint as ckpt
from transfuse.errors import TransfuseError
from transfuse.objectives import build_objective
from transfuse.recipes.distill import main


def test_random_bytes_npz_is_not_called_an_object_array(tmp_path):
    (tmp_path / "r.npz").write_bytes(os.urandom(4000))
    with pytest.raises(TransfuseError, match="is not a .npz file"):
        build_data("tensors", {"path": str(tmp_path / "r.npz")})


def test_non_number_temperature_names_the_parameter():
    with pytest.raises(TransfuseError, match="parameter 'temperature' must be float; got 'abc'"):
        build_objective("kd", {"temperature": "abc"})
    assert build_objective("kd", {"temperature": 2}).temperature == 2  # numbers still pass unchanged


def test_stray_label_is_named(tmp_path):
    y = np.arange(40) % 3
    y[5] = 7
    np.savez(tmp_path / "d.npz", x=np.zeros((40, 2), np.float32), y=y)
    with pytest.raises(TransfuseError, match=r"skips class ids \[3, 4, 5, 6\] but has label 7 \(1 sample\)"):
        build_data("tensors", {"path": str(tmp_path / "d.npz")})
    assert build_data("tensors", {"path": str(tmp_path / "d.npz"), "num_classes": 8}).num_classes == 8


def test_label_outside_the_teachers_classes_is_named(tabular):
    from types import SimpleNamespace

    from transfuse.recipes._checks import check_teacher_classes

    data = SimpleNamespace(name="tensors", num_classes=3, train=SimpleNamespace(labels=torch.tensor([0, 1, 0, 2])))
    with pytest.raises(TransfuseError, match=r"teacher predicts 2 classes but data 'tensors' has 3 \(label 2: 1 sample\)"):
        check_teacher_classes(2, data)


def test_hf_text_model_fed_floats(tabular, tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, num_labels=2, max_position_embeddings=16)
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "bert")
    _, recipe = tabular
    r = recipe(student__name="hf", student__params={"path": str(tmp_path / "bert"), "task": "sequence"})
    with pytest.raises(TransfuseError, match="is a text model that reads token ids"):
        main(r, [])
    assert not (tmp_path / "out").exists()


def test_killed_run_folder_needs_resume_or_overwrite(tabular, tmp_path):
    _, recipe = tabular
    r = recipe(train__checkpoint_every=3)
    main(r, [])
    (tmp_path / "out" / "student.safetensors").unlink()  # as if killed before the end
    with pytest.raises(TransfuseError, match="holds checkpoints of an earlier run; continue it with --resume"):
        main(r, [])
    main(r, ["overwrite=true", "train.checkpoint_every=2"])
    root = tmp_path / "out" / "checkpoints"
    assert ckpt.latest_checkpoint(root) is not None  # latest names a folder that exists


def test_checkpoint_pruning_never_deletes_the_new_one(tmp_path):
    root = tmp_path / "c"
    ckpt.write_checkpoint(root, 300, {"a": {"x": torch.zeros(1)}})
    ckpt.write_checkpoint(root, 5, {"a": {"x": torch.ones(1)}})  # a lower step than a left-over folder
    assert ckpt.latest_checkpoint(root) == root / "ckpt-00000005"
    assert [p.name for p in root.glob("ckpt-*")] == ["ckpt-00000005"]
