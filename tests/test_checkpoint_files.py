"""Crafted checkpoint files: each fault is a one-line ValueError naming the file (and the key or tensor), never a
crash and never a silent load of wrong data. Unit tests for each named case, a fuzz run of >= 1,000 mutated
checkpoints in a child process (a segfault or abort fails the test, not the test run), and checkpoint.preflight."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import finetune
from finetune import checkpoint

RNG = np.random.default_rng(0)
X = RNG.random((96, 6), dtype=np.float32)
Y = (X[:, 0] * 3).astype(np.int64)
TRAIN, VAL = (X[:64], Y[:64]), (X[64:], Y[64:])
# 4 steps an epoch: checkpoints at steps 3, 4 (epoch end), 6 and 8; step-00000006 is mid-epoch 1, with a history,
# a best epoch, EMA and best weights, AdamW state and the generator state (dropout).
SETTINGS = dict(epochs=2, batch_size=16, optimizer="adamw", lr=0.01, ema=0.9, restore_best=True, checkpoint_every=3,
                keep_last=0, seed=3, progress=False, hidden=[8], dropout=0.2)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> tuple[Path, finetune.Result]:
    root = tmp_path_factory.mktemp("base")
    return root, finetune.train("mlp", TRAIN, val=VAL, checkpoint_dir=root, **SETTINGS)


@pytest.fixture
def base(base_run) -> Path:
    return base_run[0]


@pytest.fixture
def ckpt(base, tmp_path) -> Path:
    """A fresh copy of a real mid-epoch checkpoint directory, to edit."""
    shutil.copytree(base, tmp_path / "run")
    (tmp_path / "run" / "latest").write_text("step-00000006\n")
    return tmp_path / "run" / "step-00000006"


def raises_one_line(error: type[Exception], call, *args) -> str:
    with pytest.raises(error) as info:
        call(*args)
    message = str(info.value)
    assert type(info.value) is error and len(message.splitlines()) == 1, message
    return message


def test_a_pytorch_file_and_a_missing_directory_are_said_as_such(tmp_path):
    """finetune.load on torch.save's output names its format (not a header length of 10^17); finetune.save into a
    directory that does not exist names the path asked for (not the temporary file written first)."""
    model = finetune.build("mlp", in_features=4, num_classes=3)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    torch.save(model.state_dict(), tmp_path / "old.pt", _use_new_zipfile_serialization=False)  # a plain pickle
    for name in ("sd.pt", "old.pt"):
        message = raises_one_line(ValueError, finetune.load, tmp_path / name)
        assert message == (f"'{tmp_path / name}' is not a valid safetensors file: it looks like a PyTorch file "
                           "(torch.save's zip or pickle format); read it with torch.load"), message
    target = tmp_path / "nowhere" / "m.safetensors"
    message = raises_one_line(FileNotFoundError, finetune.save, model, target)
    assert message == f"cannot write '{target}': the directory '{target.parent}' does not exist", message


def file_bytes(header: dict | bytes, body: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + body


def edit_json(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def edit_tensors(path: Path, change) -> None:
    tensors, metadata = checkpoint.load_tensors(path)
    change(tensors)
    checkpoint.save_tensors(path, tensors, metadata)


F32x4 = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
# name: (header, body, header length or None, message) -- each a file the safetensors format (or this loader) rejects
BAD_FILES = {
    "data_offsets [0,0] with a non-empty shape": (
        {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 0]}}, b"", None,
        r"tensor 'w': shape \[2, 2\] of F32 needs 16 bytes but data_offsets \[0, 0\] hold 0"),
    "huge shape, no data": (
        {"w": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 0]}}, b"", None,
        r"tensor 'w': shape \[1099511627776\] of F32 needs 4398046511104 bytes"),
    "shape whose size overflows int64": (
        {"w": {"dtype": "F64", "shape": [2**62, 2**62], "data_offsets": [0, 16]}}, b"\0" * 16, None,
        r"tensor 'w': shape .* needs \d+ bytes but data_offsets \[0, 16\] hold 16"),
    "data past the end": ({"w": F32x4}, b"\0" * 8, None,
                          r"tensor 'w' runs past the end of the file \(data_offsets \[0, 16\], 8 bytes of data\)"),
    "overlapping offsets": (
        {"a": F32x4, "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, b"\0" * 24, None,
        r"tensors 'a' and 'b' overlap"),
    "two tensors on the same bytes": ({"a": F32x4, "b": F32x4}, b"\0" * 16, None, r"tensors 'a' and 'b' overlap"),
    "a gap between tensors": (
        {"a": F32x4, "b": {"dtype": "F32", "shape": [4], "data_offsets": [20, 36]}}, b"\0" * 36, None,
        r"4 bytes that belong to no tensor before tensor 'b'"),
    "bytes after the last tensor": ({"w": F32x4}, b"\0" * 20, None, r"4 bytes that belong to no tensor at the end"),
    "header length past the end of the file": ({}, b"", 1000,
                                               r"header runs past the end of the file \(header length 1000, file 10"),
    "header length 2**64-1": ({}, b"", 2**64 - 1, r"header runs past the end of the file"),
    "a header that is not JSON": (b"{{{{", b"", None, r"header is not valid JSON"),
    "a header that is not UTF-8": (b'{"\xff":1}', b"", None, r"header is not valid JSON: 'utf-8' codec"),
    "a header nested 100,000 deep": (b"[" * 100_000, b"", None, r"header is not valid JSON: maximum recursion depth"),
    "a header that is a list": (b"[]", b"", None, r"header is a JSON list, not an object"),
    "a tensor named twice": (b'{"w":' + json.dumps(F32x4).encode() + b',"w":' + json.dumps(F32x4).encode() + b"}",
                             b"\0" * 16, None, r"duplicate key 'w'"),
    "an unknown dtype": ({"w": {**F32x4, "dtype": "F33"}}, b"\0" * 16, None, r"tensor 'w': unknown or unsupported dtype"),
    "a dtype torch cannot read": ({"w": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]}}, b"\0" * 2, None,
                                  r"tensor 'w': unknown or unsupported dtype 'F4'"),
    "a negative dimension": ({"w": {**F32x4, "shape": [-4]}}, b"\0" * 16, None, r"tensor 'w': shape must be a list"),
    "a float dimension": ({"w": {**F32x4, "shape": [4.0]}}, b"\0" * 16, None, r"tensor 'w': shape must be a list"),
    "a bool offset": ({"w": {**F32x4, "data_offsets": [False, 16]}}, b"\0" * 16, None, r"tensor 'w': data_offsets must"),
    "offsets backwards": ({"w": {**F32x4, "data_offsets": [16, 0]}}, b"\0" * 16, None, r"tensor 'w': data_offsets must"),
    "an unknown header field": ({"w": {**F32x4, "crc": 1}}, b"\0" * 16, None, r"tensor 'w': header entry must be"),
    "a missing header field": ({"w": {"dtype": "F32", "shape": [4]}}, b"\0" * 16, None, r"tensor 'w': header entry"),
    "metadata that is not strings": ({"__metadata__": {"format": 1}}, b"", None, r"__metadata__ must be an object"),
    "a BOOL byte other than 0 and 1": ({"b": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\x01\x02",
                                       None, r"tensor 'b' \(BOOL\) holds bytes other than 0 and 1"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_crafted_safetensors_files_are_one_line_errors_naming_file_and_tensor(tmp_path, name):
    header, body, length, message = BAD_FILES[name]
    path = tmp_path / "t.safetensors"
    path.write_bytes(file_bytes(header, body, length))
    error = raises_one_line(ValueError, checkpoint.load_tensors, path)
    assert error.startswith(f"'{path}' is not a valid safetensors file: ")
    assert re.search(message, error), error


@pytest.mark.parametrize("content", [b"", b"\x10\x00\x00"])
def test_files_shorter_than_the_header_length(tmp_path, content):
    (tmp_path / "t.safetensors").write_bytes(content)
    assert "fewer than the 8 of the header length" in raises_one_line(
        ValueError, checkpoint.load_tensors, tmp_path / "t.safetensors")


def test_the_safetensors_package_rejects_those_files_too(tmp_path):
    """What the package guarantees on its own (our checks come first and name the tensor; it is the second line)."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    accepted_by_package = set()
    for name, (header, body, length, _) in BAD_FILES.items():
        try:
            safetensors_torch.load(file_bytes(header, body, length))
            accepted_by_package.add(name)
        except Exception:
            pass
    # The package checks sizes, offsets and JSON itself; it accepts these, which this loader refuses:
    assert accepted_by_package <= {"an unknown header field", "a BOOL byte other than 0 and 1", "a tensor named twice"}


