"""Runs from a config file: TOML (or YAML) in, a run directory out.

A run config has three tables:

    [data]    dataset = "digits"  (a built-in set)  or  path = "train.csv" / "train.npz", label = "label"
              (a text model's CSV: text = its column of texts), or path = "photos/" (a sub-folder of images per
              class; image_size = 32, image_mode = "RGB" where the model does not fix them)
              val_fraction (validation: the recipe's own slice, which the returned model is refit on; 0.2 of
              the training rows for settings as given), test_fraction = 0.2 (a file's test split), seed = 0
    [model]   name = "cnn" and the model's options (channels = [16, 32], ...); sizes come from the data
    [train]   any TrainConfig field (epochs, lr, schedule, freeze, ...)
    [lora]    optional: LoRA adapters (r, alpha, dropout, targets, merge), as finetune.train(lora=...)

Overrides on the command line are `section.key=value` with a TOML value: `train.lr=3e-4`,
`model.hidden=[256,128]`, `data.dataset="wine"`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import platform
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import tomli_w
import torch

from . import checkpoint, data, datasets, distributed, lora, models, recommend, registry, report, saving, training
from . import recipe as recipe_rules

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, as a package, before Python 3.11
    import tomli as tomllib
from .config import TrainConfig, config_fields, did_you_mean

log = logging.getLogger("finetune")

TEST_FRACTION = 0.2  # a file's rows held out as its test split (a built-in set has a test split of its own)
# val_fraction None: the recipe's own slice (rule 1: 20% of each class, none where no decision reads one), 0.2 of the
# training split for settings run as given and for tune
DATA_KEYS = {"dataset": None, "path": None, "label": "label", "val_fraction": None, "test_fraction": None, "seed": 0,
             "encoding": None, "encoding_errors": None,  # a CSV's text encoding (None: utf-8, strict)
             "missing_labels": None,  # a CSV row without a label: "error" (None) or "drop" (left out, counted)
             "text": None,  # a text model's column of texts (None: the CSV's one column besides the label)
             "image_size": None, "image_mode": None,  # an image folder's (None: the model's, else 32 and by its files)
             "user": None, "item": None,  # a recommender's CSV's id columns (None: "user" and "item")
             "time": None,  # a ranker's CSV's column of times: each user's last by it is held out (None: the file's order)
             # an image folder's pixels, in [0, 1], normalised as (x - mean) / std: a number or one per channel (None:
             # the model's pretraining's, registry's image_mean_std -- "digit_cnn": MNIST's --, else none)
             "image_mean": None, "image_std": None,
             "stream": None,  # an image folder read a batch at a time (None: where it decodes to > IN_MEMORY_GB)
             "on_bad_file": None}  # an image folder's file Pillow cannot read: "error" (None) or "skip"
FAILED_FILE = "failed.txt"  # a run that stopped on an error, not an interruption: its message (a new run replaces it)
IDS_FILE = "ids.json"  # a run directory's user and item ids (a ratings file's), each list in index order
CONFIG_FILE, METRICS_FILE, HISTORY_FILE = "config.toml", "metrics.json", "history.csv"  # what a run wrote
REPORT_FILE, PLOTS_FILE = "report.html", "plots.png"
MODEL_FILE, ADAPTERS_FILE = "model.safetensors", "adapters.safetensors"  # its weights (LoRA kept apart: adapters)
BEST_FILE, TRIALS_FILE = "best.toml", "trials.csv"  # a tune's
# What a run directory holds (a predict --output must not overwrite these; a new run's --out is checked by them)
RUN_FILES = (CONFIG_FILE, METRICS_FILE, HISTORY_FILE, REPORT_FILE, PLOTS_FILE, MODEL_FILE, ADAPTERS_FILE, IDS_FILE,
             FAILED_FILE, BEST_FILE, TRIALS_FILE)
RUN_FOLDERS = ("checkpoints", "tensorboard")
IMAGE_SIZE = 32  # an image folder's default size, where the model does not fix one ("cnn" is a small CNN)
IMAGE_MODES = {1: "L", 3: "RGB"}  # an image model's input channels -> the Pillow mode its images are read in
# An image folder whose images decode to more than this (float32) is streamed, a batch at a time, unless data.stream
# says otherwise: below it, decoding once beats decoding every epoch (the recipe trains ~100 epochs over its phases)
IN_MEMORY_GB = 2.0
MAX_IMAGE_SIDE = 4096  # an image folder's images are read at most this wide and high (4096 x 4096 RGB: 192 MiB)
RANKING_NEGATIVES = 99  # a ranker's test item is ranked among 99 items its user never had (the NCF paper's protocol)
SECTIONS = ("data", "model", "train", "tune", "lora")
SECTION_EXAMPLES = {"data": 'data.dataset="wine"', "model": "model.hidden=[256]", "train": "train.lr=3e-4",
                    "tune": "tune.trials=20", "lora": "lora.r=8"}


def model_names() -> list[str]:
    """The models a run config's [model] name can be: those of finetune.registry."""
    return registry.names()


def model_options(name: str) -> list[str]:
    """The options a run config's [model] table can set for the model `name` (besides name)."""
    return registry.get(name).option_names


@dataclass
class RunConfig:
    data: dict[str, Any] = field(default_factory=lambda: dict(DATA_KEYS))
    model: dict[str, Any] = field(default_factory=lambda: {"name": "mlp"})
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = "<defaults>"
    tune: dict[str, Any] = field(default_factory=dict)  # trials, metric, and the search space (finetune tune)
    lora: dict[str, Any] | None = None  # the [lora] table: adapters trained instead of the body (finetune.lora)
    # The [train] keys the file and overrides set, at any value: each counts as given, as a keyword to train() does
    # (a run whose keys shape nothing runs the recipe; `lr = 0.01`, the default's value, still shapes)
    train_given: tuple[str, ...] = ()
    overridden: dict[str, str] = field(default_factory=dict)  # "data.seed" -> "override 'data.seed=1'"

    def where(self, key: str) -> str:
        """Where ``key`` ("data.val_fraction") was set, for an error: the override that set it, else the file."""
        return self.overridden.get(key, self.source)

    def to_dict(self) -> dict[str, Any]:
        out = {"data": self.data, "model": self.model, "train": self.train.to_dict()}
        return {**out, "lora": self.lora} if self.lora is not None else out


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string (train.optimizer=adam)


def _read_file(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ValueError(f"config file '{path}' is a directory; give a .toml (or .yaml) file")
    if not path.is_file():
        raise FileNotFoundError(f"config file '{path}' does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[:error.start].count(b"\n") + 1
        raise ValueError(f"config file '{path}' is not UTF-8 text (line {line}: {error.reason})") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ImportError("YAML configs need PyYAML: pip install pyyaml (or use TOML)") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as error:
            message = " ".join(str(error).split())
            raise ValueError(f"config file '{path}' is not valid YAML: {message}") from None
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise ValueError(f"config file '{path}' must hold the tables data, model and train, "
                             f"got a YAML {type(raw).__name__}")
        return raw
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file '{path}' is not valid TOML: {error}") from None


def _type_name(value: Any) -> str:
    return registry.type_words(type(value))


def _check_data(data: dict[str, Any], source: str, overridden: dict[str, str] | None = None) -> None:
    """The [data] table's values: types and ranges, each error naming the key, the value and the file (or the
    override that set it)."""
    def where(key: str) -> str:
        return (overridden or {}).get(f"data.{key}", source)

    def fail(key: str, wanted: str) -> None:
        raise ValueError(f"data.{key} must be {wanted} in {where(key)}, got {data[key]!r}")

    for key in ("dataset", "path", "encoding", "encoding_errors", "text", "user", "item", "time"):
        if data[key] is not None and (not isinstance(data[key], str) or not data[key]):
            fail(key, "a non-empty string")
    if not isinstance(data["label"], str) or not data["label"]:
        fail("label", "a column name (a non-empty string)")
    for key, share in (("val_fraction", "the training rows held out for validation"),
                       ("test_fraction", "a file's rows held out as its test split")):
        fraction = data[key]
        if fraction is None:
            continue
        lowest = 0.0 if key == "test_fraction" else None  # 0: no test split, every row trains
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
                fraction == lowest or 0.0 < fraction < 1.0):
            fail(key, f"a number between 0 and 1, both excluded (the share of {share})" +
                 ("; 0 for none, every row training" if lowest is not None else ""))
    if data["test_fraction"] is not None and data["dataset"] is not None:
        raise ValueError(f"data.test_fraction = {data['test_fraction']!r} in {where('test_fraction')} splits a "
                         f"file's rows, and dataset {data['dataset']!r} comes with its own test split: leave "
                         "test_fraction out")
    size = data["image_size"]
    sizes = [size] if isinstance(size, int) else size if isinstance(size, list) else None
    if size is not None and (sizes is None or len(sizes) != (1 if isinstance(size, int) else 2) or
                             not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes)):
        fail("image_size", "an integer >= 1 (square images) or [height, width]")
    if data["image_mode"] is not None and data["image_mode"] not in ("L", "RGB"):
        fail("image_mode", "'L' (grayscale) or 'RGB'")
    for key in ("image_mean", "image_std"):
        values = data[key] if isinstance(data[key], list) else [data[key]]
        if data[key] is not None and (len(values) not in (1, 3) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and
                (key == "image_mean" or v > 0) for v in values)):
            fail(key, "a number or a list of one per channel (3 for RGB)" + (", each > 0" if key == "image_std" else ""))
    if (data["image_mean"] is None) != (data["image_std"] is None):
        given = "image_mean" if data["image_mean"] is not None else "image_std"
        raise ValueError(f"data.{given} = {data[given]!r} in {where(given)} normalises an image folder's pixels with "
                         f"data.{'image_std' if given == 'image_mean' else 'image_mean'}: give both (or neither: the "
                         "model's own)")
    if data["stream"] is not None and not isinstance(data["stream"], bool):
        fail("stream", "true (read an image folder a batch at a time) or false (decode it into memory)")
    if data["on_bad_file"] is not None and data["on_bad_file"] not in datasets.ON_BAD_FILE:
        fail("on_bad_file", "'error' (a file Pillow cannot read stops the run) or 'skip' (left out, listed)")
    for key in ("text", "image_size", "image_mode", "image_mean", "image_std", "stream", "on_bad_file", "user", "item",
                "time"):
        if data[key] is not None and data["dataset"] is not None:
            raise ValueError(f"data.{key} = {data[key]!r} in {where(key)} is for a file or folder of your own, and "
                             f"dataset {data['dataset']!r} is a built-in set: leave {key} out")
    if isinstance(data["seed"], bool) or not isinstance(data["seed"], int) or data["seed"] < 0:
        fail("seed", "an integer >= 0")
    if (data["dataset"] is None) == (data["path"] is None):
        raise ValueError(f"[data] in {source} needs exactly one of dataset (one of {datasets.names()}) or path")
    if data["dataset"] is not None and data["dataset"] not in datasets.names():
        raise ValueError(f"data.dataset must be one of {datasets.names()} in {where('dataset')}, got "
                         f"{data['dataset']!r}")
    if data["encoding"] is not None:
        try:
            codecs.lookup(data["encoding"])
        except LookupError:
            fail("encoding", "a text encoding Python knows (e.g. 'utf-8', 'latin-1', 'cp1252')")
    if data["encoding_errors"] is not None and data["encoding_errors"] not in datasets.ENCODING_ERRORS:
        fail("encoding_errors", f"one of {list(datasets.ENCODING_ERRORS)}")
    if data["missing_labels"] is not None and data["missing_labels"] not in datasets.MISSING_LABELS:
        fail("missing_labels", f"one of {list(datasets.MISSING_LABELS)}")


