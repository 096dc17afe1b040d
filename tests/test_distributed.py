"""Data-parallel training on loopback with torchrun + Gloo: the same weights as one process, faults end cleanly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import dist_worker
from finetune import checkpoint

WORKER = Path(__file__).with_name("dist_worker.py")
pytest.importorskip("sklearn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_program(nproc: int, *program: str, restarts: int = 0, timeout: float = 240):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
           f"--max-restarts={restarts}", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}",
           *program]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def torchrun(out: Path, nproc: int, *args: str, restarts: int = 0, timeout: float = 240):
    return torchrun_program(nproc, str(WORKER), str(out), *args, restarts=restarts, timeout=timeout)


def single(out: Path, *args: str):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    return subprocess.run([sys.executable, str(WORKER), str(out), *args], capture_output=True, text=True, timeout=240,
                          env=env)


def load(out: Path):
    return checkpoint.load_tensors(out / "weights.safetensors")[0], json.loads((out / "result.json").read_text())


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    run = single(out)
    assert run.returncode == 0, run.stderr[-3000:]
    return load(out)


def assert_same_run(two, one):
    (weights, result), (expected_weights, expected) = two, one
    assert result["world_size"] == 2 and expected["world_size"] == 1
    assert (result["steps"], result["skipped_steps"]) == (expected["steps"], expected["skipped_steps"])
    assert weights.keys() == expected_weights.keys()
    for key in expected_weights:
        torch.testing.assert_close(weights[key], expected_weights[key], atol=1e-5, rtol=0, msg=key)
    for a, b in zip(result["history"], expected["history"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    # The reported loss is the whole step's (NaN for a skipped step, on every rank).
    assert result["step_losses"] == pytest.approx(expected["step_losses"], rel=1e-5, nan_ok=True)
    # Validation ran on two shards, its metrics summed from the ranks' counts: the one-process values.
    for key, value in expected["metrics"].items():
        assert result["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert result["confusion"] == expected["confusion"]
    for split in ("evaluated", "evaluated_one"):
        for key, value in expected[split].items():
            if isinstance(value, list):  # confusion matrix, per-class precision and recall
                np.testing.assert_allclose(result[split][key], value, atol=1e-12, err_msg=f"{split} {key}")
            else:
                assert result[split][key] == pytest.approx(value, abs=1e-6), f"{split} {key}"


def test_two_processes_match_one_process(tmp_path, one_process):
    run = torchrun(tmp_path, 2)
    assert run.returncode == 0, run.stderr[-3000:]
    two = load(tmp_path)
    assert_same_run(two, one_process)
    assert two[1]["communication_seconds"] > 0
    assert two[1]["allreduce_overlap"] == 0  # one bucket (10 KiB): its all-reduce can only start as backward ends


@pytest.mark.parametrize("variant", ["buckets", "nan", "regression", "streamed"])
def test_two_processes_match_one_process_in_every_variant(tmp_path, variant):
    # "buckets": every parameter its own bucket, so the all-reduces start one by one from the autograd hooks
    # during backward; accumulation and unfreezing change what is watched; a never-used parameter must keep
    # no gradient (AdamW's weight decay would move it otherwise).
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    one_dir.mkdir(), two_dir.mkdir()
    run = single(one_dir, "--variant", variant)
    assert run.returncode == 0, run.stderr[-3000:]
    run = torchrun(two_dir, 2, "--variant", variant)
    assert run.returncode == 0, run.stderr[-3000:]
    two = load(two_dir)
    assert_same_run(two, load(one_dir))
    if variant == "buckets":
        assert two[1]["allreduce_overlap"] > 0.5, two[1]["allreduce_overlap"]
        torch.manual_seed(0)  # as the worker does before building the model
        initial = dist_worker.WithUnused().state_dict()
        torch.testing.assert_close(two[0]["unused.weight"], initial["unused.weight"], atol=0, rtol=0)
    if variant == "nan":
        assert two[1]["skipped_steps"] == 2  # the poisoned example's step, once per epoch
    if variant == "streamed":  # each rank read its share of every step's examples alone (and, before training, two
        # examples to trace the model with and one to compare shapes with the validation data)
        reads = [json.loads((two_dir / f"reads-rank{rank}.json").read_text()) for rank in (0, 1)]
        assert reads[0]["reads"] + reads[1]["reads"] - 2 * 3 == reads[0]["examples"], reads
        assert max(r["reads"] for r in reads) < 0.51 * reads[0]["examples"], reads


def test_batchnorm_statistics_are_rank_0s_on_every_rank(tmp_path):
    # Batch norm sees each rank's share, so running statistics drift apart; the loop hands rank 0's to every
    # rank before validating, so the sharded metrics are those of the one model rank 0 saves.
    run = torchrun(tmp_path, 2, "--variant", "batchnorm")
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [checkpoint.load_tensors(tmp_path / f"weights-rank{r}.safetensors")[0] for r in (0, 1)]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    result = json.loads((tmp_path / "result.json").read_text())
    for key, value in result["evaluated_alone"].items():
        if not isinstance(value, list):
            assert result["metrics"][key] == pytest.approx(value, abs=1e-6), key
            assert result["evaluated"][key] == pytest.approx(value, abs=1e-6), key
    assert result["confusion"] == result["evaluated_alone"]["confusion_matrix"]


def test_a_stop_asked_by_one_rank_stops_every_rank(tmp_path):
    # Rank 1's callback alone returns True at step 7: the request travels with step 8's gradients, which are
    # dropped, and both ranks end after step 7 with the same weights, instead of rank 0 waiting on rank 1.
    start = time.monotonic()
    run = torchrun(tmp_path, 2, "--variant", "stop", timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert time.monotonic() - start < 60
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["stopped"] and result["steps"] == 7
    ranks = [checkpoint.load_tensors(tmp_path / f"weights-rank{r}.safetensors")[0] for r in (0, 1)]
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key


def test_cli_under_torchrun_matches_one_process(tmp_path):
    # `torchrun -m finetune train CONFIG`: 2 ranks with batch_size=16 are one process with batch_size=32.
    wine = str(Path(__file__).parents[1] / "examples" / "wine.toml")
    settings = ["train.epochs=4", "model.dropout=0"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    one = subprocess.run([sys.executable, "-m", "finetune", "train", wine, *settings, "train.batch_size=32",
                          "--out", str(tmp_path / "one"), "--quiet"], capture_output=True, text=True, timeout=240, env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun_program(2, "-m", "finetune", "train", wine, *settings, "--out", str(tmp_path / "two"), "--quiet")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("test accuracy") == 1  # rank 0 reports
    metrics = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two")}
    assert metrics["two"]["distributed"]["world_size"] == 2
    assert metrics["two"]["distributed"]["global_batch"] == metrics["one"]["distributed"]["global_batch"] == 32
    for split in ("validation", "test"):
        for key, value in metrics["one"][split].items():
            assert metrics["two"][split][key] == pytest.approx(value, abs=1e-6), (split, key)
    weights = {name: checkpoint.load_tensors(tmp_path / name / "model.safetensors")[0] for name in ("one", "two")}
    for key, value in weights["one"].items():
        torch.testing.assert_close(weights["two"][key], value, atol=1e-5, rtol=0, msg=key)


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
    weights, result = load(tmp_path)
    expected_weights, expected = one_process
    for key in expected_weights:  # resumed from step 10, the same end as one uninterrupted process
        torch.testing.assert_close(weights[key], expected_weights[key], atol=1e-5, rtol=0, msg=key)
    for a, b in zip(result["history"], expected["history"], strict=True):  # the partial epoch's loss was kept
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def _decisions(result: dict) -> dict:
    return {d["what"]: d["value"] for d in result["recipe"][1:]}


def _assert_same_decisions(two: dict, one: dict) -> None:
    """The same decisions: rates, epochs, phases run and kept, each phase's best epoch (its validation loss and phase
    the paired tests' statistics to float rounding: two ranks' gradients are averaged where one process averages one
    batch)."""
    a, b = _decisions(two), _decisions(one)
    assert a.keys() == b.keys()
    for key, value in b.items():
        if key.endswith(".result"):
            assert {k: v for k, v in a[key].items() if k not in ("val_loss", "compared")} == \
                   {k: v for k, v in value.items() if k not in ("val_loss", "compared")}, key
            assert a[key]["val_loss"] == pytest.approx(value["val_loss"], rel=1e-5), key
        elif key.endswith((".gain", ".full_gain")):  # the paired tests' statistic, per-example losses of the same rounding
            assert a[key] == pytest.approx(value, rel=1e-3, abs=1e-6), key
        else:
            assert a[key] == value, key


@pytest.fixture(scope="module")
def two_process_recipe(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe-two")
    run = torchrun(out, 2, "--variant", "recipe")
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def test_the_recipe_under_torchrun_is_the_one_process_recipe(tmp_path, two_process_recipe):
    """finetune's recipe under torchrun: 2 ranks with batch_size=16 take the decisions one process with
    batch_size=32 takes (the range tests step at the global batch; rank 0's measures decide) and end with its
    weights to float rounding, the same weights on every rank."""
    run = single(tmp_path, "--variant", "recipe")
    assert run.returncode == 0, run.stderr[-3000:]
    (weights, two), (expected_weights, one) = load(two_process_recipe), load(tmp_path)
    assert two["world_size"] == 2 and two["recipe"][0]["value"] == "auto"
    _assert_same_decisions(two, one)
    assert {"full", "refit"} <= {key.split(".")[0] for key in _decisions(two)}
    for key in expected_weights:
        torch.testing.assert_close(weights[key], expected_weights[key], atol=1e-4, rtol=0, msg=key)
    ranks = [checkpoint.load_tensors(two_process_recipe / f"weights-rank{r}.safetensors")[0] for r in (0, 1)]
    assert all(torch.equal(ranks[0][key], ranks[1][key]) for key in ranks[0])


def test_the_recipe_with_nothing_given_under_torchrun_fits_its_probe_once_for_all_ranks(tmp_path):
    run = torchrun(tmp_path, 2, "--variant", "recipe-defaults")
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert _decisions(result)["head.fit"] == "linear probe" and result["world_size"] == 2
    assert result["evaluated_alone"]["accuracy"] > 0.85
    ranks = [checkpoint.load_tensors(tmp_path / f"weights-rank{r}.safetensors")[0] for r in (0, 1)]
    assert all(torch.equal(ranks[0][key], ranks[1][key]) for key in ranks[0])


def test_a_recipe_rank_killed_restarts_and_resumes_to_the_same_end(tmp_path, two_process_recipe):
    """Rank 1 killed at step 30 of the recipe's first phase; torchrun restarts the job and the recipe resumes from
    its checkpoint directory (resume=True): the weights and decisions of the run never killed."""
    run = torchrun(tmp_path, 2, "--variant", "recipe", "--die-at", "30", "--checkpoint", str(tmp_path / "ckpt"),
                   restarts=3)
    assert run.returncode == 0, run.stderr[-3000:]
    (weights, resumed), (expected_weights, expected) = load(tmp_path), load(two_process_recipe)
    assert resumed["recipe"][0]["reason"] == "resumed: checkpoint_dir holds a recipe='auto' run"
    assert _decisions(resumed) == _decisions(expected)
    for key in expected_weights:
        torch.testing.assert_close(weights[key], expected_weights[key], atol=1e-6, rtol=0, msg=key)
