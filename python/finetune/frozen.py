"""Frozen features computed once: while only a model's head trains, the frozen part runs once per example.

When every parameter that trains lives in one submodule (the head) and the rest of the model gives that
submodule the same input for an example every epoch, running the rest again each step is wasted work: the
head's inputs are computed once (``cache_frozen``) and the C++ loop trains the head alone on them. The run is
the uncached run: the same sample, order, steps and weights (tests/test_frozen.py, to 1e-5). ``plan`` decides,
and says why not where it cannot be exact: the body changes during the run (unfreezing, checkpoints of the whole
model), the inputs change (augmentation), or the body's output depends on more than the example (dropout or
batch statistics in training mode -- checked by running it, not guessed from module types).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any

import torch

from . import _C, heads, models, padding, streams

PROBE_EXAMPLES = 32  # the examples run to check that the body's output is fixed (twice in training mode, once in eval)


@dataclass
class FrozenFeatures:
    """The head, its name in the model, what it reads for each example, and its own parameters kept frozen."""

    name: str
    module: torch.nn.Module
    train: list[torch.Tensor]
    val: list[torch.Tensor] | None
    freeze: list[str]  # exact names under the head of its parameters that `freeze` holds


class NotExact(Exception):
    """Why a cached run would not be the uncached one (or would not fit)."""


def plan(model: Any, inputs: list[torch.Tensor], val_inputs: list[torch.Tensor] | None, cfg: Any,
         resume: Any, mask_input: int = -1) -> tuple[FrozenFeatures | None, dict[str, Any]]:
    """(the features and the head to train on them, or None; {"used", "reason"} for ``Result.cache_frozen``).
    ``cfg.cache_frozen``: "auto" caches where it is exact and within ``cache_frozen_gb``; True insists (a
    ValueError saying why it cannot); False never. With ``mask_input`` (finetune.padding) the features are computed
    on batches cut to their longest row, as the uncached run's forward would be."""
    if cfg.cache_frozen is False:
        return None, {"used": False, "reason": "cache_frozen=False"}
    try:
        found = _features(model, inputs, val_inputs, cfg, resume, mask_input)
    except NotExact as why:
        if cfg.cache_frozen is True:
            raise ValueError(f"cache_frozen=True, but the frozen part cannot be computed once: {why}") from None
        return None, {"used": False, "reason": str(why)}
    examples = found.train[0].shape[0] + (found.val[0].shape[0] if found.val is not None else 0)
    return found, {"used": True, "reason": f"only {found.name!r} trains and the rest gives it the same input for an "
                   f"example every epoch: computed once for {examples} examples "
                   f"({found.train[0][0].numel()} values each), the head trains on them"}


def _features(model: Any, inputs: list[torch.Tensor], val_inputs: list[torch.Tensor] | None, cfg: Any,
              resume: Any, mask_input: int) -> FrozenFeatures:
    why_not = streams.varying(inputs) or streams.varying(val_inputs)
    if why_not is not None:
        raise NotExact(why_not)
    module = models.eager(model)
    if module is None:
        raise NotExact(f"a {type(model).__name__} runs outside Python, where no hook reads its head's input")
    if cfg.task == "ranking":
        raise NotExact("ranking scores each interaction against items drawn every step, through the whole model")
    if resume or cfg.checkpoint_dir:
        raise NotExact("checkpoints (checkpoint_dir, resume) hold the whole model's training state")
    if os.environ.get("WORLD_SIZE", "1") not in ("", "1") and cfg.distributed != "off":
        raise NotExact("a data-parallel run (torchrun) runs the whole model on each rank's share")
    if cfg.augment_crop or cfg.augment_flip:
        raise NotExact("augmentation (augment_crop, augment_flip) changes the inputs every epoch")
    if cfg.unfreeze_at:
        raise NotExact("unfreeze_at trains more layers later in the run")
    if cfg.precision != "fp32":
        raise NotExact(f"precision={cfg.precision!r} runs the frozen part under autocast every step")
    if cfg.group_by_length:
        raise NotExact("group_by_length orders the batches by token lengths, which the features do not carry")
    names = [n for n, _ in module.named_parameters()]
    trainable = [n for n, p in module.named_parameters() if p.requires_grad and not _C.matches_any(n, cfg.freeze or [])]
    if not trainable or len(trainable) == len(names):
        raise NotExact("every parameter trains" if trainable else "no parameter trains")
    name = _common_module(trainable)
    if not name:
        raise NotExact(f"the parameters that train ({_some(trainable)}) are not all in one submodule")
    under = [n for n in names if n.startswith(name + ".")]
    if cfg.lr_groups:
        raise NotExact("lr_groups name the whole model's parameters")
    if cfg.layer_decay != 1.0 and names[-len(under):] != under:
        raise NotExact(f"layer_decay counts depth over the whole model, and {name!r} does not hold its last layers")
    features = _head_inputs(model, module, name, inputs, val_inputs, cfg, mask_input)
    frozen = [n[len(name) + 1:] for n in under if n not in trainable]
    return FrozenFeatures(name, module.get_submodule(name), *features, freeze=[re.escape(n) for n in frozen])


