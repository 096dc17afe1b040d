"""Seeded runs are bitwise identical under memory and I/O pressure, not only on a quiet machine."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# The job of the report: an nn.Sequential 64-64-dropout-10 MLP on digits, AdamW, cosine, batch 16, 6 epochs,
# default threads. Prints a hash of the final weights.
_JOB = textwrap.dedent("""
    import hashlib, numpy as np, torch, finetune
    from sklearn.datasets import load_digits
    d = load_digits()
    x, y = (d.data / 16).astype("float32"), d.target
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(64, 10))
    finetune.train(m, (x, y), optimizer="adamw", lr=3e-3, schedule="cosine", batch_size=16, epochs=6, seed=1,
                   progress=False)
    h = hashlib.sha256()
    for t in m.state_dict().values():
        h.update(t.numpy().tobytes())
    print(h.hexdigest())
""")

# Holds ~4 GiB of touched memory and keeps writing and fsyncing a file until killed.
_PRESSURE = textwrap.dedent("""
    import os, sys, numpy as np
    hold = np.ones(4 * 2**30 // 8)
    block = os.urandom(2**24)
    with open(sys.argv[1], "wb") as f:
        while True:
            for _ in range(32):
                f.write(block)
            f.flush(); os.fsync(f.fileno()); f.seek(0)
""")


def _run_job() -> str:
    out = subprocess.run([sys.executable, "-c", _JOB], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_seeded_runs_are_bitwise_identical_under_memory_and_io_pressure(tmp_path):
    quiet = _run_job()
    pressure = subprocess.Popen([sys.executable, "-c", _PRESSURE, str(tmp_path / "io.bin")])
    try:
        loaded = [_run_job() for _ in range(3)]
    finally:
        pressure.kill()
        pressure.wait()
        (tmp_path / "io.bin").unlink(missing_ok=True)
    assert loaded == [quiet] * 3