def _check_model(model: dict[str, Any], source: str, overridden: dict[str, str] | None = None) -> None:
    """The [model] table: a model a run can build (its name) and that model's options, with their types."""
    name = model["name"]
    if not isinstance(name, str) or name not in model_names():
        raise ValueError(f"model.name = {name!r} in {source} is not a built-in model; the models are "
                         f"{model_names()} (a model of your own needs the Python API: finetune.train(module, ...))")
    entry = registry.get(name)
    unknown = sorted(str(k) for k in set(model) - {"name", *entry.defaults})
    if unknown:
        where = (overridden or {}).get(f"model.{unknown[0]}", source)
        raise ValueError(f"unknown option(s) {['model.' + k for k in unknown]}"
                         f"{did_you_mean(unknown, entry.option_names)} for model {name!r} in {where}; "
                         f"its options: {entry.option_names}")
    for key, value in model.items():
        if key == "name":
            continue
        try:
            entry.check(key, value)
        except TypeError:
            where = (overridden or {}).get(f"model.{key}", source)
            raise ValueError(f"model.{key} = {value!r} in {where} has the wrong type for model {name!r} "
                             f"(it takes {entry.takes(key)})") from None


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> RunConfig:
    """A RunConfig from a TOML/YAML file plus `section.key=value` overrides. Every mistake is a ValueError (or
    FileNotFoundError / ImportError) with a one-line message naming the key, the value and the file: an unknown
    section, key, model or model option, a section that is not a table, a value of the wrong type or range."""
    raw: dict[str, Any] = _read_file(Path(path)) if path else {}
    source = str(path) if path else "<defaults>"
    unknown_sections = sorted(str(k) for k in set(raw) - set(SECTIONS))
    if unknown_sections:
        raise ValueError(f"unknown section(s) {unknown_sections} in {source}; known: {list(SECTIONS)}")
    for section, table in raw.items():
        if not isinstance(table, dict):
            raise ValueError(f"{section} = {table!r} in {source} must be a table ([{section}] with keys such as "
                             f"{SECTION_EXAMPLES[section].split('.', 1)[1]}), got {_type_name(table)}")
    overridden: dict[str, str] = {}  # "train.epochs" -> "override 'train.epochs=5'": where a mistake was made
    for item in overrides:
        key = item.split("=", 1)[0]
        if "=" in item and key.strip() in SECTIONS:
            raise ValueError(f"override {item!r} would replace the whole [{key.strip()}] table; set one key at a "
                             f"time: {key.strip()}.KEY=VALUE (e.g. {SECTION_EXAMPLES[key.strip()]})")
        if "=" not in item or "." not in key:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. train.lr=3e-4)")
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise ValueError(f"unknown section(s) {[section]} in override {item!r}; known: {list(SECTIONS)}")
        raw.setdefault(section, {})[name] = _parse_value(item.split("=", 1)[1])
        overridden[f"{section}.{name}"] = f"override {item!r}"
    data = dict(DATA_KEYS)
    for key, value in raw.get("data", {}).items():
        if key not in DATA_KEYS:
            raise ValueError(f"unknown key 'data.{key}'{did_you_mean([key], sorted(DATA_KEYS))} in "
                             f"{overridden.get('data.' + key, source)}; known: {sorted(DATA_KEYS)}")
        data[key] = value
    _check_data(data, source, overridden)
    model = dict(raw.get("model", {"name": "mlp"}))
    model.setdefault("name", "mlp")
    _check_model(model, source, overridden)
    for key, kind, what in (("text", "texts", "the column of texts of a model that reads texts"),
                            ("user", "pairs", "a column of ids of a recommender"),
                            ("item", "pairs", "a column of ids of a recommender"),
                            ("time", "pairs", "a ranker's column of times")):
        if data[key] is not None and not getattr(registry.get(model["name"]), kind):
            readers = [n for n in model_names() if getattr(registry.get(n), kind)]
            raise ValueError(f"data.{key} = {data[key]!r} in {overridden.get('data.' + key, source)} names {what} "
                             f"({readers}), and model {model['name']!r} is not one: leave data.{key} out")
    train_values = raw.get("train", {})
    unknown = sorted(set(train_values) - set(config_fields()))
    if "recipe" in unknown:  # finetune.train's keyword, not a setting: a config says it by what [train] sets
        raise ValueError(f"train.recipe in {overridden.get('train.recipe', source)} is not a setting: a run gets "
                         "recipe='auto' unless its [train] table sets one that shapes the training (lr, epochs, "
                         "...), and then runs the settings as given; leave train.recipe out")
    if unknown:
        where = overridden.get(f"train.{unknown[0]}", source)
        raise ValueError(f"unknown key(s) {['train.' + k for k in unknown]}{did_you_mean(unknown, config_fields())} in "
                         f"{where}; known: {config_fields()}")
    try:
        train = TrainConfig.from_dict(train_values)
        dataclasses.replace(train, class_weights=None if train.class_weights == "balanced" else train.class_weights
                            ).to_cpp()
    except (TypeError, ValueError) as error:
        # the places that set the settings the message names ("min_lr must be in [0, lr]": both)
        named = [k for k in train_values if re.search(rf"\b{re.escape(k)}\b", str(error))]
        where = ", ".join(dict.fromkeys(overridden.get(f"train.{k}", source) for k in named)) or source
        raise type(error)(f"{where}: [train] {error}") from None
    lora_table = raw.get("lora")
    if lora_table is not None:
        try:
            lora.LoraSettings.parse(dict(lora_table))
        except (TypeError, ValueError) as error:
            raise type(error)(f"{source}: [lora] {error}") from None
    return RunConfig(data, model, train, source, dict(raw.get("tune", {})),
                     dict(lora_table) if lora_table is not None else None, tuple(sorted(train_values)), overridden)


