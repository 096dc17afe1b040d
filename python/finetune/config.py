"""TrainConfig: the one source of truth for a fine-tune's settings, mirrored by the C++ struct in csrc/config.h."""

from __future__ import annotations

import collections.abc
import dataclasses
import numbers
import os
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Callable

import numpy as np
import torch

from . import _C

INT64_MAX = 2**63 - 1


@dataclass
class TrainConfig:
    """Settings of a fine-tune. Field names, order and defaults match ``finetune._C.TrainConfig``."""

    task: str = "classification"  # "classification", "regression", "ranking" ((user, item) interactions, BPR)
    epochs: int = 10
    batch_size: int | str = 32  # an int >= 1 (1 = stochastic) or "full" (full-batch gradient descent)
    eval_batch_size: int = 1024
    optimizer: str = "sgd"  # "sgd", "adam", "adamw", "rmsprop"
    lr: float = 0.01
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    weight_decay: float = 0.0
    decay_norm_and_bias: bool = False  # also decay 1-d parameters (biases, norm weights)
    beta1: float = 0.9  # adam, adamw
    beta2: float = 0.999  # adam, adamw
    eps: float = 1e-8  # adam, adamw, rmsprop
    alpha: float = 0.99  # rmsprop smoothing
    schedule: str = "constant"  # "constant", "step", "cosine", "linear", "onecycle" (per optimizer step)
    warmup: float = 0.0  # linear warm-up: steps (>= 1) or a fraction of all steps (< 1)
    step_size: int = 0  # "step": optimizer steps between decays (0 = one epoch)
    gamma: float = 0.1  # "step": decay factor
    min_lr: float = 0.0  # "cosine", "linear": the final rate
    pct_start: float = 0.3  # "onecycle": fraction of the steps spent warming up
    # "onecycle" also cycles momentum (sgd, rmsprop) or beta1 (adam, adamw) against the rate, as
    # OneCycleLR and fastai do: max_momentum at the start and the end, base_momentum at the peak rate.
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    freeze: list[str] | Callable[[str], bool] | None = None  # name prefixes / regexes, or a predicate
    unfreeze_at: dict[int, list[str]] | None = None  # {epoch: patterns} made trainable at that epoch
    lr_groups: dict[str, float] | None = None  # {pattern: lr multiplier}, first match wins
    layer_decay: float = 1.0  # lr x layer_decay^depth, depth counted back from the head
    clip_grad_norm: float = 0.0  # 0 = off
    accumulate: int = 1  # micro-batches per optimizer step (effective batch = batch_size x accumulate)
    # "balanced" (n / (classes x count), 0 for a class absent from the sample) or one weight per class (any
    # array-like); classes of a head wider than the weights get weight 0 (they never occur as targets)
    class_weights: str | list[float] | None = None
    label_smoothing: float = 0.0
    augment_crop: int = 0  # images: random crop after padding by this many pixels (0 = off)
    augment_flip: bool = False  # images: random horizontal flip
    sampler: str = "shuffle"  # "shuffle" or "balanced" (class-balanced, with replacement)
    early_stopping: int = 0  # patience in epochs on `monitor`, 0 = off
    monitor: str = "val_loss"  # "train_loss" or "val_<metric>"
    restore_best: bool = False  # return the weights of the best epoch by `monitor`
    ema: float = 0.0  # decay of an exponential moving average of the weights, used for evaluation
    precision: str = "fp32"  # "fp32" or "bf16" (autocast)
    on_nan: str = "stop"  # a NaN/inf loss or gradient: "stop" (raise, naming the step) or "skip" the update
    checkpoint_dir: str | None = None  # write checkpoints here (resume with train(..., resume=True))
    checkpoint_every: int | str = "epoch"  # optimizer steps between checkpoints, or "epoch"
    keep_last: int = 3  # checkpoints kept (0 = all); `latest` and `best` are always kept
    distributed: str = "auto"  # "auto": data-parallel when launched by torchrun; "off"
    bucket_mb: float = 25.0  # gradients are all-reduced in flattened buckets of this size
    dist_timeout: float = 300.0  # seconds before a collective waiting on a dead rank fails
    sample_fraction: float = 1.0  # train on this fraction of the training set, in (0, 1]
    sample_size: int | None = None  # or on exactly this many examples
    stratify: bool = True  # keep each class's share when sampling (classification only)
    shuffle: bool = True  # a fresh seeded order every epoch
    drop_last: bool = False  # drop each epoch's last incomplete batch (DataLoader's drop_last; batch norm needs >= 2)
    seed: int = 0
    device: str = "cpu"
    runner: str = "auto"  # how an nn.Module's forward runs: "auto", "script", "trace" or "python" (finetune.models)
    # token batches cut to their longest row under the attention mask (finetune.padding): "auto" where the inputs
    # carry one (a dict X's "attention_mask", a built-in text model's) and the model's outputs are the same trimmed
    trim_padding: bool | str = "auto"
    group_by_length: bool = False  # batches of rows of similar lengths, drawn within seeded mega-batches (Hugging Face's)
    # the frozen part of the model run once per example while only its head trains (finetune.frozen): "auto" where
    # that is exact and the features fit cache_frozen_gb, True insists (an error saying why it cannot), False never
    cache_frozen: bool | str = "auto"
    cache_frozen_gb: float = 2.0  # the cached features' budget in GiB (2: a tenth of a 24 GiB machine, with room for the data)
    # A streamed dataset (a torch Dataset, a memory-mapped X; finetune.streams): worker processes reading the loop's
    # next batches ahead, and how many batches each keeps ready (DataLoader's num_workers and prefetch_factor)
    num_workers: int = 0
    prefetch: int = 2
    output_key: str | None = None  # a dict / ModelOutput output: the entry the loss reads (None: "logits", else the first tensor)
    topk: int = 5  # top-k accuracy reported for classification (where k is below the number of classes)
    progress: bool = True

    def __post_init__(self) -> None:
        """Every field checked as the config is made: TrainConfig(lr=-1) is an error here, naming the field, not
        later in train(). Two need the model or the data and are checked in full there: ``freeze`` as a
        predicate and ``class_weights="balanced"``."""
        self.to_cpp(partial=True)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (what is saved beside checkpoints and reports)."""
        out = dataclasses.asdict(self)
        if out["checkpoint_dir"] is not None:
            out["checkpoint_dir"] = str(out["checkpoint_dir"])
        if out["unfreeze_at"] is not None:
            out["unfreeze_at"] = {str(k): list(v) for k, v in out["unfreeze_at"].items()}
        if callable(out["freeze"]):
            out["freeze"] = "<callable>"
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """The inverse of to_dict; an unknown key is a TypeError naming it."""
        unknown = sorted(set(values) - set(config_fields()))
        if unknown:
            raise TypeError(f"unknown config key(s) {unknown}{did_you_mean(unknown, config_fields())}; known keys: "
                            f"{config_fields()}")
        values = dict(values)
        if values.get("unfreeze_at"):
            values["unfreeze_at"] = {int(k): v for k, v in values["unfreeze_at"].items()}
        return cls(**values)

    def to_cpp(self, partial: bool = False) -> _C.TrainConfig:
        """The C++ struct, after checking each field's type; ranges are checked in C++ (one place).

        ``freeze`` as a predicate and ``class_weights="balanced"`` need the model and the data: ``train``
        resolves them first (see :func:`finetune.training.resolve_config`)."""
        cpp = _C.TrainConfig()
        for f in fields(self):
            value = getattr(self, f.name)
            if partial and ((f.name == "freeze" and callable(value))
                            or (f.name == "class_weights" and not isinstance(value, (list, type(None))))):
                continue  # resolved from the model and the data in train() ("balanced"; an array-like: a list)
            _check_type(f.name, value)
            setattr(cpp, f.name, _CONVERT.get(f.name, lambda v: v)(value))
        cpp.validate()
        return cpp


def _positive_or(field: str, special: Any, expected: str) -> Callable[[Any], int]:
    """A converter for a field that is a positive int or one special value, which C++ reads as 0."""
    def convert(value: Any) -> int:
        if value == special:
            return 0
        if isinstance(value, str) or value is None or value < 1:
            raise ValueError(f"{field} must be {expected}, got {value!r}")
        return value

    return convert


def _non_empty(field: str, value: str) -> str:
    if not value:
        raise ValueError(f"{field} must be a non-empty name or None, got {value!r}")
    return value


def _auto_or_bool(field: str, value: Any) -> str:
    """"auto", True or False, as C++ holds it: "auto", "true", "false"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value != "auto":
        raise ValueError(f"{field} must be 'auto', True or False, got {value!r}")
    return value