def _head_inputs(model: Any, module: torch.nn.Module, name: str, inputs: list[torch.Tensor],
                 val_inputs: list[torch.Tensor] | None, cfg: Any,
                 mask_input: int) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
    """The head's input for every example (train, val), after checking on a few that it is what the loop would
    compute each epoch, and that all of them fit cfg.cache_frozen_gb."""
    probe = padding.trim(streams.head(inputs, PROBE_EXAMPLES), mask_input)
    features, why_not = heads.head_inputs(module, name, probe, PROBE_EXAMPLES)
    if features is None:
        raise NotExact(why_not)
    if not _same_in_training(model, module, name, probe, features, cfg):
        raise NotExact("the frozen part gives its output differently in training mode (dropout, or batch statistics "
                       "in it): computing it once would change the run")
    examples = streams.rows(inputs) + (streams.rows(val_inputs) if val_inputs is not None else 0)
    needed = features[0].numel() * features.element_size() * examples
    if needed > cfg.cache_frozen_gb * 2**30:
        raise NotExact(f"the features of {examples} examples would take {needed / 2**30:.2f} GiB, over "
                       f"cache_frozen_gb={cfg.cache_frozen_gb:g}")
    train, why_not = heads.head_inputs(module, name, inputs, cfg.eval_batch_size, mask_input)
    if train is None:
        raise NotExact(why_not)
    val = None
    if val_inputs is not None:
        val, why_not = heads.head_inputs(module, name, val_inputs, cfg.eval_batch_size, mask_input, "validation")
        if val is None:
            raise NotExact(why_not)
    return [train], [val] if val is not None else None


def _same_in_training(model: Any, module: torch.nn.Module, name: str, probe: list[torch.Tensor],
                      features: torch.Tensor, cfg: Any) -> bool:
    """Whether the forward the loop runs, in the mode it trains in (training mode, batch norms whose parameters
    are all frozen in eval mode), gives the head `features` on the probe examples, twice. A module run in Python
    or scripted: the head's input, read by a hook. A trace of it (which may ignore the mode, as the "minilm" of
    dropout=False does): its output in training mode (``forward_train``, the graph the C++ loop runs then, where
    the trace has one), against the head's on `features`. Random draws and buffers are put back."""
    compiled = models.eager(model) is not model
    head = module.get_submodule(name)
    seen: list[torch.Tensor] = []
    hook = None if compiled else head.register_forward_hook(
        lambda m, args, out: seen.append(args[0].detach().to("cpu", copy=True)))
    modes = [(m, m.training) for m in module.modules()] + ([(m, m.training) for m in model.modules()] if compiled else [])
    buffers = {n: b.detach().clone() for n, b in module.named_buffers()}
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        (model if compiled else module).train()
        for prefix, m in module.named_modules():
            own = list(m.named_parameters(recurse=False))
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and own and not any(
                    p.requires_grad and not _C.matches_any(f"{prefix}.{n}" if prefix else n, cfg.freeze or [])
                    for n, p in own):
                m.eval()
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]), torch.no_grad():
            forward = getattr(model, "forward_train", model) if compiled else module
            for _ in range(2):
                out = forward(*[t.to(device) for t in probe])
                if compiled:
                    seen.append(out.detach().to("cpu") if isinstance(out, torch.Tensor) else torch.tensor(float("nan")))
            if compiled:
                head.eval()
                features = head(features.to(device)).detach().to("cpu")
    finally:
        if hook is not None:
            hook.remove()
        for m, mode in modes:
            m.training = mode
        with torch.no_grad():
            for n, b in module.named_buffers():
                b.copy_(buffers[n])
    return len(seen) == 2 and all(f.shape == features.shape and torch.allclose(f, features, rtol=1e-5, atol=1e-6)
                                  for f in seen)


def _common_module(names: list[str]) -> str:
    """The deepest module holding every parameter named, "" when only the model itself does."""
    common = names[0].split(".")[:-1]
    for name in names[1:]:
        owner = name.split(".")[:-1]
        same = 0
        while same < min(len(common), len(owner)) and common[same] == owner[same]:
            same += 1
        common = common[:same]
    return ".".join(common)


def _some(names: list[str]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def head_config(cfg: Any, found: FrozenFeatures) -> Any:
    """The run's settings for the head alone: its own frozen parameters by their names under it."""
    return dataclasses.replace(cfg, freeze=found.freeze or None, output_key=None, cache_frozen=False,
                               trim_padding=False)
