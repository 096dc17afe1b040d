"""A fine-tune run in its own process, for the kill/resume tests (tests/test_checkpoint.py).

    python resume_worker.py CHECKPOINT_DIR OUT.safetensors [--resume] [--pause-in-write] [--recipe]

Prints "step N" after every optimizer step (flushed), so the parent can kill it at a chosen step. With --recipe
the run is finetune's recipe (no setting that shapes the training) and N counts the steps of all its phases.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

import finetune
from finetune import checkpoint


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Dropout(0.3))
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x))


def data():
    rng = np.random.default_rng(0)
    x = rng.random((300, 64), dtype=np.float32)
    y = (x[:, :10].argmax(1) + (x[:, 10] > 0.5)) % 10
    return x, y


SETTINGS = dict(epochs=4, batch_size=16, optimizer="adamw", lr=3e-3, schedule="cosine", warmup=5, accumulate=2,
                ema=0.9, sample_fraction=0.8, checkpoint_every=3, keep_last=2, seed=11, progress=False)


def main() -> None:
    directory, out = sys.argv[1], sys.argv[2]
    if "--pause-in-write" in sys.argv:  # stop inside checkpoint.write, its state file written, for the kill
        save_tensors = checkpoint.save_tensors

        def save_then_pause(path, tensors, metadata=None):
            save_tensors(path, tensors, metadata)
            if Path(path).name == "state.safetensors":
                print(f"writing {Path(path).parent.name}", flush=True)
                time.sleep(30)

        checkpoint.save_tensors = save_then_pause
    torch.manual_seed(0)
    model = Net()
    x, y = data()

    recipe = "--recipe" in sys.argv
    steps = [0]

    def report(kind, info):
        if kind == "step":
            steps[0] += 1
            print(f"step {steps[0] if recipe else info['step']}", flush=True)
            time.sleep(0.01 if recipe else 0.05)  # a window for the parent's kill; numerics are unaffected

    if recipe:  # the recipe's phases, its own validation slice carved from the sample
        finetune.train(model, (x, y), checkpoint_dir=directory, resume="--resume" in sys.argv, callback=report,
                       callback_interval=0, sample_fraction=0.8, seed=11, progress=False)
    else:
        finetune.train(model, (x[:240], y[:240]), val=(x[240:], y[240:]), checkpoint_dir=directory,
                       resume="--resume" in sys.argv, callback=report, callback_interval=0, **SETTINGS)
    checkpoint.save_tensors(out, {k: v for k, v in model.state_dict().items()})
    print("done", flush=True)


if __name__ == "__main__":
    main()