def _freeze(value: Any) -> list[str]:
    if callable(value):
        raise TypeError("freeze as a callable is resolved against the model's parameter names by finetune.train; "
                        "TrainConfig.to_cpp() takes the resolved list of patterns")
    return list(value or [])


def _class_weights(value: Any) -> list[float]:
    if isinstance(value, np.ndarray | torch.Tensor):
        value = value.tolist()
    if isinstance(value, str):
        if value != "balanced":
            raise ValueError(f"class_weights must be 'balanced', a list of weights or None, got {value!r}")
        raise TypeError("class_weights='balanced' is resolved from the training labels by finetune.train; "
                        "TrainConfig.to_cpp() takes the resolved list of weights")
    return [float(w) for w in (value or [])]


def _unfreeze_at(value: dict | None) -> dict[int, list[str]]:
    value = value or {}
    for epoch, patterns in value.items():
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
            raise TypeError(f"unfreeze_at keys must be epochs (int), got {epoch!r}")
        if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
            raise TypeError(f"unfreeze_at[{epoch}] must be a list of patterns, got {patterns!r}")
    return {int(e): list(p) for e, p in value.items()}


def _lr_groups(value: dict | None) -> list[tuple[str, float]]:
    value = value or {}
    for pattern, multiplier in value.items():
        if not isinstance(pattern, str) or isinstance(multiplier, bool) or not isinstance(multiplier, numbers.Real):
            raise TypeError(f"lr_groups must map patterns (str) to multipliers (float), got {pattern!r}: {multiplier!r}")
    return [(p, float(m)) for p, m in value.items()]


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "batch_size": _positive_or("batch_size", "full", "a positive integer or 'full'"),
    "sample_size": _positive_or("sample_size", None, "a positive integer or None"),
    "freeze": _freeze,
    "class_weights": _class_weights,
    "unfreeze_at": _unfreeze_at,
    "lr_groups": _lr_groups,
    "checkpoint_every": _positive_or("checkpoint_every", "epoch", "a positive number of steps or 'epoch'"),
    "checkpoint_dir": lambda value: "" if value is None else str(value),
    "output_key": lambda value: "" if value is None else _non_empty("output_key", value),
    "cache_frozen": lambda value: _auto_or_bool("cache_frozen", value),
    "trim_padding": lambda value: _auto_or_bool("trim_padding", value),
}

