"""Checkpoints that survive a kill: atomic directories of safetensors + JSON, a `latest` pointer written last.

    checkpoint_dir/
      latest                  name of the newest complete checkpoint (replaced atomically, after it is written)
      best                    name of the checkpoint of the best epoch by `monitor`, when one was monitored
      step-00000120/
        model.safetensors     the model's parameters and buffers
        state.safetensors     optimizer state, generator state, EMA and best-epoch weights
        state.json            loop counters, history, format version
        config.json           the resolved TrainConfig

A recipe run (recipe="auto" or "head") checkpoints each phase of the loop in a directory of its own,
`checkpoint_dir/01-full/` and so on, laid out as above, and writes `checkpoint_dir/recipe.json`: the recipe, the
settings given, and each range test's curve (recipe_journal). Resuming replays the recipe: a finished phase
returns from its last checkpoint, the one interrupted continues, its rates are read back instead of measured.

Nothing here unpickles: loading a checkpoint reads safetensors (with the `safetensors` package) and JSON only.
Everything read is checked before it is used: each file's header against the file (every tensor's byte range
inside the file and equal to its shape times its element size, before anything is allocated), state.json's
counters and history for the types and ranges the C++ loop reads, state.safetensors' tensors for their names,
types and shapes. Whatever does not pass is a one-line ValueError naming the file (and the key or tensor).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import struct
import threading
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

FORMAT_VERSION = 1
_NAME = re.compile(r"^(step|epoch)-(\d{8})$")

# The tensor types a checkpoint holds, by their safetensors code.
_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
    "C64": torch.complex64, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
_FLOATS = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors package's own limit
_MAX_JSON = 64 * 1024 * 1024
_MAX_INT = 2**62  # counters stay far from int64 overflow in the loop's arithmetic

# state.json "counters": the LoopState counters (csrc/train.h FINETUNE_LOOP_COUNTERS, tested to agree), with the
# type it casts each to and the lowest value that makes sense (None: any number, NaN and infinities included).
_COUNTERS: dict[str, tuple[type, float | None]] = {
    "epoch": (int, 0), "epoch_step": (int, 0), "steps": (int, 0), "skipped_steps": (int, 0),
    "loss_sum": (float, None), "weight_sum": (float, 0.0), "samples": (int, 0), "epoch_seconds": (float, 0.0),
    "best_epoch": (int, -1), "best_value": (float, None), "epochs_without_improvement": (int, 0),
}
# A history entry (csrc/train.h FINETUNE_EPOCH_FIELDS, tested to agree): these keys, plus "val_<metric>" numbers.
_HISTORY: dict[str, type] = {"epoch": int, "train_loss": float, "lr": float, "seconds": float, "samples_per_s": float}
# Each optimizer's per-parameter state fields (csrc/optim.cpp state_fields): field -> required.
_OPTIMIZER_FIELDS: dict[str, dict[str, bool]] = {
    "sgd": {"momentum_buffer": True},
    "adam": {"step": True, "exp_avg": True, "exp_avg_sq": True, "max_exp_avg_sq": False},
    "adamw": {"step": True, "exp_avg": True, "exp_avg_sq": True, "max_exp_avg_sq": False},
    "rmsprop": {"step": True, "square_avg": True, "momentum_buffer": False, "grad_avg": False},
}
_GROUPS = ("optimizer", "ema", "best")


class _Invalid(Exception):
    """Why a file is not a valid checkpoint file; the caller turns it into a ValueError naming the file."""


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text if type(value) in (int, float) else f"{text} ({type(value).__name__})"


# ---------------------------------------------------------------------------------------------------------------
# safetensors files


def _unsupported(tensor: torch.Tensor) -> str | None:
    """Why `tensor` cannot go into a checkpoint file, or None."""
    if tensor.layout != torch.strided:
        return f"has layout {tensor.layout}; a checkpoint holds dense (strided) tensors only"
    if tensor.dtype not in _CODES:
        return (f"has dtype {tensor.dtype}, which a safetensors checkpoint cannot hold (it holds "
                f"{', '.join(str(d).removeprefix('torch.') for d in _CODES)})")
    if tensor.device.type == "meta":
        return "is on the meta device (it has no data to save)"
    return None


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Writes `tensors` (and string `metadata`) as a safetensors file at `path`, atomically: a temporary file in
    the same directory, fsynced, renamed over `path`. Tensors that share memory (tied weights) are each written
    in full; a dtype the format cannot hold is a ValueError naming the tensor."""
    path = Path(path)
    prepared: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise TypeError(f"cannot write '{path}': {name!r} is not a str naming a tensor")
        problem = _unsupported(tensor)
        if problem:
            raise ValueError(f"cannot write '{path}': tensor {name!r} {problem}")
        t = tensor.detach().to("cpu")
        if not t.is_contiguous():
            t = t.contiguous()
        if t.numel():
            if t.untyped_storage().data_ptr() in storages:  # shares memory with one already taken
                t = t.clone()
            storages.add(t.untyped_storage().data_ptr())
        prepared[name] = t
    data = safetensors.torch.save(prepared, metadata=dict(metadata) if metadata else None)
    if not path.parent.is_dir():  # said of the path asked for, not of the temporary file written first
        raise FileNotFoundError(f"cannot write '{path}': the directory '{path.parent}' does not exist")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _parse_header(raw: bytes, data_size: int) -> tuple[dict[str, tuple[str, list[int], int, int]], dict[str, str]]:
    """{name: (dtype code, shape, begin, end)} and the metadata of a safetensors header, every tensor's byte range
    checked against its shape and dtype and the `data_size` bytes that follow the header."""
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as error:
        raise _Invalid(f"header is not valid JSON: {error}") from None
    if not isinstance(header, dict):
        raise _Invalid(f"header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Invalid("__metadata__ must be an object of strings")
    entries: dict[str, tuple[str, list[int], int, int]] = {}
    for name, info in header.items():
        where = f"tensor {name!r}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise _Invalid(f"{where}: header entry must be an object of dtype, shape and data_offsets, got "
                           f"{_show(info)}")
        code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if code not in _DTYPES:
            raise _Invalid(f"{where}: unknown or unsupported dtype {_show(code)}")
        if not isinstance(shape, list) or len(shape) > 64 or not all(type(d) is int and d >= 0 for d in shape):
            raise _Invalid(f"{where}: shape must be a list of at most 64 ints >= 0, got {_show(shape)}")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise _Invalid(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end, got {_show(offsets)}")
        begin, end = offsets
        needed = math.prod(shape) * _DTYPES[code].itemsize
        if end - begin != needed:
            raise _Invalid(f"{where}: shape {shape} of {code} needs {needed} bytes but data_offsets {offsets} "
                           f"hold {end - begin}")
        if end > data_size:
            raise _Invalid(f"{where} runs past the end of the file (data_offsets {offsets}, {data_size} bytes of "
                           f"data)")
        entries[name] = (code, shape, begin, end)
    position, previous = 0, None
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda item: (item[1][2], item[1][3])):
        if begin < position:
            raise _Invalid(f"tensors {previous!r} and {name!r} overlap")
        if begin > position:
            raise _Invalid(f"{begin - position} bytes that belong to no tensor before tensor {name!r}")
        position, previous = end, name
    if position != data_size:
        raise _Invalid(f"{data_size - position} bytes that belong to no tensor at the end of the file")
    return entries, metadata


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _Invalid(f"the file has {size} bytes, fewer than the 8 of the header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > size - 8 and (prefix.startswith(b"PK\x03\x04") or prefix[:1] == b"\x80"):
            # a header length no file has, and torch.save's zip archive or a pickle's opening bytes
            raise _Invalid("it looks like a PyTorch file (torch.save's zip or pickle format); read it with torch.load")
        if length > size - 8:
            raise _Invalid(f"header runs past the end of the file (header length {length}, file {size} bytes)")
        if length > _MAX_HEADER:
            raise _Invalid(f"header of {length} bytes is over the {_MAX_HEADER}-byte limit")
        entries, metadata = _parse_header(f.read(length), size - 8 - length)
        f.seek(0)
        data = f.read(size + 1)  # the header accounts for every byte: only now is the whole file read
    if len(data) != size:
        raise _Invalid("the file changed while it was read")
    try:
        tensors = safetensors.torch.load(data)
    except Exception as error:  # the package's own checks (SafetensorError), after ours passed
        raise _Invalid(f"{type(error).__name__}: {error}") from None
    if tensors.keys() != entries.keys():
        raise _Invalid(f"the safetensors package read tensors {sorted(tensors)}, the header names {sorted(entries)}")
    for name, tensor in tensors.items():
        code, shape, _, _ = entries[name]
        if tensor.dtype != _DTYPES[code] or list(tensor.shape) != shape:
            raise _Invalid(f"tensor {name!r} read as {tensor.dtype} {list(tensor.shape)}, the header says {code} "
                           f"{shape}")
        if tensor.dtype == torch.bool and tensor.numel() and bool((tensor.view(torch.uint8) > 1).any()):
            raise _Invalid(f"tensor {name!r} (BOOL) holds bytes other than 0 and 1")
    return tensors, metadata


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of the safetensors file at `path`. The header is checked against the file before
    anything is allocated; any fault is a one-line ValueError naming the file (and the tensor), a missing file
    a FileNotFoundError."""
    path = Path(path)
    return _read_or_explain(path, f"'{path}'", missing=f"'{path}' does not exist")


def _read_or_explain(path: Path, described: str, missing: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """_read_tensors, with every failure as one line that starts with `described` (a missing file: `missing`)."""
    try:
        return _read_tensors(path)
    except FileNotFoundError:
        raise FileNotFoundError(missing) from None
    except _Invalid as error:
        raise ValueError(_one_line(f"{described} is not a valid safetensors file: {error}")) from None
    except OSError as error:
        raise ValueError(_one_line(f"{described} cannot be read: {error}")) from None


# ---------------------------------------------------------------------------------------------------------------
# writing checkpoints


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


def model_state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def preflight(directory: str | os.PathLike, model: Any) -> None:
    """Checks, before the first step, that checkpoints of `model` can be written to `directory`: the directory
    can be created and written (a ValueError names the path and the OS error), and every tensor of the model's
    state has a type a checkpoint holds (a ValueError names the tensor and its dtype)."""
    for name, tensor in model_state(model).items():
        problem = _unsupported(tensor)
        if problem:
            raise ValueError(f"checkpoint_dir is set, but the model's state tensor {name!r} {problem}")
    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(_one_line(f"checkpoint_dir '{root}' cannot be created: {error}")) from None
    probe = root / f".preflight-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"finetune checkpoint_dir write test\n")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as error:
        raise ValueError(_one_line(f"checkpoint_dir '{root}' is not writable: {error}")) from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def saved_form(state: Any) -> dict[str, Any]:
    """A ``finetune._C.LoopState`` in the form the files hold (what ``write`` takes and ``load`` returns): its
    counters and history as state.json has them, its tensors by name."""
    return {"counters": state.counters(), "history": [record.as_dict() for record in state.history],
            "best_metrics": dict(state.best_metrics), "rng_state": state.rng_state,
            **{group: dict(getattr(state, group)) for group in _GROUPS}}


def loop_state(saved: dict[str, Any]) -> Any:
    """The ``finetune._C.LoopState`` a loaded checkpoint's loop state (``load``'s second value) resumes."""
    from . import _C

    state = _C.LoopState()
    state.set_counters(saved["counters"])
    state.history = [_C.EpochRecord.from_dict(entry) for entry in saved["history"]]
    state.best_metrics = saved["best_metrics"]
    state.rng_state = saved["rng_state"]
    for group in _GROUPS:
        setattr(state, group, list(saved[group].items()))
    return state


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
    save_tensors(tmp / "model.safetensors", model_state(model), {"format": str(FORMAT_VERSION)})
    tensors = {f"{group}/{key}": value for group in _GROUPS for key, value in loop_state[group].items()}
    if loop_state["rng_state"] is not None:
        tensors["rng_state"] = loop_state["rng_state"]
    save_tensors(tmp / "state.safetensors", tensors, {"format": str(FORMAT_VERSION)})
    state_json = {"format": FORMAT_VERSION, "counters": counters, "history": loop_state["history"],
                  "best_metrics": loop_state["best_metrics"]}
    for filename, content in (("state.json", state_json), ("config.json", config)):
        with open(tmp / filename, "w") as f:
            json.dump(content, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
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
    keep = {_read_pointer(root, p, strict=False) for p in ("latest", "best")}
    for leftover in root.glob(".step-*.tmp-*"):  # from a process killed mid-write
        if not leftover.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)
    if keep_last <= 0:
        return
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and _NAME.match(p.name))
    for old in names[:-keep_last]:
        if old not in keep:
            shutil.rmtree(root / old, ignore_errors=True)


def settle(directory: str | os.PathLike) -> None:
    """A finished recipe phase's directory down to its `latest` checkpoint: all a resumed recipe reads of it (the
    best epoch's weights, which the phase returned, are in it too)."""
    root = Path(directory)
    if _read_pointer(root, "latest", strict=False) is None:
        return
    (root / "best").unlink(missing_ok=True)
    _prune(root, 1)


