"""Models the C++ loop can train: native models (built by name through finetune.registry) and any nn.Module,
scripted or traced for C++, or run eagerly in Python (the runner, chosen by ``runner_for``)."""

from __future__ import annotations

import collections.abc
import contextlib
import difflib
import inspect
import logging
import os
import sys
import threading
import warnings
import weakref
from dataclasses import dataclass
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

    def features(self, *inputs: torch.Tensor) -> torch.Tensor | None:
        """What the last linear layer (the head) reads for each example; None for a model without one."""
        return self._module.features(list(inputs))

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


def output_tensor(output: Any, key: str | None = None) -> torch.Tensor:
    """The tensor the loss reads from what a forward returned: the tensor itself; from a dict or a Hugging Face
    ``ModelOutput``, its ``key`` entry (by default "logits" where there is one, else the first tensor); from a
    tuple or list, its first tensor."""
    if isinstance(output, torch.Tensor):
        if key is not None:
            raise ValueError(f"output_key={key!r} names an entry of a dict output, but the model returns a tensor")
        return output
    if isinstance(output, collections.abc.Mapping):
        if key is not None:
            if key not in output:
                raise ValueError(f"output_key={key!r} is not in the model's output, which has {list(output.keys())}")
            value = output[key]
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"output_key={key!r} is a {type(value).__name__} in the model's output, not a tensor")
            return value
        if isinstance(output.get("logits"), torch.Tensor):
            return output["logits"]
        values = list(output.values())
    elif isinstance(output, (tuple, list)):
        if key is not None:
            raise ValueError(f"output_key={key!r} names an entry of a dict output, but the model returns a "
                             f"{type(output).__name__}")
        values = list(output)
    else:
        raise TypeError(f"model forward() must return a tensor, got {type(output).__name__}")
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"model forward() returned a {type(output).__name__} with no tensor in it")


class Adapted(torch.nn.Module):
    """A model called as its inputs and outputs need: the loop passes tensors by position, in the order of X's
    keys, and reads one tensor; this calls ``model(**{key: tensor})`` (or ``model(*tensors)``) and reduces what
    it returns with :func:`output_tensor`. It holds the model's own submodules, parameters and buffers -- the
    same dicts, so under the same names: freezing patterns, the head, checkpoints and ``state_dict`` see the
    model as it is, and a head replaced here is replaced in the model."""

    def __init__(self, model: torch.nn.Module, keys: Sequence[str] | None, output_key: str | None):
        super().__init__()
        # Not a submodule (its children are this module's children) and held weakly: the cache of adapters is
        # keyed on the model, and an adapter that held it would keep it alive for ever.
        self.__dict__["_wrapped"] = weakref.ref(model)
        self._modules, self._parameters, self._buffers = model._modules, model._parameters, model._buffers
        self._non_persistent_buffers_set = model._non_persistent_buffers_set
        self.keys = tuple(keys) if keys is not None else None
        self.output_key = output_key
        self.training = model.training

    @property
    def wrapped(self) -> torch.nn.Module:
        model = self._wrapped()
        if model is None:
            raise RuntimeError("the model this adapter called no longer exists")
        return model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.keys is None:
            return output_tensor(self.wrapped(*inputs), self.output_key)
        return output_tensor(self.wrapped(**dict(zip(self.keys, inputs))), self.output_key)

    def train(self, mode: bool = True) -> "Adapted":
        self.wrapped.train(mode)
        self.training = mode
        return self


_adapters: "weakref.WeakKeyDictionary[torch.nn.Module, Adapted]" = weakref.WeakKeyDictionary()
_tensor_output: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, bool]]" = weakref.WeakKeyDictionary()