# Values a field takes besides its annotated type, which its converter (_CONVERT) turns into that type.
_ALSO_ACCEPTED: dict[str, tuple[type, ...]] = {
    "checkpoint_dir": (os.PathLike,),
    "class_weights": (np.ndarray, torch.Tensor),
}


def _alternatives(hint: Any) -> tuple[Any, ...]:
    """The members of a union (`int | str`, `Optional[...]`), or the one type."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _runtime_types(hint: Any) -> tuple[type, ...]:
    """The classes a value of the annotated type `hint` is an instance of: an int field takes any integral
    number (numpy's too), a float field any real one; a list also as a tuple."""
    out: list[type] = []
    for member in _alternatives(hint):
        origin = typing.get_origin(member) or member
        out += {int: [numbers.Integral], float: [numbers.Real], list: [list, tuple]}.get(origin, [origin])
    return tuple(out)


def _describe(hint: Any) -> str:
    """The annotation as the user reads it: "int or str", "list[str] or Callable[[str], bool] or None"."""
    names = []
    for member in _alternatives(hint):
        if member is type(None):
            names.append("None")
        elif isinstance(member, type) and not typing.get_args(member):
            names.append(member.__name__)
        else:
            names.append(repr(member).replace("typing.", "").replace("collections.abc.", ""))
    return " or ".join(names)


# Each field's annotation, evaluated (the strings of `from __future__ import annotations` made real types).
_HINTS: dict[str, Any] = typing.get_type_hints(TrainConfig)
_ALLOWED: dict[str, tuple[type, ...]] = {
    name: tuple(t for t in _runtime_types(hint) if t is not collections.abc.Callable) + _ALSO_ACCEPTED.get(name, ())
    for name, hint in _HINTS.items()}
_CALLABLE_OK: set[str] = {name for name, hint in _HINTS.items() if collections.abc.Callable in _runtime_types(hint)}
_LIST_OF_STR: set[str] = {name for name, hint in _HINTS.items() if list[str] in _alternatives(hint)}


def _check_type(name: str, value: Any) -> None:
    allowed = _ALLOWED[name]
    if name in _CALLABLE_OK and callable(value):
        return
    # bool is an int in Python; a bool where a number is meant is almost always a mistake.
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        raise TypeError(f"{name} must be {_describe(_HINTS[name])}, got {value!r} ({type(value).__name__})")
    if name in _LIST_OF_STR and isinstance(value, (list, tuple)) and not all(isinstance(p, str) for p in value):
        raise TypeError(f"{name} must be a list of name patterns (str) or a callable, got {value!r}")
    # C++ holds ints in 64 bits: a larger one would otherwise fail in pybind11 with an unreadable message.
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise ValueError(f"{name} must fit in a signed 64-bit integer, got {value}")


def config_fields() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


# Other libraries' names for a setting (scikit-learn's, Keras', Lightning's), suggested where one is passed.
ALIASES = {"learning_rate": "lr", "n_epochs": "epochs", "num_epochs": "epochs", "max_epochs": "epochs",
           "patience": "early_stopping", "wd": "weight_decay", "bs": "batch_size", "label_smoothing_factor":
           "label_smoothing", "random_state": "seed", "class_weight": "class_weights", "verbose": "progress"}


def did_you_mean(unknown: list[str], known: list[str]) -> str:
    """" (did you mean 'epochs'?)" for the known names closest to the unknown ones (a typo, or another library's
    name for the setting, ALIASES), else ""."""
    import difflib

    close = [ALIASES[str(name)] if ALIASES.get(str(name)) in known else
             next(iter(difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)), None) for name in unknown]
    close = [m for m in close if m is not None]
    return f" (did you mean {', '.join(repr(m) for m in dict.fromkeys(close))}?)" if close else ""
