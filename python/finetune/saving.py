"""A model finetune built by name, saved and loaded again: its weights and options in one safetensors file."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import torch

from . import checkpoint, lora, models, registry, training


def save(model: Any, path: str | os.PathLike) -> None:
    """Writes ``model`` -- one finetune built by name ("mlp", "cnn", "mf", "minilm", ...), trained or not -- to
    ``path`` as a safetensors file: its weights, the options it was built with (the input and target scaling an
    "mlp" read off its data among them) and what predict checks and shapes by (:class:`training.TrainedFor`: the
    task, a DataFrame's column names, y's shape); :func:`load` rebuilds it. An ``nn.Module`` of your own is saved as PyTorch saves one: ``torch.save(model.state_dict(), path)``."""
    found = registry.built(model)
    if found is None:
        raise TypeError(f"finetune.save writes a model finetune built by name, got {type(model).__name__}; save an "
                        "nn.Module of your own with torch.save(model.state_dict(), path)")
    if lora.holds_adapters(model):
        raise ValueError("finetune.save writes a model's weights, and this one holds LoRA adapters kept apart "
                         "(lora merge=False): train with the adapters merged (lora={'merge': True}, the default), or "
                         "keep the run directory a run config's [lora] merge = false writes (finetune.load reads it)")
    entry, options = found
    options = getattr(model, "options", None) or {**entry.defaults, **options}  # a native model's, resolved
    trained = training.trained_for(model) or training.TrainedFor(training.task_of(model, None))
    checkpoint.save_tensors(path, model.state_dict(),
                            {"model": json.dumps({"name": entry.name, **options}), **trained_for_meta(trained)})


def load(path: str | os.PathLike) -> Any:
    """The model :func:`save` wrote to ``path`` (or a run directory's ``model.safetensors``, the directory
    named), rebuilt with its options and weights; ``predict`` and ``evaluate`` default to the task it was trained
    for."""
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "adapters.safetensors")):
        from . import runs  # a run directory of LoRA adapters kept apart: the model rebuilt around them

        return runs.load_run(path)[1]
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "model.safetensors")):
        path = os.path.join(path, "model.safetensors")  # a run directory (finetune train --out DIR)
    tensors, meta = checkpoint.load_tensors(path)
    if "model" not in meta:
        raise ValueError(f"{os.fspath(path)!r} holds tensors but no model options: not a file finetune.save wrote")
    if "lora" in meta:
        raise ValueError(f"{os.fspath(path)!r} holds a run's LoRA adapters kept apart, not a whole model: "
                         "finetune.load the run directory, which rebuilds the model around them")
    spec = json.loads(meta["model"])
    model = registry.get(spec.pop("name")).build_saved(spec)
    load_weights(model, tensors)
    remember_saved_training(model, meta)
    return model


def load_weights(model: Any, tensors: dict[str, torch.Tensor]) -> None:
    """``tensors`` into ``model``; where they are the state of the Python module under a traced one ("minilm":
    trained with LoRA adapters, merged since, it is the module returned), into that module, whose parameters the
    traced one shares (its state has no traced module's buffers)."""
    eager = models.eager(model)
    mine = eager is not None and set(tensors) == set(eager.state_dict()) != set(model.state_dict())
    (eager if mine else model).load_state_dict(tensors)


def trained_for_meta(trained: training.TrainedFor) -> dict[str, str]:
    """What a safetensors file keeps of a training (load and a run directory read it back)."""
    return {"trained_for": json.dumps(dataclasses.asdict(trained))}


def remember_saved_training(model: Any, meta: dict[str, str]) -> None:
    """The training a file's ``trained_for_meta`` recorded, remembered for ``model`` (predict checks by it)."""
    if "trained_for" in meta:
        trained = json.loads(meta["trained_for"])
        if trained.get("columns") and trained.get("example_shape") and len(trained["example_shape"]) == 1:
            # A table's examples are its columns: a CLI run before 2026-12-07 recorded the width "mlp" one-hot
            # encodes its word columns to, which refused the table itself at predict.
            trained["example_shape"] = [len(trained["columns"])]
        training.remember_training(model, training.TrainedFor(  # earlier files have no example_shape, no classes
            trained["task"], *(tuple(trained[k]) if trained.get(k) is not None else None
                               for k in ("columns", "target_shape", "example_shape", "classes", "folder_classes",
                                         "image_scale"))))
    elif meta.get("task"):  # a file from before "trained_for" (finetune 0.1.0 of 2026-12-03)
        training.remember_training(model, training.TrainedFor(meta["task"]))
