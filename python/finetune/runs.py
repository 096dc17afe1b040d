"""Runs from a config file: TOML (or YAML) in, a run directory out.

A run config has three tables:

    [data]    dataset = "digits"  (a built-in set)  or  path = "train.csv" / "train.npz", label = "label"
              val_fraction = 0.2, seed = 0
    [model]   name = "cnn" and the model's options (channels = [16, 32], ...); sizes come from the data
    [train]   any TrainConfig field (epochs, lr, schedule, freeze, ...)

Overrides on the command line are `section.key=value` with a TOML value: `train.lr=3e-4`,
`model.hidden=[256,128]`, `data.dataset="wine"`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import platform
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import datasets, distributed, models, report, safetensors, tensorboard
from .config import TrainConfig, config_fields

log = logging.getLogger("finetune")

DATA_KEYS = {"dataset": None, "path": None, "label": "label", "val_fraction": 0.2, "seed": 0}


@dataclass
class RunConfig:
    data: dict[str, Any] = field(default_factory=lambda: dict(DATA_KEYS))
    model: dict[str, Any] = field(default_factory=lambda: {"name": "mlp"})
    train: TrainConfig = field(default_factory=TrainConfig)
    source: str = "<defaults>"
    tune: dict[str, Any] = field(default_factory=dict)  # trials, metric, and the search space (finetune tune)

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "model": self.model, "train": self.train.to_dict()}


def _parse_value(text: str, key: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string (train.optimizer=adam)


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> RunConfig:
    """A RunConfig from a TOML/YAML file plus `section.key=value` overrides; unknown keys are errors naming the
    key and the file."""
    raw: dict[str, Any] = {}
    source = str(path) if path else "<defaults>"
    if path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file '{path}' does not exist")
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ImportError("YAML configs need PyYAML: pip install pyyaml (or use TOML)") from None
            raw = yaml.safe_load(text) or {}
        else:
            try:
                raw = tomllib.loads(text)
            except tomllib.TOMLDecodeError as error:
                raise ValueError(f"config file '{path}' is not valid TOML: {error}") from None
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like section.key=value (e.g. train.lr=3e-4)")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        raw.setdefault(section, {})[name] = _parse_value(value, key)
    unknown_sections = sorted(set(raw) - {"data", "model", "train", "tune"})
    if unknown_sections:
        raise ValueError(f"unknown section(s) {unknown_sections} in {source}; known: ['data', 'model', 'train', 'tune']")
    data = dict(DATA_KEYS)
    for key, value in raw.get("data", {}).items():
        if key not in DATA_KEYS:
            raise ValueError(f"unknown key 'data.{key}' in {source}; known: {sorted(DATA_KEYS)}")
        data[key] = value
    if (data["dataset"] is None) == (data["path"] is None):
        raise ValueError(f"[data] in {source} needs exactly one of dataset (one of {datasets.names()}) or path")
    model = dict(raw.get("model", {"name": "mlp"}))
    model.setdefault("name", "mlp")
    train_values = raw.get("train", {})
    unknown = sorted(set(train_values) - set(config_fields()))
    if unknown:
        raise ValueError(f"unknown key(s) {['train.' + k for k in unknown]} in {source}; known: {config_fields()}")
    try:
        train = TrainConfig.from_dict(train_values)
        dataclasses.replace(train, class_weights=None if train.class_weights == "balanced" else train.class_weights
                            ).to_cpp()
    except (TypeError, ValueError) as error:
        raise type(error)(f"{source}: [train] {error}") from None
    return RunConfig(data, model, train, source, dict(raw.get("tune", {})))


def load_data(cfg: RunConfig) -> datasets.Split:
    d = cfg.data
    if d["dataset"] is not None:
        split = datasets.load(d["dataset"], seed=d["seed"])
        if split.task != cfg.train.task:
            cfg.train = cfg.train.replace(task=split.task)
        return split
    x, y = datasets.load_file(d["path"], label=d["label"], task=cfg.train.task)
    train, test = datasets.stratified_split(y, d["val_fraction"], d["seed"], cfg.train.task == "classification")
    return datasets.Split(x[train], y[train], x[test], y[test], cfg.train.task, f"{d['path']}")


def write_toml(values: dict[str, Any]) -> str:
    """A minimal TOML writer for run configs (tables of scalars, lists and inline tables; None is left out)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(float(v)) if isinstance(v, float) else str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(str(k))} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(f"cannot write {v!r} to TOML")

    lines = []
    for section, table in values.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    return {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "cuda": torch.cuda.is_available()}