def test_empty_and_scalar_tensors_and_unordered_offsets_load(tmp_path):
    header = {"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, "a": {"dtype": "I32", "shape": [],
              "data_offsets": [0, 4]}, "e": {"dtype": "F64", "shape": [0, 3], "data_offsets": [8, 8]}}
    path = tmp_path / "t.safetensors"
    path.write_bytes(file_bytes(header, struct.pack("<if", 7, 2.5)))
    tensors, metadata = checkpoint.load_tensors(path)
    assert metadata == {} and tensors["a"].item() == 7 and tensors["b"].tolist() == [2.5]
    assert tensors["e"].shape == (0, 3) and tensors["e"].dtype == torch.float64


def test_files_of_the_former_hand_written_writer_still_load(tmp_path):
    """Checkpoints written before the safetensors package was used: metadata first, insertion order, space padding."""
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor(3), "e": torch.zeros(0)}
    header, chunks, offset = {"__metadata__": {"format": "1"}}, [], 0
    for name, t in tensors.items():
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": {torch.float32: "F32", torch.int64: "I64"}[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    (tmp_path / "old.safetensors").write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))
    loaded, metadata = checkpoint.load_tensors(tmp_path / "old.safetensors")
    assert metadata == {"format": "1"}
    assert all(loaded[k].dtype == v.dtype and torch.equal(loaded[k], v) for k, v in tensors.items())


