"""Nothing lost: checkpoints, exact resume after SIGKILL/SIGTERM/Ctrl-C, kills during a write, the NaN guard."""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import finetune
from finetune import checkpoint

from helpers import mlp

WORKER = Path(__file__).with_name("resume_worker.py")


def start(directory: Path, out: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), str(directory), str(out), *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def run_until(proc: subprocess.Popen, marker: str, sig: int) -> None:
    """Reads the worker's output until `marker`, then sends `sig`."""
    for line in proc.stdout:
        if line.strip() == marker or (marker == "writing" and line.startswith(marker)):
            proc.send_signal(sig)
            break
    proc.communicate(timeout=120)


def finish(directory: Path, out: Path, *flags: str) -> dict[str, torch.Tensor]:
    proc = start(directory, out, *flags)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    return checkpoint.load_tensors(out)[0]


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    root = tmp_path_factory.mktemp("reference")
    return finish(root / "ckpt", root / "weights.safetensors")


KILL_STEPS = sorted(random.Random(2026).sample(range(2, 24), 3))


@pytest.mark.parametrize("step", KILL_STEPS)
def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(tmp_path, uninterrupted, step):
    proc = start(tmp_path / "ckpt", tmp_path / "w.safetensors")
    run_until(proc, f"step {step}", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    resumed = finish(tmp_path / "ckpt", tmp_path / "w.safetensors", "--resume")
    assert_bitwise_equal(resumed, uninterrupted)


def test_sigterm_saves_the_step_then_resume_is_bitwise_identical(tmp_path, uninterrupted):
    proc = start(tmp_path / "ckpt", tmp_path / "w.safetensors")
    run_until(proc, "step 7", signal.SIGTERM)
    assert proc.returncode != 0
    counters = json.loads((checkpoint.find(tmp_path / "ckpt") / "state.json").read_text())["counters"]
    assert counters["steps"] >= 7  # the interrupt checkpoint, not only the periodic one at step 6
    resumed = finish(tmp_path / "ckpt", tmp_path / "w.safetensors", "--resume")
    assert_bitwise_equal(resumed, uninterrupted)


def test_kill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, uninterrupted):
    proc = start(tmp_path / "ckpt", tmp_path / "w.safetensors", "--pause-in-write")
    # the first write pauses in step-00000003; let it finish? no: kill inside the very first write
    run_until(proc, "writing", signal.SIGKILL)
    assert checkpoint.find(tmp_path / "ckpt") is None  # nothing complete yet, nothing half-loaded
    assert list((tmp_path / "ckpt").glob(".step-*.tmp-*"))  # the torn write is a hidden temp dir
    # now let a first checkpoint complete, and kill inside the second write
    proc = start(tmp_path / "ckpt", tmp_path / "w.safetensors")
    run_until(proc, "step 4", signal.SIGKILL)
    before = checkpoint.find(tmp_path / "ckpt")
    assert before is not None and before.name == "step-00000003"
    proc = start(tmp_path / "ckpt", tmp_path / "w.safetensors", "--resume", "--pause-in-write")
    run_until(proc, "writing", signal.SIGKILL)
    assert checkpoint.find(tmp_path / "ckpt") == before
    checkpoint.load(before)  # still loads
    resumed = finish(tmp_path / "ckpt", tmp_path / "w.safetensors", "--resume")
    assert_bitwise_equal(resumed, uninterrupted)


def test_ctrl_c_in_process_saves_a_checkpoint_and_resume_matches(tmp_path, digits):
    x, y, x_test, y_test = digits
    settings = dict(epochs=3, batch_size=32, lr=0.05, schedule="onecycle", progress=False, seed=4)
    torch.manual_seed(0)
    reference = mlp()
    model = mlp()
    model.load_state_dict(reference.state_dict())
    finetune.train(reference, (x, y), val=(x_test, y_test), **settings)

    def interrupt(kind, info):
        if kind == "step" and info["step"] == 50:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune.train(model, (x, y), val=(x_test, y_test), checkpoint_dir=tmp_path, callback=interrupt,
                       callback_interval=0, **settings)
    assert (tmp_path / "latest").read_text().strip() == "step-00000050"
    result = finetune.train(model, (x, y), val=(x_test, y_test), checkpoint_dir=tmp_path, resume=True, **settings)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)
    assert len(result.history) == 3