# ---------------------------------------------------------------------------------------------------------------
# reading checkpoints


def _read_pointer(root: Path, pointer: str, strict: bool = True) -> str | None:
    """The checkpoint name in `root/pointer` (None if there is no such file). A pointer that names anything but a
    checkpoint directory of `root` is a ValueError (strict) or None."""
    path = root / pointer
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            name = f.read(65).decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        if strict:
            raise ValueError(_one_line(f"checkpoint pointer '{path}' cannot be read: {error}")) from None
        return None
    if not _NAME.match(name):
        if strict:
            raise ValueError(f"checkpoint pointer '{path}' holds {_show(name)}, not the name of a checkpoint "
                             "(step-NNNNNNNN)")
        return None
    return name


def find(path: str | os.PathLike) -> Path | None:
    """The checkpoint `path` names: a checkpoint directory itself, or a checkpoint_dir (its `latest`)."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    name = _read_pointer(path, "latest")
    return path / name if name else None


def _read_json(path: Path, checkpoint: Path) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_JSON + 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint '{checkpoint}' is incomplete: {path} is missing") from None
    except OSError as error:
        raise ValueError(_one_line(f"checkpoint '{path}' cannot be read: {error}")) from None
    if len(raw) > _MAX_JSON:
        raise ValueError(f"checkpoint '{path}' is over {_MAX_JSON} bytes: not a file finetune wrote")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as error:
        raise ValueError(_one_line(f"checkpoint '{path}' has corrupt JSON: {error}")) from None


def _int(value: Any, where: str, low: int, high: int = _MAX_INT) -> int:
    if type(value) is not int or value < low:
        raise _Invalid(f"{where} must be an int >= {low}, got {_show(value)}")
    if value > high:
        raise _Invalid(f"{where} must be an int <= {high}, got {_show(value)}")
    return value


def _number(value: Any, where: str, low: float | None = None) -> float:
    if type(value) not in (int, float):
        raise _Invalid(f"{where} must be a number, got {_show(value)}")
    try:
        as_float = float(value)
    except OverflowError:
        raise _Invalid(f"{where} must be a number within the range of a double, got {_show(value)}") from None
    if low is not None and not as_float >= low:
        raise _Invalid(f"{where} must be a number >= {low}, got {_show(value)}")
    return as_float


def _object(value: Any, where: str, required: set[str] | None = None, allowed: set[str] | None = None) -> dict:
    if not isinstance(value, dict):
        raise _Invalid(f"{where} must be a JSON object, got {_show(value)}")
    if required is not None:
        missing = sorted(required - set(value))
        if missing:
            raise _Invalid(f"{where + '.' if where != 'the file' else ''}{missing[0]} is missing")
    if allowed is not None:
        unexpected = sorted(set(value) - allowed)
        if unexpected:
            raise _Invalid(f"{where} has unexpected key(s) {unexpected[:5]}")
    return value


def _check_state(state: Any, config: dict[str, Any]) -> None:
    """state.json, field by field, as the C++ LoopState reads it (format checked already)."""
    _object(state, "the file", required={"format", "counters", "history", "best_metrics"},
            allowed={"format", "counters", "history", "best_metrics"})
    counters = _object(state["counters"], "counters", required=set(_COUNTERS), allowed=set(_COUNTERS))
    for key, (kind, low) in _COUNTERS.items():
        where = f"counters.{key}"
        if kind is int:
            _int(counters[key], where, int(low))
        else:
            _number(counters[key], where, low)
    for key in ("epoch_step", "skipped_steps"):
        if counters[key] > counters["steps"]:
            raise _Invalid(f"counters.{key} ({counters[key]}) cannot exceed counters.steps ({counters['steps']})")
    epochs = config.get("epochs")
    if type(epochs) is int and counters["epoch"] > epochs:
        raise _Invalid(f"counters.epoch ({counters['epoch']}) cannot exceed the run's epochs ({epochs}, config.json)")

    history = state["history"]
    if not isinstance(history, list):
        raise _Invalid(f"history must be a list of objects of numbers, got {_show(history)}")
    previous = -1
    for i, entry in enumerate(history):
        where = f"history[{i}]"
        _object(entry, where, required=set(_HISTORY))
        for key, value in entry.items():
            if key == "epoch":
                _int(value, f"{where}.epoch", 0)
            elif key in _HISTORY or key.startswith("val_"):
                _number(value, f"{where}.{key}")
            else:
                raise _Invalid(f"{where} has unexpected key {key!r} (known: {sorted(_HISTORY)} and val_<metric>)")
        if entry["epoch"] <= previous:
            raise _Invalid(f"{where}.epoch ({entry['epoch']}) must be greater than history[{i - 1}].epoch "
                           f"({previous})")
        if entry["epoch"] >= counters["epoch"]:  # the epochs completed come before the one in progress
            raise _Invalid(f"{where}.epoch ({entry['epoch']}) must be less than counters.epoch ({counters['epoch']})")
        previous = entry["epoch"]
    if counters["epochs_without_improvement"] > len(history):
        raise _Invalid(f"counters.epochs_without_improvement ({counters['epochs_without_improvement']}) cannot "
                       f"exceed the {len(history)} epochs in history")
    best_epoch = counters["best_epoch"]
    if best_epoch != -1 and best_epoch not in {entry["epoch"] for entry in history}:
        raise _Invalid(f"counters.best_epoch ({best_epoch}) is neither -1 nor the epoch of a history entry")

    best_metrics = _object(state["best_metrics"], "best_metrics")
    for key, value in best_metrics.items():
        _number(value, f"best_metrics.{key}")


_RNG_STATE_SIZE: list[int] = []


def _check_rng_state(tensor: torch.Tensor) -> None:
    if not _RNG_STATE_SIZE:
        _RNG_STATE_SIZE.append(torch.get_rng_state().numel())
    size = _RNG_STATE_SIZE[0]
    if tensor.dtype != torch.uint8 or tensor.dim() != 1 or tensor.numel() != size:
        raise _Invalid(f"tensor 'rng_state' must be a 1-d uint8 tensor of {size} bytes (the CPU generator's state), "
                       f"got {str(tensor.dtype).removeprefix('torch.')} of shape {list(tensor.shape)}")
    try:
        torch.Generator().set_state(tensor)
    except RuntimeError as error:
        raise _Invalid(f"tensor 'rng_state' is not a valid CPU generator state: {error}") from None


def _split_state_tensors(tensors: dict[str, torch.Tensor], config: dict[str, Any],
                         counters: dict[str, Any]) -> dict[str, Any]:
    """state.safetensors' tensors as the loop state's rng_state, optimizer, ema and best, each checked as far as
    it can be without the model: names, dtypes, the optimizer's fields."""
    loop: dict[str, Any] = {"rng_state": None, **{group: {} for group in _GROUPS}}
    for key, tensor in tensors.items():
        if key == "rng_state":
            _check_rng_state(tensor)
            loop["rng_state"] = tensor
            continue
        group, _, name = key.partition("/")
        if group not in _GROUPS or not name:
            raise _Invalid(f"tensor {key!r} is none of rng_state, optimizer/<name>, ema/<name>, best/<name>")
        if group == "ema" and tensor.dtype not in _FLOATS:
            raise _Invalid(f"tensor {key!r} must be floating point (averaged weights), got {tensor.dtype}")
        loop[group][name] = tensor
    if loop["optimizer"]:
        kind = config.get("optimizer")
        if not isinstance(kind, str) or kind not in _OPTIMIZER_FIELDS:
            raise _Invalid(f"config.json's optimizer must be one of {sorted(_OPTIMIZER_FIELDS)} for the optimizer "
                           f"state here to be read, got {_show(kind)}")
        _check_optimizer(loop["optimizer"], kind, counters)
    return loop