def test_save_tensors_writes_shared_and_strided_tensors_atomically(tmp_path):
    linear = torch.nn.Linear(3, 4)
    tensors = {"weight": linear.weight, "tied": linear.weight, "transposed": torch.randn(3, 5).t(),
               "half": torch.arange(10.0)[5:], "u16": torch.arange(4).to(torch.uint16),
               "f8": torch.tensor([0.5, 1.0]).to(torch.float8_e4m3fn), "c64": torch.tensor([1 + 2j], dtype=torch.complex64)}
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"an older file")
    checkpoint.save_tensors(path, tensors, {"k": "v"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.safetensors"]  # no temporary file left
    loaded, metadata = checkpoint.load_tensors(path)
    assert metadata == {"k": "v"}
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype and loaded[key].shape == value.shape, key
        assert loaded[key].view(torch.uint8).equal(value.detach().contiguous().view(torch.uint8)), key


def test_save_tensors_refuses_a_dtype_the_format_cannot_hold(tmp_path):
    error = raises_one_line(ValueError, checkpoint.save_tensors, tmp_path / "t.safetensors",
                            {"ok": torch.zeros(2), "z": torch.zeros(2, dtype=torch.complex128)})
    assert "tensor 'z' has dtype torch.complex128, which a safetensors checkpoint cannot hold" in error
    assert not (tmp_path / "t.safetensors").exists()


# ---------------------------------------------------------------------------------------------------------------
# whole checkpoints


def test_a_real_checkpoint_loads_what_was_written(ckpt):
    tensors, loop, config = checkpoint.load(ckpt)
    state = json.loads((ckpt / "state.json").read_text())
    assert loop["counters"] == state["counters"] and loop["history"] == state["history"]
    assert loop["counters"]["epoch"] == 1 and loop["counters"]["epoch_step"] == 2 and loop["counters"]["best_epoch"] == 0
    assert config == json.loads((ckpt / "config.json").read_text())
    assert loop["rng_state"].dtype == torch.uint8 and loop["rng_state"].shape == torch.get_rng_state().shape
    assert loop["optimizer"] and loop["best"].keys() == tensors.keys()
    buffers = {"center", "scale", "linear_center", "linear_scale", "linear_weight", "linear_bias", "linear_share"}
    assert buffers <= tensors.keys()
    assert loop["ema"].keys() == tensors.keys() - buffers  # the average of the parameters, not the buffers
    assert checkpoint.load(ckpt.parent)[0].keys() == tensors.keys()  # through the `latest` pointer


def _set(path: str, value):
    def change(doc):
        *parents, last = path.split(".")
        for key in parents:
            doc = doc[int(key)] if isinstance(doc, list) else doc[key]
        if isinstance(doc, list):
            doc[int(last)] = value
        else:
            doc[last] = value
    return change


def _delete(path: str):
    def change(doc):
        *parents, last = path.split(".")
        for key in parents:
            doc = doc[int(key)] if isinstance(doc, list) else doc[key]
        del doc[int(last) if isinstance(doc, list) else last]
    return change


# (file, change, message after "checkpoint '<file>': ")
BAD_STATE = {
    "epoch -3": ("state.json", _set("counters.epoch", -3), "counters.epoch must be an int >= 0, got -3"),
    "a str for an int": ("state.json", _set("counters.steps", "6"), "counters.steps must be an int >= 0, got '6' (str)"),
    "a float for an int": ("state.json", _set("counters.samples", 32.0), "counters.samples must be an int >= 0, got 32.0"),
    "a bool for an int": ("state.json", _set("counters.epoch", True), "counters.epoch must be an int >= 0, got True (bool)"),
    "an int past int64": ("state.json", _set("counters.samples", 2**70), "counters.samples must be an int <= "),
    "a str for a float": ("state.json", _set("counters.loss_sum", "1.5"), "counters.loss_sum must be a number, got '1.5'"),
    "null for a float": ("state.json", _set("counters.best_value", None), "counters.best_value must be a number, got None"),
    "a number past a double": ("state.json", _set("counters.loss_sum", 10**400),
                               "counters.loss_sum must be a number within the range of a double"),
    "negative weight_sum": ("state.json", _set("counters.weight_sum", -1.0), "counters.weight_sum must be a number >= 0.0"),
    "best_epoch -2": ("state.json", _set("counters.best_epoch", -2), "counters.best_epoch must be an int >= -1, got -2"),
    "a missing counter": ("state.json", _delete("counters.steps"), "counters.steps is missing"),
    "an unknown counter": ("state.json", _set("counters.speed", 1), "counters has unexpected key(s) ['speed']"),
    "counters not an object": ("state.json", _set("counters", [1, 2]), "counters must be a JSON object, got [1, 2] (list)"),
    "history missing": ("state.json", _delete("history"), "history is missing"),
    "history not a list": ("state.json", _set("history", {"0": 1}), "history must be a list of objects of numbers"),
    "a history entry that is a list": ("state.json", _set("history.0", [0, 1.5]),
                                       "history[0] must be a JSON object, got [0, 1.5] (list)"),
    "a history value that is a str": ("state.json", _set("history.0.train_loss", "low"),
                                      "history[0].train_loss must be a number, got 'low' (str)"),
    "a history metric that is a list": ("state.json", _set("history.0.val_loss", [1.0]),
                                        "history[0].val_loss must be a number"),
    "a history entry lacking epoch": ("state.json", _delete("history.0.epoch"), "history[0].epoch is missing"),
    "an unknown history key": ("state.json", _set("history.0.note", 1.0), "history[0] has unexpected key 'note'"),
    "a history epoch not yet run": ("state.json", _set("history.0.epoch", 1), "history[0].epoch (1) must be less than"),
    "best_metrics value null": ("state.json", _set("best_metrics.loss", None), "best_metrics.loss must be a number"),
    "best_epoch not in history": ("state.json", _set("counters.best_epoch", 5), "counters.best_epoch (5) is neither"),
    "epoch_step past steps": ("state.json", _set("counters.epoch_step", 7), "counters.epoch_step (7) cannot exceed"),
    "epoch past the run's epochs": ("state.json", _set("counters.epoch", 3), "counters.epoch (3) cannot exceed the run's"),
    "an unknown top-level key": ("state.json", _set("extra", 1), "the file has unexpected key(s) ['extra']"),
}


@pytest.mark.parametrize("name", sorted(BAD_STATE))
def test_crafted_state_json_is_a_one_line_error_naming_file_and_key(ckpt, name):
    filename, change, message = BAD_STATE[name]
    edit_json(ckpt / filename, change)
    error = raises_one_line(ValueError, checkpoint.load, ckpt)
    assert error.startswith(f"checkpoint '{ckpt / filename}': {message}"), error


def test_the_message_of_a_negative_epoch_in_full(ckpt):
    edit_json(ckpt / "state.json", _set("counters.epoch", -3))
    assert raises_one_line(ValueError, checkpoint.load, ckpt) == (
        f"checkpoint '{ckpt / 'state.json'}': counters.epoch must be an int >= 0, got -3")


@pytest.mark.parametrize("content, message", [
    (b"\x00not json", "has corrupt JSON: Expecting value"),
    (b"\xff\xfe{}", "has corrupt JSON: 'utf-8' codec"),
    (b"[" * 100_000, "has corrupt JSON: maximum recursion depth"),
    (b'{"format": 1, "format": 1}', "has corrupt JSON: duplicate key 'format'"),
])
def test_unreadable_json_files(ckpt, content, message):
    for filename in ("state.json", "config.json"):
        saved = (ckpt / filename).read_bytes()
        (ckpt / filename).write_bytes(content)
        error = raises_one_line(ValueError, checkpoint.load, ckpt)
        assert error.startswith(f"checkpoint '{ckpt / filename}' has corrupt JSON: ") and message in error, error
        (ckpt / filename).write_bytes(saved)


@pytest.mark.parametrize("version", [99, True, "1", 1.0, None])
def test_format_version_must_be_the_int_1(ckpt, version):
    edit_json(ckpt / "state.json", _set("format", version))
    assert "this finetune reads version 1" in raises_one_line(ValueError, checkpoint.load, ckpt)


def test_state_json_must_be_an_object(ckpt):
    (ckpt / "state.json").write_text("[1]")
    assert raises_one_line(ValueError, checkpoint.load, ckpt) == (
        f"checkpoint '{ckpt / 'state.json'}': the file must be a JSON object, got [1] (list)")


@pytest.mark.parametrize("config", [[], "adamw", 3, None])
def test_config_json_must_be_an_object(ckpt, config):
    (ckpt / "config.json").write_text(json.dumps(config))
    assert f"checkpoint '{ckpt / 'config.json'}' must be a JSON object" in raises_one_line(
        ValueError, checkpoint.load, ckpt)


def test_missing_files_are_file_not_found(ckpt):
    for filename in ("model.safetensors", "state.safetensors", "config.json"):
        saved = (ckpt / filename).read_bytes()
        (ckpt / filename).unlink()
        message = raises_one_line(FileNotFoundError, checkpoint.load, ckpt)
        assert f"checkpoint '{ckpt}' is incomplete: {ckpt / filename} is missing" == message
        (ckpt / filename).write_bytes(saved)


PARAM = "layers.0.weight"  # the mlp's first layer, shape (8, 6)


def _rename(old_prefix: str, new: str):
    def change(tensors):
        key = next(k for k in tensors if k.startswith(old_prefix))
        tensors[new] = tensors.pop(key)
    return change


def _replace(prefix: str, make):
    def change(tensors):  # the tensor named exactly so, else the first whose name starts so (in name order)
        for key in ([prefix] if prefix in tensors else sorted(k for k in tensors if k.startswith(prefix))[:1]):
            tensors[key] = make(tensors[key])
    return change


BAD_TENSORS = {
    "rng_state as int64": ("state", _replace("rng_state", lambda t: t.long()),
                           "tensor 'rng_state' must be a 1-d uint8 tensor of 5056 bytes"),
    "rng_state cut short": ("state", _replace("rng_state", lambda t: t[:100].clone()),
                            "tensor 'rng_state' must be a 1-d uint8 tensor"),
    "rng_state of the right size, invalid": ("state", _replace("rng_state", torch.zeros_like),
                                             "tensor 'rng_state' is not a valid CPU generator state: "),
    "an unknown group": ("state", _rename("ema/", "other/x"), "tensor 'other/x' is none of rng_state"),
    "an optimizer key without a field": ("state", _rename("optimizer/", "optimizer/x"),
                                         "tensor 'optimizer/x' is not optimizer/<parameter>/<field>"),
    "an optimizer field adamw lacks": ("state", _rename(f"optimizer/{PARAM}/exp_avg_sq", f"optimizer/{PARAM}/velocity"),
                                       f"tensor 'optimizer/{PARAM}/velocity' is not optimizer/<parameter>/<field>"),
    "a missing optimizer field": ("state", lambda t: t.pop(f"optimizer/{PARAM}/exp_avg_sq"),
                                  f"optimizer state of '{PARAM}' lacks ['exp_avg_sq']"),
    "a float step": ("state", _replace(f"optimizer/{PARAM}/step", lambda t: t.double()),
                     f"tensor 'optimizer/{PARAM}/step' must be a 0-d int64 tensor"),
    "a negative step": ("state", _replace(f"optimizer/{PARAM}/step", lambda t: t - 100),
                        f"tensor 'optimizer/{PARAM}/step' is -94, outside [0, counters.steps = 6]"),
    "an int moment": ("state", _replace(f"optimizer/{PARAM}/exp_avg", lambda t: t.int()),
                      f"tensor 'optimizer/{PARAM}/exp_avg' must be floating point"),
    "moments of different shapes": ("state", _replace(f"optimizer/{PARAM}/exp_avg", lambda t: t[:1].clone()),
                                    f"optimizer state of '{PARAM}' has fields of different shapes"),
    "optimizer state of the wrong shape": (
        "state", lambda t: [t.update({k: t[k].reshape(-1).clone()}) for k in list(t)
                            if k.startswith(f"optimizer/{PARAM}/exp")],
        f"' is float32 [48] but '{PARAM}' in model.safetensors is float32 [8, 6]"),
    "optimizer state of a tensor the model lacks": ("state", lambda t: t.update(
        {k.replace(PARAM, "nope"): t.pop(k) for k in list(t) if k.startswith(f"optimizer/{PARAM}/")}),
        "names 'nope', which model.safetensors does not hold"),
    "ema of another dtype": ("state", _replace(f"ema/{PARAM}", lambda t: t.double()),
                             f"tensor 'ema/{PARAM}' is float64 [8, 6] but '{PARAM}' in model.safetensors is float32"),
    "ema that is not floating point": ("state", _replace(f"ema/{PARAM}", lambda t: t.long()),
                                       f"tensor 'ema/{PARAM}' must be floating point"),
    "best of another shape": ("state", _replace(f"best/{PARAM}", lambda t: t.t().contiguous()),
                              f"tensor 'best/{PARAM}' is float32 [6, 8] but"),
    "best of a tensor the model lacks": ("state", _rename(f"best/{PARAM}", "best/nope"),
                                         "tensor 'best/nope' names 'nope', which model.safetensors does not hold"),
}


@pytest.mark.parametrize("name", sorted(BAD_TENSORS))
def test_crafted_state_tensors_are_one_line_errors_naming_file_and_tensor(ckpt, name):
    which, change, message = BAD_TENSORS[name]
    edit_tensors(ckpt / f"{which}.safetensors", change)
    error = raises_one_line(ValueError, checkpoint.load, ckpt)
    assert error.startswith(f"checkpoint '{ckpt / (which + '.safetensors')}': tensor ") or error.startswith(
        f"checkpoint '{ckpt / (which + '.safetensors')}': optimizer state of "), error
    assert message in error, error


def test_an_unknown_optimizer_in_config_json(ckpt):
    edit_json(ckpt / "config.json", _set("optimizer", "lion"))
    assert "config.json's optimizer must be one of ['adam', 'adamw', 'rmsprop', 'sgd']" in raises_one_line(
        ValueError, checkpoint.load, ckpt)


def test_model_tensors_of_another_dtype_do_not_load_into_the_model(ckpt):
    edit_tensors(ckpt / "model.safetensors", _replace(PARAM, lambda t: t.double()))
    edit_tensors(ckpt / "state.safetensors", lambda t: [t.update({k: t[k].double()}) for k in list(t)
                                                        if k.endswith(PARAM) or f"/{PARAM}/exp" in k])
    tensors, _, _ = checkpoint.load(ckpt)  # consistent in itself
    model = finetune.build("mlp", in_features=6, hidden=[8], num_classes=3, dropout=0.2)
    error = raises_one_line(ValueError, checkpoint.load_model_state, model, tensors, str(ckpt))
    assert f"dtype mismatches ['{PARAM}: checkpoint torch.float64 vs model torch.float32']" in error


@pytest.mark.parametrize("pointer", ["../../etc", "/etc", "step-1", "step-00000006/../../x", "\xff", "x" * 200])
def test_a_latest_pointer_naming_anything_but_a_checkpoint(ckpt, pointer):
    (ckpt.parent / "latest").write_bytes(pointer.encode("latin-1"))
    error = raises_one_line(ValueError, checkpoint.load, ckpt.parent)
    assert error.startswith(f"checkpoint pointer '{ckpt.parent / 'latest'}' ")


def test_a_latest_pointer_to_a_missing_checkpoint(ckpt):
    (ckpt.parent / "latest").write_text("step-00000099\n")
    assert "does not exist" in raises_one_line(FileNotFoundError, checkpoint.load, ckpt.parent)


@pytest.mark.parametrize("name", ["epoch -3", "a str for an int", "a float for an int", "history not a list"])
def test_train_resume_refuses_crafted_state_json_before_the_loop(ckpt, name):
    """The whole path: finetune.train(resume=...) never hands these to C++ (no 'Unable to cast' from pybind11)."""
    filename, change, message = BAD_STATE[name]
    edit_json(ckpt / filename, change)
    with pytest.raises(ValueError, match="^" + re.escape(f"checkpoint '{ckpt / filename}': {message}")):
        finetune.train("mlp", TRAIN, val=VAL, resume=ckpt, **SETTINGS)


@pytest.mark.parametrize("name", ["rng_state of the right size, invalid", "optimizer state of the wrong shape",
                                  "a missing optimizer field", "ema of another dtype"])
def test_train_resume_refuses_crafted_state_tensors_before_the_loop(ckpt, name):
    which, change, message = BAD_TENSORS[name]
    edit_tensors(ckpt / f"{which}.safetensors", change)
    with pytest.raises(ValueError, match=re.escape(message)):
        finetune.train("mlp", TRAIN, val=VAL, resume=ckpt, **SETTINGS)


def test_train_resume_of_an_untouched_copy_is_bitwise_the_uninterrupted_run(base_run, ckpt):
    _, uninterrupted = base_run
    resumed = finetune.train("mlp", TRAIN, val=VAL, resume=ckpt, **SETTINGS)
    assert resumed.steps == uninterrupted.steps == 8
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in uninterrupted.history]
    expected = checkpoint.model_state(uninterrupted.model)
    assert all(torch.equal(expected[k], v) for k, v in checkpoint.model_state(resumed.model).items())


# ---------------------------------------------------------------------------------------------------------------
# preflight


def test_preflight_creates_the_directory_and_leaves_nothing(tmp_path):
    checkpoint.preflight(tmp_path / "a" / "b", torch.nn.Linear(2, 2))
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())