def adapt(model: Any, example: Sequence[torch.Tensor], keys: Sequence[str] | None = None,
          output_key: str | None = None) -> Any:
    """``model``, or the :class:`Adapted` module that calls it with keyword inputs (``keys``: X was a dict) or
    reduces its output to a tensor (``output_key`` given, or a forward that returns a dict, ``ModelOutput`` or
    tuple: found by calling it on two examples in eval mode, once per version of the model)."""
    if isinstance(model, Adapted):
        return model
    if output_key == "":
        raise ValueError("output_key must be a non-empty name or None, got ''")
    plain = isinstance(model, torch.nn.Module) and not isinstance(model, torch.jit.ScriptModule)
    if not plain:
        if keys is not None or output_key is not None:
            what = "X as a dict (keyword inputs)" if keys is not None else f"output_key={output_key!r}"
            raise ValueError(f"{what} needs an nn.Module called in Python; got {type(model).__name__}")
        return model
    if keys is None and output_key is None and _returns_tensor(model, example):
        return model
    cached = _adapters.get(model)
    if cached is None or cached.keys != (tuple(keys) if keys is not None else None) or cached.output_key != output_key:
        cached = Adapted(model, keys, output_key)
        _adapters[model] = cached
    cached.training = model.training  # the model's mode may have changed since (model.eval())
    return cached


def check_keyword_inputs(model: Any, keys: Sequence[str] | None, inputs: Sequence[torch.Tensor],
                         name: str = "X") -> None:
    """X as a dict, against the model it is for: a key that is no parameter of its forward is an error naming the
    parameters -- also where a ``**kwargs`` would swallow it, if it is one letter or two from a parameter
    ("input_id": BERT took it into its kwargs and said "You must specify exactly one of input_ids or
    inputs_embeds") -- and token ids beyond a Hugging Face model's vocabulary are an error naming the largest
    (its embedding's own message is "index out of range in self")."""
    if keys is None or not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        return
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):  # a forward Python cannot read the signature of: its own errors stand
        parameters = None
    if parameters is not None:
        named = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        swallows = any(p.kind == p.VAR_KEYWORD for p in parameters)
        for key in keys:
            close = difflib.get_close_matches(key, named, n=1, cutoff=0.8)
            if key not in named and (not swallows or close):
                shown = ", ".join(named[:8]) + (", ..." if len(named) > 8 else "")
                raise ValueError(f"{name}'s key {key!r} is no parameter of {type(model).__name__}.forward (its "
                                 f"parameters: {shown})" + (f": did you mean {close[0]!r}?" if close else ""))
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if "input_ids" in keys and isinstance(embeddings, torch.nn.Embedding):
        ids = inputs[list(keys).index("input_ids")]
        if isinstance(ids, torch.Tensor) and not ids.is_floating_point() and ids.numel():
            largest, smallest = int(ids.max()), int(ids.min())
            if largest >= embeddings.num_embeddings or smallest < 0:
                bad = largest if largest >= embeddings.num_embeddings else smallest
                raise ValueError(f"{name}['input_ids'] holds the id {bad}, and the model's vocabulary has "
                                 f"{embeddings.num_embeddings} tokens (ids 0 to {embeddings.num_embeddings - 1}): "
                                 "ids from another tokenizer? tokenize with the model's own")


def _returns_tensor(model: torch.nn.Module, example: Sequence[torch.Tensor]) -> bool:
    signature = _signature(model)
    known = _tensor_output.get(model)
    if known is not None and known[0] == signature:
        return known[1]
    was_training = model.training
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            output = model.eval()(*_on_model_device(model, [t[:2] for t in example]))
    except Exception:  # noqa: BLE001 - the loop's first step reports the model's own error, with the shapes
        return True
    finally:
        model.train(was_training)
    _tensor_output[model] = (signature, isinstance(output, torch.Tensor))
    return isinstance(output, torch.Tensor)


RUNNERS = ("auto", "script", "trace", "python")


