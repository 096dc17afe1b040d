"""A data-parallel fine-tune under torchrun, for tests/test_distributed.py.

    torchrun --nproc_per_node=2 dist_worker.py OUT_DIR [--die-at STEP] [--checkpoint DIR] [--variant NAME]

Variants: "recipe" (finetune's recipe, its own validation slice, batch_size 32 // world: the one-process run's
global batch); "recipe-defaults" (the recipe with nothing given: the head as the linear probe); "plain" (SGD, one bucket); "buckets" (AdamW with weight decay, a bucket per parameter,
accumulation, gradual unfreezing and a parameter forward never uses); "nan" (on_nan="skip", an input that
overflows); "batchnorm"; "stop" (only rank 1 asks to stop); "regression"; "streamed" (train_data a torch
Dataset that counts the examples each rank reads).
"""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np
import torch

import finetune
from finetune import checkpoint


class WithUnused(torch.nn.Module):
    """A classifier with a parameter its forward never reaches: only the single-process rules may touch it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        self.unused = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Counted(torch.utils.data.Dataset):
    """Digits as a map-style dataset, counting the examples read in this process."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.targets, self.reads = x, y, 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        self.reads += 1
        return torch.from_numpy(self.x[i]), int(self.targets[i])


def plain(metrics: dict) -> dict:
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in metrics.items()}


def option(name: str, default: str | None = None) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def main() -> None:
    out = sys.argv[1]
    die_at = int(option("--die-at", "-1"))
    directory = option("--checkpoint")
    variant = option("--variant", "plain")
    torch.set_num_threads(1)
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16).astype(np.float32), d.target
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    step_losses = []

    def on_event(kind, info):
        if kind == "step":
            step_losses.append(info["loss"])  # the whole step's loss, on every rank
        if die_at >= 0 and restarts == 0 and rank == 1 and kind == "step" and info["step"] >= die_at:
            os.kill(os.getpid(), signal.SIGKILL)
        # "stop": only rank 1's callback asks to stop, at step 7; both ranks must stop together.
        return variant == "stop" and rank == 1 and kind == "step" and info["step"] >= 7

    torch.manual_seed(0)
    common = dict(sample_fraction=0.9, seed=3, progress=False, dist_timeout=60, callback=on_event, callback_interval=0)
    if variant in ("plain", "stop", "streamed"):
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        settings = dict(epochs=3, batch_size=32 // world, optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine",
                        checkpoint_dir=directory, checkpoint_every=5,
                        resume=directory is not None)
    elif variant in ("recipe", "recipe-defaults"):  # no setting that shapes the training: the recipe runs
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        settings = dict(batch_size=32 // world) if variant == "recipe" else {}
        settings.update(checkpoint_dir=directory, resume=directory is not None)
    elif variant == "buckets":
        model = WithUnused()
        settings = dict(epochs=3, batch_size=16 // world, accumulate=2, optimizer="adamw", lr=3e-3,
                        weight_decay=0.1, freeze=["body.0"], unfreeze_at={1: ["body.0"]}, bucket_mb=1e-3)
    elif variant == "nan":  # one poisoned example: its step is skipped on every rank, as in one process
        x = x.copy()
        x[100, :] = 3e38  # finite, but the first layer overflows to inf and the loss to NaN
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        settings = dict(epochs=2, batch_size=32 // world, optimizer="sgd", lr=0.05, momentum=0.9, on_nan="skip")
    elif variant == "batchnorm":  # running statistics differ by rank until rank 0's are broadcast
        model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                    torch.nn.Linear(32, 10))
        settings = dict(epochs=2, batch_size=32 // world, optimizer="sgd", lr=0.05, momentum=0.9)
    else:  # regression: R² and friends from the ranks' sums
        y = (x @ np.linspace(-1, 1, 64).astype(np.float32) + 2.0).astype(np.float32)
        model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        settings = dict(task="regression", epochs=2, batch_size=32 // world, optimizer="sgd", lr=0.01, momentum=0.9)
    task = settings.get("task", "classification")
    train_data = Counted(x[:1400], y[:1400]) if variant == "streamed" else (x[:1400], y[:1400])
    val = None if variant.startswith("recipe") else (x[1400:], y[1400:])  # the recipe carves its slice, then refits
    result = finetune.train(model, train_data, val=val, **common, **settings)
    # The public evaluate() under torchrun: every rank calls it, each on its shard, all get the whole set's metrics.
    evaluated = finetune.evaluate(model, (x[1400:], y[1400:]), task=task)
    # A split smaller than the world is evaluated whole on every rank (no rank is left with an empty shard).
    evaluated_one = finetune.evaluate(model, (x[1400:1401], y[1400:1401]), task=task)
    # What this rank ends with, and rank 0's model evaluated by itself, unsharded.
    checkpoint.save_tensors(os.path.join(out, f"weights-rank{rank}.safetensors"), model.state_dict())
    alone = finetune.evaluate(model, (x[1400:], y[1400:]), task=task, distributed="off") if rank == 0 else {}
    if rank == 0:
        checkpoint.save_tensors(os.path.join(out, "weights.safetensors"), model.state_dict())
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({"metrics": result.metrics, "history": result.history, "world_size": result.world_size,
                       "steps": result.steps, "stopped": result.stopped, "skipped_steps": result.skipped_steps, "communication_seconds": result.communication_seconds,
                       "allreduce_overlap": result.allreduce_overlap, "step_losses": step_losses,
                       "confusion": None if result.confusion_matrix is None else result.confusion_matrix.tolist(),
                       "evaluated": plain(evaluated), "evaluated_one": plain(evaluated_one),
                       "evaluated_alone": plain(alone), "recipe": result.recipe}, f)
    if variant == "streamed":  # each rank's count: it reads its share of each step alone
        with open(os.path.join(out, f"reads-rank{rank}.json"), "w") as f:
            json.dump({"reads": train_data.reads, "examples": result.train_size * 3}, f)
    # The loop's autograd hooks are gone with it: a backward of the user's own touches no freed state.
    model(torch.from_numpy(x[:4])).sum().backward()


if __name__ == "__main__":
    main()