def run(cfg: RunConfig, out: str | os.PathLike, quiet: bool = False) -> dict[str, Any]:
    """Trains as `cfg` says and writes the run directory `out`; returns the metrics written."""
    import finetune

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split = load_data(cfg)
    train_cfg = cfg.train.replace(progress=cfg.train.progress and not quiet)
    if train_cfg.checkpoint_dir is None:
        train_cfg = train_cfg.replace(checkpoint_dir=str(out / "checkpoints"))
    val_train, val = datasets.stratified_split(split.y_train, cfg.data["val_fraction"], cfg.data["seed"],
                                               split.task == "classification")
    x_fit, y_fit = split.x_train[val_train], split.y_train[val_train]
    x_val, y_val = split.x_train[val], split.y_train[val]
    x_test = split.x_test
    options = {k: v for k, v in cfg.model.items() if k != "name"}
    model: Any = cfg.model["name"]
    if model in ("mf", "ncf"):  # the id tables must hold every user and item of the data, test split included
        every = np.concatenate([split.x_train, split.x_test])
        options.setdefault("num_users", int(every[:, 0].max()) + 1)
        options.setdefault("num_items", int(every[:, 1].max()) + 1)
    if model == "minilm":  # text: a pretrained encoder, its inputs tokenised here
        model, tokenize = text_model(cfg, int(split.y_train.max()) + 1)
        x_fit, x_val, x_test = tokenize(list(x_fit)), tokenize(list(x_val)), tokenize(list(x_test))
        options = {}
    start = time.perf_counter()
    result = finetune.train(model, (x_fit, y_fit), val=(x_val, y_val), config=train_cfg, **options)
    seconds = time.perf_counter() - start
    test = finetune.evaluate(result.model, (x_test, split.y_test), task=split.task)
    confusion = test.pop("confusion_matrix", None)
    per_class = {k: test.pop(k) for k in ("per_class_precision", "per_class_recall") if k in test}
    resolved = RunConfig(cfg.data, {**cfg.model, **result.model_options}, result.config, cfg.source)
    if distributed.process_rank() != 0:  # under torchrun, rank 0 writes the run directory
        return {"test": test}

    (out / "config.toml").write_text(write_toml(resolved.to_dict()))
    safetensors.save(out / "model.safetensors", result.model.state_dict(),
                     {"model": json.dumps(resolved.model)})
    with open(out / "history.csv", "w", newline="") as f:
        columns = list(result.history[0]) if result.history else ["epoch"]
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(result.history)
    metrics = {
        "data": split.description,
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
        "distributed": {"world_size": result.world_size,
                        "global_batch": min((train_cfg.batch_size or result.train_size) * train_cfg.accumulate
                                            * result.world_size, result.train_size),
                        "communication_seconds": result.communication_seconds,
                        "allreduce_overlap": result.allreduce_overlap},
        "environment": environment(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out / "report.html").write_text(report.html(resolved.to_dict(), result.history, metrics))
    tensorboard.write_scalars(out / "tensorboard", result.history)
    report.plots_png(str(out / "plots.png"), result.history, metrics)  # with matplotlib installed
    log.info("run written to %s", out)
    return metrics


def text_model(cfg: RunConfig, num_classes: int):
    from . import text

    unknown = sorted(set(cfg.model) - {"name", "max_length", "num_classes", "dropout"})
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for model 'minilm' in {cfg.source}; "
                         "known: ['dropout', 'max_length', 'num_classes']")
    return text.minilm_classifier(cfg.model.get("num_classes", num_classes), cfg.model.get("max_length", 48),
                                  seed=cfg.train.seed, dropout=cfg.model.get("dropout", True))


def load_run(run_dir: str | os.PathLike) -> tuple[RunConfig, Any]:
    """(config, model) of a finished run directory."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.toml")
    tensors, meta = safetensors.load(run_dir / "model.safetensors")
    spec = json.loads(meta["model"])
    if spec["name"] == "minilm":
        model, _ = text_model(cfg, int(tensors["head.weight"].shape[0]))
        model.load_state_dict(tensors)
        return cfg, model
    model = models.build(spec.pop("name"), **spec)
    model.load_state_dict(tensors)
    return cfg, model