class EagerRunner:
    """An ``nn.Module`` run as eager PyTorch runs it (runner="python"): the C++ loop calls ``forward`` with the GIL
    taken for that call alone, and does everything else (sampling, loss, backward, optimizer) itself. Control flow
    that depends on the inputs, and anything TorchScript rejects, runs as written. The parameters are the module's."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        output = self.module(*inputs)
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"model forward() must return a tensor, got {type(output).__name__}")
        return output

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        return list(self.module.named_parameters())

    def named_buffers(self) -> list[tuple[str, torch.Tensor]]:
        return list(self.module.named_buffers())

    def train(self, on: bool) -> None:
        self.module.train(on)

    @property
    def training(self) -> bool:
        return self.module.training

    def keep_frozen_batchnorm_in_eval(self, is_frozen: Callable[[str], bool]) -> None:
        """As the C++ Model does for compiled modules: a batch-norm layer whose parameters are all frozen keeps
        its running statistics as pretrained (eval mode)."""
        for name, module in self.module.named_modules():
            if "BatchNorm" not in type(module).__name__:
                continue
            own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
            if own and all(is_frozen(p) for p in own):
                module.eval()

    def to(self, device: str) -> None:
        self.module.to(device)


@dataclass(frozen=True)
class Runner:
    """How the C++ loop runs a model: ``cpp`` is what it takes, ``kind`` one of "native", "script", "trace",
    "python", and ``reason`` why (``Result.runner``)."""

    cpp: Any
    kind: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"runner": self.kind, "reason": self.reason}


# Each nn.Module's compiled forms by the runner asked for, with the signature they were made from (see
# _signature). One lock serialises compiling: torch.jit.script is not safe when two threads script modules of the
# same class at once.
_compiled: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, dict[str, tuple[Any, str, str]]]]" = \
    weakref.WeakKeyDictionary()
_compile_lock = threading.Lock()
_training: "weakref.WeakSet[Any]" = weakref.WeakSet()
_training_lock = threading.Lock()


def to_cpp(model: Any, example: Sequence[torch.Tensor] | None = None, runner: str = "auto") -> Any:
    """What the C++ loop takes for ``model`` (see :func:`runner_for`)."""
    return runner_for(model, example, runner).cpp


def runner_for(model: Any, example: Sequence[torch.Tensor] | None = None, runner: str = "auto") -> Runner:
    """How the C++ loop runs ``model``: the native module, a TorchScript module sharing ``model``'s parameters, or
    the module itself called from C++ in Python (``EagerRunner``).

    ``runner``: "script" (``torch.jit.script``), "trace" (``torch.jit.trace`` on ``example``, in training and eval
    mode), "python", or "auto": scripted where TorchScript compiles it (a faithful, compiled forward), else traced
    where the tracer notes nothing that would fix the trace to the example (control flow on tensor values,
    tensors read as Python numbers), else run in Python -- faithful in every case.

    The compiled module is cached per model and compiled again whenever the model changed since: a module
    replaced or added (a new head), a parameter or buffer replaced or reshaped or cast (``m.fc.weight =
    nn.Parameter(...)``, ``load_state_dict(..., assign=True)``, ``.double()``), or a plain setting of a
    submodule changed (``dropout.p``). So the C++ loop always runs the user's current model."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {list(RUNNERS)}, got {runner!r}")
    if isinstance(model, NativeModel):
        if runner != "auto":
            raise ValueError(f"runner={runner!r} chooses how an nn.Module's forward runs; the built-in model "
                             f"{model.name!r} runs in C++: leave runner='auto'")
        return Runner(model._module, "native", "a built-in model: its layers are C++")
    if isinstance(model, torch.jit.ScriptModule):
        if runner not in ("auto", "script"):
            raise ValueError(f"runner={runner!r} does not apply to a TorchScript module (it runs as scripted): "
                             "pass runner='auto' or the nn.Module it was made from")
        return Runner(model._c, "script", "a TorchScript module, run as it is")
    if not isinstance(model, torch.nn.Module):
        from . import registry

        raise TypeError(f"model must be an nn.Module, a NativeModel or one of {registry.names()}, "
                        f"got {type(model).__name__}")
    with _compile_lock:
        signature = _signature(model)
        cached = _compiled.get(model)
        if cached is None or cached[0] != signature:
            cached = (signature, {})
            _compiled[model] = cached
        if runner not in cached[1]:
            cached[1][runner] = _compile(model, example, runner)
        compiled, kind, reason = cached[1][runner]
    return Runner(EagerRunner(model) if kind == "python" else compiled._c, kind, reason)


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
    key = model._module if isinstance(model, NativeModel) else model.wrapped if isinstance(model, Adapted) else model
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