def _check_optimizer(state: dict[str, torch.Tensor], kind: str, counters: dict[str, Any]) -> None:
    fields = _OPTIMIZER_FIELDS[kind]
    owners: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        owner, _, field = key.rpartition("/")
        where = f"tensor 'optimizer/{key}'"
        if not owner or field not in fields:
            raise _Invalid(f"{where} is not optimizer/<parameter>/<field> with a field of {kind} "
                           f"({', '.join(sorted(fields))})")
        if field == "step":
            if tensor.dtype != torch.int64 or tensor.dim() != 0:
                raise _Invalid(f"{where} must be a 0-d int64 tensor, got {tensor.dtype} of shape {list(tensor.shape)}")
            step = int(tensor)
            if not 0 <= step <= counters["steps"]:
                raise _Invalid(f"{where} is {step}, outside [0, counters.steps = {counters['steps']}]")
        elif tensor.dtype not in _FLOATS:
            raise _Invalid(f"{where} must be floating point, got {tensor.dtype}")
        owners.setdefault(owner, {})[field] = tensor
    for owner, found in owners.items():
        missing = sorted(f for f, required in fields.items() if required and f not in found)
        if missing:
            raise _Invalid(f"optimizer state of {owner!r} lacks {missing} ({kind} keeps "
                           f"{', '.join(sorted(fields))})")
        shapes = {f: list(t.shape) for f, t in found.items() if f != "step"}
        if len({tuple(s) for s in shapes.values()}) > 1:
            raise _Invalid(f"optimizer state of {owner!r} has fields of different shapes: {shapes}")