def test_ctrl_c_on_an_epochs_last_step_then_resume_reports_the_rate_that_epoch_ran_at(tmp_path, digits):
    """Interrupted after the last step of an epoch, a resumed run has no step left in it: the epoch's record still
    shows the scheduled rate its last step ran at (it showed the base rate, the schedule not yet applied)."""
    x, y, x_test, y_test = digits
    settings = dict(epochs=3, batch_size=32, lr=0.05, schedule="cosine", warmup=0.1, progress=False, seed=4)
    steps_per_epoch = -(-len(y) // 32)
    torch.manual_seed(0)
    model = mlp()
    reference = finetune.train(copy.deepcopy(model), (x, y), val=(x_test, y_test), **settings)

    def interrupt(kind, info):
        if kind == "step" and info["step"] == steps_per_epoch:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune.train(model, (x, y), val=(x_test, y_test), checkpoint_dir=tmp_path, callback=interrupt,
                       callback_interval=0, **settings)
    result = finetune.train(model, (x, y), val=(x_test, y_test), checkpoint_dir=tmp_path, resume=True, **settings)
    assert [h["lr"] for h in result.history] == [h["lr"] for h in reference.history]
    assert result.history[0]["lr"] < settings["lr"]  # the cosine had moved off the base rate


def test_checkpoint_directory_contents_and_pruning(tmp_path, digits):
    x, y, x_test, y_test = digits
    result = finetune.train("mlp", (x, y), val=(x_test, y_test), epochs=4, checkpoint_dir=tmp_path, keep_last=2,
                            monitor="val_accuracy", progress=False)
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    latest = (tmp_path / "latest").read_text().strip()
    best = (tmp_path / "best").read_text().strip()
    kept = {latest, best} | set(sorted(n for n in names if n.startswith("step-"))[-2:])
    assert set(names) == kept | {"latest", "best"}
    assert best == f"step-{(result.best_epoch + 1) * result.steps // 4:08d}"
    ckpt = tmp_path / latest
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors", "state.json",
                                                    "state.safetensors"]
    saved = json.loads((ckpt / "config.json").read_text())
    assert saved == json.loads(json.dumps(result.config.to_dict()))
    tensors, meta = checkpoint.load_tensors(ckpt / "model.safetensors")
    assert meta == {"format": "1"}
    assert all(torch.equal(tensors[k], v) for k, v in result.model.state_dict().items())
    # a finished run resumed trains no further and returns the same history
    again = finetune.train("mlp", (x, y), val=(x_test, y_test), epochs=4, checkpoint_dir=tmp_path, resume=True,
                           keep_last=2, monitor="val_accuracy", progress=False)
    assert again.history == result.history and again.steps == result.steps


def test_resume_refuses_other_settings_and_other_models(tmp_path, digits):
    x, y, _, _ = digits
    finetune.train("mlp", (x, y), epochs=1, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"written with other settings \(lr: checkpoint 0.01 vs now 0.1\)"):
        finetune.train("mlp", (x, y), epochs=1, lr=0.1, checkpoint_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match=r"does not fit this model: missing keys \['0.bias', '0.weight'.*unexpected keys \['center', 'layers"):
        finetune.train(mlp(), (x, y), epochs=1, checkpoint_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match=r"resume: no checkpoint at '.*nowhere'"):
        finetune.train("mlp", (x, y), epochs=1, resume=tmp_path / "nowhere", progress=False)
    with pytest.raises(ValueError, match=r"resume=True needs checkpoint_dir"):
        finetune.train("mlp", (x, y), epochs=1, resume=True, progress=False)


def test_newer_format_and_corrupt_files_are_clear_errors(tmp_path, digits):
    x, y, _, _ = digits
    finetune.train("mlp", (x, y), epochs=1, checkpoint_dir=tmp_path, progress=False)
    ckpt = checkpoint.find(tmp_path)
    state = json.loads((ckpt / "state.json").read_text())
    (ckpt / "state.json").write_text(json.dumps({**state, "format": 99}))
    with pytest.raises(ValueError, match=r"has format version 99; this finetune reads version 1"):
        checkpoint.load(tmp_path)
    (ckpt / "state.json").write_text(json.dumps(state))
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors' is not a valid safetensors file"):
        checkpoint.load(tmp_path)


