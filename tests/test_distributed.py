"""Data-parallel training on loopback with torchrun + Gloo: the same weights as one process, faults end cleanly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from finetune import safetensors

WORKER = Path(__file__).with_name("dist_worker.py")
pytest.importorskip("sklearn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(out: Path, nproc: int, *args: str, restarts: int = 0, timeout: float = 240):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
           f"--max-restarts={restarts}", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
           str(WORKER), str(out), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def single(out: Path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    return subprocess.run([sys.executable, str(WORKER), str(out)], capture_output=True, text=True, timeout=240, env=env)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    run = single(out)
    assert run.returncode == 0, run.stderr[-3000:]
    return safetensors.load(out / "weights.safetensors")[0], json.loads((out / "result.json").read_text())


def test_two_processes_match_one_process(tmp_path, one_process):
    run = torchrun(tmp_path, 2)
    assert run.returncode == 0, run.stderr[-3000:]
    weights, _ = safetensors.load(tmp_path / "weights.safetensors")
    result = json.loads((tmp_path / "result.json").read_text())
    expected_weights, expected = one_process
    assert result["world_size"] == 2 and expected["world_size"] == 1
    assert result["steps"] == expected["steps"]
    for key in expected_weights:
        torch.testing.assert_close(weights[key], expected_weights[key], atol=1e-5, rtol=0, msg=key)
    for key, value in expected["metrics"].items():
        assert result["metrics"][key] == pytest.approx(value, abs=1e-6), key
    for a, b in zip(result["history"], expected["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    assert result["communication_seconds"] > 0


def test_a_dead_rank_makes_the_others_fail_without_hanging(tmp_path):
    start = time.monotonic()
    run = torchrun(tmp_path, 2, "--die-at", "5", timeout=180)
    elapsed = time.monotonic() - start
    assert run.returncode != 0
    assert elapsed < 120, elapsed
    assert "SIGKILL" in run.stderr or "Signal 9" in run.stderr or "exitcode" in run.stderr, run.stderr[-2000:]


def test_max_restarts_resumes_from_the_last_checkpoint_and_finishes(tmp_path, one_process):
    # The restarted round finds its peers under a fresh store prefix (finetune/distributed.py): without it,
    # Gloo sometimes dialled the dead round's addresses ("connectFullMesh ... Connection refused").
    run = torchrun(tmp_path, 2, "--die-at", "12", "--checkpoint", str(tmp_path / "ckpt"), restarts=3, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    weights, _ = safetensors.load(tmp_path / "weights.safetensors")
    expected_weights, _ = one_process
    for key in expected_weights:  # resumed from step 10, the same end as one uninterrupted process
        torch.testing.assert_close(weights[key], expected_weights[key], atol=1e-5, rtol=0, msg=key)