def _compile(model: torch.nn.Module, example: Sequence[torch.Tensor] | None, runner: str) -> tuple[Any, str, str]:
    """(the compiled module or None, the runner's kind, why) for ``runner`` (see runner_for)."""
    name = type(model.wrapped if isinstance(model, Adapted) else model).__name__
    if runner == "python":
        return None, "python", "runner='python': the forward runs in Python, as eager PyTorch runs it"
    if isinstance(model, Adapted):
        script_error = "called with keyword inputs or reduced to one output tensor, which TorchScript cannot compile"
        if runner == "script":
            raise TypeError(f"runner='script': model {name} is {script_error}; runner='auto' or 'python' runs it")
    elif runner in ("auto", "script"):
        # torch.jit.script warns that TorchScript is deprecated; it is our internal bridge to C++, not the user's.
        # Whatever else it sets off while reading the module (a library's deprecated properties) is not theirs
        # either: the attempt is ours.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return torch.jit.script(model), "script", "torch.jit.script compiled it: the forward runs in C++"
            except Exception as error:  # noqa: BLE001 - any failure means: try the next runner
                script_error = _first_line(error)
        if runner == "script":
            raise TypeError(f"runner='script': model {name} cannot be compiled with torch.jit.script ({script_error}); "
                            "runner='auto' or 'python' runs it as written")
    if example is None:
        if runner == "trace":
            raise TypeError(f"runner='trace' needs an example input to trace model {name}")
        return None, "python", f"torch.jit.script failed ({script_error}) and there is no example input to trace"
    try:
        traced, notes = _trace(model, [t[:2] for t in example])
    except Exception as error:  # noqa: BLE001
        if runner == "trace":
            raise TypeError(f"runner='trace': model {name} cannot be traced ({_first_line(error)})") from None
        return None, "python", f"torch.jit.script failed ({script_error}) and so did tracing ({_first_line(error)})"
    if runner == "trace":
        return traced, "trace", "runner='trace': traced in training and in eval mode on an example batch"
    if notes:
        return None, "python", (f"torch.jit.script failed ({script_error}) and a trace would fix what depends on the "
                                f"inputs to the example (the tracer: {notes[0]})")
    warnings.warn(f"model {name} could not be scripted ({script_error}); it was traced instead "
                  "(in training and in eval mode), so any control flow that depends on the inputs is fixed as "
                  "it was for the example; runner='python' runs it as written", UserWarning, stacklevel=5)
    return traced, "trace", (f"torch.jit.script failed ({script_error}); traced in training and in eval mode, the "
                             "tracer noting nothing that depends on the inputs")


# The Python module behind a traced one (their parameters are shared): what a forward hook can observe.
_eager_sources: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def remember_eager(traced: Any, model: torch.nn.Module, weak: bool = False) -> Any:
    """Records that ``traced`` was traced from ``model`` (sharing its parameters); returns ``traced``. ``weak``
    where something else keeps ``model`` alive (a model's own cached trace); a trace handed to the user
    ("minilm") keeps its module alive through this record."""
    _eager_sources[traced] = weakref.ref(model) if weak else model
    return traced


