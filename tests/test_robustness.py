"""No crash, no hang: corrupt files in subprocesses, fuzzed configs and files, concurrent training in threads."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import torch

import finetune
from finetune import _C, checkpoint

from helpers import mlp

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

# name: (file bytes, python call reading it, expected exception, message) - each run in its own process,
# so that a segfault or abort in C++ would show as a dead process, not a dead test run.
VALID_IDX = b"\x00\x00\x08\x02\x00\x00\x00\x02\x00\x00\x00\x03" + bytes(range(6))
FILE_CASES = {
    "idx truncated": (VALID_IDX[:-2], "_C.read_idx(PATH)", "ValueError", "truncated or corrupt"),
    "idx bad magic": (b"\x01\x02\x03\x04" + VALID_IDX[4:], "_C.read_idx(PATH)", "ValueError", "bad magic"),
    "idx bad type": (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "_C.read_idx(PATH)", "ValueError", "unknown element type"),
    "idx empty": (b"", "_C.read_idx(PATH)", "ValueError", "truncated or corrupt"),
    "idx gz truncated": (gzip.compress(VALID_IDX)[:-12], "_C.read_idx(PATH)", "ValueError", "truncated or corrupt"),
    "idx huge shape": (b"\x00\x00\x08\x01\xff\xff\xff\xff", "_C.read_idx(PATH)", "ValueError|RuntimeError", ""),
    "safetensors empty": (b"", "checkpoint.load_tensors(PATH)", "ValueError", "not a valid safetensors file"),
    "safetensors header past end": (b"\xff" * 8 + b"{}", "checkpoint.load_tensors(PATH)", "ValueError", "header runs past"),
    "safetensors bad json": (b"\x04\x00\x00\x00\x00\x00\x00\x00{{{{", "checkpoint.load_tensors(PATH)", "ValueError", "not a valid"),
    "safetensors data past end": (
        b"\x40\x00\x00\x00\x00\x00\x00\x00" + b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'.ljust(64),
        "checkpoint.load_tensors(PATH)", "ValueError", "runs past the end"),
    "checkpoint state.json garbage": (b"\x00not json", "checkpoint.load(os.path.dirname(PATH))", "ValueError",
                                      "corrupt JSON"),
}


@pytest.mark.parametrize("name", sorted(FILE_CASES))
def test_corrupt_file_raises_in_a_subprocess_without_crashing(tmp_path, name):
    content, call, error, message = FILE_CASES[name]
    path = tmp_path / ("state.json" if "checkpoint" in name else "file.bin")
    path.write_bytes(content)
    if "checkpoint" in name:
        (tmp_path / "config.json").write_text("{}")
    script = textwrap.dedent(f"""
        import os, re, sys
        import torch
        from finetune import _C, checkpoint
        PATH = {str(path)!r}
        try:
            {call}
        except Exception as e:
            ok = re.fullmatch({error!r}, type(e).__name__) and {message!r} in str(e)
            print(type(e).__name__, e)
            sys.exit(0 if ok else 3)
        sys.exit(4)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr[-2000:])


FIELD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True),
                         st.text(max_size=8), st.lists(st.text(max_size=4), max_size=3),
                         st.dictionaries(st.integers(-2, 5), st.lists(st.text(max_size=3), max_size=2), max_size=2))
FUZZ_COUNT = {"configs": 0, "files": 0}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(finetune.TrainConfig.__dataclass_fields__)), FIELD_VALUES, max_size=4))
def test_fuzzed_configs_either_validate_or_raise_clear_errors(changes):
    FUZZ_COUNT["configs"] += 1
    try:
        finetune.TrainConfig(**changes).to_cpp()
    except (ValueError, TypeError) as error:
        assert str(error)  # a message, naming something


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["idx", "safetensors", "idx.gz"]))
def test_fuzzed_files_raise_clear_errors(tmp_path_factory, data, kind):
    FUZZ_COUNT["files"] += 1
    path = tmp_path_factory.mktemp("fuzz") / f"f.{kind}"
    path.write_bytes(gzip.compress(data) if kind == "idx.gz" else data)
    try:
        (checkpoint.load_tensors if kind == "safetensors" else lambda p: _C.read_idx(str(p)))(path)
    except (ValueError, RuntimeError):
        pass


def test_fuzz_counts_reported():
    # Printed with -s, and quoted in the closing note; both fuzz tests above ran first in this module.
    print(f"fuzzed {FUZZ_COUNT['configs']} configs and {FUZZ_COUNT['files']} files, none crashed")
    assert FUZZ_COUNT["configs"] >= 100 and FUZZ_COUNT["files"] >= 100


def test_two_threads_train_concurrently_with_the_gil_released(digits):
    x, y, x_test, y_test = digits
    torch.manual_seed(0)
    initial = [mlp(hidden=64), mlp(hidden=48)]
    sequential = [mlp(hidden=64), mlp(hidden=48)]
    for a, b in zip(sequential, initial):
        a.load_state_dict(b.state_dict())
    settings_ = dict(epochs=15, lr=0.05, progress=False)
    expected = [finetune.train(m, (x, y), val=(x_test, y_test), **settings_).metrics for m in sequential]

    results, errors = [None, None], []

    def run(i):
        try:
            results[i] = finetune.train(initial[i], (x, y), val=(x_test, y_test), **settings_).metrics
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    ticks = 0
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        ticks += 1  # Python keeps running while both loops train in C++
        time.sleep(0.001)
    assert not errors, errors
    assert results == expected
    for a, b in zip(initial, sequential):
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)
    assert ticks > 10
