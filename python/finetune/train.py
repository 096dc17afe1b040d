"""finetune.train / evaluate / predict: check and convert the user's data, then run the C++ loop."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from . import _C, data, models
from .config import TrainConfig, config_fields
from .progress import Progress


@dataclass
class Result:
    """What a fine-tune produced. ``model`` is the object passed in (or built), trained in place."""

    model: Any
    history: list[dict[str, float]]  # one dict per epoch: train_loss, val_*, lr, seconds, samples_per_s
    metrics: dict[str, float]  # final validation metrics ({} without validation data)
    config: TrainConfig
    class_counts: dict[int, int] | None  # training examples per class in the sampled subset
    train_size: int
    steps: int
    seconds: float
    confusion_matrix: np.ndarray | None = None
    stopped: bool = False
    model_options: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in self.metrics.items())
        return (f"Result(epochs={len(self.history)}, steps={self.steps}, train_size={self.train_size}, "
                f"seconds={self.seconds:.2f}, metrics={{{metrics}}})")


def resolve_config(config: TrainConfig | None, settings: dict[str, Any]) -> TrainConfig:
    """``config`` (or the defaults) with keyword settings applied; an unknown keyword is a TypeError."""
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a finetune.TrainConfig, got {type(config).__name__}")
    unknown = sorted(set(settings) - set(config_fields()))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; known settings: {config_fields()}")
    return dataclasses.replace(config or TrainConfig(), **settings)


def _split_model_options(model: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Pulls a built-in model's options (in_features=..., hidden=...) out of the keyword settings."""
    if not isinstance(model, str) or model not in models.MODELS:
        return {}
    option_names = [k for k in dir(models.MODELS[model][0]()) if not k.startswith("_")]
    return {k: settings.pop(k) for k in list(settings) if k in option_names}


def train(model: Any, train_data: tuple[Any, Any], val: tuple[Any, Any] | None = None, *,
          config: TrainConfig | None = None, callback: Callable[[str, dict], bool | None] | None = None,
          **settings: Any) -> Result:
    """Fine-tune ``model`` on ``train_data = (X, y)`` in the C++ loop.

    ``model`` is an ``nn.Module`` (scripted for C++, its parameters updated in place), a ``NativeModel``,
    or a built-in name ("mlp", "cnn") whose sizes are read off the data unless given (``hidden=[256]``).
    Settings are the fields of :class:`TrainConfig` as keywords (``epochs=5, lr=0.01, batch_size="full"``).
    ``callback(kind, info)`` is called with ``"step"`` at most every 0.1 s and with ``"epoch"`` after each
    epoch; returning True stops training.
    """
    model_options = _split_model_options(model, settings)
    cfg = resolve_config(config, settings)
    cpp_config = cfg.to_cpp()
    x, y = data.split(train_data, "train_data")
    dtype = torch.float32 if isinstance(model, str) else models.parameter_dtype(model)
    inputs = data.features(x, "X", dtype)
    targets = data.targets(y, "y", cfg.task, inputs[0].shape[0])
    val_inputs = val_targets = None
    if val is not None:
        vx, vy = data.split(val, "val")
        val_inputs = data.features(vx, "X_val", dtype)
        val_targets = data.targets(vy, "y_val", cfg.task, val_inputs[0].shape[0])
        data.check_same_example_shape(inputs, val_inputs, "X", "X_val")

    if isinstance(model, str):
        model_options = {**models.infer_options(model, inputs, targets, cfg.task), **model_options}
        torch.manual_seed(cfg.seed)  # the initial weights are part of a seeded run
        model = models.build(model, **model_options)
    elif model_options:
        raise TypeError(f"model options {sorted(model_options)} apply only to a built-in model name")
    if cfg.device != "cpu" and isinstance(model, torch.nn.Module):
        model.to(cfg.device)  # before scripting, so the scripted module shares the moved parameters
    cpp_model = models.to_cpp(model, inputs)

    progress = Progress(cfg.epochs, enabled=cfg.progress)

    def on_event(kind: str, info: dict[str, Any]) -> bool:
        progress(kind, info)
        return bool(callback(kind, info)) if callback is not None else False

    try:
        out = _C.train(cpp_model, inputs, targets, val_inputs, val_targets, cpp_config, on_event)
    finally:
        progress.close()
    counts = out["class_counts"]
    return Result(
        model=model,
        history=out["history"],
        metrics=out["metrics"],
        config=cfg,
        class_counts={c: n for c, n in enumerate(counts)} if cfg.task == "classification" else None,
        train_size=out["train_size"],
        steps=out["steps"],
        seconds=out["seconds"],
        confusion_matrix=out["confusion"].numpy() if out["confusion"] is not None else None,
        stopped=out["stopped"],
        model_options=getattr(model, "options", {}) if isinstance(model, models.NativeModel) else {},
    )


def evaluate(model: Any, eval_data: tuple[Any, Any], *, task: str = "classification", batch_size: int = 1024,
             device: str = "cpu", topk: int = 5) -> dict[str, Any]:
    """Loss and metrics of ``model`` on ``eval_data = (X, y)``: accuracy, top-k accuracy, macro-F1 and the
    confusion matrix for classification; RMSE, MAE and R² for regression."""
    cfg = TrainConfig(task=task, eval_batch_size=batch_size, device=device, topk=topk)
    cpp_config = cfg.to_cpp()
    x, y = data.split(eval_data, "data")
    inputs = data.features(x, "X", models.parameter_dtype(model))
    targets = data.targets(y, "y", task, inputs[0].shape[0])
    out = _C.evaluate(models.to_cpp(model, inputs), inputs, targets, cpp_config)
    if "confusion_matrix" in out:
        out["confusion_matrix"] = out["confusion_matrix"].numpy()
    return out


OUTPUTS = ("classes", "probabilities", "logits", "values")


def predict(model: Any, x: Any, *, output: str | None = None, task: str = "classification", batch_size: int = 1024,
            device: str = "cpu") -> np.ndarray:
    """The model's predictions for ``x`` as a numpy array: class ids (default for classification),
    ``output="probabilities"`` or ``"logits"``; for ``task="regression"`` the predicted values."""
    if output is None:
        output = "classes" if task == "classification" else "values"
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {list(OUTPUTS)}, got {output!r}")
    cfg = TrainConfig(task=task, eval_batch_size=batch_size, device=device)
    cpp_config = cfg.to_cpp()
    inputs = data.features(x, "X", models.parameter_dtype(model))
    raw = _C.predict(models.to_cpp(model, inputs), inputs, cpp_config)
    if output == "classes":
        raw = raw.argmax(1)
    elif output == "probabilities":
        raw = torch.softmax(raw.double(), dim=1)
    return raw.numpy()
