"""Small models the tests share."""

from __future__ import annotations

import torch


def mlp(in_features: int = 64, hidden: int = 32, out: int = 10) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(in_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out))
