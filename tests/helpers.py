"""Small models and the plain PyTorch reference loop the tests share."""

from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F

from finetune import _C
from finetune.config import TrainConfig


def mlp(in_features: int = 64, hidden: int = 32, out: int = 10) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(in_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out))


def batches(y: torch.Tensor, cfg: TrainConfig) -> Iterator[torch.Tensor]:
    """The example indices of each batch finetune's loop draws for `cfg`, in order: the C++ sampler's sample and
    epoch orders, cut into batches of cfg.batch_size."""
    subset = _C.sample_indices(y, cfg.to_cpp())
    for epoch in range(cfg.epochs):
        order = _C.epoch_order(subset, cfg.seed, epoch, cfg.shuffle)
        for start in range(0, len(order), cfg.batch_size):
            yield order[start:start + cfg.batch_size]


def torch_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
               optimizer: torch.optim.Optimizer, scheduler: Any = None) -> None:
    """What finetune's loop does for `cfg`, written with torch.optim: the same batches in the same order
    (the C++ sampler's), cross-entropy, a step per batch, the scheduler stepped after each."""
    for idx in batches(y, cfg):
        optimizer.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()


def decisions(result: Any) -> dict[str, dict]:
    """A result's recipe decisions by what they decide: {"full.lr": {"what", "value", "reason"}, ...}."""
    return {d["what"]: d for d in result.recipe}
