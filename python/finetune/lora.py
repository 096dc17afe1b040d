"""LoRA (Hu et al. 2021): low-rank adapters on a model's nn.Linear layers, trained in the C++ loop, merged at the end.

Each targeted layer ``W`` becomes ``W x + B A dropout(x) * alpha / r`` with ``A`` (r x in) and ``B`` (out x r)
the only trainable weights besides the head; ``B`` starts at zero, so training starts from the model as it is.
The layout and the numbers are PEFT's ``lora.Linear`` (``base_layer``, ``lora_A``, ``lora_B``, ``lora_dropout``,
Kaiming-uniform ``A``), so the same initial adapters train to the same weights (tests/test_lora.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch

DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.0, "targets": ["query", "value"], "merge": True}


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("query", "value")  # module names: a name, its last part(s), or a regex
    merge: bool = True  # merge the adapters into the weights after training (False: keep them as modules)

    @staticmethod
    def parse(value: Any) -> "LoraSettings":
        """``lora=`` as train() takes it: True (the defaults) or a dict of some of DEFAULTS' keys."""
        if value is True:
            value = {}
        if not isinstance(value, dict):
            raise TypeError(f"lora must be True or a dict with keys {sorted(DEFAULTS)}, got {type(value).__name__}")
        unknown = sorted(set(value) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown lora key(s) {unknown}; known keys: {sorted(DEFAULTS)}")
        merged = {**DEFAULTS, **value}
        r, alpha, dropout, targets = merged["r"], merged["alpha"], merged["dropout"], merged["targets"]
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"lora r must be an int >= 1, got {r!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"lora alpha must be > 0, got {alpha!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"lora dropout must be in [0, 1), got {dropout!r}")
        if isinstance(targets, str) or not targets or not all(isinstance(t, str) and t for t in targets):
            raise ValueError(f"lora targets must be a non-empty list of module names or patterns, got {targets!r}")
        if not isinstance(merged["merge"], bool):
            raise ValueError(f"lora merge must be True or False, got {merged['merge']!r}")
        return LoraSettings(r, float(alpha), float(dropout), tuple(targets), merged["merge"])


class LoraLinear(torch.nn.Module):
    """An ``nn.Linear`` (frozen) plus a trainable low-rank update, as PEFT's ``lora.Linear`` computes it."""

    def __init__(self, base: torch.nn.Linear, r: int, alpha: float, dropout: float,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.base_layer = base
        self.lora_dropout = torch.nn.Dropout(dropout) if dropout > 0 else torch.nn.Identity()
        self.lora_A = torch.nn.Linear(base.in_features, r, bias=False, device="meta")
        self.lora_B = torch.nn.Linear(r, base.out_features, bias=False, device="meta")
        self.scaling = alpha / r
        a = torch.empty(r, base.in_features)
        torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)  # PEFT's init_lora_weights=True
        factory = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A.weight = torch.nn.Parameter(a.to(**factory))
        self.lora_B.weight = torch.nn.Parameter(torch.zeros(base.out_features, r, **factory))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def merged(self) -> torch.nn.Linear:
        """The base layer with the update added to its weight (W + B A alpha / r)."""
        with torch.no_grad():
            self.base_layer.weight += (self.lora_B.weight @ self.lora_A.weight) * self.scaling
        return self.base_layer


def matches(name: str, target: str) -> bool:
    """A module name matches a target equal to it, to its last dotted part(s) (PEFT's suffix match: "query"
    matches "encoder.layer.0.attention.self.query"), or as a regular expression over the whole name."""
    if name == target or name.endswith("." + target):
        return True
    try:
        return re.fullmatch(target, name) is not None
    except re.error as error:
        raise ValueError(f"lora target {target!r} is not a valid regular expression: {error}") from None


def add_adapters(model: torch.nn.Module, settings: LoraSettings, head: str | None, seed: int) -> list[str]:
    """Puts a LoraLinear on every nn.Linear that a target matches (never under ``head``, which trains whole);
    the adapters' initial weights are seeded by ``seed``. Layers that already are finetune's LoraLinear are
    kept as they are (adapters added earlier, e.g. with :func:`add_adapters` directly). Returns the adapted
    module names; a target that matches no nn.Linear is a ValueError listing some that exist."""
    linears = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and name
               and not _under(name, head) and not _inside_adapter(model, name)]
    adapted = [name for name, module in model.named_modules() if isinstance(module, LoraLinear)]
    chosen: list[str] = []
    for target in settings.targets:
        hits = [n for n in linears if matches(n, target)] + [n for n in adapted if matches(n, target)]
        if not hits and not linears:
            raise ValueError("lora= adapts nn.Linear layers, and the model has none"
                             + (f" outside its head {head!r} (which trains whole)" if head else "")
                             + ": fine-tune it without lora=")
        if not hits:
            default = " (lora's default targets: pass lora={'targets': [...]} naming the layers)" \
                if settings.targets == LoraSettings().targets else ""
            raise ValueError(f"lora target {target!r}{default} matches no nn.Linear layer of the model (the head "
                             f"{head!r} excluded); its Linear layers include {linears[:6]}")
        chosen += [n for n in hits if n not in chosen]
    generator = torch.Generator().manual_seed(seed)  # the adapters' initial weights are part of a seeded run
    for name in chosen:
        if name in adapted:
            continue
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, LoraLinear(getattr(owner, child), settings.r, settings.alpha, settings.dropout, generator))
    return chosen


def is_trained_name(name: str, head: str | None) -> bool:
    """A parameter (or buffer) that LoRA trains: an adapter's weight, or part of the head."""
    return ".lora_A." in name or ".lora_B." in name or _under(name, head)


def trainable(head: str | None) -> Any:
    """A freeze predicate: everything but the adapters' weights and the head is frozen."""
    return lambda name: not is_trained_name(name, head)


def holds_adapters(model: Any) -> bool:
    """Whether ``model`` is an nn.Module with a LoraLinear in it (adapters added and not merged)."""
    return isinstance(model, torch.nn.Module) and any(isinstance(m, LoraLinear) for m in model.modules())


def merge(model: torch.nn.Module) -> list[str]:
    """Replaces every LoraLinear in ``model`` by its base layer with the update merged in; returns their names."""
    names = [name for name, module in model.named_modules() if isinstance(module, LoraLinear)]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, getattr(owner, child).merged())
    return names


def _under(name: str, prefix: str | None) -> bool:
    return prefix is not None and (name == prefix or name.startswith(prefix + "."))


def _inside_adapter(model: torch.nn.Module, name: str) -> bool:
    """``name`` is part of a LoraLinear (its base layer or its A/B)."""
    parts = name.split(".")
    return any(isinstance(model.get_submodule(".".join(parts[:i])), LoraLinear) for i in range(1, len(parts)))