def _split_rows(cfg: RunConfig, y: np.ndarray, stratify: bool, rows: str, held_out: str,
                key: str) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) indices by data.<key>: val_fraction (validation) or test_fraction (a file's test split); a
    side left empty is an error naming the field and value."""
    fraction = cfg.data[key] if cfg.data[key] is not None else TEST_FRACTION
    if fraction == 0:  # test_fraction = 0: no test split (evaluate --input scores new rows)
        return np.arange(len(y)), np.zeros(0, dtype=np.int64)
    kept, held = datasets.stratified_split(y, fraction, cfg.data["seed"], stratify)
    where = f"in {cfg.where(f'data.{key}')}" if cfg.data[key] is not None else f"(the default; {cfg.source} sets none)"
    if len(kept) == 0:
        raise ValueError(f"data.{key} = {fraction!r} {where} leaves no training rows: all {len(y)} rows of {rows} "
                         f"go to the {held_out} split; use a smaller fraction")
    if len(held) == 0:
        raise ValueError(f"data.{key} = {fraction!r} {where} leaves no {held_out} rows (of {len(y)} rows of "
                         f"{rows}); use a larger fraction")
    return kept, held


def validation_split(cfg: RunConfig, split: datasets.Split) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) indices into split's training rows, by data.val_fraction and data.seed (stratified for
    classification); a split that leaves either side empty is a ValueError naming data.val_fraction."""
    y = split.y_train if split.y_train is not None else np.zeros(len(split.x_train))  # ranking: no labels
    return _split_rows(cfg, y, split.task == "classification", "the training split", "validation", "val_fraction")


def load_data(cfg: RunConfig) -> datasets.Split:
    d = cfg.data
    if d["missing_labels"] is not None:  # read by a CSV of features, texts or ratings alone
        other = (f"dataset {d['dataset']!r} is a built-in set" if d["dataset"] is not None else
                 f"'{d['path']}' is an .npz of arrays" if str(d["path"]).endswith(".npz") else
                 f"a ranker reads '{d['path']}' as (user, item) interactions, which have no labels"
                 if cfg.train.task == "ranking" else None)
        if other is not None:
            raise ValueError(f"data.missing_labels = {d['missing_labels']!r} in {cfg.where('data.missing_labels')} "
                             f"says what a CSV row without a label (or rating) is, and {other}: leave "
                             "missing_labels out")
    if d["dataset"] is not None:
        split = datasets.load(d["dataset"], seed=d["seed"])
        if split.task != cfg.train.task:
            if cfg.train.task != "classification":  # given (the default is classification): it must fit the set
                hint = (" (ranking learns from a CSV of (user, item) interactions: path = that file, model 'mf' "
                        "or 'ncf')" if cfg.train.task == "ranking" else "")
                raise ValueError(f"train.task={cfg.train.task!r} does not fit dataset {d['dataset']!r}, a "
                                 f"{split.task} set: leave task out, the built-in set decides it{hint}")
            cfg.train = cfg.train.replace(task=split.task)
        return split
    if cfg.train.task == "ranking":
        return _ranking_split(cfg)
    if d["time"] is not None:
        raise ValueError(f"data.time = {d['time']!r} in {cfg.where('data.time')} orders a ranker's interactions "
                         "(train.task = 'ranking'), and this run does not rank: leave time out, or set train.task = "
                         "'ranking' to rank from the (user, item) pairs alone")
    x, y, ids = _read_path(cfg)
    if cfg.train.task == "classification" and _coded_from_one(y):  # a run's saved config names its task too
        y = _as_class_names(y)
        log.info("'%s' label column %r holds the codes 1..%d: each is read as a class name (predict writes them "
                 "back)", d["path"], d["label"], len(np.unique(y)))
    elif cfg.train.task == "classification" and "task" not in cfg.train_given and y.dtype.kind != "U":
        training.check_not_quantities(torch.as_tensor(y), "train.task",  # the default: do they look like classes?
                                      labels=f"'{d['path']}' label column {d['label']!r}")
    train, test = _split_rows(cfg, y, cfg.train.task == "classification", f"'{d['path']}'", "test", "test_fraction")
    return datasets.Split(rows_of(x, train), y[train], rows_of(x, test), y[test], cfg.train.task, f"{d['path']}", ids)


def _coded_from_one(y: np.ndarray) -> bool:
    """Whether a file's numeric labels are the codes 1..K (K >= 2), as many data sets write their classes: the
    CLI reads them as class names, where finetune.train in Python asks for ids 0..K-1 (a file has no np.unique
    to call first). Other gaps ({0, 3, 7}, whole prices) stay an error asking which they are."""
    if y.dtype.kind not in "iuf" or y.size == 0:
        return False
    values = np.unique(y)
    return len(values) >= 2 and np.array_equal(values, np.arange(1, len(values) + 1))


def _as_class_names(y: np.ndarray) -> np.ndarray:
    """Whole-number labels as the text of their values ("1", "2"): class names, as a label column of words is."""
    return np.asarray([str(int(v)) for v in y.tolist()], dtype=str)


def rows_of(x: Any, rows: np.ndarray) -> Any:
    """The examples of ``x`` at ``rows``: an array's rows, a streamed image folder's images; None (ranking's
    labels) stays None."""
    return x.subset(rows) if isinstance(x, datasets.ImageFolder) else x[rows] if x is not None else None


def _read_path(cfg: RunConfig) -> tuple[np.ndarray, np.ndarray, dict[str, list[str]] | None]:
    """(X, y, a ratings file's ids or None) of the config's path: an image folder, a CSV of texts or of ratings for
    a model that reads them, else a CSV or .npz of features."""
    d = cfg.data
    _check_path_exists(cfg)
    if Path(d["path"]).is_dir():
        return (*_read_image_folder(cfg), None)
    _check_not_folder_settings(cfg)
    if _text_csv(cfg, d["path"]):
        d["text"] = text_column(cfg, d["path"])  # the resolved config (config.toml) names it
        return (*datasets.load_texts(d["path"], d["text"], d["label"], cfg.train.task, **_csv_encoding(cfg),
                                     missing_labels=d["missing_labels"] or "error"), None)
    if _ratings_csv(cfg, d["path"]):
        return _read_ratings(cfg)
    return (*datasets.load_file(d["path"], label=d["label"], task=cfg.train.task,
                                missing=registry.takes_missing(cfg.model["name"]),  # "mlp": an empty cell is NaN
                                words=_reads_words(cfg),  # "mlp": a column of words is categories
                                missing_labels=d["missing_labels"] or "error", **_csv_encoding(cfg)), None)


def _check_path_exists(cfg: RunConfig) -> None:
    """data.path names a file or folder that is there (a relative one: from the current directory)."""
    if not Path(cfg.data["path"]).exists():
        where = "" if Path(cfg.data["path"]).is_absolute() else f" (read from the current directory, {os.getcwd()})"
        raise FileNotFoundError(f"data.path '{cfg.data['path']}' in {cfg.where('data.path')} does not exist{where}")


def _read_image_folder(cfg: RunConfig) -> tuple[np.ndarray | datasets.ImageFolder, np.ndarray]:
    """(images, their class names) of an image folder with a sub-folder per class, at the model's size: decoded
    into memory, or the folder read a batch at a time where its images would take more than IN_MEMORY_GB (or as
    data.stream says; the choice is written back to the config)."""
    d = cfg.data
    for key in ("encoding", "encoding_errors", "missing_labels"):
        if d[key] is not None:
            raise ValueError(f"data.{key} = {d[key]!r} in {cfg.where('data.' + key)} reads a CSV, and "
                             f"'{d['path']}' is an image folder: leave {key} out")
    if d["label"] != DATA_KEYS["label"]:
        raise ValueError(f"data.label = {d['label']!r} in {cfg.where('data.label')} names a CSV's label column, and "
                         f"'{d['path']}' is an image folder, labelled by its sub-folders: leave label out")
    if cfg.train.task != "classification":
        raise ValueError(f"train.task = {cfg.train.task!r} in {cfg.where('train.task')}, and '{d['path']}' is an image "
                         "folder: its sub-folders are classes (classification)")
    # The files and their labels, no image decoded (with on_bad_file = "skip", each file's structure checked)
    folder = datasets.ImageFolder(d["path"], size=(1, 1), on_bad_file=d["on_bad_file"] or "error")
    _say_skipped(d["path"], folder.skipped)
    if len(folder.classes) < 2:
        raise ValueError(f"image folder '{d['path']}' has one class folder ({folder.classes[0]!r}): a classifier "
                         "needs a sub-folder for each of two classes or more")
    mode, size = image_shape(cfg, [f for f, _ in folder.samples])
    if d["image_mean"] is None and registry.get(cfg.model["name"]).image_mean_std is not None:
        # the scale its pretraining saw; written to config.toml, so that predict and evaluate read new images alike
        d["image_mean"], d["image_std"] = registry.get(cfg.model["name"]).image_mean_std
    mean, std = image_normalisation(cfg, mode)
    names = np.asarray(folder.classes)[folder.targets]  # the class names: predict writes them
    gigabytes = len(folder) * (1 if mode == "L" else 3) * size[0] * size[1] * 4 / 2**30
    if d["stream"] is None:  # workers decode a streamed folder: given, they stream it
        d["stream"] = gigabytes > IN_MEMORY_GB or cfg.train.num_workers > 0
        if d["stream"]:
            log.info("'%s': %d images of %s x %d x %d take %.1f GiB decoded: read a batch at a time (%s; "
                     "data.stream = false decodes them into memory)", d["path"], len(folder), mode, *size, gigabytes,
                     f"above {IN_MEMORY_GB:g} GiB" if gigabytes > IN_MEMORY_GB else
                     f"train.num_workers = {cfg.train.num_workers} decode them")
    if d["stream"]:  # read at the model's size and scale, as the files are asked for
        folder.size, folder.mode, folder.mean, folder.std = size, mode, mean, std
        return folder, names
    return np.stack([datasets.normalised(datasets.read_image(f, size, mode), mean, std) for f, _ in folder.samples]), names


def image_normalisation(cfg: RunConfig, mode: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(mean, std) of data.image_mean / image_std as ImageFolder takes them, or (None, None): pixels in [0, 1] (a
    run directory written before them, or trained on arrays, read new images so)."""
    try:
        return datasets.normalisation(cfg.data["image_mean"], cfg.data["image_std"], mode)
    except ValueError:
        channels = "1 channel" if mode == "L" else "3 channels"
        raise ValueError(f"data.image_mean = {cfg.data['image_mean']!r} and image_std = {cfg.data['image_std']!r} in "
                         f"{cfg.where('data.image_std')} need one value, or one per channel of the model's {mode} images "
                         f"({channels})") from None


def _ranking_split(cfg: RunConfig) -> datasets.Split:
    """A recommender's CSV of (user, item) interactions for train.task = "ranking", split as the NCF paper's
    protocol splits: each user's last interaction in the file -- or by its column data.time -- (of users with two or
    more) is their test item, the rest train. No label is read (the interactions are the data)."""
    d = cfg.data
    _check_path_exists(cfg)
    if not (_ratings_csv(cfg, d["path"]) and Path(d["path"]).is_file()):
        raise ValueError(f"train.task = 'ranking' in {cfg.where('train.task')} learns from a CSV of (user, item) "
                         f"interactions, and '{d['path']}' is not one read by model {cfg.model['name']!r} (ranking "
                         f"models: {[n for n in model_names() if registry.get(n).pairs]})")
    for key, why in (("test_fraction", "each user's last interaction is held out as the test split"),
                     ("label", "a ranker learns from which items each user had, not from a label")):
        if d[key] is not None and d[key] != DATA_KEYS[key]:
            raise ValueError(f"data.{key} = {d[key]!r} in {cfg.where('data.' + key)}, and train.task = 'ranking': "
                             f"{why}; leave {key} out")
    if d["time"] is not None and d["time"] not in datasets.csv_header(d["path"], **_csv_encoding(cfg)):
        header = datasets.csv_header(d["path"], **_csv_encoding(cfg))
        raise ValueError(f"data.time = {d['time']!r} in {cfg.where('data.time')} is not a column of '{d['path']}'"
                         f"{did_you_mean([d['time']], header)} (its columns: {header})")
    pairs, users, items, repeats = datasets.load_interactions(d["path"], *id_columns(cfg), **_csv_encoding(cfg),
                                                              time=d["time"])
    if repeats:
        log.info("'%s': %d interaction(s) repeat an earlier (user, item) pair: each pair is kept once", d["path"],
                 repeats)
    train, test = recommend.leave_one_out(pairs)
    if len(test) == 0:
        raise ValueError(f"'{d['path']}' has no user with two interactions or more: ranking holds out each user's "
                         "last one to test on")
    return datasets.Split(pairs[train], None, pairs[test], None, "ranking", f"{d['path']}",
                          {"user": list(users), "item": list(items)})


def ranking_metrics(model: Any, seen: np.ndarray, test: np.ndarray, num_items: int, seed: int) -> dict[str, Any]:
    """HR@10 and NDCG@10 of a ranker on ``test``'s (user, item) pairs, each item ranked among RANKING_NEGATIVES
    items its user never had (``seen``: every pair the users had), or among all of them where a user has fewer
    (``short_users``: how many test rows those are); ``interactions``: how many were ranked."""
    negatives = min(RANKING_NEGATIVES, num_items - 1)
    found = recommend.ranking_metrics(model, seen, test, num_items, k=10, negatives=negatives, seed=seed)
    return {**found, "negatives": negatives, "short_users": recommend.short_users(seen, test, num_items, negatives),
            "interactions": len(test)}


def _read_ratings(cfg: RunConfig) -> tuple[np.ndarray, np.ndarray, dict[str, list[str]]]:
    """(index pairs, ratings, the user and item ids in index order) of a recommender's CSV of ratings; the task is
    regression (set here where the [train] table leaves it out)."""
    if "task" not in cfg.train_given:
        cfg.train = cfg.train.replace(task="regression")  # ratings: values to predict
    if cfg.train.task != "regression":
        raise ValueError(f"train.task = {cfg.train.task!r} in {cfg.where('train.task')}: a recommender's CSV of "
                         "ratings trains task = 'regression', or 'ranking' from the (user, item) interactions alone")
    header = datasets.csv_header(cfg.data["path"], **_csv_encoding(cfg))
    if cfg.data["label"] not in header and set(id_columns(cfg)) <= set(header):
        raise ValueError(f"'{cfg.data['path']}' has no rating column {cfg.data['label']!r} (data.label; its columns: "
                         f"{header}): a CSV of interactions without ratings trains train.task = 'ranking'")
    pairs, ratings, users, items = datasets.load_ratings(cfg.data["path"], *id_columns(cfg), rating=cfg.data["label"],
                                                         missing_labels=cfg.data["missing_labels"] or "error",
                                                         **_csv_encoding(cfg))
    return pairs, ratings, {"user": list(users), "item": list(items)}  # each map's keys are in index order


def _without_statistics(model: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """A [model] table to write (config.toml, best.toml) without the options read off the training data ("mlp"'s
    input scaling, its category levels), unless the config gave them: the config run on other data reads them anew,
    and runs on other splits compare without long arrays."""
    kept = registry.get(model["name"]).statistic_names()
    return {k: v for k, v in model.items() if k not in kept or k in given}


def _check_not_folder_settings(cfg: RunConfig) -> None:
    """data.image_size, image_mode, image_mean, image_std, stream and on_bad_file read an image folder's images:
    given for a file, an error."""
    for key in ("image_size", "image_mode", "image_mean", "image_std", "stream", "on_bad_file"):
        if cfg.data[key] is not None:
            what = "scales" if key in ("image_mean", "image_std") else "sizes" if key.startswith("image") else "reads"
            raise ValueError(f"data.{key} = {cfg.data[key]!r} in {cfg.where('data.' + key)} {what} the images of a "
                             f"folder, and '{cfg.data['path']}' is a file: leave {key} out")


def image_shape(cfg: RunConfig, files: Sequence[str | os.PathLike]) -> tuple[str, tuple[int, int]]:
    """(mode, (height, width)) the config's model reads an image folder's ``files`` at: what its options fix
    ("digit_cnn": 28 x 28 grayscale; "cnn": in_channels, height and width where given), the rest from data.image_size
    (default IMAGE_SIZE, square) and data.image_mode (default "L" where every file is grayscale, else "RGB"); a
    data setting that contradicts the model's is an error."""
    name = cfg.model["name"]
    entry = registry.get(name)
    if entry.example_shape is None:
        raise ValueError(f"'{cfg.data['path']}' is an image folder, and model {name!r} does not read images (those "
                         f"that do: {[n for n in model_names() if registry.get(n).example_shape is not None]})")
    given, shape = _options(cfg), ("in_channels", "height", "width")
    if not set(shape) & set(entry.defaults):  # the model fixes its input (a pretrained CNN)
        own = dict(zip(shape, entry.example_shape({**entry.defaults, **given})))
    else:  # given in [model]; those left out are read off the images
        own = {k: given[k] for k in shape if k in given}
    if "in_channels" in own and own["in_channels"] not in IMAGE_MODES:
        raise ValueError(f"model.in_channels = {own['in_channels']} in {cfg.where('model.in_channels')}: an image "
                         "folder's images are read with 1 channel (grayscale) or 3 (RGB)")
    size = cfg.data["image_size"]
    size = None if size is None else tuple(size) if isinstance(size, list) else (size, size)
    mode = cfg.data["image_mode"]
    for key, value, model_value in (("image_size", size, (own.get("height"), own.get("width"))),
                                    ("image_mode", mode, IMAGE_MODES.get(own.get("in_channels")))):
        if value is None:
            continue
        clash = value != model_value if key == "image_mode" else any(
            m is not None and m != v for m, v in zip(model_value, value))
        if model_value is not None and clash:
            reads = (f"{model_value} images (in_channels {own['in_channels']})" if key == "image_mode" else
                     ", ".join(f"{k} {own[k]}" for k in ("height", "width") if k in own))
            raise ValueError(f"data.{key} = {cfg.data[key]!r} in {cfg.where('data.' + key)}, and model {name!r} "
                             f"reads {reads}: leave {key} out")
    size = size or (IMAGE_SIZE, IMAGE_SIZE)
    height, width = own.get("height", size[0]), own.get("width", size[1])
    if max(height, width) > MAX_IMAGE_SIDE:  # one image alone would take gigabytes decoded
        setting = "data.image_size" if cfg.data["image_size"] is not None else f"model {name!r}'s height and width"
        raise ValueError(f"{setting} in {cfg.source} read(s) images of {height} x {width}: at most {MAX_IMAGE_SIDE} "
                         f"a side (one RGB image of {height} x {width} takes {height * width * 12 / 2**30:.1f} GiB "
                         "decoded)")
    if "in_channels" in own:
        mode = IMAGE_MODES[own["in_channels"]]
    elif mode is None:
        mode = "L" if datasets.all_grayscale(files) else "RGB"
    return mode, (int(height), int(width))


def folder_shape(cfg: RunConfig) -> tuple[str, tuple[int, int]]:
    """(mode, (height, width)) a run's image model reads, from its config's resolved options: new images are read
    as its training folder's were."""
    entry = registry.get(cfg.model["name"])
    if entry.example_shape is None:
        raise ValueError(f"model {cfg.model['name']!r} does not read images, and an image folder was given")
    channels, height, width = entry.example_shape({**entry.defaults, **_options(cfg)})
    return IMAGE_MODES[channels], (int(height), int(width))


def _ratings_csv(cfg: RunConfig, path: str | os.PathLike) -> bool:
    """Whether ``path`` is a CSV of (user, item, rating) rows for the config's model ("mf", "ncf")."""
    return registry.get(cfg.model["name"]).pairs and str(path).endswith((".csv", ".csv.gz"))


def id_columns(cfg: RunConfig) -> tuple[str, str]:
    """A recommender's CSV's user and item columns: data.user and data.item, by default "user" and "item"."""
    user, item = cfg.data["user"] or "user", cfg.data["item"] or "item"
    if user == item:
        raise ValueError(f"data.user and data.item in {cfg.source} both name the column {user!r}: a rating's user "
                         "and item are two columns")
    return user, item


def _text_csv(cfg: RunConfig, path: str | os.PathLike) -> bool:
    """Whether ``path`` is a CSV the config's model reads a column of texts from ("minilm")."""
    return registry.get(cfg.model["name"]).texts and str(path).endswith((".csv", ".csv.gz"))


def text_column(cfg: RunConfig, path: str | os.PathLike, labelled: bool = True) -> str:
    """The column of texts of a text model's CSV: data.text, else the file's one column besides the label (which a
    ``labelled`` file must have)."""
    if cfg.data["text"] is not None:
        return cfg.data["text"]
    header = datasets.csv_header(path, **_csv_encoding(cfg))
    if labelled and cfg.data["label"] not in header:  # said first: the columns besides it are not known
        raise ValueError(f"'{path}' has no label column {cfg.data['label']!r} (data.label in "
                         f"{cfg.where('data.label')}; its columns: {header})")
    others = [c for c in header if c != cfg.data["label"]]
    if len(others) != 1 and cfg.data["dataset"] is not None:  # a built-in set's run: no column name to go by
        raise ValueError(f"'{path}' has {len(others)} columns besides the label {cfg.data['label']!r} ({others}): "
                         f"the run trained on the built-in {cfg.data['dataset']!r}, so new texts come as a CSV of "
                         "one column (and the label, for evaluate)")
    if len(others) != 1:
        raise ValueError(f"'{path}' has {len(others)} columns besides the label {cfg.data['label']!r} ({others}): "
                         f"set data.text in {cfg.where('data.text')} to the one holding the texts")
    return others[0]


def _reads_words(cfg: RunConfig) -> bool:
    """Whether the config's model reads a CSV's columns of words as categories ("mlp": finetune.categories)."""
    return "categories" in registry.get(cfg.model["name"]).defaults


def write_toml(values: dict[str, Any]) -> str:
    """`values` (tables of settings) as TOML text, by tomli_w. TOML has no null: a None is left out, which reads
    back as the setting's default (None)."""
    def without_none(table: dict[str, Any]) -> dict[str, Any]:
        return {k: without_none(v) if isinstance(v, dict) else v for k, v in table.items() if v is not None}

    return tomli_w.dumps(without_none(values))


def strict_json(value: Any) -> Any:
    """``value`` with every float that is not finite written as the string "NaN", "Infinity" or "-Infinity": JSON
    has no such numbers (Python writes them anyway, and jq or a browser then refuses the whole file), and a
    diverged loss or the paired test's z with no spread is one."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def environment() -> dict[str, Any]:
    return {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "cuda": torch.cuda.is_available()}


def summary_writer(required: bool = False) -> Any:
    """tensorboardX's SummaryWriter class, or None when tensorboardX (the `tensorboard` extra) is not installed;
    with `required`, its absence is an ImportError naming the package."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        if required:
            raise ImportError("TensorBoard event files need tensorboardX: pip install tensorboardX "
                              "(or pip install 'finetune[tensorboard]')") from None
        return None
    return SummaryWriter


def log_epoch(writer: Any, record: dict[str, Any]) -> None:
    """One epoch's record (a row of history.csv) as scalars at step epoch + 1: train_loss is train/loss,
    val_accuracy validation/accuracy; lr, seconds and samples_per_s keep their names. SummaryWriter writes from
    its own thread: with flush_secs=1 the epoch is on disk about a second after it ends."""
    step = int(record["epoch"]) + 1
    for key, value in record.items():
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(key.replace("val_", "validation/").replace("train_", "train/"), float(value), step)
    writer.flush()


def run(cfg: RunConfig, out: str | os.PathLike, quiet: bool = False,
        callback: Callable[[str, dict], bool | None] | None = None, tensorboard: bool | None = None,
        resume: bool = False) -> dict[str, Any]:
    """Trains as `cfg` says and writes the run directory `out`; returns the metrics written.

    `callback` is passed on to finetune.train (called at steps and at each epoch's end; True stops the run).
    Each epoch is also logged to `out/tensorboard` as it ends, live, when tensorboardX is installed
    (`tensorboard=None`); `tensorboard=True` requires it (an ImportError naming the package, before any work),
    `tensorboard=False` writes no event files. The run checkpoints in `out/checkpoints` (unless train.checkpoint_dir
    says elsewhere); `resume=True` continues an interrupted run from there -- the recipe's or the settings' as
    given, whichever it was -- and then writes its event files whole, from the history."""
    out = Path(out)
    created = not out.exists()
    try:
        with data.named_columns(_header_names(cfg)):  # messages name a CSV's columns, not their positions in X
            return _run_into(cfg, out, quiet, callback, tensorboard, resume)
    except BaseException:
        # a bad setting or file: no empty run directory left behind (by rank 0 alone, under torchrun)
        if created and distributed.process_rank() == 0 and out.is_dir() and not any(out.iterdir()):
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _header_names(cfg: RunConfig) -> tuple[str, ...] | None:
    """data_columns, or None where the file cannot be read: the run's own checks say why, in their words."""
    try:
        return data_columns(cfg) if cfg.data.get("path") is not None and Path(cfg.data["path"]).is_file() else None
    except ValueError:
        return None


def _run_into(cfg: RunConfig, out: Path, quiet: bool, callback: Callable[[str, dict], bool | None] | None,
              tensorboard: bool | None, resume: bool) -> dict[str, Any]:
    import finetune

    writer_class = summary_writer(required=tensorboard is True) if tensorboard is not False else None
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    split = load_data(cfg)
    train_cfg = cfg.train.replace(progress=cfg.train.progress and not quiet)
    replaced: list[Path] = []  # a finished run's checkpoints and metrics, set aside until this run has its own
    if train_cfg.checkpoint_dir is None:
        train_cfg = train_cfg.replace(checkpoint_dir=str(out / "checkpoints"))
        resume, replaced = _own_checkpoints(out, resume)
    elif resume and not Path(train_cfg.checkpoint_dir).exists():
        raise FileNotFoundError(f"resume: no checkpoints in '{train_cfg.checkpoint_dir}' (train.checkpoint_dir)")
    # A [train] table that shapes nothing runs the recipe, as finetune.train does by default; a key the file sets
    # counts as given at any value (lr = 0.01 runs as given), which a TrainConfig cannot tell train(): say it.
    chosen, why = training.recipe_for(cfg.train, cfg.train_given)
    as_given = chosen == "none"
    shaping = [k for k in sorted(cfg.train_given) if k not in recipe_rules.RECIPE_NEUTRAL]
    set_in = ", ".join(sorted({cfg.where(f"train.{k}") for k in shaping}))  # where the keys that turned it off are
    if as_given and shaping and not quiet:  # as finetune.train says it for keywords: lr alone is SGD at that rate
        rest = ", ".join(f"{k} = {v!r}" for k, v in training.loop_defaults_left(cfg.train_given).items())
        log.warning(f"train.{', train.'.join(shaping)} set in {set_in}: the recipe is off and the settings run as "
                    f"given{f', the rest at the loop defaults ({rest})' if rest else ''}; without them in [train] "
                    "the recipe decides")
    # The recipe carves its validation slice from the training split itself (data.val_fraction, else its own
    # default), decides on it, then refits the kept phase on the whole split: the slice trains the returned model,
    # as finetune.train without val does. Settings run as given early-stop on the slice the run carves here.
    val_fraction, x_val, y_val = None if as_given else cfg.data["val_fraction"], None, None
    x_fit, y_fit = split.x_train, split.y_train
    if val_fraction is not None:
        validation_split(cfg, split)  # a fraction that leaves either side empty: an error naming data.val_fraction
    if as_given:
        val_train, val = validation_split(cfg, split)
        x_fit, y_fit = rows_of(split.x_train, val_train), rows_of(split.y_train, val_train)
        x_val, y_val = rows_of(split.x_train, val), rows_of(split.y_train, val)
    x_test = split.x_test
    entry, options = registry.get(cfg.model["name"]), _options(cfg)
    if entry.every_split:  # id tables that must hold every id of the data, test split included
        every = entry.infer_options(np.concatenate([split.x_train, split.x_test]),
                                    None if split.y_train is None else np.concatenate([split.y_train, split.y_test]),
                                    split.task, **options)
        options.update({k: v for k, v in every.items() if k in entry.every_split})
    options = entry.choose_options(x_fit, options)  # from the training inputs, once (MiniLM: max_length=0)
    x_fit = entry.encode_inputs(x_fit, options, training.sampled_text_rows(x_fit, y_fit, train_cfg))  # texts: ids
    tested = data.length(x_test) > 0  # data.test_fraction = 0: no test split
    x_test = entry.encode_inputs(x_test, options) if tested else x_test
    val_data = (entry.encode_inputs(x_val, options), y_val) if as_given else None
    events = None  # each epoch's scalars, written as the epoch ends (tensorboard --logdir runs shows them live)
    if writer_class is not None and distributed.process_rank() == 0:  # under torchrun, rank 0 writes the run
        if resume:  # the interrupted run's events: the resumed run writes them all again at its end
            shutil.rmtree(out / "tensorboard", ignore_errors=True)
        events = writer_class(str(out / "tensorboard"), flush_secs=1)

    epochs_logged = 0  # the recipe's phases count their epochs from 0 each: the events count on across them

    def on_event(kind: str, info: dict[str, Any]) -> bool:
        nonlocal epochs_logged
        if kind == "epoch":
            if events is not None and not resume:  # a resumed run's epochs are written whole at its end
                log_epoch(events, {**info, "epoch": epochs_logged})
            epochs_logged += 1
        return bool(callback(kind, info)) if callback is not None else False

    start = time.perf_counter()
    try:
        try:
            result = finetune.train(entry.name, (x_fit, y_fit), val=val_data, val_fraction=val_fraction,
                                    config=train_cfg, callback=on_event, lora=cfg.lora, resume=resume,
                                    recipe="none" if as_given else None, task=cfg.train.task,  # decided by load_data
                                    **options)
        except BaseException as error:
            # Stopped before writing a checkpoint (a bad setting): the finished run stays as it was. Otherwise the
            # interrupted run is the one to resume, and the finished one's leftovers go.
            own = out / "checkpoints"
            wrote = own.is_dir() and any(own.iterdir())
            _put_back(replaced, restore=not wrote)
            if wrote and isinstance(error, Exception) and distributed.process_rank() == 0:
                # An error, not Ctrl-C or SIGTERM (BaseExceptions): a diverged loss, say. Resuming would meet it
                # again, so a new run may replace it; --resume still continues it (with other settings).
                (out / FAILED_FILE).write_text(f"{type(error).__name__}: {error}\n")
            raise
        _put_back(replaced, restore=False)
        (out / FAILED_FILE).unlink(missing_ok=True)  # a failed run resumed to its end
        if events is not None and resume:  # the epochs before the interruption too, counted across phases
            for number, record in enumerate(result.history):
                log_epoch(events, {**record, "epoch": number})
    finally:
        if events is not None:
            events.close()
    seconds = time.perf_counter() - start
    test = ({} if not tested else
            ranking_metrics(result.model, split.x_train, x_test, options["num_items"], cfg.data["seed"])
            if split.task == "ranking" else finetune.evaluate(result.model, (x_test, split.y_test), task=split.task))
    confusion = test.pop("confusion_matrix", None)
    per_class = {k: test.pop(k) for k in ("per_class_precision", "per_class_recall", "classes") if k in test}
    if as_given and result.recipe and result.recipe[0]["reason"] == "given":  # which keys: train() saw recipe="none"
        result.recipe[0] = {**result.recipe[0], "reason": why.replace("were given", f"were given in {set_in}")}
    resolved = RunConfig(cfg.data, {**cfg.model, **result.model_options}, result.config, cfg.source, lora=cfg.lora)
    if distributed.process_rank() != 0:  # under torchrun, rank 0 writes the run directory
        return {"test": test}

    # The options read off the training inputs stay with the weights, not in config.toml (_without_statistics).
    # With [lora] the freezing is LoRA's (everything but the adapters and the head), not a setting to write back.
    written_train = resolved.train.replace(freeze=cfg.train.freeze) if cfg.lora is not None else resolved.train
    written = RunConfig(cfg.data, _without_statistics(resolved.model, cfg.model), written_train, cfg.source,
                        lora=cfg.lora)
    config_written = written.to_dict()
    if cfg.data["path"] is not None:  # evaluate, predict and reruns read it from wherever they are run
        config_written["data"] = {**config_written["data"], "path": str(Path(cfg.data["path"]).absolute())}
    if cfg.data["path"] is not None and cfg.data["test_fraction"] is None and split.task != "ranking":
        # the test split, for evaluate and reruns (a ranker's is each user's last interaction)
        config_written["data"] = {**config_written["data"], "test_fraction": TEST_FRACTION}
    unlabelled = split.task == "ranking" or (cfg.data["path"] is not None and Path(cfg.data["path"]).is_dir())
    if unlabelled and cfg.data["label"] == DATA_KEYS["label"]:  # no label column to name: a folder, interactions
        config_written["data"] = {k: v for k, v in config_written["data"].items() if k != "label"}
    if result.recipe[0]["value"] != "none":  # its settings were its phases' (metrics.json): config.toml reruns it
        config_written["train"] = {k: v for k, v in cfg.train.to_dict().items() if k in cfg.train_given}
        if split.task != TrainConfig().task and "task" not in cfg.train_given:  # decided by the data (ratings)
            config_written["train"]["task"] = split.task  # compare and reruns read it, not the default
    (out / CONFIG_FILE).write_text(write_toml(config_written))
    # The task, and a CSV file's feature columns: predicting on a file whose columns moved is an error, not garbage
    remembered = training.trained_for(result.model) or training.TrainedFor(split.task)
    columns = data_columns(cfg)
    if columns is not None and getattr(split.x_train, "ndim", 0) == 2:
        # the table's columns, as predict is given them: not the width "mlp" encodes its words to
        remembered = dataclasses.replace(remembered, example_shape=(len(columns),))
    if remembered.image_scale is None and cfg.data["path"] is not None and Path(cfg.data["path"]).is_dir():
        # a folder read into memory: its pixels' scale, which arrays given to the model in Python must match
        scale = training.pixel_scale(*image_normalisation(cfg, folder_shape(cfg)[0]))
        remembered = dataclasses.replace(remembered, image_scale=scale)
    trained = saving.trained_for_meta(dataclasses.replace(remembered, columns=columns))
    if result.lora is not None and not result.lora["merged"]:
        # Adapters kept apart (lora.merge = false): the run keeps what trained -- the adapters and the head, a
        # small file -- and rebuilds the pretrained model around them when loaded.
        state = {k: v for k, v in result.model.state_dict().items() if lora.is_trained_name(k, result.lora["head"])}
        checkpoint.save_tensors(out / ADAPTERS_FILE, state,
                                {"model": json.dumps(resolved.model), "lora": json.dumps(result.lora), **trained})
    else:
        checkpoint.save_tensors(out / MODEL_FILE, result.model.state_dict(),
                                {"model": json.dumps(resolved.model), **trained})
    if split.ids is not None:  # a ratings file's ids, for predict and evaluate on new rows of them
        (out / IDS_FILE).write_text(json.dumps(split.ids))
    with open(out / HISTORY_FILE, "w", newline="") as f:
        # The recipe's phases log different columns (its head fit has no rate, phase pairs no validation): all of them
        columns = list(dict.fromkeys(k for h in result.history for k in h)) or ["epoch"]
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(result.history)
    metrics = {
        "data": split.description,
        "data_sha256": _file_digest(cfg.data["path"]),  # evaluate and recommend rebuild the split from the file
        "validation": result.metrics,
        "test": test,
        "test_confusion_matrix": confusion.tolist() if confusion is not None else None,
        "test_per_class": per_class,
        "class_counts": result.class_counts,
        "train_size": result.train_size,
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "seconds": seconds,
        "samples_per_s": float(np.median([h["samples_per_s"] for h in result.history])) if result.history else 0.0,
        "param_groups": result.param_groups,
        # what ran and why (the recipe's decisions, or why the settings ran as given), a CSV's columns by name
        "recipe": _named_columns(result.recipe, data_columns(cfg)),
        "distributed": {"world_size": result.world_size, "global_batch": _global_batch(result),
                        "communication_seconds": result.communication_seconds,
                        "allreduce_overlap": result.allreduce_overlap},
        "environment": environment(),
    }
    (out / METRICS_FILE).write_text(json.dumps(strict_json(metrics), indent=1))
    (out / REPORT_FILE).write_text(report.html(config_written, result.history, metrics))
    report.plots_png(str(out / PLOTS_FILE), result.history, metrics)  # with matplotlib installed
    log.info("run written to %s", out)
    return metrics


def _file_digest(path: str | None) -> str | None:
    """The SHA-256 of a data file (None for a built-in set or a folder)."""
    if path is None or not Path(path).is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _training_split(run_dir: Path, cfg: RunConfig) -> datasets.Split:
    """A finished run's split, read again from its data: its file must be the one it trained on (metrics.json's
    digest), or the test split (and what each user had) would be other rows."""
    metrics = json.loads((run_dir / METRICS_FILE).read_text()) if (run_dir / METRICS_FILE).is_file() else {}
    wrote = metrics.get("data_sha256")
    if wrote is not None and not Path(cfg.data["path"]).is_file():
        raise FileNotFoundError(f"'{cfg.data['path']}', the data '{run_dir}' trained on, does not exist (moved or "
                                "deleted): its test split is read from it; restore it there, or pass new labelled "
                                "rows with --input")
    if wrote is not None and _file_digest(cfg.data["path"]) != wrote:
        raise ValueError(f"'{cfg.data['path']}' has changed since '{run_dir}' trained on it: its test split (and "
                         "what each user had) would be read from other rows; restore the file, or train again")
    return load_data(cfg)


def _global_batch(result: Any) -> int:
    """Examples a step of the run that wrote the weights (a recipe's last phase: each phase's is in its decisions)."""
    batch = result.config.batch_size
    batch = result.train_size if batch in (None, "full") else batch
    return min(batch * result.config.accumulate * result.world_size, result.train_size)


def _check_out(out: Path) -> None:
    """A run's --out is new, or a folder a new run may write in: a finetune run directory (finished, failed or
    interrupted: its own checks follow), or a folder without a run's names in it. A folder of other files that
    bear a run's names (a metrics.json of one's own, a checkpoints/ of other files) is not overwritten or emptied."""
    if not out.is_dir() or distributed.process_rank() != 0:
        return
    own, events = out / "checkpoints", out / "tensorboard"
    if ((out / CONFIG_FILE).is_file() or (out / FAILED_FILE).is_file()
            or own.is_dir() and (checkpoint.find(own) is not None or checkpoint.recipe_journal(own) is not None)
            or events.is_dir() and any(events.iterdir())
            and all(p.name.startswith("events.out.tfevents") for p in events.iterdir())):
        return  # a run's (a run stopped before its first checkpoint leaves its event files)
    named = [name for name in (*RUN_FILES, *RUN_FOLDERS)
             if (out / name).is_file() or (out / name).is_dir() and any((out / name).iterdir())]
    if named:
        raise ValueError(f"--out '{out}' is not a finetune run directory (no config.toml, failed.txt or checkpoints "
                         f"of a run) and holds {', '.join(named)}, which a run would overwrite: pass a new or empty "
                         "--out")


def _own_checkpoints(out: Path, resume: bool) -> tuple[bool, list[Path]]:
    """(whether to resume, what was set aside): checks the run directory's checkpoints/ before a run writes there.
    Resuming needs them; a new run replaces a finished run's (its metrics.json too: the run is being replaced),
    set aside until this run has checkpoints of its own, and will not overwrite an interrupted run's
    (checkpoints/ without metrics.json). A round torchrun restarted (--max-restarts) resumes what it finds."""
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
    own = out / "checkpoints"
    held = own.is_dir() and any(own.iterdir())
    if distributed.process_rank() != 0:  # under torchrun, rank 0 looks after the run directory
        return resume or (restarted and held), []
    if restarted and not resume:
        return held, []
    if resume and not held:
        raise FileNotFoundError(f"resume: '{out}' holds no checkpoints to resume (no {own})")
    if resume or not held:
        return resume, []
    failed = out / FAILED_FILE
    if not (out / METRICS_FILE).is_file() and not failed.is_file():
        raise ValueError(f"'{out}' holds an interrupted run ({own}, no metrics.json): --resume continues it; "
                         "remove the directory or pass another --out to start afresh")
    kind = "failed" if failed.is_file() else "finished"
    aside = []
    for path in (own, out / METRICS_FILE, failed):
        if not path.exists():  # a failed run has no metrics.json
            continue
        moved = path.with_name(f".{path.name}.replaced")
        _remove(moved)  # left by a run killed before it put these back or removed them
        path.rename(moved)
        aside.append(moved)
    log.info("a new run in %s: the %s run's checkpoints are replaced", out, kind)
    return False, aside


def _put_back(aside: list[Path], restore: bool) -> None:
    """What _own_checkpoints set aside: back in place (``restore``), or removed."""
    for moved in aside:
        if restore:
            moved.rename(moved.with_name(moved.name.removeprefix(".").removesuffix(".replaced")))
        else:
            _remove(moved)


def _remove(path: Path) -> None:
    """A file or a directory tree, if it is there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _options(cfg: RunConfig) -> dict[str, Any]:
    """The options the config's [model] table gives (all but name)."""
    return {k: v for k, v in cfg.model.items() if k != "name"}


def with_chosen_options(cfg: RunConfig, x_train: Any) -> RunConfig:
    """The config with the model options its training inputs decide (MiniLM's max_length=0: from the texts)."""
    entry = registry.get(cfg.model["name"])
    chosen = entry.choose_options(x_train, _options(cfg))
    return RunConfig(cfg.data, {**cfg.model, **chosen}, cfg.train, cfg.source, cfg.tune, cfg.lora, cfg.train_given,
                     cfg.overridden)


def model_inputs(cfg: RunConfig, x: Any) -> Any:
    """``x`` as the numbers the config's model reads (MiniLM: texts tokenised at model.max_length), by the config's
    options: for find-lr and tune, which build no model first. A run directory's model is finetune's: evaluate and
    predict give it ``x`` as read, and finetune.evaluate / predict check it against the training's rows and encode
    it by the options the model was built with ("mlp"'s category levels, saved with its weights), as in Python."""
    return registry.get(cfg.model["name"]).encode_inputs(x, _options(cfg))


def build_model(cfg: RunConfig, x: Any, y: Any) -> Any:
    """The model the config names, its sizes read off ``(x, y)`` and its weights initialised from train.seed: the
    model finetune.train builds from the name for these rows, not trained."""
    entry, options = registry.get(cfg.model["name"]), _options(cfg)
    if isinstance(x, datasets.ImageFolder):  # streamed: an image model's sizes are its first example's
        inputs = [torch.as_tensor(x[0][0])[None]]
    else:
        inputs = data.features(entry.encode_inputs(x, options), "X", torch.float32, examples=data.length(y),
                               missing=entry.missing)
    y, _ = data.label_ids(y, "y", cfg.train.task, None, fit=True)  # text labels: the ids finetune.train gives them
    targets = data.targets(y, "y", cfg.train.task, data.length(y))
    torch.manual_seed(cfg.train.seed)
    return entry.build_for(inputs, targets, cfg.train.task, options)[0]


def load_run(run_dir: str | os.PathLike) -> tuple[RunConfig, Any]:
    """(config, model) of a finished run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory '{run_dir}' does not exist")
    cfg = load_config(run_dir / CONFIG_FILE)
    if cfg.data["path"] is not None and cfg.data["test_fraction"] is None and cfg.train.task != "ranking":
        # A run directory written before data.test_fraction: its file's test split was cut by val_fraction.
        cfg.data["test_fraction"] = cfg.data["val_fraction"]
    path = cfg.data["path"]  # the training folder may be gone: a folder is what is not a data file
    folder = path is not None and (Path(path).is_dir() or not Path(path).exists() and not str(path).endswith(
        (".npz", ".csv", ".gz")))
    if folder and cfg.data["image_mean"] is None and registry.get(cfg.model["name"]).image_mean_std is not None:
        # A run directory written before data.image_mean: its folder trained in [0, 1], as its test split is read
        cfg.data["image_mean"], cfg.data["image_std"] = 0.0, 1.0
    adapters = run_dir / ADAPTERS_FILE
    tensors, meta = checkpoint.load_tensors(adapters if adapters.exists() else run_dir / MODEL_FILE)
    spec = json.loads(meta["model"])
    model = registry.get(spec.pop("name")).build_saved(spec)
    if not adapters.exists():
        saving.load_weights(model, tensors)
        saving.remember_saved_training(model, meta)
        return _with_trained_task(cfg, model), model
    # The pretrained model rebuilt (its weights from its package), the adapters put back where they were trained.
    added = json.loads(meta["lora"])
    module = models.eager(model) or model
    settings = lora.LoraSettings.parse({k: added[k] for k in ("r", "alpha", "dropout")} | {"targets": added["layers"]})
    lora.add_adapters(module, settings, added["head"], seed=0)
    missing = sorted(set(tensors) - set(module.state_dict()))
    if missing:
        raise ValueError(f"{adapters}: tensors {missing[:4]} have no place in the rebuilt model")
    module.load_state_dict(tensors, strict=False)
    if module is not model:  # the eager module trained: evaluate/predict encode its texts by the built options
        registry.remember(module, *registry.built(model))
    saving.remember_saved_training(module, meta)
    return _with_trained_task(cfg, module), module


def _with_trained_task(cfg: RunConfig, model: Any) -> RunConfig:
    """The config at the task its model trained for: a recipe run's config.toml keeps the [train] table as given,
    and a built-in set or a ratings file decided a task the table left out."""
    trained = training.trained_for(model)
    if trained is not None:
        cfg.train = cfg.train.replace(task=trained.task)
    return cfg


def evaluate_run(run_dir: str | os.PathLike, input_path: str | os.PathLike | None = None,
                 on_bad_file: str | None = None) -> dict[str, Any]:
    """Test metrics of a finished run: on its test split, read again as its config says, or on the labelled rows of
    ``input_path`` (an .npz with X and y, or a CSV with the training file's feature columns and its label column; a
    ranker's: a CSV of held-out (user, item) interactions, ranked among the items their users never had in the
    training file; a folder of images, a sub-folder per class, whose unreadable files ``on_bad_file`` decides:
    by default as the run's data.on_bad_file)."""
    import finetune

    cfg, model = load_run(run_dir)
    cfg = _with_on_bad_file(cfg, input_path, on_bad_file)
    if cfg.train.task == "ranking":  # test items ranked among items their users never had in the training file
        split = _training_split(Path(run_dir), cfg)
        if input_path is None:
            return ranking_metrics(model, split.x_train, split.x_test, model.options["num_items"], cfg.data["seed"])
        ids = run_ids(run_dir)
        skipped = 0
        if ids is not None and _ratings_csv(cfg, input_path) and Path(input_path).is_file():
            # A user or item training never saw has no factors to rank by: its rows are left out, and counted
            new, _, skipped = datasets.load_pairs(input_path, *id_columns(cfg), None, ids, skip_unseen=True,
                                                  **_csv_encoding(cfg))
            if not len(new):
                raise ValueError(f"'{input_path}': none of its {skipped} interaction(s) has a user and an item "
                                 "training had; a ranker ranks the items it was trained on, for its users")
        else:
            new = _read_rows(cfg, input_path, None, (), (), labelled=False, ids=ids)[0]
        seen = np.concatenate([split.x_train, split.x_test])
        items = model.options["num_items"]
        had = np.isin(new[:, 0] * items + new[:, 1], seen[:, 0] * items + seen[:, 1])  # (user, item) as one number
        if had.any():
            u, i = new[np.flatnonzero(had)[0]]
            raise ValueError(f"'{input_path}' has {int(had.sum())} interaction(s) the training file has too, such as "
                             f"({ids['user'][u]!r}, {ids['item'][i]!r}): a ranker is tested on items new to the user")
        return {**ranking_metrics(model, seen, new, items, cfg.data["seed"]), "unseen_skipped": skipped}
    if input_path is None:
        if cfg.data["test_fraction"] == 0:
            raise ValueError(f"'{run_dir}' trained on every row of '{cfg.data['path']}' (data.test_fraction = 0): it "
                             "has no test split to score; pass --input with new labelled rows")
        split = _training_split(Path(run_dir), cfg)
        x, y = split.x_test, split.y_test
    else:
        x, y = read_labelled(cfg, input_path, model, run_ids(run_dir))
    trained = training.trained_for(model)
    with data.named_columns(trained.columns if trained is not None else None):
        metrics = finetune.evaluate(model, (x, y), task=cfg.train.task)
    if "confusion_matrix" in metrics:  # classification's; a regression has none
        metrics["confusion_matrix"] = metrics["confusion_matrix"].tolist()
    return metrics


def _named_columns(recipe: list[dict[str, Any]], columns: tuple[str, ...] | None) -> list[dict[str, Any]]:
    """The recipe's decisions with a CSV's category columns (inputs.categories) by their header names, not the
    positions the model reads them by."""
    if columns is None:
        return recipe
    return [{**d, "value": {columns[int(k)]: n for k, n in d["value"].items()}} if d["what"] == "inputs.categories"
            else d for d in recipe]


def data_columns(cfg: RunConfig) -> tuple[str, ...] | None:
    """The feature columns of the config's CSV file (its header but the label), else None (a built-in set, .npz)."""
    path = cfg.data.get("path")
    if path is None or not (str(path).endswith(".csv") or str(path).endswith(".csv.gz")):
        return None
    if _text_csv(cfg, path):
        return (text_column(cfg, path),)  # the one column read; new files may hold others (an id)
    if _ratings_csv(cfg, path):
        return id_columns(cfg)
    return _csv_columns(cfg, path)[0]


def _csv_encoding(cfg: RunConfig) -> dict[str, str]:
    return {"encoding": cfg.data.get("encoding") or "utf-8", "errors": cfg.data.get("encoding_errors") or "strict"}


def _csv_columns(cfg: RunConfig, path: str | os.PathLike,
                 unread: Sequence[str] = ()) -> tuple[tuple[str, ...], bool]:
    """(a CSV file's feature columns: its header but the config's label column and ``unread``, whether the label
    column is there)."""
    header = datasets.csv_header(path, **_csv_encoding(cfg))
    return tuple(c for c in header if c != cfg.data["label"] and c not in unread), cfg.data["label"] in header


def run_ids(run_dir: str | os.PathLike) -> dict[str, list[str]] | None:
    """The user and item ids of a run trained on a ratings file (ids.json), else None."""
    path = Path(run_dir) / IDS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def read_inputs(cfg: RunConfig, path: str | os.PathLike, columns: tuple[str, ...] | None = None,
                words: Sequence[int] = (), unread: Sequence[str] = (),
                ids: dict[str, list[str]] | None = None) -> np.ndarray:
    """New data for a run's model: the array X of an .npz file, or a CSV's feature columns (the label column, when
    there is one, and ``unread`` left out; ``columns``, the training file's, when known, must be its columns in
    the same order; ``words``, the positions of the model's category columns, read as words, the rest as numbers);
    flat rows are reshaped to the model's example shape (an image model's); a recommender's CSV's id columns are
    read by its training file's ``ids``. A built-in table's rows as it trained on them (standardised)."""
    return _as_trained(cfg, *_read_rows(cfg, path, columns, words, unread, labelled=False, ids=ids))[0]


def _builtin_scales(cfg: RunConfig) -> tuple[Any, Any]:
    """(X's, y's) (mean, std) of a run on a built-in table standardised by its training split (scikit-learn's
    wine, diabetes, ...), else None for either: the split is read again, its statistics are the same."""
    if cfg.data["dataset"] not in datasets.STANDARDISED:  # the others are not read again: images, texts, ratings
        return None, None
    return _standardisation(cfg.data["dataset"], cfg.data["seed"])


@functools.lru_cache(maxsize=8)
def _standardisation(name: str, seed: int) -> tuple[Any, Any]:
    """(X's, y's) statistics of a standardised built-in table's split, read once: predict's X and its values."""
    split = datasets.load(name, seed=seed)
    return split.x_scale, split.y_scale


def _as_trained(cfg: RunConfig, x: Any, y: np.ndarray | None) -> tuple[Any, np.ndarray | None]:
    """New rows for a run on a built-in table as its rows were when it trained: X (and a regression's y)
    standardised by the training split's statistics. Given as scikit-learn ships them, wine's rows were read on
    another scale and all predicted one class (0.33 accuracy on the rows it trained on)."""
    x_scale, y_scale = _builtin_scales(cfg)
    if x_scale is not None and isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == len(x_scale[0]):
        x = ((x - x_scale[0]) / x_scale[1]).astype(np.float32)
    if y_scale is not None and y is not None:
        y = ((y - y_scale[0]) / y_scale[1]).astype(np.float32)
    return x, y


def _with_on_bad_file(cfg: RunConfig, input_path: str | os.PathLike | None, on_bad_file: str | None) -> RunConfig:
    """The run's config with data.on_bad_file set for reading ``input_path``: predict's and evaluate's
    --on-bad-file, which acts on a folder of images only."""
    if on_bad_file is None:
        return cfg
    datasets.check_on_bad_file(on_bad_file)
    if input_path is None or not Path(input_path).is_dir():
        raise ValueError(f"on_bad_file={on_bad_file!r} acts on a folder of images, and the input is "
                         + (f"'{input_path}'" if input_path is not None else "the run's test split"))
    return dataclasses.replace(cfg, data={**cfg.data, "on_bad_file": on_bad_file})


def read_labelled(cfg: RunConfig, path: str | os.PathLike, model: Any,
                  ids: dict[str, list[str]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) of new labelled rows for a run's model, read as ``read_inputs`` reads X (the model's columns and
    category columns, a recommender's ``ids``), y from an .npz's array y or the CSV's label column (the config's
    ``data.label``)."""
    trained = training.trained_for(model)
    x, y = _as_trained(cfg, *_read_rows(cfg, path, trained.columns if trained is not None else None,
                                        _category_columns(model), (), labelled=True, ids=ids))
    classes = trained.classes if trained is not None else None
    if classes is not None and y.dtype.kind in "iuf" and all(c.isdigit() for c in classes):  # codes 1..K, as trained
        if (y != np.round(y)).any():
            raise ValueError(f"'{path}' label column {cfg.data['label']!r} holds {y[y != np.round(y)][0]!r}, and the "
                             f"model's classes are the codes {list(classes)}")
        y = _as_class_names(y)
    unseen = sorted(set(y.tolist()) - set(classes)) if classes is not None and y.dtype.kind == "U" else []
    if unseen:  # said here by the file and column, not as finetune.evaluate's y
        where = ("has class folder(s)" if Path(path).is_dir() else "array y holds label(s)"
                 if Path(path).suffix == ".npz" else f"label column {cfg.data['label']!r} holds label(s)")
        raise ValueError(f"'{path}' {where} {unseen[:5]} that training did not have (its classes: "
                         f"{list(classes)})")
    if isinstance(x, datasets.ImageFolder) and classes is not None:  # its sub-folders by the training classes' ids
        x = x.with_classes(classes)
    return x, y


def _category_columns(model: Any) -> list[int]:
    """The positions of the columns a model reads as words ("mlp"'s categories), else none."""
    return [c["column"] for c in getattr(model, "options", {}).get("categories", [])]


def _read_rows(cfg: RunConfig, path: str | os.PathLike, columns: tuple[str, ...] | None, words: Sequence[int],
               unread: Sequence[str], labelled: bool,
               ids: dict[str, list[str]] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(X, y where ``labelled`` else None): read_inputs and read_labelled."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"'{path}' does not exist")
    if not (path.is_dir() or path.suffix == ".npz" or path.name.endswith((".csv", ".csv.gz"))):
        image = path.suffix.lower() in datasets.IMAGE_SUFFIXES
        raise ValueError(f"'{path}' must be an .npz, a .csv (or .csv.gz) or a folder of images" +
                         (": put the image in a folder and pass the folder" if image else ""))
    if labelled and not path.is_dir() and path.suffix != ".npz":
        header = datasets.csv_header(path, **_csv_encoding(cfg))
        if cfg.data["label"] not in header:
            raise ValueError(f"'{path}' has no label column {cfg.data['label']!r} (data.label in the run's "
                             f"config.toml; its columns: {header}): evaluate needs the labels")
    if path.is_dir():  # images, read a batch at a time: a sub-folder per class as in training, else every image
        mode, size = folder_shape(cfg)
        mean, std = image_normalisation(cfg, mode)  # as the training folder was read
        bad = cfg.data["on_bad_file"] or "error"  # the run's config.toml: "skip" leaves new unreadable files out too
        images = (datasets.ImageFolder(path, size=size, mode=mode, mean=mean, std=std, on_bad_file=bad) if labelled
                  else datasets.ImageFiles(datasets.image_files(path), size, mode, mean=mean, std=std, on_bad_file=bad))
        _say_skipped(path, images.skipped)
        return (images, np.asarray(images.classes)[images.targets]) if labelled else (images, None)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            wanted = ["X", "y"] if labelled else ["X"]
            if any(k not in archive for k in wanted):
                raise ValueError(f"'{path}' lacks the array(s) {[k for k in wanted if k not in archive]} (it has "
                                 f"{sorted(archive.files)})")
            x, y = archive["X"], archive["y"] if labelled else None
    elif _ratings_csv(cfg, path):  # the id columns, read by the training file's ids
        if ids is None:
            raise ValueError(f"'{path}' is a CSV of ids, and the run holds no {IDS_FILE} (it trained on a built-in "
                             "set or an .npz of index pairs): pass an .npz with X as those pairs")
        x, y, _ = datasets.load_pairs(path, *id_columns(cfg), cfg.data["label"] if labelled else None, ids,
                                      missing_labels=cfg.data["missing_labels"] or "error", **_csv_encoding(cfg))
    elif _text_csv(cfg, path):  # the column of texts the model trained on, by name; the others are not read
        text = columns[0] if columns is not None else text_column(cfg, path, labelled)  # a built-in set's run
        x, y = datasets.load_texts(path, text, cfg.data["label"], cfg.train.task if labelled else None,
                                   missing_labels=cfg.data["missing_labels"] or "error", **_csv_encoding(cfg))
    else:
        encoding = _csv_encoding(cfg)
        features = _csv_columns(cfg, path, unread)[0]
        data.check_column_names(features, columns, str(path), reorder="write its columns")
        missing = registry.takes_missing(cfg.model["name"])
        if labelled:
            x, y = datasets.load_file(path, label=cfg.data["label"], task=cfg.train.task, missing=missing,
                                      words=words, missing_labels=cfg.data["missing_labels"] or "error", **encoding)
        else:  # a label column left out unread
            x, y = datasets.load_features(path, label=cfg.data["label"], missing=missing, words=words,
                                          unread=unread, **encoding), None
    entry = registry.get(cfg.model["name"])
    if entry.example_shape is not None and x.ndim == 2:
        shape = tuple(entry.example_shape({**entry.defaults, **_options(cfg)}))
        if x.shape[1] != math.prod(shape):
            raise ValueError(f"'{path}' has rows of {x.shape[1]} values, and model {cfg.model['name']!r} reads images "
                             f"of {' x '.join(map(str, shape))} = {math.prod(shape)} values: pass a folder of images "
                             "(or rows of that many pixels)")
        x = x.reshape(-1, *shape)
        if cfg.data["image_mean"] is not None:  # a run on a folder: rows of pixels in [0, 1], read as its images were
            x = datasets.normalised(x.astype(np.float32), *image_normalisation(cfg, folder_shape(cfg)[0]))
    return x, y


def _say_skipped(path: str | os.PathLike, skipped: list[str]) -> None:
    """A warning listing an image folder's files data.on_bad_file = "skip" left out (a training folder or new ones)."""
    if skipped:
        log.warning("'%s': %d file(s) Pillow cannot read left out (data.on_bad_file = 'skip'): %s", path,
                    len(skipped), ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else ""))


def _check_output(path: str | os.PathLike, run_dir: str | os.PathLike, cfg: RunConfig,
                  input_path: str | os.PathLike | None = None) -> None:
    """An --output file goes in a folder that is there (a typo in it is not a run's worth of work lost), and is
    neither the data (the input it is computed from, the run's training file) nor one of the run directory's own
    files (its model, metrics, ...)."""
    folder = Path(path).absolute().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"--output '{path}': the folder '{folder}' does not exist")
    if Path(path).is_dir():
        raise IsADirectoryError(f"--output '{path}' is a folder: name the CSV file to write")
    target = Path(path).resolve()
    for data, what in ((input_path, "the --input file"), (cfg.data.get("path"), "the run's training data")):
        if data is not None and target == Path(data).resolve():
            raise ValueError(f"--output '{path}' is {what}: writing there would overwrite the data; name another file")
    run = Path(run_dir).resolve()
    if target.parent == run and target.name in RUN_FILES or any(
            parent == run / folder for parent in target.parents for folder in RUN_FOLDERS):
        raise ValueError(f"--output '{path}' is a file of the run directory '{run_dir}' ({target.name}): writing "
                         "there would destroy the run; name another file")


def predict_file(run_dir: str | os.PathLike, input_path: str | os.PathLike, output_path: str | os.PathLike,
                 keep: Sequence[str] = (), on_bad_file: str | None = None) -> int:
    """Writes a finished run's predictions for the data in ``input_path`` as CSV (class and probabilities per
    row for classification -- the label and p_LABEL columns where the training labels were text --, the
    predicted values for regression), after the input CSV's ``keep`` columns copied as written (an id to join the
    predictions back on; a column that is not a feature is not read), or for a folder of images each one's file
    (its path in the folder; ``on_bad_file`` "skip" leaves out the files Pillow cannot read, "error" stops on
    one, by default as the run's data.on_bad_file); returns the number of rows."""
    import finetune

    cfg, model = load_run(run_dir)
    cfg = _with_on_bad_file(cfg, input_path, on_bad_file)
    _check_output(output_path, run_dir, cfg, input_path)
    trained = training.trained_for(model)
    columns = trained.columns if trained is not None else None
    folder = Path(input_path).is_dir()  # new images: each row named by its file
    if keep:
        if not str(input_path).endswith((".csv", ".csv.gz")):
            raise ValueError(f"--keep copies columns of a CSV file, and '{input_path}' is not one")
        header = datasets.csv_header(input_path, **_csv_encoding(cfg))
        absent = [k for k in keep if k not in header]
        if absent:
            raise ValueError(f"--keep {absent[0]!r} is not a column of '{input_path}'"
                             f"{did_you_mean(absent[:1], header)} (its columns: {header})")
    unread = [k for k in keep if columns is None or k not in columns]  # an id: copied, not a feature
    x = read_inputs(cfg, input_path, columns, _category_columns(model), unread, run_ids(run_dir))
    kept = datasets.csv_cells(input_path, keep, **_csv_encoding(cfg)) if keep else None
    if folder:
        keep, kept = ["file"], [[Path(f).relative_to(input_path).as_posix()] for f in x.files]
    with data.named_columns(columns):  # its messages name the CSV's columns, not positions
        classify = cfg.train.task == "classification"
        predicted = finetune.predict(model, x, output="probabilities") if classify else \
            finetune.predict(model, x, task="regression")
    if classify:
        probabilities = predicted
        classes = trained.classes if trained is not None and trained.classes is not None else None
        if classes is not None:  # text labels: the label predicted, then p_LABEL per class
            probabilities = probabilities[:, :len(classes)]
        names = list(classes) if classes is not None else list(range(probabilities.shape[1]))
        header_row = ["prediction", *(f"p_{c}" if classes is not None else f"p{c}" for c in names)]
        rows = [[names[int(row.argmax())], *(f"{p:.6g}" for p in row)] for row in probabilities]
    else:
        values = predicted.reshape(predicted.shape[0], -1)
        y_scale = _builtin_scales(cfg)[1]
        if y_scale is not None:  # a built-in table's target, standardised to train: back in its own units
            values = values * y_scale[1] + y_scale[0]
        header_row = ["score"] if cfg.train.task == "ranking" else ["prediction"] if values.shape[1] == 1 else \
            [f"prediction{j}" for j in range(values.shape[1])]
        rows = [[f"{v:.6g}" for v in row] for row in values]
    with open(output_path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")  # a label or an id holding a comma is quoted
        writer.writerow([*keep, *header_row])
        writer.writerows([*kept[i], *row] if kept is not None else row for i, row in enumerate(rows))
    return len(rows)


def recommend_file(run_dir: str | os.PathLike, output_path: str | os.PathLike, users: Sequence[str] = (),
                   k: int = 10) -> int:
    """Writes each user's ``k`` best items by a recommender run's model -- a ranker's scores, or a rating model's
    predicted ratings -- as CSV rows (user, rank, item, score), leaving out the items the user had in the run's
    training file; ``users``: their ids as written there (default: every user). Returns the number of rows."""
    cfg, model = load_run(run_dir)
    _check_output(output_path, run_dir, cfg)
    ids = run_ids(run_dir)
    if ids is None:
        trained = cfg.data["path"] is not None and registry.get(cfg.model["name"]).pairs
        raise ValueError(f"'{run_dir}' has no {IDS_FILE}" + (f" (it trained on '{cfg.data['path']}': the file was "
                         "removed)" if trained else ": it did not train a recommender on a CSV of ratings or "
                         "interactions") + "; recommend names users and items by the ids such a file gives them")
    if cfg.train.task != "ranking":
        log.warning("'%s' trained on ratings: its recommendations are the highest predicted ratings, which favour "
                    "items few have rated; a ranker (train.task = 'ranking' on the same file) learns what users pick",
                    run_dir)
    users = list(dict.fromkeys(users))  # each user once
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"--k must be an integer >= 1, got {k!r}")
    index = {u: i for i, u in enumerate(ids["user"])}
    unknown = [u for u in users if u not in index]
    if unknown:
        raise ValueError(f"--users {unknown[0]!r} is not a user of the run's training file ({len(index)} users, "
                         f"such as {ids['user'][:3]}){did_you_mean(unknown[:1], list(index))}")
    split = _training_split(Path(run_dir), cfg)  # what each user had: not recommended again
    had = np.concatenate([split.x_train, split.x_test])
    chosen = np.array([index[u] for u in users] if users else np.arange(len(ids["user"])), dtype=np.int64)
    items, scores = recommend.top_items(model, chosen, model.options["num_items"], k=k, exclude=had)
    rows = 0
    with open(output_path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["user", "rank", "item", "score"])
        for user, user_items, user_scores in zip(chosen.tolist(), items, scores):
            for rank, (item, score) in enumerate(zip(user_items.tolist(), user_scores.tolist()), start=1):
                if item >= 0:  # a user who had nearly every item has fewer than k left
                    writer.writerow([ids["user"][user], rank, ids["item"][item], f"{score:.6g}"])
                    rows += 1
    return rows


def find_lr(cfg: RunConfig, steps: int = 100) -> Any:
    """finetune.find_lr's range test for the config's model on its training split (an LrFinderResult)."""
    import finetune

    if cfg.lora is not None:
        raise ValueError(f"{cfg.source}: find-lr does not take a [lora] table yet; run it without [lora]")
    split = load_data(cfg)
    cfg = with_chosen_options(cfg, split.x_train)
    # no validation data, so nothing to monitor
    train_cfg = cfg.train.replace(early_stopping=0, restore_best=False, progress=False, checkpoint_dir=None)
    return finetune.find_lr(cfg.model["name"], (model_inputs(cfg, split.x_train), split.y_train), config=train_cfg,
                            num_steps=steps, task=train_cfg.task, **_options(cfg))  # checked by load_data


def tune_run(cfg: RunConfig, out: str | os.PathLike, on_trial: Callable[[dict], None] | None = None) -> Any:
    """finetune.tune over the config's [tune] table (trials, metric and the search space) on its validation split,
    each trial from the model as finetune.train builds it; writes out/best.toml (the config with the best settings,
    ready to run) and out/trials.csv. Returns the TuneResult."""
    from .tune import tune

    if cfg.lora is not None:
        raise ValueError(f"{cfg.source}: tune does not take a [lora] table yet; tune without [lora]")
    space = dict(cfg.tune)
    trials, metric = space.pop("trials", 20), space.pop("metric", "val_loss")
    if not space:
        raise ValueError(f"{cfg.source} has no search space: add a [tune] table, e.g. lr = {{ low = 1e-4, high = 0.1, log = true }}")
    # A trial of settings that shape the training trains them as given, not the recipe: what neither [train] nor
    # the space sets runs at the loop's defaults, which a [tune] table alone ran without saying so.
    loose = training.loop_defaults_left({*cfg.train_given, *space})
    as_given = training.recipe_for(cfg.train)[0] == "none" or any(k not in recipe_rules.RECIPE_NEUTRAL for k in space)
    if loose and as_given:  # (the [train] table's values, as tune reads them, and the space's keys)
        log.warning(f"{cfg.source}: each trial trains the settings as given, not the recipe, and what neither [train] "
                    f"nor [tune] sets runs at the loop defaults ({', '.join(f'{k}={v!r}' for k, v in loose.items())})"
                    "; set them in [train]")
    split = load_data(cfg)
    fit, val = validation_split(cfg, split)
    given = cfg.model
    cfg = with_chosen_options(cfg, rows_of(split.x_train, fit))
    fit_data = (model_inputs(cfg, rows_of(split.x_train, fit)), split.y_train[fit])
    val_data = (model_inputs(cfg, rows_of(split.x_train, val)), split.y_train[val])
    result = tune(lambda: build_model(cfg, *fit_data), fit_data, val_data, space=space, trials=trials, metric=metric,
                  config=cfg.train.replace(checkpoint_dir=None), on_trial=on_trial,
                  task=cfg.train.task)  # checked by load_data
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    best = RunConfig(cfg.data, _without_statistics(cfg.model, given), result.best_config, cfg.source)
    (out / BEST_FILE).write_text(write_toml(best.to_dict()))
    with open(out / TRIALS_FILE, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", metric, "epochs", *space])
        for r in result.trials:
            writer.writerow([r["number"], r["state"], r["value"], r["epochs"], *(_cell(r["params"][k]) for k in space)])
    return result


def _cell(value: Any) -> str:
    """A setting as a table cell (trials.csv, compare): a word as it is, None as none, a number or a list as JSON
    writes it (a choice of "adamw" was written '"adamw"', and CSV quoted the quotes again)."""
    if isinstance(value, str):
        return value
    return "none" if value is None else json.dumps(value)


def _recipe_choices(decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """The settings a recipe run's returned model trained with, as compare shows them: its kept phase's (rate,
    optimizer, ...; its epochs those the refit ran, else its best epoch's count) and the ones decided for every
    phase (class_weights); {} where more than one phase was kept."""
    by = {d["what"]: d["value"] for d in decisions}
    phase = by.get("kept")
    if not isinstance(phase, str):
        return {}
    chosen = {k: v for k, v in by.items() if k in config_fields()}
    chosen |= {k.split(".", 1)[1]: v for k, v in by.items() if k.startswith(f"{phase}.")
               and k.split(".", 1)[1] in config_fields()}
    refit, result = by.get("refit"), by.get(f"{phase}.result")
    if isinstance(refit, dict) and phase in refit.get("phases", []):
        chosen["epochs"] = refit["epochs"][refit["phases"].index(phase)]
    elif isinstance(result, dict) and isinstance(result.get("best_epoch"), int):
        chosen["epochs"] = result["best_epoch"] + 1
    # as the other runs' cells read (_cell), a rate to 3 significant digits
    return {k: _cell(float(f"{v:.3g}") if isinstance(v, float) else v) for k, v in chosen.items()}


def compare(run_dirs: list[str | os.PathLike]) -> list[list[str]]:
    """Runs side by side: a header row, then per run its directory, the settings that differ between the runs and
    the final test metrics (a run without a test split: its validation metrics)."""
    configs, metrics = [], []
    shaping = set(config_fields()) - set(recipe_rules.RECIPE_NEUTRAL)
    named: set[str] = set()  # the train settings some run set away from the default, or some recipe recorded
    defaults = TrainConfig().to_dict()
    for run_dir in run_dirs:
        if not (Path(run_dir) / CONFIG_FILE).is_file() or not (Path(run_dir) / METRICS_FILE).is_file():
            raise FileNotFoundError(f"'{run_dir}' is not a finished run directory (no config.toml and metrics.json"
                                    f"{'' if Path(run_dir).is_dir() else ': it does not exist'})")
        cfg = load_config(Path(run_dir) / CONFIG_FILE)
        record = json.loads((Path(run_dir) / METRICS_FILE).read_text())
        config = {f"{s}.{k}": v for s, t in cfg.to_dict().items() for k, v in t.items()}
        ran = (record.get("recipe") or [{}])[0].get("value", "none")
        # (an as-given run's config.toml writes every setting: the ones at their default shaped it as the defaults)
        settings = cfg.train.to_dict()
        named |= {k for k in cfg.train_given if settings.get(k) != defaults.get(k)}
        if ran != "none":  # the recipe chose what its config.toml leaves out: not the defaults the file reads as
            # -- every setting that shapes the training (its phases ran their own optimizer, rate, epochs, ...;
            # phase "pairs" records them in one entry) and the neutral ones a phase decided ("full.batch_size" ->
            # batch_size, class_weights); the seed, the device, ... stay as they read
            recorded = {d["what"].rsplit(".", 1)[-1] for d in record.get("recipe", [])} & set(config_fields())
            named |= recorded
            chosen = _recipe_choices(record.get("recipe", []))
            config = {k: (f"(recipe: {chosen[k[6:]]})" if k[6:] in chosen else "(recipe)")
                      if k.startswith("train.") and k[6:] in (recorded | shaping) - set(cfg.train_given) else v
                      for k, v in config.items()}
        configs.append({**config, "recipe": ran, "train_size": record.get("train_size")})  # the examples it trained on
        # a run without a test split (data.test_fraction = 0) is compared by its validation slice, so named
        metrics.append(record["test"] or {f"validation {k}": v for k, v in (record.get("validation") or {}).items()
                                          if isinstance(v, (int, float))})
    keys = sorted({k for c in configs for k in c} - {"train.checkpoint_dir", "train.progress"})
    differing = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    # A shaping setting no run gave and no recipe recorded differs only as "(recipe)" against a default (beta2,
    # gamma, ...): the recipe column says that once
    differing = [k for k in differing if k.removeprefix("train.") not in shaping - named or not k.startswith("train.")]
    metric_names = sorted({k for m in metrics for k in m})
    header = ["run"] + differing + [m if m.startswith("validation ") else f"test {m}" for m in metric_names]
    return [header] + [[str(run_dir)] + [_cell(c[k]) if k in c else "-" for k in differing]
                       + [f"{m[n]:.4f}" if n in m else "-" for n in metric_names]  # "-": a metric the run has not
                       for run_dir, c, m in zip(run_dirs, configs, metrics)]
