"""TrainConfig: the one source of truth for a fine-tune's settings, mirrored by the C++ struct in csrc/config.h."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field, fields
from typing import Any

from . import _C

TASKS = ("classification", "regression")


@dataclass
class TrainConfig:
    """Settings of a fine-tune. Field names, order and defaults match ``finetune._C.TrainConfig``."""

    task: str = "classification"
    epochs: int = 10
    batch_size: int | str = 32  # an int >= 1 (1 = stochastic) or "full" (full-batch gradient descent)
    eval_batch_size: int = 1024
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    weight_decay: float = 0.0
    beta1: float = 0.9  # adam, adamw
    beta2: float = 0.999  # adam, adamw
    eps: float = 1e-8  # adam, adamw
    sample_fraction: float = 1.0  # train on this fraction of the training set, in (0, 1]
    sample_size: int | None = None  # or on exactly this many examples
    stratify: bool = True  # keep each class's share when sampling (classification only)
    shuffle: bool = True  # a fresh seeded order every epoch
    seed: int = 0
    device: str = "cpu"
    topk: int = 5  # top-k accuracy reported for classification
    progress: bool = True

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_cpp(self) -> _C.TrainConfig:
        """The C++ struct, after checking each field's type; ranges are checked in C++ (one place)."""
        cpp = _C.TrainConfig()
        for f in fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, f.type)
            if f.name == "batch_size":
                if isinstance(value, str):
                    if value != "full":
                        raise ValueError(f"batch_size must be a positive integer or 'full', got {value!r}")
                    value = 0
                elif value < 1:
                    raise ValueError(f"batch_size must be a positive integer or 'full', got {value!r}")
            elif f.name == "sample_size":
                if value is not None and value < 1:
                    raise ValueError(f"sample_size must be a positive integer or None, got {value!r}")
                value = 0 if value is None else value
            setattr(cpp, f.name, value)
        cpp.validate()
        return cpp


_TYPES = {
    "str": (str,),
    "int": (numbers.Integral,),
    "float": (numbers.Real,),
    "bool": (bool,),
    "int | str": (numbers.Integral, str),
    "int | None": (numbers.Integral, type(None)),
}


def _check_type(name: str, value: Any, annotation: str) -> None:
    allowed = _TYPES[annotation]
    # bool is an int in Python; a bool where a number is meant is almost always a mistake.
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        expected = annotation.replace("|", "or")
        raise TypeError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")


def config_fields() -> list[str]:
    return [f.name for f in fields(TrainConfig)]
