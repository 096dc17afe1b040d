"""A data-parallel fine-tune under torchrun, for tests/test_distributed.py.

    torchrun --nproc_per_node=2 dist_worker.py OUT_DIR [--die-at STEP] [--checkpoint DIR]
"""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np
import torch

import finetune
from finetune import safetensors


def main() -> None:
    out = sys.argv[1]
    die_at = int(sys.argv[sys.argv.index("--die-at") + 1]) if "--die-at" in sys.argv else None
    directory = sys.argv[sys.argv.index("--checkpoint") + 1] if "--checkpoint" in sys.argv else None
    torch.set_num_threads(1)
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16).astype(np.float32), d.target
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    def maybe_die(kind, info):
        if die_at is not None and restarts == 0 and rank == 1 and kind == "step" and info["step"] >= die_at:
            os.kill(os.getpid(), signal.SIGKILL)

    result = finetune.train(model, (x[:1400], y[:1400]), val=(x[1400:], y[1400:]), epochs=3,
                            batch_size=32 // world, optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine",
                            sample_fraction=0.9, seed=3, progress=False, callback=maybe_die, callback_interval=0,
                            checkpoint_dir=directory, checkpoint_every=5, resume=directory is not None,
                            dist_timeout=60)
    if rank == 0:
        safetensors.save(os.path.join(out, "weights.safetensors"), model.state_dict())
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({"metrics": result.metrics, "history": result.history, "world_size": result.world_size,
                       "steps": result.steps, "communication_seconds": result.communication_seconds}, f)


if __name__ == "__main__":
    main()