def load(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model tensors, loop state, saved config) of the checkpoint at `path` (see find), every file checked.
    A fault is a one-line ValueError naming the file (and the key or tensor); a missing file a FileNotFoundError."""
    checkpoint = find(path)
    if checkpoint is None:
        raise FileNotFoundError(f"no checkpoint at '{path}' (no state.json, and no 'latest' pointer)")
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint '{checkpoint}' (named by '{Path(path) / 'latest'}') does not exist")
    state = _read_json(checkpoint / "state.json", checkpoint)
    config = _read_json(checkpoint / "config.json", checkpoint)
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint '{checkpoint / 'state.json'}': the file must be a JSON object, got "
                         f"{_show(state)}")
    version = state.get("format")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ValueError(f"checkpoint '{checkpoint}' has format version {_show(version)}; this finetune reads "
                         f"version {FORMAT_VERSION}")
    if not isinstance(config, dict):
        raise ValueError(f"checkpoint '{checkpoint / 'config.json'}' must be a JSON object (the run's settings), "
                         f"got {_show(config)}")
    current = checkpoint / "state.json"
    try:
        _check_state(state, config)
        current = checkpoint / "model.safetensors"
        model_tensors, _ = _read_checkpoint_tensors(current, checkpoint)
        current = checkpoint / "state.safetensors"
        tensors, _ = _read_checkpoint_tensors(current, checkpoint)
        loop_state = _split_state_tensors(tensors, config, state["counters"])
        _check_against_model(loop_state, model_tensors)
    except _Invalid as error:
        raise ValueError(_one_line(f"checkpoint '{current}': {error}")) from None
    loop_state.update(counters=state["counters"], history=state["history"], best_metrics=state["best_metrics"])
    return model_tensors, loop_state, config


def _read_checkpoint_tensors(path: Path, checkpoint: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    return _read_or_explain(path, f"checkpoint '{path}'",
                            missing=f"checkpoint '{checkpoint}' is incomplete: {path} is missing")


def _check_against_model(loop: dict[str, Any], model_tensors: dict[str, torch.Tensor]) -> None:
    """The optimizer, ema and best tensors against the checkpoint's own model tensors (names, shapes, dtypes).
    load_model_state then holds those to the model, so whatever reaches the loop fits the model."""
    for group in _GROUPS:
        for key, tensor in loop[group].items():
            owner, field = key.rpartition("/")[::2] if group == "optimizer" else (key, None)
            where = f"tensor '{group}/{key}'"
            if owner not in model_tensors:
                raise _Invalid(f"{where} names {owner!r}, which model.safetensors does not hold")
            if field == "step":
                continue
            own = model_tensors[owner]
            if tensor.shape != own.shape or tensor.dtype != own.dtype:
                raise _Invalid(f"{where} is {str(tensor.dtype).removeprefix('torch.')} {list(tensor.shape)} but "
                               f"{owner!r} in model.safetensors is {str(own.dtype).removeprefix('torch.')} "
                               f"{list(own.shape)}")


def load_model_state(model: Any, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copies `tensors` into the model in place; any missing, unexpected, mis-shaped or mis-typed key is a
    ValueError (load checked the loop state's tensors against these, so they fit the model too)."""
    own = model_state(model)
    missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    mismatched = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in tensors and tensors[k].shape != v.shape]
    mistyped = [f"{k}: checkpoint {tensors[k].dtype} vs model {v.dtype}"
                for k, v in own.items() if k in tensors and tensors[k].shape == v.shape and tensors[k].dtype != v.dtype]
    if missing or unexpected or mismatched or mistyped:
        raise ValueError(f"checkpoint '{source}' does not fit this model: missing keys {missing}, unexpected keys "
                         f"{unexpected}, shape mismatches {mismatched}"
                         + (f", dtype mismatches {mistyped}" if mistyped else ""))
    with torch.no_grad():
        for key, value in own.items():
            value.copy_(tensors[key])