def test_preflight_names_a_directory_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("")
    error = raises_one_line(ValueError, checkpoint.preflight, tmp_path / "file" / "ckpt", torch.nn.Linear(2, 2))
    assert error.startswith(f"checkpoint_dir '{tmp_path / 'file' / 'ckpt'}' cannot be created: [Errno 20] Not a directory")
    error = raises_one_line(ValueError, checkpoint.preflight, tmp_path / "file", torch.nn.Linear(2, 2))
    assert error.startswith(f"checkpoint_dir '{tmp_path / 'file'}' cannot be created: [Errno 17] File exists")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a directory no one can write)")
def test_preflight_names_a_directory_that_cannot_be_written():
    error = raises_one_line(ValueError, checkpoint.preflight, "/proc", torch.nn.Linear(2, 2))
    assert error.startswith("checkpoint_dir '/proc' is not writable: [Errno ")


def test_preflight_names_a_tensor_of_a_dtype_the_format_cannot_hold(tmp_path):
    model = torch.nn.Linear(2, 2)
    model.register_buffer("phase", torch.zeros(2, dtype=torch.complex128))
    error = raises_one_line(ValueError, checkpoint.preflight, tmp_path / "ckpt", model)
    assert error.startswith("checkpoint_dir is set, but the model's state tensor 'phase' has dtype torch.complex128, "
                            "which a safetensors checkpoint cannot hold")
    model = torch.nn.Linear(2, 2)
    model.register_buffer("mask", torch.eye(2).to_sparse())
    assert "state tensor 'mask' has layout torch.sparse_coo" in raises_one_line(
        ValueError, checkpoint.preflight, tmp_path / "ckpt", model)