def eager(model: Any) -> torch.nn.Module | None:
    """The Python ``nn.Module`` that runs ``model``: itself, the module a finetune trace was made from, or None
    (a native model, or a TorchScript module from elsewhere)."""
    if isinstance(model, torch.nn.Module) and not isinstance(model, torch.jit.ScriptModule):
        return model
    if isinstance(model, EagerRunner):
        return model.module
    source = _eager_sources.get(model)
    return source() if isinstance(source, weakref.ref) else source


def trace(model: torch.nn.Module, example: Sequence[torch.Tensor]) -> torch.jit.ScriptModule:
    """``model`` traced twice into one TorchScript module sharing its parameters: ``forward`` in eval mode
    and ``forward_train`` in training mode, which the C++ loop runs while training (a trace keeps the mode
    it was recorded in, so one trace alone would train without dropout, or evaluate with it).

    Tracing leaves no trace: batch-norm statistics, the random generator and the mode are as before."""
    return _trace(model, example, weak=False)[0]


def _trace(model: torch.nn.Module, example: Sequence[torch.Tensor],
           weak: bool = True) -> tuple[torch.jit.ScriptModule, list[str]]:
    """trace(), and the tracer's warnings: each says the trace may hold only for the example. ``weak``: the
    trace keeps no reference to ``model`` (see remember_eager)."""
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
        with warnings.catch_warnings(record=True) as caught, torch.random.fork_rng(devices=[]), _scan_unlogged():
            # Recorded, never raised: under filterwarnings=error (pytest's setting here) a library's FutureWarning
            # set off by the tracer's attribute reads (transformers' `is_gradient_checkpointing`) failed the trace,
            # and the tests ran Hugging Face models on another runner than users get.
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript's own: our bridge, not the user's
            inputs = tuple(_on_model_device(model, example))
            traced = torch.jit.trace_module(model, {"forward": inputs, "forward_train": inputs}, check_trace=False,
                                            strict=False)
        # The tracer's notes decide the runner. Anything else warned while tracing is left out: what the
        # tracer's own attribute reads set off (a library's deprecation notes) is not the user's to see, and what
        # the forward itself warns about it warns again when it runs.
        # torch's own functional checks (batch norm reading the batch size to refuse a batch of one) read shapes
        # as Python values and are no control flow of the model's: only notes from the model's code count.
        notes = [_first_line(Exception(str(w.message))).split(". ")[0] for w in caught
                 if issubclass(w.category, torch.jit.TracerWarning) and not w.filename.startswith(_TORCH_DIR)]
    finally:
        del model.forward_train
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers):
                b.copy_(saved)
        model.train(was_training)
    # Weakly for runner_for: the model's cache of compiled forms holds this trace, so a strong reference back
    # would keep both alive for ever.
    return remember_eager(traced.train(was_training), model, weak=weak), notes


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _logged_by_the_scan(record: logging.LogRecord) -> bool:
    """Whether a log record comes from the tracer's scan of a module's attributes (torch.jit's
    module_has_exports reads every one of them with hasattr)."""
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "module_has_exports" and frame.f_code.co_filename.startswith(_TORCH_DIR):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def _scan_unlogged() -> Iterator[None]:
    """The loggers quiet about what the tracer's attribute scan sets off: a Hugging Face model's ``loss_function``
    property logs "loss_type=None ... ForCausalLMLoss" when read, which a user who never asked for its loss took
    for a problem of theirs. A logger's filter sees only its own records, so every logger gets it while tracing."""
    drop = logging.Filter()
    drop.filter = lambda record: not _logged_by_the_scan(record)
    loggers = [logging.getLogger()] + [lg for lg in logging.root.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    for lg in loggers:
        lg.addFilter(drop)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(drop)


def _on_model_device(model: torch.nn.Module, example: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The example inputs where the model's parameters are (a model moved to CUDA is probed and traced there)."""
    first = next(iter(model.parameters()), None)
    return [t.to(first.device) for t in example] if first is not None else list(example)


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
