"""Data-parallel runs under torchrun: the c10d process group the C++ loop communicates over.

finetune launches nothing and carries no transport of its own: `torchrun` starts the processes and sets
RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT; torch.distributed's c10d (Gloo on CPU, NCCL on GPU) moves
the tensors. Each step's examples are split over the ranks, so the global batch is
batch_size x accumulate x world_size.
"""

from __future__ import annotations

import datetime
import os
from typing import Any


def launched() -> bool:
    """Whether this process is one of several started by torchrun (or another c10d launcher)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_rank() -> int:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def device_for_rank(device: str) -> str:
    """'cuda' means this rank's own GPU (LOCAL_RANK) in a multi-process run."""
    if device == "cuda" and launched():
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def process_group(mode: str, device: str, timeout_s: float) -> Any:
    """The default process group (initialised here if needed), or None for a single-process run."""
    if mode == "off" or not launched():
        return None
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":  # this rank's GPU is the current one: NCCL's object and barrier calls use it
            import torch

            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        timeout = datetime.timedelta(seconds=timeout_s)
        rank_, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        # torchrun's agent hosts the store; otherwise rank 0 does. Keys live under a prefix per restart, so
        # that a restarted round (--max-restarts) never reads the addresses of the round that failed.
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                              is_master=not agent_store and rank_ == 0, timeout=timeout, multi_tenant=not agent_store)
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend, store=dist.PrefixStore(f"finetune/attempt-{attempt}", store), rank=rank_,
                                world_size=world, timeout=timeout)
    return dist.group.WORLD


def rank_0s(value: Any, group: Any) -> Any:
    """Rank 0's ``value`` on every rank of ``group`` (``value`` itself without one). For a decision every rank
    computes alike (the recipe's range tests and measures): ranks on different CPUs can differ in the last bits,
    and one decision taken two ways would split the run."""
    if group is None:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, group=group, device=_device(group))
    return box[0]


def any_rank(flag: bool, group: Any) -> bool:
    """Whether ``flag`` is true on any rank of ``group`` (``flag`` itself without one): a stop one rank's callback
    asked for, which the loop already made every rank's."""
    if group is None:
        return flag
    import torch.distributed as dist

    flags: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(flags, bool(flag), group=group)
    return any(flags)


def broadcast_state(module: Any, group: Any) -> None:
    """Rank 0's parameters and buffers in ``module`` on every rank of ``group``, in place (nothing without one)."""
    if group is None:
        return
    import torch.distributed as dist

    device = _device(group)
    for tensor in module.state_dict().values():
        if device is None or tensor.device == device:
            dist.broadcast(tensor, src=0, group=group)
        else:  # NCCL moves GPU tensors only: a CPU one (a probe's head) travels through this rank's GPU
            moved = tensor.to(device)
            dist.broadcast(moved, src=0, group=group)
            tensor.copy_(moved)


def _device(group: Any) -> Any:
    """The device a collective of ``group`` moves tensors through: this rank's GPU for NCCL, else None."""
    import torch
    import torch.distributed as dist

    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return None