def test_preflight_accepts_every_dtype_a_checkpoint_holds_and_a_native_model(tmp_path):
    model = torch.nn.Linear(2, 2)
    for dtype in (torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint16, torch.bool,
                  torch.float8_e5m2, torch.complex64):
        model.register_buffer("b_" + str(dtype).removeprefix("torch."), torch.zeros(2, dtype=dtype))
    checkpoint.preflight(tmp_path, model)
    checkpoint.preflight(tmp_path, finetune.build("mlp", in_features=4, num_classes=2))
    checkpoint.write(tmp_path, model, {"counters": {"steps": 1}, "history": [], "best_metrics": {}, "rng_state": None,
                                       "optimizer": {}, "ema": {}, "best": {}}, {}, keep_last=0, is_best=False)
    loaded, _ = checkpoint.load_tensors(tmp_path / "step-00000001" / "model.safetensors")
    assert all(loaded[k].dtype == v.dtype for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------------------------
# fuzz

FUZZ_CASES = 1000


def test_fuzzed_checkpoints_load_what_the_files_say_or_raise_one_line_errors(tmp_path):
    """>= 1,000 mutated copies of a real checkpoint, in a child process: each loads exactly what an independent
    reading of its files says (and resumes in the C++ loop without an error other than ValueError), or raises
    ValueError/FileNotFoundError with a one-line message naming it."""
    pytest.importorskip("hypothesis")
    out = subprocess.run([sys.executable, "-W", "error", "-c", FUZZ_SOURCE, str(tmp_path), str(FUZZ_CASES)],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, (out.returncode, out.stdout[-4000:], out.stderr[-8000:])
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    print("checkpoint fuzz:", summary)
    assert summary["cases"] >= FUZZ_CASES
    assert summary["loaded"] >= 50 and summary["rejected"] >= 300 and summary["resumed"] >= 50, summary


FUZZ_SOURCE = r'''
import json, math, os, random, shutil, struct, sys, time
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import finetune
from finetune import checkpoint, registry

started = time.perf_counter()
torch.set_num_threads(1)
WORK, CASES = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
X = rng.random((96, 6), dtype=np.float32)
Y = (X[:, 0] * 3).astype(np.int64)
TRAIN, VAL = (X[:64], Y[:64]), (X[64:], Y[64:])
SETTINGS = dict(epochs=2, batch_size=16, optimizer="adamw", lr=0.01, ema=0.9, restore_best=True,
                checkpoint_every=3, keep_last=0, seed=3, progress=False, hidden=[8], dropout=0.2)
finetune.train("mlp", TRAIN, val=VAL, checkpoint_dir=WORK / "base", **SETTINGS)
BASE = {p.name: p.read_bytes() for p in (WORK / "base" / "step-00000006").iterdir()}
assert sorted(BASE) == ["config.json", "model.safetensors", "state.json", "state.safetensors"], sorted(BASE)
CASE = WORK / "case"
CKPT = CASE / "step-00000006"
OPTIONS = {**registry.get("mlp").infer_options(*TRAIN), "hidden": [8], "dropout": 0.2}  # the model train built

REF_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64, "BOOL": torch.bool,
              "C64": torch.complex64, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def reference(data):
    """An independent reading of a safetensors file: {name: (dtype, shape, bytes)}, or None where malformed."""
    if len(data) < 8:
        return None
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        return None
    try:
        header = json.loads(data[8:8 + n])
    except Exception:
        return None
    if not isinstance(header, dict):
        return None
    header.pop("__metadata__", None)
    body, out, spans = data[8 + n:], {}, []
    for name, info in header.items():
        try:
            dtype, shape, (b, e) = REF_DTYPES[info["dtype"]], info["shape"], info["data_offsets"]
        except Exception:
            return None
        if not all(type(d) is int and d >= 0 for d in shape) or type(b) is not int or type(e) is not int:
            return None
        if not 0 <= b <= e <= len(body) or e - b != math.prod(shape) * dtype.itemsize:
            return None
        spans.append((b, e))
        out[name] = (dtype, tuple(shape), bytes(body[b:e]))
    position = 0
    for b, e in sorted(spans):
        if b != position:
            return None
        position = e
    return out if position == len(body) else None


def raw(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def same(t, ref):
    return t.dtype == ref[0] and tuple(t.shape) == ref[1] and raw(t) == ref[2]


def canonical(value):
    return json.dumps(value, sort_keys=True)


def split(data):
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, prefix + (i,))


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.integers(-2**65, 2**65),
                    st.sampled_from([2**62, 2**62 + 1, 2**63, 10**400, -1, 0, 1.0, -0.0, 1e308]),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                             max_size=3), max_leaves=5)
DTYPE_NAMES = st.sampled_from(list(REF_DTYPES) + ["F4", "X", "f32", 3, None])
NAMES = st.one_of(st.text(max_size=12), st.sampled_from(
    ["rng_state", "optimizer/x", "optimizer/layers.0.weight/velocity", "optimizer/layers.0.weight/step",
     "ema/nope", "best/layers.0.bias", "ema/layers.0.weight", "other/x", "", "__metadata__"]))


def mutate_bytes(draw, files):
    name = draw(st.sampled_from(["model.safetensors", "state.safetensors", "state.json", "config.json"]))
    data = bytearray(files[name] or b"")
    try:
        span = 8 + struct.unpack("<Q", bytes(data[:8]))[0] if name.endswith("safetensors") else len(data)
    except struct.error:
        span = len(data)
    span = min(span, len(data))
    region = draw(st.sampled_from([(0, 8), (8, span), (span, len(data)), (0, len(data))]))
    lo = min(region[0], max(len(data) - 1, 0))
    hi = max(lo, min(region[1], len(data)) - 1)
    op = draw(st.sampled_from(["set", "flip", "insert", "delete", "truncate", "append"]))
    at = draw(st.integers(lo, hi))
    if op == "set" and at < len(data):
        data[at] = draw(st.integers(0, 255))
    elif op == "flip" and at < len(data):
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif op == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    elif op == "delete":
        del data[at:at + draw(st.integers(1, 16))]
    elif op == "truncate":
        del data[at:]
    else:
        data += draw(st.binary(min_size=1, max_size=16))
    files[name] = bytes(data)
    return f"bytes {op} {name}@{at}"


def mutate_header(draw, files):
    name = draw(st.sampled_from(["model.safetensors", "state.safetensors"]))
    try:
        header, body = split(files[name])
        assert isinstance(header, dict) and header
    except Exception:
        return mutate_bytes(draw, files)
    target = draw(st.sampled_from(sorted(header)))
    info = header[target]
    op = draw(st.sampled_from(["dtype", "shape", "offsets", "offsets_like", "drop", "extra", "rename", "delete",
                               "entry", "metadata"]))
    if op == "dtype" and isinstance(info, dict):
        info["dtype"] = draw(DTYPE_NAMES)
    elif op == "shape" and isinstance(info, dict):
        info["shape"] = draw(st.one_of(st.lists(st.integers(-2, 10), max_size=4), st.lists(st.integers(0, 2**64), max_size=3),
                                       st.just([0]), st.just([2**62, 4]), VALUES))
    elif op == "offsets" and isinstance(info, dict):
        info["data_offsets"] = draw(st.one_of(st.lists(st.integers(-2, len(body) + 8), min_size=2, max_size=2),
                                              st.just([0, 0]), st.lists(st.integers(0, 2**64), max_size=3), VALUES))
    elif op == "offsets_like" and isinstance(info, dict):
        other = header[draw(st.sampled_from(sorted(header)))]
        if isinstance(other, dict):
            info["data_offsets"] = other.get("data_offsets")
    elif op == "drop" and isinstance(info, dict) and info:
        info.pop(draw(st.sampled_from(sorted(info))))
    elif op == "extra" and isinstance(info, dict):
        info[draw(st.text(max_size=4))] = draw(VALUES)
    elif op == "rename":
        header[draw(NAMES)] = header.pop(target)
    elif op == "delete":
        header.pop(target)
    elif op == "entry":
        header[target] = draw(VALUES)
    else:
        header["__metadata__"] = draw(VALUES)
    encoded = json.dumps(header).encode() + b" " * draw(st.integers(0, 8))
    length = max(0, len(encoded) + draw(st.sampled_from([0, 0, 0, 0, 1, -1, 8, -8, 2**40])))
    files[name] = struct.pack("<Q", length) + encoded + body
    return f"header {op} {name}:{target}"


def mutate_tensors(draw, files):
    """Files that are valid safetensors whose tensors are wrong for a checkpoint."""
    name = draw(st.sampled_from(["model.safetensors", "state.safetensors"]))
    try:
        tensors = safetensors.torch.load(files[name])
        assert tensors
    except Exception:
        return mutate_bytes(draw, files)
    target = draw(st.sampled_from(sorted(tensors)))
    t = tensors[target]
    op = draw(st.sampled_from(["dtype", "reshape", "resize", "delete", "rename", "add", "value"]))
    if op == "dtype":
        dtype = draw(st.sampled_from(list(REF_DTYPES.values())))
        try:
            tensors[target] = t.to(dtype)
        except Exception:
            tensors[target] = torch.zeros(t.shape, dtype=dtype)
    elif op == "reshape":
        tensors[target] = t.reshape(-1).clone() if t.dim() != 1 else t.reshape(1, -1).clone()
    elif op == "resize":
        tensors[target] = torch.zeros(max(0, t.numel() + draw(st.sampled_from([-1, 1]))), dtype=t.dtype)
    elif op == "delete":
        tensors.pop(target)
    elif op == "rename":
        tensors[draw(NAMES)] = tensors.pop(target)
    elif op == "add":
        tensors[draw(NAMES)] = torch.zeros(draw(st.lists(st.integers(0, 4), max_size=2)))
    elif t.numel():
        flat = t.reshape(-1).clone()
        if t.dtype == torch.uint8:
            flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.integers(0, 255))
        elif t.dtype == torch.int64:
            flat[0] = draw(st.integers(-2**63, 2**63 - 1))
        elif t.dtype.is_floating_point:
            flat[draw(st.integers(0, flat.numel() - 1))] = draw(st.floats(allow_nan=True, width=32))
        tensors[target] = flat.reshape(t.shape)
    files[name] = safetensors.torch.save(tensors, {"format": "1"})
    return f"tensors {op} {name}:{target}"


def mutate_json(draw, files):
    name = draw(st.sampled_from(["state.json", "state.json", "config.json"]))
    try:
        doc = json.loads(files[name])
    except Exception:
        return mutate_bytes(draw, files)
    path = draw(st.sampled_from(list(paths(doc))))
    op = draw(st.sampled_from(["replace", "replace", "nudge", "delete", "add"]))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if not path:
        doc = draw(VALUES)
    elif op == "delete":
        del parent[path[-1]]
    elif op == "add" and isinstance(parent[path[-1]], dict):
        parent[path[-1]][draw(st.one_of(st.text(max_size=6), st.sampled_from(["epoch", "val_x", "steps"])))] = draw(VALUES)
    elif op == "nudge" and type(parent[path[-1]]) in (int, float):
        parent[path[-1]] = parent[path[-1]] + draw(st.sampled_from([1, -1, 2**62, -7, 0.5]))
    else:
        parent[path[-1]] = draw(VALUES)
    files[name] = json.dumps(doc).encode()
    return f"json {op} {name}:{'.'.join(map(str, path))}"


def mutate_file(draw, files):
    name = draw(st.sampled_from(sorted(BASE)))
    files[name] = draw(st.one_of(st.none(), st.just(b""), st.binary(max_size=40), st.just(b"[" * 50_000),
                                 st.just(b"\xff\xfe\x00"), st.just((files[name] or b"")[: len(files[name] or b"") // 2])))
    return f"file {name}"


POINTERS = st.one_of(st.just(b"step-00000006\n"), st.just(b"step-00000099"), st.just(b"../base/step-00000006"),
                     st.just(b"/etc"), st.just(b""), st.binary(max_size=20), st.just(b"step-00000006" * 10))
MUTATIONS = [mutate_bytes, mutate_bytes, mutate_header, mutate_header, mutate_tensors, mutate_tensors, mutate_json,
             mutate_json, mutate_json, mutate_file]
COUNT = {"cases": 0, "loaded": 0, "rejected": 0, "resumed": 0, "resume_errors": 0}


@st.composite
def cases(draw):
    files = dict(BASE)
    done = [draw(st.sampled_from(MUTATIONS))(draw, files) for _ in range(draw(st.integers(1, 2)))]
    pointer = draw(POINTERS) if draw(st.integers(0, 5)) == 0 else None
    return files, pointer, done


def check(files, pointer, done):
    shutil.rmtree(CASE, ignore_errors=True)
    CKPT.mkdir(parents=True)
    for name, data in files.items():
        if data is not None:
            (CKPT / name).write_bytes(data)
    target = CKPT
    if pointer is not None:
        (CASE / "latest").write_bytes(pointer)
        target = CASE
    COUNT["cases"] += 1
    model = finetune.build("mlp", **OPTIONS)
    try:
        tensors, loop, config = checkpoint.load(target)
        checkpoint.load_model_state(model, tensors, str(CKPT))
    except (ValueError, FileNotFoundError) as error:
        message = str(error)
        assert type(error) in (ValueError, FileNotFoundError), (type(error), message, done)
        assert len(message.splitlines()) == 1 and str(CASE) in message, (message, done)
        COUNT["rejected"] += 1
        return
    COUNT["loaded"] += 1
    # What was loaded is what the files say, read independently of the loader.
    model_ref, state_ref = reference(files["model.safetensors"]), reference(files["state.safetensors"])
    assert model_ref is not None and state_ref is not None, ("loaded a malformed safetensors file", done)
    assert tensors.keys() == model_ref.keys() and all(same(t, model_ref[k]) for k, t in tensors.items()), done
    loaded_state = {f"{g}/{k}": t for g in ("optimizer", "ema", "best") for k, t in loop[g].items()}
    if loop["rng_state"] is not None:
        loaded_state["rng_state"] = loop["rng_state"]
    assert loaded_state.keys() == state_ref.keys(), ("state tensors dropped or invented", done)
    assert all(same(t, state_ref[k]) for k, t in loaded_state.items()), done
    state = json.loads(files["state.json"])
    for key in ("counters", "history", "best_metrics"):
        assert canonical(loop[key]) == canonical(state[key]), (key, done)
    assert canonical(config) == canonical(json.loads(files["config.json"])), done
    # The C++ loop takes it: resumes, or refuses with a ValueError (other settings, a diverged run...).
    COUNT["resumed"] += 1
    try:
        finetune.train("mlp", TRAIN, val=VAL, resume=target, **SETTINGS)
    except ValueError as error:
        assert len(str(error).splitlines()) == 1, (str(error), done)
        COUNT["resume_errors"] += 1


# The same cases every run (CI), unless FINETUNE_FUZZ_RANDOM=1 asks for fresh ones.
@settings(max_examples=CASES, deadline=None, database=None, derandomize=not os.environ.get("FINETUNE_FUZZ_RANDOM"),
          phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
@given(cases())
def fuzz(case):
    check(*case)


check(dict(BASE), None, ["none"])
assert COUNT["loaded"] == 1 and COUNT["resume_errors"] == 0, COUNT
fuzz()
COUNT["seconds"] = round(time.perf_counter() - started, 1)
print(json.dumps(COUNT))
'''


def test_state_json_is_the_cpp_loop_state_field_for_field():
    """checkpoint.py's schema of state.json is the C++ LoopState's and EpochRecord's fields (train.h's X-macros,
    bound as finetune._C classes), and a LoopState survives the files' form unchanged."""
    from finetune import _C

    assert list(checkpoint._COUNTERS) == _C.LoopState.counter_names()
    record = _C.EpochRecord()
    assert set(record.as_dict()) == set(checkpoint._HISTORY)
    state = _C.LoopState()
    state.set_counters({name: (3 if kind is int else 0.5) for name, (kind, _) in checkpoint._COUNTERS.items()})
    record.epoch, record.train_loss, record.val = 2, 0.25, {"loss": 0.5, "accuracy": 0.75}
    state.history = [record]
    state.best_metrics = {"loss": 0.5}
    state.rng_state = torch.get_rng_state()
    state.optimizer = [("fc.weight/momentum_buffer", torch.ones(2, 3))]
    state.best = [("fc.weight", torch.zeros(2, 3))]
    saved = checkpoint.saved_form(state)
    assert saved["counters"]["steps"] == 3 and saved["counters"]["loss_sum"] == 0.5
    assert saved["history"] == [{"epoch": 2, "train_loss": 0.25, "lr": 0.0, "seconds": 0.0, "samples_per_s": 0.0,
                                 "val_accuracy": 0.75, "val_loss": 0.5}]
    again = checkpoint.saved_form(checkpoint.loop_state(saved))
    assert again.keys() == saved.keys()
    for key in saved:
        if key in ("optimizer", "ema", "best"):
            assert again[key].keys() == saved[key].keys()
            assert all(torch.equal(again[key][k], saved[key][k]) for k in saved[key])
        elif key == "rng_state":
            assert torch.equal(again[key], saved[key])
        else:
            assert again[key] == saved[key], key
    assert checkpoint.loop_state({**saved, "rng_state": None}).rng_state is None


def test_a_model_built_by_name_is_saved_and_loaded_with_its_options_and_task(tmp_path):
    """finetune.save / finetune.load: the weights, the options read off the data (an mlp's input and target
    scaling), the task and the shapes of y's and X's examples, so that the loaded model predicts the values the
    saved one did."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32) * np.float32(100.0)
    y = (x @ np.arange(1, 6, dtype=np.float32) + 5e4).astype(np.float32)
    trained = finetune.train("mlp", (x, y), task="regression", epochs=3, optimizer="adamw", lr=1e-2,
                             progress=False).model
    finetune.save(trained, tmp_path / "mlp.safetensors")
    loaded = finetune.load(tmp_path / "mlp.safetensors")
    assert loaded.options == trained.options and loaded.options["target_center"] == pytest.approx([y.mean()])
    np.testing.assert_array_equal(finetune.predict(loaded, x), finetune.predict(trained, x))  # values: task kept
    assert finetune.predict(loaded, x).shape == (120,)  # y's shape kept: one value per row, as y was
    with pytest.raises(ValueError, match=r"X has the shape of one training example, \(5,\)"):  # X's kept too
        finetune.predict(loaded, x[0])
    cnn = finetune.build("cnn", height=8, width=8, num_classes=3)
    finetune.save(cnn, tmp_path / "cnn.safetensors")
    images = rng.random((4, 1, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(finetune.predict(finetune.load(tmp_path / "cnn.safetensors"), images, output="logits"),
                                  finetune.predict(cnn, images, output="logits"))
    with pytest.raises(TypeError, match=r"finetune.save writes a model finetune built by name, got Linear; save an "
                                        r"nn.Module of your own with torch.save\(model.state_dict\(\), path\)"):
        finetune.save(torch.nn.Linear(2, 2), tmp_path / "linear.safetensors")
    checkpoint.save_tensors(tmp_path / "bare.safetensors", {"w": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"holds tensors but no model options: not a file finetune.save wrote"):
        finetune.load(tmp_path / "bare.safetensors")


def test_a_saved_model_keeps_its_dataframe_columns(tmp_path):
    """A model trained on a DataFrame, saved and loaded, still refuses the columns in another order."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    y = (x["a"] > 0).astype(int)
    model = finetune.train("mlp", (x, y), epochs=1, progress=False).model
    finetune.save(model, tmp_path / "m.safetensors")
    loaded = finetune.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(finetune.predict(loaded, x), finetune.predict(model, x))
    with pytest.raises(ValueError, match=r"X's columns are in another order than in training \('c' at position 0"):
        finetune.predict(loaded, x[["c", "a", "b"]])
