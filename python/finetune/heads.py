"""A model's head (the layer mapping features to outputs): found by name as timm's reset_classifier does, and replaced."""

from __future__ import annotations

from typing import Any

import torch

# Attribute names libraries give the classifier: torchvision/timm ResNets "fc", timm/HF "classifier"/"head",
# HF decoder classifiers "score".
HEAD_NAMES = ("fc", "classifier", "head", "score")


def _owner(parameter_name: str) -> str:
    return parameter_name.rsplit(".", 1)[0] if "." in parameter_name else ""


def find_head(model: Any, example: list[torch.Tensor] | None = None) -> str:
    """The name of the module whose parameters are the head. For a model that runs in Python (an ``nn.Module``,
    or one finetune traced) with ``example`` inputs: the last ``nn.Linear`` that the forward pass runs
    (registration order can differ: a layer defined last may be unused), preferring one under a known head
    attribute (``fc``, ``classifier``, ``head``, ``score``). Otherwise, by parameter names: the last
    parameterised layer under a known attribute, else the owner of the model's last parameter."""
    from . import models

    eager = models.eager(model)
    if example is not None and eager is not None:
        executed = _linears_executed(eager, example)
        named = [n for n in executed if n.split(".")[0] in HEAD_NAMES]
        if named or executed:
            return (named or executed)[-1]
    names = [n for n, _ in model.named_parameters()]
    if not names:
        raise ValueError("the model has no parameters: there is no head to find")
    for attr in HEAD_NAMES:
        under = [n for n in names if n == attr or n.startswith(attr + ".")]
        if under:
            return _owner(under[-1]) or attr
    owner = _owner(names[-1])
    if not owner:
        raise ValueError(f"the model's last parameter {names[-1]!r} belongs to the model itself, not to a head layer")
    return owner


def _linears_executed(model: torch.nn.Module, example: list[torch.Tensor]) -> list[str]:
    """The names of the model's ``nn.Linear`` submodules in the order one forward pass on ``example`` runs them
    (in eval mode, without gradients, so batch-norm statistics and dropout are untouched)."""
    order: list[str] = []
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: order.append(name))
             for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and name]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*example)
    except Exception:  # noqa: BLE001 - a forward that fails here fails in the loop, with the loop's message
        return []
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return order


def forward_failed(inputs: list[torch.Tensor], error: Exception, split: str = "training") -> str:
    """What the C++ loop says of a forward pass that failed (csrc/forward.cpp), for one run in Python: the inputs'
    shapes and dtypes beside the error's first line, and the fix for integer features."""
    shapes = ", ".join(str(list(t.shape)) for t in inputs)
    dtypes = ", ".join(str(t.dtype).removeprefix("torch.") for t in inputs)
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    hint = (" (an embedding reads integer ids: pass them as int64, X.astype('int64'); floats and uint8 are read as "
            "features)" if "'indices'" in first else
            " (integer inputs are passed as they are, for embedding ids; features for a floating-point model must "
            "be floats: X.astype('float32'))" if any(not t.is_floating_point() for t in inputs) and "type" in first
            else "")
    return f"model forward() failed on {split} inputs of shape {shapes} (dtype {dtypes}): {first}{hint}"


def replace_head(model: torch.nn.Module, name: str, outputs: int, seed: int) -> dict[str, Any]:
    """Replaces the head ``name`` (as ``find_head`` names it) by a new ``nn.Linear`` with ``outputs`` outputs,
    initialised from ``seed``; returns what was replaced. Only a Python ``nn.Module`` whose head is an
    ``nn.Linear`` can be."""
    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise ValueError(f"head='new' replaces a layer of an nn.Module; got a {type(model).__name__}, which "
                         "cannot be changed (build it with the right number of outputs instead)")
    old = model.get_submodule(name)
    if not isinstance(old, torch.nn.Linear):
        raise ValueError(f"head='new': the head {name!r} is a {type(old).__name__}, not an nn.Linear; replace it "
                         f"yourself (model.{name} = nn.Linear(...)) and pass head='keep'")
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    with torch.random.fork_rng(devices=[]):  # the new head's seed, without touching the caller's generator
        torch.manual_seed(seed)
        new = torch.nn.Linear(old.in_features, outputs, bias=old.bias is not None,
                              device=old.weight.device, dtype=old.weight.dtype)
    setattr(parent, attr, new)
    # A Hugging Face model's config says how many labels it has (save_pretrained reads it; BERT's loss reads its
    # copy, model.num_labels): the new head's, as num_labels= at from_pretrained would have made them.
    owner = getattr(model, "wrapped", model)
    config = getattr(owner, "config", None)
    if getattr(config, "num_labels", None) is not None and name.split(".")[0] in HEAD_NAMES:
        config.num_labels = outputs
        if isinstance(getattr(owner, "num_labels", None), int):
            owner.num_labels = outputs
    return {"name": name, "old_outputs": old.out_features, "new_outputs": outputs, "in_features": old.in_features}


def head_inputs(model: Any, head: str, inputs: list[torch.Tensor], batch_size: int = 1024,
                mask_input: int = -1, split: str = "training") -> tuple[torch.Tensor | None, str]:
    """(what the head reads for each example, "") -- the frozen body's features, computed once in eval mode
    -- or (None, why not). Exact only where the head's output is the model's output; that is checked on every
    batch, so a model that changes the head's output afterwards (a scale, a softmax) gets None. With
    ``mask_input`` (an attention mask's index), each batch is cut to its longest row first. A forward that
    fails is the loop's one-line ValueError, naming ``split`` ("training", "validation", ...)."""
    from . import models, padding, streams

    why_not = streams.varying(inputs)
    if why_not is not None:
        return None, why_not
    module = models.eager(model)
    if module is None:
        return None, f"a {type(model).__name__} runs outside Python: no hook sees its head's input"
    layer = module.get_submodule(head)
    seen: list[tuple[tuple, dict, Any]] = []
    hook = layer.register_forward_hook(lambda m, args, kwargs, out: seen.append((args, kwargs, out)), with_kwargs=True)
    training = module.training
    features = []
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    try:
        module.eval()
        with torch.no_grad():
            for batch in streams.batches(inputs, batch_size):
                seen.clear()
                batch = padding.trim(batch, mask_input)
                try:
                    output = module(*[t.to(device) for t in batch])
                except torch.OutOfMemoryError:
                    raise
                except (RuntimeError, TypeError, IndexError) as error:  # the loop's message, not torch's alone
                    raise ValueError(forward_failed(batch, error, split)) from error
                if len(seen) != 1:
                    return None, f"the head {head!r} ran {len(seen)} times in one forward pass"
                args, kwargs, out = seen[0]
                if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
                    return None, f"the head {head!r} takes {len(args)} positional and {len(kwargs)} keyword inputs, " \
                                 "not one tensor"
                if not isinstance(output, torch.Tensor) or not isinstance(out, torch.Tensor) or \
                        output.shape != out.shape or not torch.equal(output, out):
                    return None, f"the model's output is not the head {head!r}'s output (something follows it)"
                features.append(args[0].detach().to("cpu", copy=True))
    finally:
        hook.remove()
        module.train(training)
    return torch.cat(features), ""
