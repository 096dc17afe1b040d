"""finetune: fine-tune PyTorch models with a C++ LibTorch training loop.

    import finetune
    result = finetune.train("mlp", (X, y), val=(X_val, y_val), epochs=10, lr=0.01)
    finetune.evaluate(result.model, (X_test, y_test))
    finetune.predict(result.model, X_new)
"""

import torch  # noqa: F401  (loads libtorch and registers torch's Python types before _C is imported)

from . import _C
from .config import TrainConfig
from .models import NativeModel, build
from .train import Result, evaluate, predict, train

__version__ = "0.1.0"
optimizers = _C.optimizer_names

__all__ = ["NativeModel", "Result", "TrainConfig", "build", "evaluate", "optimizers", "predict", "train"]
