"""Models the C++ loop can train: native models (built by name through finetune.registry) and any nn.Module,
scripted (or traced) for C++."""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from typing import Any, Callable, Iterator, Sequence

import torch


class NativeModel:
    """A built-in model whose layers live in C++. Its parameters are ordinary tensors shared with C++, so
    ``state_dict()`` and ``parameters()`` see what training wrote."""

    def __init__(self, name: str, module: Any, options: dict[str, Any]):
        self.name = name
        self.options = options
        self._module = module

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self._module.forward(list(inputs))

    forward = __call__

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        return self._module.named_parameters()

    def parameters(self) -> list[torch.Tensor]:
        return [p for _, p in self.named_parameters()]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.detach() for name, t in self._module.named_parameters() + self._module.named_buffers()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"state_dict does not fit {self.name}: missing keys {missing}, unexpected keys {unexpected}")
        for key, tensor in own.items():
            if tuple(state[key].shape) != tuple(tensor.shape):
                raise ValueError(f"state_dict[{key!r}] has shape {tuple(state[key].shape)}, "
                                 f"the model's is {tuple(tensor.shape)}")
        with torch.no_grad():
            for key, tensor in own.items():
                tensor.copy_(state[key])

    def train(self, mode: bool = True) -> "NativeModel":
        self._module.train(mode)
        return self

    def eval(self) -> "NativeModel":
        return self.train(False)

    @property
    def training(self) -> bool:
        return self._module.training

    def to(self, device: str | torch.device) -> "NativeModel":
        self._module.to(str(device))
        return self

    def __repr__(self) -> str:
        return f"NativeModel({self.name!r}, {self.options})\n{self._module!r}"


def native(name: str, make_options: Callable[[], Any], make_module: Callable[[Any], Any],
           options: dict[str, Any]) -> NativeModel:
    """A native model: ``options`` set on the C++ options struct (checked by finetune.registry), then built."""
    cpp_options = make_options()
    for key, value in options.items():
        setattr(cpp_options, key, list(value) if isinstance(value, tuple) else value)
    resolved = {k: getattr(cpp_options, k) for k in dir(cpp_options) if not k.startswith("_")}
    return NativeModel(name, make_module(cpp_options), resolved)


# The compiled form of each nn.Module, with the signature it was compiled from (see _signature). One lock
# serialises compiling: torch.jit.script is not safe when two threads script modules of the same class at once.
_scripted: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, Any]]" = weakref.WeakKeyDictionary()
_compile_lock = threading.Lock()
_training: "weakref.WeakSet[Any]" = weakref.WeakSet()
_training_lock = threading.Lock()


def to_cpp(model: Any, example: Sequence[torch.Tensor] | None = None) -> Any:
    """What the C++ loop takes: the native module, or a TorchScript module sharing ``model``'s parameters.

    The compiled module is cached per model and compiled again whenever the model changed since: a module
    replaced or added (a new head), a parameter or buffer replaced or reshaped or cast (``m.fc.weight =
    nn.Parameter(...)``, ``load_state_dict(..., assign=True)``, ``.double()``), or a plain setting of a
    submodule changed (``dropout.p``). So the C++ loop always runs the user's current model."""
    if isinstance(model, NativeModel):
        return model._module
    if isinstance(model, torch.jit.ScriptModule):
        return model._c
    if not isinstance(model, torch.nn.Module):
        from . import registry

        raise TypeError(f"model must be an nn.Module, a NativeModel or one of {registry.names()}, "
                        f"got {type(model).__name__}")
    with _compile_lock:
        signature = _signature(model)
        cached = _scripted.get(model)
        if cached is not None and cached[0] == signature:
            return cached[1]._c
        scripted = _script(model, example)
        _scripted[model] = (signature, scripted)
        return scripted._c


_PLAIN = (bool, int, float, str, type(None))


