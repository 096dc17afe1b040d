"""Token batches without their padding: which input is the attention mask, and whether the model allows the cut.

A batch of token rows padded to ``max_length`` spends most of its compute on pad tokens when the texts are short.
With an attention mask among the inputs, the C++ loop cuts each batch to its longest row (csrc/padding.h): every
input shaped like the mask loses the columns no row of the batch uses. For a model whose outputs ignore masked
positions (attention masked, pooling under the mask, positions counted from the left) the rows' outputs are the
same, to float rounding. ``plan`` finds the mask and checks exactly that on the rows that are cut the most, in eval
mode, before a run trims; ``group_by_length`` then orders each epoch in batches of similar lengths. With dropout
on, a trimmed run draws its random masks over fewer positions: it equals the padded run in distribution, and to
float rounding with dropout off (tests/test_padding.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from . import _C, heads, models, registry, streams

PROBE_EXAMPLES = 8  # the shortest rows, run padded and trimmed


class NotTrimmed(Exception):
    """Why the batches keep their padding."""


def trim(batch: list[torch.Tensor], mask_input: int) -> list[torch.Tensor]:
    """One batch cut to its longest row, as the C++ loop cuts it (csrc/padding.h)."""
    return _C.trim_to_longest(batch, mask_input) if mask_input >= 0 else batch


def plan(model: Any, inputs: list[torch.Tensor], keys: Sequence[str] | None, entry_mask: int | None,
         cfg: Any, split: str = "training") -> tuple[int, dict[str, Any]]:
    """(the attention mask's input index, or -1; {"used", "reason"} for ``Result.trim_padding``). ``split``: what
    an error of the model's on these inputs calls them ("training", "evaluation", "prediction").
    ``cfg.trim_padding``: "auto" trims where a mask is found and the model gives the same outputs trimmed; True
    insists (a ValueError saying why it cannot), as ``group_by_length=True`` does; False never."""
    if cfg.trim_padding is False:
        return -1, {"used": False, "reason": "trim_padding=False"}
    try:
        if isinstance(inputs, streams.Stream):
            raise NotTrimmed("a streamed dataset's attention mask is read a batch at a time, not before training")
        index = _mask_input(model, inputs, keys, entry_mask)
        _check_model(model, inputs, index, split)
    except NotTrimmed as why:
        if cfg.trim_padding is True or cfg.group_by_length:
            setting = "trim_padding=True" if cfg.trim_padding is True else "group_by_length=True"
            raise ValueError(f"{setting}, but batches cannot be cut to their longest row: {why}") from None
        return -1, {"used": False, "reason": str(why)}
    lengths = _C.sequence_lengths(inputs[index]).double()
    return index, {"used": True, "reason": f"input {index} is an attention mask (rows of {inputs[index].shape[1]} "
                   f"positions, {lengths.mean():.1f} used on average) and the model's outputs are the same trimmed: "
                   "each batch is cut to its longest row"}


def _mask_input(model: Any, inputs: list[torch.Tensor], keys: Sequence[str] | None, entry_mask: int | None) -> int:
    keys = keys if keys is not None else getattr(model, "keys", None) if isinstance(model, models.Adapted) else None
    built = registry.built(model)
    known = entry_mask if entry_mask is not None else built[0].mask_input if built is not None else None
    if keys is not None and "attention_mask" in keys:
        index = list(keys).index("attention_mask")
    elif known is not None:
        index = known
    else:
        raise NotTrimmed("no input is an attention mask (X as a dict with 'attention_mask', as a tokenizer gives it, "
                         "or a built-in text model's inputs)")
    mask = inputs[index]
    if mask.dim() != 2 or mask.shape[1] < 2 or not bool(((mask == 0) | (mask == 1)).all()):
        raise NotTrimmed(f"input {index} is not an attention mask of 0s and 1s shaped (examples, length), got shape "
                         f"{tuple(mask.shape)}")
    if bool((_C.sequence_lengths(mask) == mask.shape[1]).all()):
        raise NotTrimmed("no row ends in padding: every row's mask runs to its last position (rows padded on the "
                         "left are not cut)")
    eager = models.eager(model)
    if eager is not None and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in eager.modules()):
        raise NotTrimmed("the model has batch norm, which in training mode would normalise over the padded positions")
    return index


def _check_model(model: Any, inputs: list[torch.Tensor], index: int, split: str) -> None:
    """The model's outputs on the most padded rows, padded and cut to their longest row (eval mode, no autograd)."""
    lengths = _C.sequence_lengths(inputs[index])
    rows = torch.argsort(lengths, stable=True)[:PROBE_EXAMPLES]
    padded = [t[rows] for t in inputs]
    trimmed = trim(padded, index)
    modes = [(m, m.training) for m in model.modules()] if hasattr(model, "modules") else []
    device = next((p.device for p in model.parameters()), torch.device("cpu")) if hasattr(model, "parameters") else \
        torch.device("cpu")
    try:
        model.eval()
        with torch.no_grad():
            try:
                full = model(*[t.to(device) for t in padded])
            except Exception as error:  # noqa: BLE001 - the model fails on the data itself: said as the loop says it
                raise ValueError(heads.forward_failed(padded, error, split)) from None
            try:
                cut = model(*[t.to(device) for t in trimmed])
            except Exception as error:  # noqa: BLE001 - the reason is reported; the padded run goes ahead
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise NotTrimmed(f"the model fails on a batch cut to its longest row ({type(error).__name__}: "
                                 f"{first[:200]})") from None
    finally:
        for m, mode in modes:
            m.training = mode
    if not isinstance(full, torch.Tensor) or not isinstance(cut, torch.Tensor) or full.shape != cut.shape or \
            not torch.allclose(full, cut, rtol=1e-4, atol=1e-5):
        raise NotTrimmed("the model's outputs change when a batch is cut to its longest row (it reads padded "
                         "positions)")
