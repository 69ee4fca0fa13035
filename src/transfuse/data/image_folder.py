"""Image folder: the user's images laid out as ``root/<class>/<image>`` (torchvision's ImageFolder layout).

With ``root/train/<class>/...`` and ``root/test/<class>/...`` those two splits are used as they
are; otherwise a seeded class-stratified ``test_fraction`` is held out. Classes are the sorted
sub-folder names. Images are read with Pillow, converted to grey or RGB, resized to
``size`` x ``size`` when asked, scaled to [0, 1] and normalised per channel with the training
split's mean and std. Sample ids are positions in the sorted list of training files.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..errors import TransfuseError
from . import DataSplits, IndexedTensors, datasets, fingerprint_tensors
from ._common import _generator, apply_labelled, channel_stats, describe_stats, stratified_split

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def _classes(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(folder: Path, classes: List[str]) -> Tuple[List[Path], List[int]]:
    paths, labels = [], []
    for c, name in enumerate(classes):
        d = folder / name
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if p.is_file() and p.suffix.lower() in EXTENSIONS:
                paths.append(p)
                labels.append(c)
    return paths, labels


def _read(paths: List[Path], mode: str, size: Optional[int]) -> torch.Tensor:
    """Images as uint8 (N, C, H, W); every image must have one size unless ``size`` resizes them."""
    from PIL import Image, UnidentifiedImageError

    arrays = []
    first: Optional[Tuple[Path, Tuple[int, int]]] = None
    for p in paths:
        try:
            with Image.open(p) as im:
                im = im.convert(mode)
                if size is not None:
                    im = im.resize((size, size), Image.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise TransfuseError(f"could not read image {p} ({exc}); remove or replace the file") from None
        if first is None:
            first = (p, a.shape[:2])
        elif a.shape[:2] != first[1]:
            raise TransfuseError(
                f"images differ in size: {first[0]} is {first[1][1]}x{first[1][0]} but {p} is {a.shape[1]}x{a.shape[0]}; "
                "pass size=N to resize them all to N x N"
            )
        arrays.append(a if a.ndim == 3 else a[:, :, None])
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


@datasets.register("image_folder")
def image_folder(
    *,
    root: Optional[str] = None,
    grayscale: bool = False,
    size: Optional[int] = None,
    test_fraction: float = 0.2,
    labelled: Optional[int] = None,
    unlabelled: bool = True,
    seed: int = 0,
) -> DataSplits:
    """Your images in root/<class>/<file> (torchvision ImageFolder layout), or root/train + root/test.

    grayscale: one channel instead of RGB; size: resize every image to size x size (needed when they differ).
    test_fraction: held out when there are no train/test sub-folders (0 means no test split).
    labelled / unlabelled: as for fashion_mnist.
    """
    if root is None:
        raise TransfuseError("image_folder needs root=<folder with one sub-folder of images per class>")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise TransfuseError(f"image folder {str(folder)!r} does not exist; pass root=<folder with one sub-folder per class>")
    if size is not None and size < 1:
        raise TransfuseError(f"size must be a positive number of pixels; got {size}")
    mode = "L" if grayscale else "RGB"
    presplit = (folder / "train").is_dir() and (folder / "test").is_dir()
    train_dir = folder / "train" if presplit else folder
    classes = _classes(train_dir)
    if not classes:
        raise TransfuseError(f"image folder {str(train_dir)!r} has no class sub-folders; lay images out as <root>/<class>/<image>")
    paths, labels = _files(train_dir, classes)
    if not paths:
        raise TransfuseError(
            f"image folder {str(train_dir)!r} has no images ({', '.join(sorted(EXTENSIONS))}) in its class sub-folders"
        )
    gen = _generator(seed)
    raw = _read(paths, mode, size)  # (N, C, H, W) uint8
    y = torch.tensor(labels, dtype=torch.long)
    if presplit:
        extra_classes = sorted(set(_classes(folder / "test")) - set(classes))
        if extra_classes:
            raise TransfuseError(
                f"{folder / 'test'} has classes the training folder lacks: {', '.join(extra_classes)}; "
                "give train and test the same class sub-folders"
            )
        test_paths, test_labels = _files(folder / "test", classes)
        if not test_paths:
            raise TransfuseError(f"image folder {str(folder / 'test')!r} has no images in its class sub-folders")
        raw_test = _read(test_paths, mode, size)
        if raw_test.shape[1:] != raw.shape[1:]:
            raise TransfuseError(
                f"test images are {tuple(raw_test.shape[1:])} but training images are {tuple(raw.shape[1:])}; "
                "pass size=N to resize them all to N x N"
            )
        train_pos, test_pos = torch.arange(len(raw)), None
    else:
        train_pos, test_pos = stratified_split(y, test_fraction, gen)
    images = raw.float().div_(255.0)  # (N, C, H, W)
    mean, std = channel_stats(images[train_pos])
    full = IndexedTensors((images - mean) / std, y)
    train = apply_labelled(full.subset(train_pos), labelled, unlabelled, gen)
    if presplit:
        test = IndexedTensors((raw_test.float().div_(255.0) - mean) / std, torch.tensor(test_labels, dtype=torch.long))
    else:
        test = full.subset(test_pos) if len(test_pos) else None
    extra = (
        f"image_folder {folder.resolve()} mode={mode} size={size} x/255 normalised {describe_stats(mean, std)}; "
        f"presplit={presplit} test_fraction={test_fraction} labelled={labelled} unlabelled={unlabelled} seed={seed}"
    )
    return DataSplits(
        name="image_folder",
        train=train,
        test=test,
        num_classes=len(classes),
        in_shape=tuple(raw.shape[1:]),
        fingerprint=fingerprint_tensors(raw[train.index], train.labels, train.index, extra=extra),
        class_names=classes,
    )