def _signature(model: torch.nn.Module) -> tuple:
    """Everything scripting copies out of ``model`` or depends on: the module tree (names, objects, types), each
    parameter's and buffer's identity, shape, dtype and device, and each module's plain settings. The old
    objects stay alive in the cached compiled module, so an identity cannot be reused by a new object."""
    modules = []
    for name, module in model.named_modules(remove_duplicate=False):
        settings = tuple(sorted((k, v) for k, v in vars(module).items()
                                if not k.startswith("_") and k != "training" and
                                (isinstance(v, _PLAIN) or (isinstance(v, tuple) and all(isinstance(i, _PLAIN) for i in v)))))
        modules.append((name, id(module), type(module), settings))
    tensors = [(name, id(t), tuple(t.shape), t.dtype, t.device)
               for items in (model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
               for name, t in items]
    return tuple(modules), tuple(tensors)


@contextlib.contextmanager
def exclusive(model: Any) -> Iterator[None]:
    """Marks ``model`` as being trained for the duration; a second concurrent train() of it is a RuntimeError
    (two loops stepping one set of weights would corrupt both runs)."""
    key = model._module if isinstance(model, NativeModel) else model
    try:
        with _training_lock:
            if key in _training:
                raise RuntimeError(f"this model ({type(model).__name__}) is already being trained (by another thread or "
                                   "a callback of that run); wait for that run to finish, or train a copy "
                                   "(copy.deepcopy(model))")
            _training.add(key)
    except TypeError:  # not weak-referenceable: nothing to guard
        yield
        return
    try:
        yield
    finally:
        with _training_lock:
            _training.discard(key)


def _script(model: torch.nn.Module, example: Sequence[torch.Tensor] | None) -> torch.jit.ScriptModule:
    # torch.jit.script warns that TorchScript is deprecated; it is our internal bridge to C++, not the user's.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return torch.jit.script(model)
        except Exception as error:  # noqa: BLE001 - any failure means: try tracing
            script_error = _first_line(error)
        if example is None:
            raise TypeError(f"model {type(model).__name__} cannot be compiled with torch.jit.script "
                            f"({script_error}) and there is no example input to trace it")
        try:
            traced = trace(model, [t[:2] for t in example])
        except Exception as error:  # noqa: BLE001
            raise TypeError(f"model {type(model).__name__} can be neither scripted ({script_error}) "
                            f"nor traced ({_first_line(error)})") from None
    warnings.warn(f"model {type(model).__name__} could not be scripted ({script_error}); it was traced instead "
                  "(in training and in eval mode), so any control flow that depends on the inputs is fixed as "
                  "it was for the example", UserWarning, stacklevel=4)
    return traced


# The Python module behind a traced one (their parameters are shared): what a forward hook can observe.
_eager_sources: "weakref.WeakKeyDictionary[Any, torch.nn.Module]" = weakref.WeakKeyDictionary()


def remember_eager(traced: Any, model: torch.nn.Module) -> Any:
    """Records that ``traced`` was traced from ``model`` (sharing its parameters); returns ``traced``."""
    _eager_sources[traced] = model
    return traced


def eager(model: Any) -> torch.nn.Module | None:
    """The Python ``nn.Module`` that runs ``model``: itself, the module a finetune trace was made from, or None
    (a native model, or a TorchScript module from elsewhere)."""
    if isinstance(model, torch.nn.Module) and not isinstance(model, torch.jit.ScriptModule):
        return model
    return _eager_sources.get(model)


def trace(model: torch.nn.Module, example: Sequence[torch.Tensor]) -> torch.jit.ScriptModule:
    """``model`` traced twice into one TorchScript module sharing its parameters: ``forward`` in eval mode
    and ``forward_train`` in training mode, which the C++ loop runs while training (a trace keeps the mode
    it was recorded in, so one trace alone would train without dropout, or evaluate with it).

    Tracing leaves no trace: batch-norm statistics, the random generator and the mode are as before."""
    was_training = model.training
    buffers = [b.detach().clone() for b in model.buffers()]

    def forward_train(*inputs: torch.Tensor) -> Any:
        model.train()
        try:
            return model.forward(*inputs)
        finally:
            model.eval()

    model.eval()
    model.forward_train = forward_train  # what trace_module records the training graph from
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            inputs = tuple(example)
            traced = torch.jit.trace_module(model, {"forward": inputs, "forward_train": inputs}, check_trace=False,
                                            strict=False)
    finally:
        del model.forward_train
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
        model.train(was_training)
    return remember_eager(traced.train(was_training), model)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def parameter_dtype(model: Any) -> torch.dtype:
    if isinstance(model, NativeModel):
        params = model.parameters()
    elif isinstance(model, torch.nn.Module):
        params = list(model.parameters())
    else:
        return torch.float32  # to_cpp() rejects it with a clear message
    for p in params:
        if p.is_floating_point():
            return p.dtype
    return torch.float32
