"""Checkpoints that survive a kill: atomic directories of safetensors + JSON, a `latest` pointer written last.

    checkpoint_dir/
      latest                  name of the newest complete checkpoint (replaced atomically, after it is written)
      best                    name of the checkpoint of the best epoch by `monitor`, when one was monitored
      step-00000120/
        model.safetensors     the model's parameters and buffers
        state.safetensors     optimizer state, generator state, EMA and best-epoch weights
        state.json            loop counters, history, format version
        config.json           the resolved TrainConfig

Nothing here unpickles: loading a checkpoint reads safetensors and JSON only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from . import safetensors

FORMAT_VERSION = 1
_NAME = re.compile(r"^(step|epoch)-(\d{8})$")

# Test hook: called with each file's path right after it is written (tests pause here and kill the process).
_after_file_written: Callable[[Path], None] | None = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _written(path: Path) -> None:
    if _after_file_written is not None:
        _after_file_written(path)


def model_state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def write(directory: str | os.PathLike, model: Any, loop_state: dict[str, Any], config: dict[str, Any],
          keep_last: int, is_best: bool) -> Path:
    """Writes one checkpoint atomically, then points `latest` (and `best`) at it and prunes old ones."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    counters = loop_state["counters"]
    name = f"step-{counters['steps']:08d}"
    final = root / name
    tmp = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    safetensors.save(tmp / "model.safetensors", model_state(model), {"format": str(FORMAT_VERSION)})
    _written(tmp / "model.safetensors")
    tensors = {f"{group}/{key}": value for group in ("optimizer", "ema", "best") for key, value in loop_state[group].items()}
    if loop_state["rng_state"] is not None:
        tensors["rng_state"] = loop_state["rng_state"]
    safetensors.save(tmp / "state.safetensors", tensors, {"format": str(FORMAT_VERSION)})
    _written(tmp / "state.safetensors")
    state_json = {"format": FORMAT_VERSION, "counters": counters, "history": loop_state["history"],
                  "best_metrics": loop_state["best_metrics"]}
    for filename, content in (("state.json", state_json), ("config.json", config)):
        with open(tmp / filename, "w") as f:
            json.dump(content, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _written(tmp / filename)
    _fsync_dir(tmp)
    if final.exists():  # the same step written again (an interrupt right after a periodic checkpoint)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    _write_text_atomic(root / "latest", name + "\n")
    if is_best:
        _write_text_atomic(root / "best", name + "\n")
    _prune(root, keep_last)
    return final


def _prune(root: Path, keep_last: int) -> None:
    """Removes all but the newest `keep_last` checkpoints, never one that `latest` or `best` names."""
    keep = {_read_pointer(root, p) for p in ("latest", "best")}
    for leftover in root.glob(".step-*.tmp-*"):  # from a process killed mid-write
        if not leftover.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)
    if keep_last <= 0:
        return
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and _NAME.match(p.name))
    for old in names[:-keep_last]:
        if old not in keep:
            shutil.rmtree(root / old, ignore_errors=True)


def _read_pointer(root: Path, pointer: str) -> str | None:
    path = root / pointer
    return path.read_text().strip() if path.is_file() else None


def find(path: str | os.PathLike) -> Path | None:
    """The checkpoint `path` names: a checkpoint directory itself, or a checkpoint_dir (its `latest`)."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    name = _read_pointer(path, "latest")
    return path / name if name else None


def load(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model tensors, loop state, saved config) of the checkpoint at `path` (see find)."""
    checkpoint = find(path)
    if checkpoint is None:
        raise FileNotFoundError(f"no checkpoint at '{path}' (no state.json, and no 'latest' pointer)")
    try:
        state = json.loads((checkpoint / "state.json").read_text())
        config = json.loads((checkpoint / "config.json").read_text())
    except FileNotFoundError as error:
        raise FileNotFoundError(f"checkpoint '{checkpoint}' is incomplete: {error.filename} is missing") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"checkpoint '{checkpoint}' has a corrupt JSON file: {error}") from None
    version = state.get("format")
    if version != FORMAT_VERSION:
        raise ValueError(f"checkpoint '{checkpoint}' has format version {version!r}; this finetune reads version "
                         f"{FORMAT_VERSION}")
    model_tensors, _ = safetensors.load(checkpoint / "model.safetensors")
    tensors, _ = safetensors.load(checkpoint / "state.safetensors")
    loop_state = {
        "counters": state["counters"], "history": state["history"], "best_metrics": state["best_metrics"],
        "rng_state": tensors.pop("rng_state", None),
    }
    for group in ("optimizer", "ema", "best"):
        prefix = group + "/"
        loop_state[group] = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    return model_tensors, loop_state, config


def load_model_state(model: Any, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copies `tensors` into the model in place; any missing, unexpected or mis-shaped key is a ValueError."""
    own = model_state(model)
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    mismatched = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise ValueError(f"checkpoint '{source}' does not fit this model: missing keys {missing}, unexpected keys "
                         f"{unexpected}, shape mismatches {mismatched}")
    with torch.no_grad():
        for key, value in own.items():
            value.copy_(tensors[key])
