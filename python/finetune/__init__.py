"""finetune: fine-tune PyTorch models with a C++ LibTorch training loop.

    import finetune
    result = finetune.train("mlp", (X, y), val=(X_val, y_val), epochs=10, lr=0.01)
    finetune.evaluate(result.model, (X_test, y_test))
    finetune.predict(result.model, X_new)
"""

from importlib.metadata import PackageNotFoundError, version

import torch  # noqa: F401  (loads libtorch and registers torch's Python types before _C is imported)

from . import _C, datasets
from .config import TrainConfig
from .models import NativeModel
from .registry import build, register_model
from .saving import load, save
from .training import LrFinderResult, Result, embed, evaluate, find_lr, predict, train
from .tune import TuneResult, tune  # the function is the package's finetune.tune (the module: finetune.tune's file)

try:
    __version__ = version("finetune")  # pyproject.toml's, as installed
except PackageNotFoundError:  # the source tree on sys.path, not installed
    __version__ = "0+unknown"
optimizers = _C.optimizer_names

schedules = _C.schedule_names

__all__ = ["LrFinderResult", "NativeModel", "Result", "TrainConfig", "TuneResult", "build", "embed", "evaluate",
           "find_lr", "load", "optimizers", "predict", "register_model", "save", "schedules", "train", "tune"]