def test_safetensors_round_trip_all_dtypes(tmp_path):
    tensors = {str(dtype): (torch.arange(12) % 3).to(dtype).reshape(3, 4) for dtype in
               (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
                torch.int8, torch.uint8, torch.bool, torch.complex64)}
    tensors["empty"] = torch.zeros(0, 5)
    tensors["scalar"] = torch.tensor(3.5)
    checkpoint.save_tensors(tmp_path / "t.safetensors", tensors, {"k": "v"})
    loaded, meta = checkpoint.load_tensors(tmp_path / "t.safetensors")
    assert meta == {"k": "v"}
    for key, value in tensors.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key


def test_on_nan_stop_names_the_step_and_keeps_the_checkpoint(tmp_path, digits):
    x, y, _, _ = digits
    x = x.copy()
    with pytest.raises(ValueError, match=r"non-finite loss or gradient at epoch 0, step \d+ of \d+ \(run step \d+\), "
                                         r"training examples \[\d+, .*\(on_nan='stop'\): a loss that grew until it "
                                         r"overflowed means a rate too high \(lr=1e\+30, optimizer='sgd'\)"):
        finetune.train("mlp", (x, y), epochs=2, lr=1e30, momentum=0.0, progress=False)
    finetune.train("mlp", (x, y), epochs=1, checkpoint_dir=tmp_path, progress=False)
    before = checkpoint.find(tmp_path)
    # a run that diverges in its second epoch: the first epoch's checkpoint stays the latest, intact
    with pytest.raises(ValueError, match=r"non-finite loss or gradient at epoch 1"):
        _diverge_after_first_epoch(x, y, tmp_path / "div")
    assert checkpoint.find(tmp_path / "div").name == "step-00000040"
    checkpoint.load(tmp_path / "div")
    assert checkpoint.find(tmp_path) == before


def _diverge_after_first_epoch(x, y, directory):
    """An nn.Module whose forward returns inf from the second epoch on (a 'diverging run')."""

    class Diverges(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 10)
            self.register_buffer("calls", torch.zeros((), dtype=torch.long))

        def forward(self, x):
            self.calls += 1
            out = self.linear(x)
            return out * torch.where(self.calls > 45, torch.tensor(float("inf")), torch.tensor(1.0))

    return finetune.train(Diverges(), (x, y), epochs=3, checkpoint_dir=directory, progress=False)


def test_on_nan_skip_counts_and_continues(digits):
    x, y, x_test, y_test = digits

    class Spiky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 10)
            self.register_buffer("calls", torch.zeros((), dtype=torch.long))

        def forward(self, x):
            scale = torch.ones(())
            if self.training:
                self.calls += 1
                if bool(self.calls % 10 == 0):
                    scale = torch.full((), float("nan"))
            return self.linear(x) * scale

    result = finetune.train(Spiky(), (x, y), val=(x_test, y_test), epochs=2, on_nan="skip", lr=0.05, progress=False)
    assert result.skipped_steps == result.steps // 10
    assert np.isfinite(result.history[-1]["train_loss"]) and result.metrics["accuracy"] > 0.5


def test_resuming_a_run_a_callback_stopped_says_that_nothing_is_left_to_train(tmp_path, caplog):
    """A run a callback stopped (or early stopping ended) is complete: resume=True trains nothing more, and says so
    rather than pass for a resumed run."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype(np.float32), np.arange(64) % 2
    settings = dict(epochs=6, lr=0.05, optimizer="adamw", checkpoint_dir=tmp_path, checkpoint_every="epoch",
                    progress=False, recipe="none")
    torch.manual_seed(0)
    stopped = finetune.train(mlp(6, 8, 2), (x, y), callback=lambda kind, info: kind == "epoch" and info["epoch"] >= 1,
                             **settings)
    assert len(stopped.history) == 2
    torch.manual_seed(0)
    with caplog.at_level("WARNING", logger="finetune"):
        resumed = finetune.train(mlp(6, 8, 2), (x, y), resume=True, **settings)
    assert len(resumed.history) == 2
    assert "holds a run that ended after 2 of its 6 epochs" in caplog.text and "trains nothing further" in caplog.text