RECIPE_JOURNAL = "recipe.json"
RECIPE_MODES = ("auto", "head")


def recipe_journal(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The journal of the recipe run checkpointed in `directory` (its recipe.json), every field checked; None
    where there is none. It holds what the recipe decided outside its phases' checkpoints: which recipe ran, the
    settings it was given, and each range test's curve, in the order the recipe ran them."""
    path = Path(directory) / RECIPE_JOURNAL
    if not path.is_file():
        return None
    journal = _read_json(path, Path(directory))
    try:
        keys = {"format", "recipe", "given", "run", "range_tests"}
        _object(journal, "the file", required=keys, allowed=keys)
        if type(journal["format"]) is not int or journal["format"] != FORMAT_VERSION:
            raise _Invalid(f"format must be {FORMAT_VERSION}, got {_show(journal['format'])}")
        if journal["recipe"] not in RECIPE_MODES:
            raise _Invalid(f"recipe must be one of {list(RECIPE_MODES)}, got {_show(journal['recipe'])}")
        _object(journal["given"], "given")
        _object(journal["run"], "run", required={"data", "val_fraction", "val", "world_size"},
                allowed={"data", "val_fraction", "val", "world_size"})
        if not isinstance(journal["range_tests"], list):
            raise _Invalid(f"range_tests must be a list, got {_show(journal['range_tests'])}")
        for i, test in enumerate(journal["range_tests"]):
            where = f"range_tests[{i}]"
            _object(test, where, required={"lrs", "losses", "suggestion", "diverged"},
                    allowed={"lrs", "losses", "suggestion", "diverged", "optimizer", "parameters"})
            if "optimizer" in test and test["optimizer"] not in _OPTIMIZER_FIELDS:
                raise _Invalid(f"{where}.optimizer must be one of {', '.join(sorted(_OPTIMIZER_FIELDS))}, got "
                               f"{_show(test['optimizer'])}")
            if "parameters" in test and (type(test["parameters"]) is not int or test["parameters"] < 0):
                raise _Invalid(f"{where}.parameters must be a count >= 0, got {_show(test['parameters'])}")
            for key in ("lrs", "losses"):
                if not isinstance(test[key], list) or not test[key]:
                    raise _Invalid(f"{where}.{key} must be a non-empty list of numbers, got {_show(test[key])}")
                for j, value in enumerate(test[key]):
                    _number(value, f"{where}.{key}[{j}]")
            if len(test["lrs"]) != len(test["losses"]):
                raise _Invalid(f"{where} has {len(test['lrs'])} lrs and {len(test['losses'])} losses")
            # The rates a range test steps through: finite, positive, rising (a rate chosen from them trains).
            lrs = test["lrs"]
            if not all(math.isfinite(v) and v > 0 for v in lrs) or any(b <= a for a, b in zip(lrs, lrs[1:])):
                raise _Invalid(f"{where}.lrs must be finite rates > 0, rising, got {_show(lrs)}")
            if not (math.isfinite(_number(test["suggestion"], f"{where}.suggestion")) and test["suggestion"] > 0):
                raise _Invalid(f"{where}.suggestion must be a finite rate > 0, got {_show(test['suggestion'])}")
            if type(test["diverged"]) is not bool:
                raise _Invalid(f"{where}.diverged must be true or false, got {_show(test['diverged'])}")
    except _Invalid as error:
        raise ValueError(_one_line(f"recipe journal '{path}': {error}")) from None
    return journal


def write_recipe_journal(directory: str | os.PathLike, journal: dict[str, Any]) -> None:
    """Writes `directory`/recipe.json atomically (a kill leaves the previous journal whole)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    _write_text_atomic(root / RECIPE_JOURNAL, json.dumps({"format": FORMAT_VERSION, **journal}, indent=1) + "\n")
