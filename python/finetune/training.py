"""finetune.training: train / evaluate / predict / find_lr (exported as finetune.train, ...): check and convert the user's data, then run the C++ loop.

Named training, not train, so that `import finetune.train` cannot be shadowed by the function finetune.train."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import signal
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from . import _C, checkpoint, data, frozen, heads, lora as loras, models, padding, pairs, probe, recipe as recipes, registry, report
from . import streams
from .distributed import any_rank, broadcast_state, device_for_rank, process_group, process_rank, rank_0s
from .config import TrainConfig, config_fields, did_you_mean
from .progress import Progress

log = logging.getLogger("finetune")


@dataclass
class Result:
    """What a fine-tune produced. ``model`` is the object passed in (or built), trained in place."""

    model: Any
    history: list[dict[str, float]]  # one dict per epoch: train_loss, val_*, lr, seconds, samples_per_s
    metrics: dict[str, float]  # final validation metrics ({} without validation data)
    config: TrainConfig
    # training examples per class in the sampled subset, by class id -- or by label where y held string labels
    class_counts: dict[int | str, int] | None
    train_size: int
    steps: int
    seconds: float
    confusion_matrix: np.ndarray | None = None
    stopped: bool = False  # stopped before the last epoch (early stopping, or the callback)
    skipped_steps: int = 0  # updates dropped by on_nan="skip"
    world_size: int = 1  # processes that trained together (torchrun)
    communication_seconds: float = 0.0  # the loop's time in gradient all-reduces (not hidden behind backward)
    allreduce_overlap: float = 0.0  # share of gradient buckets whose all-reduce ran while backward still computed
    best_epoch: int | None = None  # by config.monitor (0-based), when it could be monitored
    best_value: float | None = None
    param_groups: list[dict[str, Any]] = field(default_factory=list)  # names, lr, weight_decay, from_epoch
    model_options: dict[str, Any] = field(default_factory=dict)
    # Indices into train_data's X of the examples trained on (the sample, less any validation slice), sorted.
    sample_indices: np.ndarray | None = None
    # What ran and why: {"what", "value", "reason"} per decision; the first names the recipe ("auto"/"none").
    recipe: list[dict[str, Any]] = field(default_factory=list)
    head: dict[str, Any] | None = None  # the head replaced by head="new"/"auto" (name, old and new outputs)
    lora: dict[str, Any] | None = None  # lora=: the layers adapted, the settings, whether merged
    cache_frozen: dict[str, Any] | None = None  # {"used", "reason"}: the frozen part run once (finetune.frozen)
    trim_padding: dict[str, Any] | None = None  # {"used", "reason"}: batches cut to their longest row (finetune.padding)
    runner: dict[str, str] | None = None  # how the forward ran: {"runner": "native"/"script"/"trace"/"python", "reason"}
    # A streamed train_data (finetune.streams): its workers, batches read (ahead, or when asked) and the loop's
    # seconds waiting for them (a recipe's: over all its phases); None for data in memory
    streaming: dict[str, Any] | None = None
    # y's string labels in class-id order (the probabilities' columns), or a dataset's class names (an
    # ImageFolder's sub-folders, whose labels are their ids: predict's ids index them); None for ids or values
    classes: list[str] | None = None

    def plot(self, axes: Any = None) -> Any:
        """Loss curves (train, validation) and the validation metric per epoch; needs matplotlib."""
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("Result.plot needs matplotlib: pip install matplotlib") from None
        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")  # the labels inside the figure
        metric = report.draw_curves(axes[0], axes[1], self.history)
        axes[0].set(xlabel="epoch", ylabel="loss", title="loss")
        if metric:
            axes[1].set(xlabel="epoch", ylabel=metric, title=metric)
        else:  # nothing measured on validation data: no empty frame beside the loss
            axes[1].set_visible(False)
        return axes

    def __repr__(self) -> str:
        metrics = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v!r}" for k, v in self.metrics.items())
        return (f"Result(epochs={len(self.history)}, steps={self.steps}, train_size={self.train_size}, "
                f"seconds={self.seconds:.2f}, metrics={{{metrics}}})")


def resolve_config(config: TrainConfig | None, settings: dict[str, Any]) -> TrainConfig:
    """``config`` (or the defaults) with keyword settings applied; an unknown keyword is a TypeError."""
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a finetune.TrainConfig, got {type(config).__name__}")
    unknown = sorted(set(settings) - set(config_fields()))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}{did_you_mean(unknown, config_fields())}; known settings: "
                        f"{config_fields()}")
    cfg = dataclasses.replace(config or TrainConfig(), **settings)
    if cfg.sample_size is not None and cfg.sample_fraction != 1.0:  # one would be ignored
        raise ValueError(f"sample_size={cfg.sample_size!r} and sample_fraction={cfg.sample_fraction!r} both choose "
                         "the sample's size: pass one of them")
    if cfg.label_smoothing != 0.0 and cfg.task != "classification":  # no classes to smooth over: it would do nothing
        raise ValueError(f"label_smoothing applies to task='classification' only, got label_smoothing="
                         f"{cfg.label_smoothing!r} with task={cfg.task!r}")
    if isinstance(cfg.class_weights, list | tuple | np.ndarray | torch.Tensor):  # any array-like, as a plain list
        cfg = dataclasses.replace(cfg, class_weights=np.asarray(cfg.class_weights, dtype=np.float64).reshape(-1).tolist())
    _checked(cfg)  # every field now, before any work
    return cfg


def _checked(cfg: TrainConfig) -> Any:
    """``cfg`` as the C++ struct, each field checked; the two fields that need the model or the data (a predicate
    ``freeze``, ``class_weights="balanced"``) are checked in full once those are known (resolve_for_run)."""
    return dataclasses.replace(cfg, freeze=None if callable(cfg.freeze) else cfg.freeze,
                               class_weights=None if cfg.class_weights == "balanced" else cfg.class_weights).to_cpp()


def sampled_text_rows(x: Any, y: Any, cfg: TrainConfig) -> np.ndarray | None:
    """Where X is texts and the run trains on a sample of them, the sample's rows (the loop draws the same ones):
    a text model's tokenizer counts the texts it cuts among those that train, not among the pool. Else None."""
    if (cfg.sample_fraction == 1.0 and cfg.sample_size is None) or registry.as_texts(x) is None:
        return None
    y, _ = data.label_ids(y, "y", cfg.task, None, fit=True)  # text labels: their ids, as train draws by them
    return _C.sample_indices(data.targets(y, "y", cfg.task, data.length(y)), _checked(cfg)).numpy()


def resolve_for_run(cfg: TrainConfig, parameter_names: list[str], targets: torch.Tensor) -> TrainConfig:
    """``freeze`` given as a predicate becomes the exact names it accepts; ``class_weights="balanced"``
    becomes n / (classes x count) per class, counted on the sampled training subset."""
    if callable(cfg.freeze):
        cfg = dataclasses.replace(cfg, freeze=[re.escape(n) for n in parameter_names if cfg.freeze(n)])
    if cfg.class_weights == "balanced":
        if cfg.task != "classification":
            raise ValueError(f"class_weights apply to task='classification' only, got task={cfg.task!r}")
        probe = dataclasses.replace(cfg, class_weights=None).to_cpp()
        counts = _C.class_counts(targets, _C.sample_indices(targets, probe))
        cfg = dataclasses.replace(cfg, class_weights=recipes.balanced_weights(counts).tolist())
    return cfg


@dataclass
class _Run:
    """A fine-tune's inputs, checked and converted for C++."""

    model: Any
    cpp_model: Any
    inputs: list[torch.Tensor]
    targets: torch.Tensor
    val_inputs: list[torch.Tensor] | None
    val_targets: torch.Tensor | None
    config: TrainConfig
    cpp_config: Any
    model_options: dict[str, Any]  # every option of a model built by name (or a NativeModel's); {} otherwise
    pretrained: bool  # the model carries trained weights (passed in, or a pretrained built-in)
    head: dict[str, Any] | None = None  # what head="new"/"auto" replaced
    family: str = "default"  # the recipe's rules for this model (registry.ModelEntry.recipe)
    runner: dict[str, str] | None = None  # models.Runner.to_dict(): how the C++ loop runs the forward
    given: Any = None  # the model as passed (``model`` may be its models.Adapted form): what results return
    lora: dict[str, Any] | None = None  # the adapters added (lora=): layers, settings
    mask_input: int = -1  # the attention mask's input: batches cut to their longest row (finetune.padding), or -1
    trim_padding: dict[str, Any] | None = None  # {"used", "reason"} (Result.trim_padding)
    phase: str = ""  # the recipe's phase this run is ("head", "refit-full", ...): named on each progress line
    stop_after: int | None = None  # the epochs the recipe's phase runs (a refit's), shorter than its schedule
    classes: tuple[str, ...] | None = None  # y's string labels, in class-id order (data.label_ids)
    picked: dict[str, tuple[Any, str]] = field(default_factory=dict)  # model options recipe="auto" chose, and why


HEADS = ("auto", "new", "keep")


def _outputs_needed(targets: torch.Tensor, val_targets: torch.Tensor | None, task: str) -> int:
    """The head width the labels need: classes (largest id + 1, validation labels included) or values per example."""
    if task != "classification":
        return int(targets[0].numel()) if targets.dim() > 1 else 1
    largest = int(targets.max())
    if val_targets is not None:
        largest = max(largest, int(val_targets.max()))
    return largest + 1


def _fit_head(model: Any, head: str, outputs: int, task: str, seed: int, example: list[torch.Tensor],
              trained_outputs: int | None = None) -> dict[str, Any] | None:
    """head="new": a new seeded head sized for the labels; "auto": the same, only where a classifier's head has
    fewer classes than the labels need and the model lets its head be replaced (an nn.Module whose head is an
    nn.Linear); "keep": the model as it is. "auto" keeps a head wider than the classes (its extra classes never
    occur as targets) and any regression head (a width that differs from the targets' is more likely a
    mistake in y's shape than a head to replace: the loop's error says so). A head that would be sized past
    ``trained_outputs`` (y's classes) by validation labels alone is an error: training would never show them."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {list(HEADS)}, got {head!r}")
    replaceable = isinstance(model, torch.nn.Module) and not isinstance(model, torch.jit.ScriptModule)
    if head == "keep" or (head == "auto" and (task != "classification" or not replaceable)):
        return None  # "auto" on a native or scripted model: a head of the wrong width is reported by the loop's check
    try:
        name = heads.find_head(model, example)
    except ValueError:
        if head == "auto":
            return None  # no head layer (no parameters, or the model is one layer): nothing to replace
        raise
    if head == "auto":
        layer = model.get_submodule(name)
        if not isinstance(layer, torch.nn.Linear) or layer.out_features >= outputs:
            return None
    if trained_outputs is not None and outputs > trained_outputs:
        raise ValueError(f"y_val holds label(s) up to {outputs - 1}, beyond y's largest, {trained_outputs - 1}: "
                         f"head={head!r} would size the head for {outputs} classes, some of which training never "
                         "shows; validate on the classes it trains on (labels shifted?)")
    replaced = heads.replace_head(model, name, outputs, seed)
    log.info("head %s replaced: %d -> %d outputs (seed %d)", replaced["name"], replaced["old_outputs"], outputs, seed)
    return replaced


def _add_lora(model: Any, settings: loras.LoraSettings, cfg: TrainConfig, example: list[torch.Tensor]) -> dict[str, Any]:
    """lora=: adapters on the targeted layers; everything but them and the head is frozen (``freeze`` is theirs)."""
    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise ValueError(f"lora= adds adapters to an nn.Module's Linear layers; got {type(model).__name__}")
    if cfg.freeze:
        raise ValueError(f"lora= freezes everything but the adapters and the head; freeze={cfg.freeze!r} cannot be "
                         "given with it")
    try:
        head = heads.find_head(model, example)
    except ValueError:
        head = None  # no head layer: the adapters alone train
    if head is not None and head.split(".")[0] in heads.HEAD_NAMES:
        head = head.split(".")[0]  # the whole classifier trains (RoBERTa's classifier.dense too), as PEFT's modules_to_save
    layers = loras.add_adapters(model, settings, head, cfg.seed)
    log.info("lora: adapters (r=%d) on %d layers; %s trains whole", settings.r, len(layers), head)
    return {"layers": layers, "head": head, "r": settings.r, "alpha": settings.alpha, "dropout": settings.dropout,
            "merge": settings.merge}


def _check_class_ids(targets: torch.Tensor) -> None:
    """Labels a model built by name can be sized for: two classes at least, and ids that are class ids, not codes
    (its head and the confusion matrix are as wide as the largest id: {0, 1e6} asked for terabytes). A model passed
    in is not checked: its head may be wider than the labels, kept (head="auto"), the labels some of its classes."""
    present = torch.unique(targets)
    if present.numel() == 1:
        raise ValueError(f"y holds one class ({int(present[0])}) in all {targets.shape[0]} rows: classification needs "
                         "at least two (for a value to predict, pass task='regression')")
    largest = int(present[-1])
    if largest >= max(1000, 1000 * present.numel()):
        raise ValueError(f"y's class ids reach {largest} with {present.numel()} distinct labels: class ids are 0..K-1 "
                         "(np.unique(y, return_inverse=True)[1] or pd.factorize(y)[0] gives them)")


QUANTITY_MIN_VALUES = 10  # labels with at least this many distinct values ...
QUANTITY_MEDIAN_COUNT = 3  # ... half of them seen fewer times than this look like a quantity, not classes


def check_device(device: str) -> None:
    """The C++ loop's device check (forward.cpp's resolve_device), before an nn.Module is moved there: torch's own
    error for a missing CUDA is an AssertionError that names no setting."""
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError):
        found = None
    if found is None or found.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if found.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available in this build or machine")


def _task_given(config: Any, settings: dict[str, Any]) -> bool:
    """Whether the task was said (a keyword, or a config's other than the default), not left to the default."""
    return "task" in settings or (isinstance(config, TrainConfig) and config.task != TrainConfig.task)


def check_not_quantities(targets: torch.Tensor, setting: str = "task", gaps: bool = True, labels: str = "y") -> None:
    """Labels that are not class ids while no task was given: a quantity measured (diabetes' disease progression,
    25 to 346, most values seen once or twice), for which the default, classification, would train a class per
    value and report an accuracy near 0, or codes with gaps (1 and 2; 0, 3 and 7), for which it would size the head
    by the largest and train outputs no example has. Say so instead; task='classification' given keeps them as
    they are. Only labels that are exactly 0..K-1 pass (factorised labels, 100 classes of 2 examples each);
    ``gaps=False`` (a model passed in keeps its head, which may have classes y lacks) checks quantities alone.
    ``setting``: how the message names the task (the CLI's "train.task"); ``labels``: how it names y (a file's
    label column)."""
    values, counts = torch.unique(targets, return_counts=True)
    if torch.equal(values.double(), torch.arange(values.numel(), dtype=torch.float64)):
        return
    if counts.numel() >= QUANTITY_MIN_VALUES and float(counts.double().median()) < QUANTITY_MEDIAN_COUNT:
        raise ValueError(f"{labels} has {counts.numel()} distinct values among {targets.shape[0]} rows, most of them "
                         f"seen once or twice: a value to predict? pass {setting}='regression'; or "
                         f"{setting}='classification' to train them as {counts.numel()} classes")
    # Ids that never occur: a head as wide as the largest id, classes no example has (a price in whole dollars
    # became 5,400 classes; {0, 1, 2, 3, 7, 12} 13), rule 7 weighting the empty ones and top-5 accuracy counting
    # them. Labels coded from 1 ({1, 2}) are the common case; 0..K-1 is what a head's outputs are. Labels that
    # are not class ids at all (negative, fractional, one class) get their own message where they are converted.
    whole = bool((values == values.round()).all()) if values.is_floating_point() else True
    if not gaps or values.numel() < 2 or not whole or float(values[0]) < 0:
        return
    largest = int(values[-1])
    shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if values.numel() > 8 else "")
    encode = ("encode them, one mapping for every split (classes, y = np.unique(y, return_inverse=True); y_val = "
              "np.searchsorted(classes, y_val))" if setting == "task" else
              "write them in the file as 0..K-1, or as words (each becomes a class)")
    whose = "y's labels" if labels == "y" else f"the labels in {labels}"
    raise ValueError(f"{whose} are not the class ids 0..K-1: {values.numel()} distinct labels ({shown}) "
                     f"reach {largest}, so {largest + 1 - values.numel()} of the {largest + 1} ids never occur; "
                     f"{encode}, pass {setting}='regression' for a value to predict, or {setting}='classification' to "
                     "keep them as given")


def _prepare(model: Any, train_data: Any, val: Any, config: TrainConfig | None, settings: dict[str, Any],
             head: str = "keep", lora: loras.LoraSettings | None = None, task_given: bool = True,
             recipe: str = "none") -> _Run:
    if isinstance(model, str) and model not in registry.MODELS:
        raise ValueError(f"model must be an nn.Module or one of {registry.names()}, got {model!r}")
    entry = registry.MODELS[model] if isinstance(model, str) else None
    model_options = entry.split_options(settings) if entry is not None else {}
    picked: dict[str, tuple[Any, str]] = {}  # model options recipe="auto" picks from the sample, with reasons
    unknown = sorted(set(settings) - set(config_fields()))
    if entry is not None and unknown:
        raise TypeError(f"unknown setting(s) {unknown}{did_you_mean(unknown, config_fields() + entry.option_names)}"
                        f"; known settings: {config_fields()}; "
                        f"options of model {entry.name!r}: {entry.option_names}")
    cfg = resolve_config(config, settings)
    cfg = dataclasses.replace(cfg, device=device_for_rank(cfg.device))
    check_device(cfg.device)
    x, y = streams.split(train_data, "train_data")
    if entry is not None and entry.pairs and not task_given:  # a recommender by name: ratings, or pairs alone
        cfg = dataclasses.replace(cfg, task="ranking" if y is None else "regression")
    data.check_rows_aligned(x, y)
    y, classes = data.label_ids(y, "y", cfg.task, None, fit=True)  # "Yes"/"No": ids 1/0, the labels kept
    columns = data.column_names(x)  # X_val's must be the same, in the same order
    keys = data.keywords(x, "X")  # X as a dict: the model's inputs by name
    if keys is not None and entry is not None:
        raise ValueError(f"X as a dict (keyword inputs) needs an nn.Module called in Python; the built-in model "
                         f"{entry.name!r} takes arrays")
    dtype = torch.float32 if entry is not None else models.parameter_dtype(model)
    missing = registry.takes_missing(entry.name if entry is not None else model)  # "mlp" fills NaN itself
    stream = streams.streamed(x, y, "train_data", cfg.task, dtype, cfg)
    if stream is not None:  # a dataset or a memory-mapped X: read a batch at a time (finetune.streams)
        if entry is not None and entry.example_shape is None:  # an image model's sizes are its first example's
            raise ValueError(f"model={entry.name!r} reads its sizes and statistics from X in memory, and train_data "
                             f"is streamed ({type(x).__name__}): build the model first and pass it "
                             f"(finetune.build({entry.name!r}, ...) with its options, or your nn.Module)")
        inputs, targets = stream
    else:
        rows = sampled_text_rows(x, y, cfg)
        if entry is not None and recipe == "auto":  # options the recipe picks from the sample ("minilm"'s layers)
            picked = recipes.picked_model_options(entry.recipe, cfg.task, y if rows is None else np.asarray(y)[rows],
                                                  list(_given_settings(config, settings)), model_options,
                                                  lora is not None)
            picked = {k: v for k, v in picked.items() if k in entry.defaults}  # a model of the family without it
            model_options = {**model_options, **{k: v for k, (v, _) in picked.items()}}
        if entry is not None:  # numbers the model reads (MiniLM: texts tokenised); numbers stay as they are
            model_options = entry.choose_options(x, model_options)  # once, from the training inputs, for every split
            x = entry.encode_inputs(x, model_options, rows)
        else:
            x = registry.encode_for(model, x, rows)  # a model built by name before: its texts, its category columns
        inputs = data.features(x, "X", dtype, examples=data.length(y), missing=missing)
        targets = data.targets(y, "y", cfg.task, inputs[0].shape[0])
    # A stream's labels are checked where finetune sizes the head by them (a built-in model); in memory, always
    if cfg.task == "classification" and (stream is None or entry is not None):
        if not task_given:  # the default task: do the labels look like classes?
            # Gaps matter where the head is sized by the labels; a model's own head may have classes y lacks.
            check_not_quantities(targets, gaps=entry is not None or head == "new")
        if entry is not None:  # a model passed in may keep a wider head
            _check_class_ids(targets)
    val_inputs = val_targets = None
    if val is not None:
        val_x, vy = streams.split(val, "val")
        data.check_rows_aligned(val_x, vy, ("X_val", "y_val"))
        vy, _ = data.label_ids(vy, "y_val", cfg.task, classes, fit=False)
        val_keys = data.keywords(val_x, "X_val")
        if val_keys != keys:
            raise ValueError(f"X_val's inputs {val_keys} differ from X's {keys}: pass them the "
                             "same way (a dict with the same keys in the same order, or arrays)")
        streams.check_same_classes(x, val_x)
        data.check_columns(val_x, columns, "X_val")
        val_stream = streams.streamed(val_x, vy, "val", cfg.task, dtype, cfg)
        if val_stream is not None:
            val_inputs, val_targets = val_stream
        else:
            val_x = entry.encode_inputs(val_x, model_options) if entry is not None else registry.encode_for(model, val_x)
            val_inputs = data.features(val_x, "X_val", dtype, examples=data.length(vy), missing=missing)
            val_targets = data.targets(vy, "y_val", cfg.task, val_inputs[0].shape[0])
            if (cfg.task == "classification" and entry is not None and stream is None
                    and "num_classes" not in model_options):  # a built-in model's head is as wide as y's labels
                beyond = torch.unique(val_targets[val_targets > targets.max()]).tolist()
                if beyond:
                    raise ValueError(f"y_val holds label(s) {beyond[:8]} beyond y's largest, {int(targets.max())}: "
                                     f"model {entry.name!r} is built with y's {int(targets.max()) + 1} classes; "
                                     "validate on the classes it trains on, or pass num_classes=")
        data.check_same_example_shape(streams.head(inputs, 1), streams.head(val_inputs, 1), "X", "X_val")
    if stream is None and not isinstance(val_inputs, streams.Stream):
        streams.check_unused(cfg)  # num_workers/prefetch would read nothing: every split is in memory
    example = streams.head(inputs, 2)  # two examples' inputs: tracing, a head's width, an output's type

    pretrained = entry.pretrained(model_options) if entry is not None else True
    if entry is not None:
        needed, given_classes = _outputs_needed(targets, val_targets, cfg.task), model_options.get("num_classes")
        if cfg.task == "classification" and isinstance(given_classes, int) and given_classes < needed:
            raise ValueError(f"num_classes={given_classes} (an option of model {entry.name!r}) gives {given_classes} "
                             f"outputs, and the labels have {needed} classes: leave num_classes out (it is read off "
                             f"the labels) or pass {needed} or more")
        torch.manual_seed(cfg.seed)  # the initial weights are part of a seeded run
        # A stream's sizes are read off its first examples (an image model's: all its options come from shapes)
        sized = example if isinstance(inputs, streams.Stream) else inputs
        model, model_options = entry.build_for(sized, targets, cfg.task, model_options)
    elif isinstance(model, models.NativeModel):
        model_options = model.options
    if lora is not None and isinstance(model, torch.jit.ScriptModule) and models.eager(model) is not None:
        built = registry.built(model)
        model = models.eager(model)  # a module finetune traced ("minilm"): adapters change its Python layers
        if built is not None:  # the module trained is the one returned: it reads texts as built
            registry.remember(model, *built)
    given_model = model
    models.check_keyword_inputs(model, keys, inputs)
    if val_inputs is not None:
        models.check_keyword_inputs(model, keys, val_inputs, "X_val")
    model = models.adapt(model, example, keys, cfg.output_key)  # keyword inputs, a dict or tuple output
    replaced = _fit_head(model, head, _outputs_needed(targets, val_targets, cfg.task), cfg.task, cfg.seed, example,
                         _outputs_needed(targets, None, cfg.task) if cfg.task == "classification" else None)
    adapters = _add_lora(model, lora, cfg, example) if lora is not None else None
    if adapters is not None:
        cfg = dataclasses.replace(cfg, freeze=loras.trainable(adapters["head"]))
    try:
        if cfg.device != "cpu" and isinstance(model, torch.nn.Module):
            model.to(cfg.device)  # before scripting, so the scripted module shares the moved parameters
        runner = models.runner_for(model, example, cfg.runner)
        cpp_model = runner.cpp
        names = [n for n, _ in (model.named_parameters() if isinstance(model, (torch.nn.Module, models.NativeModel))
                                else cpp_model.named_parameters())]
        cfg = resolve_for_run(cfg, names, targets)
        mask_input, trimming = padding.plan(model, inputs, keys, entry.mask_input if entry is not None else None, cfg)
    except BaseException:
        if adapters is not None:
            loras.merge(given_model)  # untrained adapters (B = 0) out again: the model as it was passed
        raise
    known = entry or (registry.MODELS.get(model.name) if isinstance(model, models.NativeModel) else None)
    family = known.recipe if known is not None else recipes.family_of(given_model)
    return _Run(model, cpp_model, inputs, targets, val_inputs, val_targets, cfg, cfg.to_cpp(), model_options,
                pretrained, replaced, family, runner.to_dict(), given_model, adapters, mask_input, trimming,
                classes=classes, picked=picked)


# Fields that may differ between a checkpoint and the run resuming it: they change nothing in the trajectory.
# `epochs` may change too (a finished run extended, or a run shortened), as long as the checkpoint has not
# already trained past the new end; the schedule is then computed for the new length.
RESUMABLE_CHANGES = ("progress", "checkpoint_dir", "checkpoint_every", "keep_last", "eval_batch_size", "epochs",
                     "num_workers", "prefetch")


def _resume_state(run: _Run, resume: bool | str | os.PathLike) -> Any:
    """Loads the checkpoint `resume` names into the model and returns its loop state (None: start afresh)."""
    if resume is True:
        if not run.config.checkpoint_dir:
            raise ValueError("resume=True needs checkpoint_dir (where the checkpoints are)")
        found = checkpoint.find(run.config.checkpoint_dir)
        if found is None:
            log.info("no checkpoint in %s: starting from the beginning", run.config.checkpoint_dir)
            return None
    else:
        found = checkpoint.find(resume)
        if found is None:
            raise FileNotFoundError(f"resume: no checkpoint at '{resume}'")
    tensors, loop_state, saved = checkpoint.load(found)
    current = json.loads(json.dumps(run.config.to_dict()))
    defaults = json.loads(json.dumps(TrainConfig().to_dict()))  # a field newer than the checkpoint: its default
    differing = {k: (saved.get(k, defaults[k]), current[k]) for k in current
                 if k not in RESUMABLE_CHANGES and saved.get(k, defaults[k]) != current[k]}
    if differing:
        details = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differing.items())
        raise ValueError(f"checkpoint '{found}' was written with other settings ({details}); resume with the same "
                         f"settings, or start a new run")
    done = loop_state["counters"]["epoch"] + (1 if loop_state["counters"]["epoch_step"] > 0 else 0)
    if saved.get("epochs") != run.config.epochs and done > run.config.epochs:
        raise ValueError(f"checkpoint '{found}' has already trained {done} epochs; resume it with epochs >= {done}, "
                         f"got epochs={run.config.epochs}")
    if saved.get("epochs") != run.config.epochs:
        log.info("resuming a run of %s epochs for %d epochs: the schedule is recomputed for the new length",
                 saved.get("epochs"), run.config.epochs)
    checkpoint.load_model_state(run.model, tensors, str(found))
    ran = len(loop_state["history"])
    if loop_state["counters"]["epoch"] >= run.config.epochs and ran < run.config.epochs:
        # A run stopped early (early stopping, a callback) is complete: nothing is left to resume, and silence
        # would read as a resumed run
        log.warning("checkpoint '%s' holds a run that ended after %d of its %d epochs (early stopping or a callback "
                    "stopped it): resuming trains nothing further and returns the model as it ended; a new run "
                    "needs another checkpoint_dir", found, ran, run.config.epochs)
    log.info("resuming from %s (epoch %d, step %d)", found, loop_state["counters"]["epoch"],
             loop_state["counters"]["steps"])
    return checkpoint.loop_state(loop_state)


@contextlib.contextmanager
def _sigterm_as_keyboard_interrupt():
    """SIGTERM (a scheduler's polite kill) becomes KeyboardInterrupt, so the loop saves a checkpoint and stops."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(model: Any, train_data: tuple[Any, Any], val: tuple[Any, Any] | None = None, *,
          config: TrainConfig | None = None, callback: Callable[[str, dict], bool | None] | None = None,
          callback_interval: float = 0.1, resume: bool | str | os.PathLike = False, recipe: str | None = None,
          head: str = "auto", val_fraction: float | None = None, lora: bool | dict[str, Any] | None = None,
          labels: Any = None, **settings: Any) -> Result:
    """Fine-tune ``model`` on ``train_data = (X, y)`` in the C++ loop.

    ``model`` is an ``nn.Module`` (scripted for C++, its parameters updated in place), a ``NativeModel``,
    or a built-in name ("mlp", "cnn") whose sizes are read off the data unless given (``hidden=[256]``).
    Settings are the fields of :class:`TrainConfig` as keywords (``epochs=5, lr=0.01, batch_size="full"``).

    ``recipe="auto"`` (the default when no setting that shapes the training -- optimizer, rate, schedule, epochs,
    freezing, early stopping -- is given) runs finetune's recipe (``finetune.recipe``):
    a validation slice, the head first, then every layer, rates from range tests, early stopping; each decision
    is in ``result.recipe`` (few-shot text holds no slice out: SetFit's pairs then the head, nothing to decide on
    one; ``val_fraction`` or ``val`` measures). ``recipe="head"`` runs its head phase alone (the body frozen, its
    features computed once in eval mode where the model allows: head-only fine-tuning in one switch). ``recipe="none"`` runs the
    settings as given (the default once one is given). While only one submodule trains (``freeze`` holds the
    rest), the rest runs once per example and that submodule trains on what it gave (``cache_frozen``, exact;
    ``result.cache_frozen`` says whether and why not).
    ``lora=True`` or ``{"r": 8, "alpha": 16, "dropout": 0.0, "targets": ["query", "value"], "merge": True}``
    adds low-rank adapters (finetune.lora) to the targeted ``nn.Linear`` layers, trains them and the head with
    everything else frozen, and merges them into the weights at the end (``merge=False`` keeps them).
    ``train_data`` (and ``val``) may also be streamed, read a batch at a time (finetune.streams): a torch
    ``Dataset`` whose items are ``(inputs, label)``, its labels in its ``targets``/``labels`` attribute or given
    as ``labels=`` (or ``(dataset, labels)``); an ``(X, y)`` whose X is memory-mapped (``np.load(path,
    mmap_mode="r")``, ``finetune.streams.MappedRows.safetensors``); ``finetune.datasets.ImageFolder``.
    ``num_workers`` processes read the loop's next batches ahead (``prefetch`` each).
    ``head``: "auto" replaces an ``nn.Linear`` head narrower than the labels need by a new seeded one (a wider
    one is kept: the labels may be some of the model's own classes), "new" always does, "keep" never;
    ``result.head`` says what was replaced. ``val_fraction`` holds out that stratified share of the training
    sample as ``val`` (an error when ``val`` is given too).

    ``callback(kind, info)`` is called with ``"step"`` at most every ``callback_interval`` seconds (0: after
    every step) and with ``"epoch"`` after each epoch; returning True stops training. Python is entered only
    then, which is also when Ctrl-C is noticed.

    With ``checkpoint_dir`` set, checkpoints are written every ``checkpoint_every`` steps (or epoch), and
    when Ctrl-C or SIGTERM stops the run (after the step in progress, then KeyboardInterrupt is raised).
    ``resume=True`` continues from the latest checkpoint there (or starts afresh if there is none);
    ``resume=path`` from that checkpoint. On CPU a resumed run ends with the same weights, bit for bit, as
    one never interrupted.
    """
    train_data = streams.with_labels(train_data, labels, "train_data")
    given = _given_settings(config, settings)
    chosen, reason = _choose_recipe(recipe, given, resume)
    if val_fraction is not None and val is not None:
        raise ValueError(f"val_fraction={val_fraction!r} holds out part of train_data as validation data, but val is "
                         "given too; pass one of them")
    if val_fraction is not None and not (isinstance(val_fraction, float | int) and 0 < val_fraction < 1):
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if callback is not None and not callable(callback):  # now, not at the first step, deep in the loop
        raise TypeError(f"callback must be a callable (kind, info) -> bool | None, got {callback!r} "
                        f"({type(callback).__name__})")
    lora_settings = loras.LoraSettings.parse(lora) if lora is not None and lora is not False else None
    if lora_settings is not None and chosen == "head":
        raise ValueError("lora= trains adapters in the body, and recipe='head' trains the head alone: pass one of them")
    run = _prepare(model, train_data, val, config, settings, head=head, lora=lora_settings,
                   task_given=_task_given(config, settings), recipe=chosen)
    if recipe is None and reason.startswith(AS_GIVEN):  # by keywords: config=TrainConfig(...) is a deliberate whole
        _say_recipe_off({k: v for k, v in given.items() if k in settings})  # once they are known to be valid
    try:
        if chosen in ("auto", "head"):  # each phase holds the model while it trains (models.exclusive)
            result = _train_auto(run, chosen, reason, given, val_fraction, callback, callback_interval, resume)
        else:
            result = _train_as_given(run, reason, val_fraction, callback, callback_interval, resume)
            result.recipe += _still_learning(result)  # the user's epochs: say if they cut the run short
            result.recipe += _not_learning(result)  # the user's rate: say if the loss never left chance
    finally:
        # The adapters' update added into the weights, the model its plain self again -- after an error or
        # Ctrl-C too (what trained stays trained, as every weight trained in place does).
        merged = loras.merge(run.given) if run.lora is not None and run.lora["merge"] else []
    result.head = run.head
    if run.lora is not None:
        result.lora = {**run.lora, "merged": bool(merged)}
    x = streams.split(train_data, "train_data")[0]
    named = getattr(x, "classes", None) if streams.is_dataset(x) and run.classes is None else None
    remember_training(result.model, TrainedFor(result.config.task, data.column_names(x), tuple(run.targets.shape[1:]),
                                               data.example_shape(x), run.classes,
                                               tuple(named) if isinstance(named, (list, tuple)) else None,
                                               image_scale(x)))
    if isinstance(named, (list, tuple)):  # an ImageFolder's sub-folders: predict gives ids, these name them
        result.classes = list(named)
    if run.classes is not None:
        result.classes = list(run.classes)
        if result.class_counts is not None:
            result.class_counts = {run.classes[k]: n for k, n in result.class_counts.items() if k < len(run.classes)}
    result.recipe += _one_class(result)  # either path: a model that answers one class whatever it reads
    return result


RECIPES = ("auto", "head", "none")


@dataclass(frozen=True)
class TrainedFor:
    """What predict, evaluate and embed read off a model's training: its task (a regression model's one output
    read as class scores would give class 0 for every row), a DataFrame X's column names (a column moved would
    feed each input another feature), y's shape per example (predictions come back in it), X's (a single
    example passed as X would be read as many) and y's string labels in class-id order (predict gives them back,
    evaluate reads y's by them)."""

    task: str
    columns: tuple[str, ...] | None = None
    target_shape: tuple[int, ...] | None = None
    example_shape: tuple[int, ...] | None = None  # X's shape per example, when X was one array (data.example_shape)
    classes: tuple[str, ...] | None = None  # y's string labels, in class-id order; None: y held class ids
    # A dataset's class names where its labels were their ids (an ImageFolder's sub-folders): evaluate reads another
    # folder's labels by them
    folder_classes: tuple[str, ...] | None = None
    # A dataset's pixel normalisation where it has one to set (ImageFolder's mean and std, as lists; [None, None]:
    # [0, 1]): evaluate and predict refuse images read at another scale
    image_scale: tuple[Any, Any] | None = None


# The last training of each model (finetune.train, or finetune.load). Weak: the models are the user's to drop.
_TRAINED_FOR: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def remember_training(model: Any, trained: TrainedFor) -> None:
    try:
        _TRAINED_FOR[model] = trained
    except TypeError:  # an object that cannot be referenced weakly: predict then needs task= as before
        pass


def trained_for(model: Any) -> TrainedFor | None:
    try:
        return _TRAINED_FOR.get(model)
    except TypeError:
        return None


def _check_batch_size(batch_size: Any) -> None:
    """evaluate's, predict's and embed's batch_size, named as the caller passed it (TrainConfig says eval_batch_size)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def task_of(model: Any, task: str | None) -> str:
    """``task`` when given, else the task finetune.train last trained ``model`` for, else classification."""
    if task is not None:
        return task
    trained = trained_for(model)
    return trained.task if trained is not None else "classification"


def image_scale(dataset: Any) -> tuple[Any, Any] | None:
    """(mean, std) as lists, or (None, None), of a dataset that normalises its images (ImageFolder, ImageFiles);
    None for anything else."""
    if not streams.is_dataset(dataset) or not hasattr(dataset, "mean") or not hasattr(dataset, "std"):
        return None
    return pixel_scale(dataset.mean, dataset.std)


def pixel_scale(mean: Any, std: Any) -> tuple[Any, Any]:
    """(mean, std) as TrainedFor.image_scale keeps them: lists of rounded floats, None where not normalised."""
    as_list = lambda v: None if v is None else [round(float(f), 6) for f in np.asarray(v).ravel()]  # noqa: E731
    return as_list(mean), as_list(std)


def _check_image_scale(model: Any, dataset: Any, name: str) -> None:
    """A dataset read at another pixel scale than the one the model trained on is an error, not a silent shift."""
    trained = trained_for(model)
    if trained is None or trained.image_scale is None:
        return
    if isinstance(dataset, (np.ndarray, torch.Tensor)):
        _check_pixels(dataset, trained.image_scale, name)
        return
    scale = image_scale(dataset)
    if scale is None:
        return
    if list(trained.image_scale) != list(scale):
        def said(s: Any) -> str:
            return "no mean/std (pixels in [0, 1])" if s[0] is None else f"mean={s[0]}, std={s[1]}"
        raise ValueError(f"{name} is read with {said(scale)}, and the model trained on images read with "
                         f"{said(trained.image_scale)}: pass the same mean= and std= ({type(dataset).__name__}(..., "
                         "mean=..., std=...))")


def _check_pixels(x: np.ndarray | torch.Tensor, scale: tuple[Any, Any], name: str) -> None:
    """Images given as an array to a model that trained on an image folder, which read its pixels as ``scale``
    says ([mean, std] or [None, None]: pixel / 255): an image file's uint8 pixels are an error, and values all in
    [0, 1] where training normalised them to a mean a warning (its inputs held negatives: both read as garbage)."""
    mean, std = scale
    read = (f"(pixel / 255 - mean) / std, mean={mean}, std={std} per channel" if mean is not None else
            "pixel / 255, in [0, 1]")
    if x.dtype in (np.uint8, torch.uint8):
        raise ValueError(f"{name} holds uint8 pixels (0 to 255), and the model trained on images read as {read}: pass "
                         f"them read the same way (float32)")
    if mean is not None and x.size and any(m > 0 for m in np.ravel(mean)) and 0 <= float(x.min()) \
            and float(x.max()) <= 1:
        log.warning(f"{name}'s values are all in [0, 1], and the model trained on images read as {read}: read "
                    "them the same way, or its predictions are garbage")


def _with_training_classes(model: Any, dataset: Any) -> Any:
    """A dataset to evaluate labelled by the class names of the one the model trained on: an ImageFolder holding some
    of them (or in another order) relabelled with their training ids; another dataset whose classes differ, an
    error (its label 1 would be scored as training's class 1)."""
    trained = trained_for(model)
    named = getattr(dataset, "classes", None) if streams.is_dataset(dataset) else None
    if trained is None or trained.folder_classes is None or named is None or \
            list(named) == list(trained.folder_classes):
        return dataset
    if hasattr(dataset, "with_classes"):
        return dataset.with_classes(trained.folder_classes)
    raise ValueError(f"data's classes {list(named)} differ from those the model trained on "
                     f"{list(trained.folder_classes)}: its labels would be read as other classes; label it by the "
                     "training classes' order")


def _check_like_training(model: Any, x: Any) -> None:
    """X's columns and the shape of its examples against the training X's (TrainedFor)."""
    trained = trained_for(model)
    data.check_columns(x, trained.columns if trained is not None else None)
    data.check_example_shape(x, trained.example_shape if trained is not None else None)


@contextlib.contextmanager
def _said_with_training_shape(model: Any, x: Any) -> Iterator[None]:
    """A forward pass that failed on examples shaped otherwise than the training's (images of another size, channels
    last: sizes are not checked first, as a model may take other sizes) says both shapes after its own error."""
    try:
        yield
    except ValueError as error:
        trained, shape = trained_for(model), data.example_shape(x)
        if not str(error).startswith("model forward() failed") or trained is None or trained.example_shape is None \
                or shape is None or tuple(shape) == tuple(trained.example_shape):
            raise
        raise ValueError(f"{error} -- X's examples are shaped {tuple(shape)}, and the model was trained on examples "
                         f"shaped {tuple(trained.example_shape)}") from None


def _values_shaped(model: Any, raw: torch.Tensor) -> torch.Tensor:
    """Regression predictions in the shape of the y the model trained on: (N,) for one value per example, as
    scikit-learn's; a model with no training on record: (N,) for one output, else its outputs' shape."""
    trained = trained_for(model)
    shape = trained.target_shape if trained is not None else None
    if shape is not None and raw[0].numel() == math.prod(shape):
        return raw.reshape(raw.shape[0], *shape)
    return raw[:, 0] if raw.dim() == 2 and raw.shape[1] == 1 else raw


def _train_as_given(run: _Run, reason: str, val_fraction: float | None = None,
                    callback: Callable[[str, dict], bool | None] | None = None, callback_interval: float = 0.1,
                    resume: bool | str | os.PathLike = False) -> Result:
    """recipe="none": the settings as given, in the C++ loop (on the frozen part's features where they are exact).
    The recipe's phases run here too, each a prepared run of its own."""
    sample = None
    if val_fraction is not None:
        run, sample = _hold_out(run, float(val_fraction))
    with models.exclusive(run.model):
        found, cached = frozen.plan(run.model, run.inputs, run.val_inputs, run.config, resume, run.mask_input)
        result = _train(_on_features(run, found) if found is not None else run, callback, callback_interval, resume)
    if found is not None:  # the head's run, reported as the model's
        result.config, result.runner = run.config, run.runner
        for group in result.param_groups:
            group["names"] = [f"{found.name}.{n}" for n in group["names"]]
    result.cache_frozen = cached
    result.recipe = [{"what": "recipe", "value": "none", "reason": reason}]
    result.sample_indices = (sample if sample is not None else _C.sample_indices(run.targets, run.cpp_config)).numpy()
    return result


def _given_settings(config: TrainConfig | None, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings the user chose: keywords, and a config's fields that differ from the defaults."""
    given = {}
    if isinstance(config, TrainConfig):
        default = TrainConfig()
        given = {f: getattr(config, f) for f in config_fields() if getattr(config, f) != getattr(default, f)}
    return {**given, **{k: v for k, v in settings.items() if k in config_fields()}}


def recipe_for(config: TrainConfig, given: Sequence[str] = ()) -> tuple[str, str]:
    """("auto" or "none", why): what ``train(config=config, **{k: getattr(config, k) for k in given})`` runs with
    no ``recipe=`` given -- the fields named in ``given`` count as given at any value (a run directory asks, with the
    keys its config file set, to checkpoint only what runs the settings as given)."""
    return _choose_recipe(None, _given_settings(config, {k: getattr(config, k) for k in given}), False)


AS_GIVEN = "settings that shape the training were given"
_SAID_RECIPE_OFF: set[tuple[str, ...]] = set()  # the settings a notice was given for, once a process each


def loop_defaults_left(given: Sequence[str]) -> dict[str, Any]:
    """The loop defaults that shape a run of the settings as given most (optimizer, rate, epochs, schedule) and
    that ``given`` leaves as they are: what a notice that the recipe is off names (train(), a CLI run)."""
    default = TrainConfig()
    return {k: getattr(default, k) for k in ("optimizer", "lr", "epochs", "schedule") if k not in given}


def _say_recipe_off(given: dict[str, Any]) -> None:
    """One line, once per process for each set of settings, where a setting turned the recipe off (lr=1e-3 alone:
    SGD at that rate for 10 epochs, where the user may have meant the recipe at that rate)."""
    shaping = tuple(sorted(k for k in given if k not in recipes.RECIPE_NEUTRAL))
    if not shaping or shaping in _SAID_RECIPE_OFF:
        return
    _SAID_RECIPE_OFF.add(shaping)
    rest = ", ".join(f"{k}={v!r}" for k, v in loop_defaults_left(given).items())
    log.warning(f"{', '.join(f'{k}={given[k]!r}' for k in shaping)} given: the recipe is off and the settings run as "
                f"given{f', the rest at the loop defaults ({rest})' if rest else ''}; recipe='auto' runs the recipe "
                "with them, recipe='none' says this is meant (and silences this line)")


def _choose_recipe(recipe: str | None, given: dict[str, Any], resume: Any) -> tuple[str, str]:
    """("auto", "head" or "none", why). A resumed run (resume=True) runs what its checkpoint_dir holds: a recipe
    run's journal (recipe.json) resumes the recipe, checkpoints of one loop the settings as given."""
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {list(RECIPES)} or None (chosen from the settings), got {recipe!r}")
    shaping = sorted(k for k in given if k not in recipes.RECIPE_NEUTRAL)
    directory = given.get("checkpoint_dir")
    if resume is True and not directory:
        raise ValueError("resume=True needs checkpoint_dir (where the checkpoints are)")
    journal = checkpoint.recipe_journal(directory) if resume is True and directory else None
    plain = resume is True and directory and journal is None and checkpoint.find(directory) is not None
    if recipe in ("auto", "head"):
        conflicting = sorted(k for k in given if k in recipes.CONFLICTING)
        if conflicting:
            raise ValueError(f"recipe={recipe!r} decides which layers train when, so {conflicting} cannot be set with "
                             "it; pass recipe='none' to run those settings as given")
        if resume and resume is not True:
            raise ValueError(f"recipe={recipe!r} resumes from its checkpoint_dir (resume=True), not from one "
                             f"checkpoint (resume={str(resume)!r})")
        if plain:
            raise ValueError(f"checkpoint_dir '{directory}' holds the checkpoints of a run of the settings as given, "
                             f"not of a recipe run; resume it with recipe='none'")
        if journal is not None and journal["recipe"] != recipe:
            raise ValueError(f"checkpoint_dir '{directory}' holds a recipe={journal['recipe']!r} run; resume it "
                             f"with recipe={journal['recipe']!r}, got recipe={recipe!r}")
        return recipe, "given"
    if recipe == "none":
        if journal is not None:
            raise ValueError(f"checkpoint_dir '{directory}' holds a recipe={journal['recipe']!r} run "
                             f"({checkpoint.RECIPE_JOURNAL}); resume it with recipe=None and no setting that shapes "
                             "the training (the CLI: the config it ran), or use another checkpoint_dir for a run of "
                             "the settings as given")
        return "none", "given"
    if journal is not None:
        return journal["recipe"], f"resumed: checkpoint_dir holds a recipe={journal['recipe']!r} run"
    if shaping:
        return "none", (f"{AS_GIVEN} ({', '.join(shaping)}): they run as given, with the defaults for the rest "
                        "(recipe='auto' uses the given ones in its phases)")
    if plain:
        return "none", "resumed: checkpoint_dir holds the checkpoints of a run of the settings as given"
    if resume and resume is not True:
        return "none", "resumed from one checkpoint (resume=path): a run of the settings as given"
    return "auto", "the default: no setting that shapes the training was given"


STILL_FALLING = 0.05  # a last epoch that lowered the training loss by > 5% (and > 10% of the run's progress)


def _still_learning(result: Result) -> list[dict[str, Any]]:
    """A note (and a logged warning) when the run ended with its training loss still falling fast: a fixed epoch
    count that under-trains should not pass silently."""
    losses = [h["train_loss"] for h in result.history]
    if result.stopped or len(losses) < 2 or not losses[-2] > 0:
        return []
    fall = (losses[-2] - losses[-1]) / losses[-2]
    # A converging run's loss can keep falling by a large fraction near zero: what marks a run cut short is a
    # last epoch that still made a large share (> 10%) of the whole run's progress.
    share = (losses[-2] - losses[-1]) / (losses[0] - losses[-1]) if losses[0] > losses[-1] else 0.0
    if fall <= STILL_FALLING or share <= 0.1:
        return []
    message = (f"the training loss fell {fall:.0%} in the last epoch ({losses[-2]:.4g} -> {losses[-1]:.4g}): the run "
               f"was still learning; more epochs, or early stopping (recipe='auto' decides both), would likely help")
    log.warning(message)
    return [{"what": "still_learning", "value": fall, "reason": message}]


AT_CHANCE = 0.98  # a classifier's training loss still above this share of ln(classes) at the end: at chance


def _not_learning(result: Result) -> list[dict[str, Any]]:
    """A note (and a logged warning) when a classifier's training loss ended where guessing starts, ln(classes),
    having barely moved: a rate too low for the optimizer passes silently otherwise (a new user's MiniLM at SGD's
    lr=1e-4 stayed at 0.692 for two epochs and scored below chance)."""
    losses = [h["train_loss"] for h in result.history]
    classes = len(result.class_counts or {})
    if result.config.task != "classification" or classes < 2 or not losses:
        return []
    chance = math.log(classes)
    if not (losses[-1] >= AT_CHANCE * chance and losses[0] - losses[-1] < (1 - AT_CHANCE) * chance):
        return []
    moved = (f"{losses[0]:.4g} -> {losses[-1]:.4g} over {len(losses)} epochs" if len(losses) > 1
             else f"{losses[0]:.4g}, the one epoch's mean")
    message = (f"the training loss stayed at chance ({moved}; "
               f"guessing among {classes} classes gives ln {classes} = {chance:.4g}): the model did not learn; "
               f"the rate (lr={result.config.lr:g}, optimizer={result.config.optimizer!r}) may be too low "
               "(recipe='auto' picks one), or the labels carry no signal the model can find")
    log.warning(message)
    return [{"what": "not_learning", "value": losses[-1], "reason": message}]


def _one_class(result: Result) -> list[dict[str, Any]]:
    """A note (and a logged warning) when a classifier predicts one class for every validation example although
    they hold several: its accuracy is that class's share and nothing was separated. The recipe takes any model
    passed in as trained, so a randomly initialised one (a transformer built from a config) can end here: a new
    user's random BERT kept phase head and scored 0.69 on a test set whose commonest class was 69% of it."""
    matrix = result.confusion_matrix
    if result.config.task != "classification" or matrix is None or matrix.ndim != 2:
        return []
    predicted, actual = np.flatnonzero(matrix.sum(0)), np.flatnonzero(matrix.sum(1))
    if len(predicted) != 1 or len(actual) < 2:
        return []
    label = int(predicted[0])
    name = result.classes[label] if result.classes is not None and label < len(result.classes) else label
    examples = int(matrix.sum())
    message = (f"the model predicts class {name!r} for every one of the {examples} validation examples (of "
               f"{len(actual)} classes): its accuracy, {result.metrics.get('accuracy', float('nan')):.4g}, is that "
               "class's share, and it separates nothing (balanced accuracy "
               f"{result.metrics.get('balanced_accuracy', float('nan')):.4g}); a model with random weights (built "
               "from a config) needs far more data than fine-tuning, or the inputs carry no signal it can find")
    log.warning(message)
    return [{"what": "one_class", "value": name, "reason": message}]


def _hold_out(run: _Run, fraction: float) -> tuple[_Run, torch.Tensor]:
    """The run with a stratified ``fraction`` of its training sample moved to validation data."""
    sample = _C.sample_indices(run.targets, run.cpp_config)
    train_idx, val_idx = recipes.split_validation(run.targets, sample, run.config.task == "classification",
                                                  run.config.seed, fraction)
    if len(val_idx) == 0:
        raise ValueError(f"val_fraction={fraction}: the training sample of {len(sample)} examples leaves no validation "
                         "example (each class keeps at least one training example)")
    cfg = dataclasses.replace(run.config, sample_fraction=1.0, sample_size=None)
    inputs, targets = recipes.take(run.inputs, run.targets, train_idx)
    val_inputs, val_targets = recipes.take(run.inputs, run.targets, val_idx)
    return dataclasses.replace(run, inputs=inputs, targets=targets, val_inputs=val_inputs, val_targets=val_targets,
                               config=cfg, cpp_config=cfg.to_cpp()), train_idx


# Settings a recipe run may be resumed with changed: where and how often it checkpoints, and how it reads.
_JOURNAL_IGNORES = ("progress", "checkpoint_dir", "checkpoint_every", "keep_last", "eval_batch_size", "num_workers",
                    "prefetch")


def _fingerprint(inputs: Any, targets: torch.Tensor | None, rows: torch.Tensor | None = None) -> str:
    """A digest of a split: its inputs' shapes and, for data in memory, their values; its targets; the rows taken."""
    digest = hashlib.sha256()
    for x in ([inputs] if isinstance(inputs, streams.Stream) else list(inputs)) + [targets, rows]:
        digest.update(repr(len(x) if isinstance(x, streams.Stream) else tuple(getattr(x, "shape", ()))).encode())
        if isinstance(x, torch.Tensor):  # a stream (data bigger than memory) is known by its shape alone
            digest.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _recipe_journal(run: _Run, mode: str, given: dict[str, Any], resume: Any, group: Any, sample: torch.Tensor,
                    val_fraction: float | None) -> tuple[dict[str, Any] | None, bool]:
    """(the journal a recipe run with ``checkpoint_dir`` keeps, whether it was read back to resume). A new run's is
    written; a resumed run's must hold the same settings, data (a digest), validation and world size, or resuming
    is an error naming what differs. None without checkpoint_dir. The weights the recipe started from are kept
    beside it (initial.safetensors) and loaded when resuming: phases that do not checkpoint (the linear probe) and
    the refit start from them, and the model passed in may have trained since (Ctrl-C in a notebook, then
    resume=True with the same model). Under torchrun every rank reads it, and rank 0 writes it."""
    cfg = run.config
    if not cfg.checkpoint_dir:
        return None, False
    settings = json.loads(json.dumps({k: v for k, v in given.items() if k not in _JOURNAL_IGNORES}, default=str))
    identity = {"data": _fingerprint(run.inputs, run.targets, sample), "val_fraction": val_fraction,
                "val": None if run.val_inputs is None else _fingerprint(run.val_inputs, run.val_targets),
                "world_size": group.size() if group is not None else 1}
    initial = os.path.join(cfg.checkpoint_dir, "initial.safetensors")
    found = checkpoint.recipe_journal(cfg.checkpoint_dir)
    if group is not None:  # every rank has read the directory before rank 0 writes a new run's journal there
        import torch.distributed as dist

        dist.barrier(group=group)
    if found is None:
        journal = {"recipe": mode, "given": settings, "run": identity, "range_tests": []}
        if process_rank() == 0:
            checkpoint.preflight(cfg.checkpoint_dir, run.model)  # writable, and every tensor of a kind a file holds
            checkpoint.save_tensors(initial, checkpoint.model_state(run.model),
                                    {"format": str(checkpoint.FORMAT_VERSION)})
            checkpoint.write_recipe_journal(cfg.checkpoint_dir, journal)  # last: a journal means a whole start
        return journal, False
    if resume is not True:
        raise ValueError(f"checkpoint_dir '{cfg.checkpoint_dir}' already holds a recipe run "
                         f"({checkpoint.RECIPE_JOURNAL}); resume=True (the CLI's --resume) continues it, or choose "
                         "another checkpoint_dir (or remove it) to start afresh")
    then, now = {**found["given"], **found["run"]}, {**settings, **identity}
    differing = sorted(k for k in {*then, *now} if then.get(k) != now.get(k))
    if differing:
        details = ", ".join(f"{k}: checkpoint {then.get(k)!r} vs now {now.get(k)!r}" for k in differing)
        raise ValueError(f"checkpoint_dir '{cfg.checkpoint_dir}' holds a recipe run of other settings or data "
                         f"({details}); resume with the same ones, or start a new run")
    if not os.path.isfile(initial):
        raise FileNotFoundError(f"recipe run '{cfg.checkpoint_dir}' is incomplete: {initial} is missing")
    checkpoint.load_model_state(run.model, checkpoint.load_tensors(initial)[0], initial)
    log.info("resuming the recipe run in %s: %d range tests read back, finished phases load their last checkpoint",
             cfg.checkpoint_dir, len(found["range_tests"]))
    return found, True


def _train_auto(run: _Run, mode: str, reason: str, given: dict[str, Any], val_fraction: float | None,
                callback: Callable[[str, dict], bool | None] | None, callback_interval: float,
                resume: Any = False) -> Result:
    """recipe="auto" or "head" (finetune.recipe): phases of the C++ loop on one sample, the recipe deciding
    between them. With checkpoint_dir each phase of the loop checkpoints in a directory of its own and the
    range tests' curves go to the journal; resuming replays the recipe, each finished phase returning from its
    last checkpoint (its weights, history and best epoch) and each range test from the journal, so the replay
    takes the decisions it took before and the interrupted phase continues where it stopped."""
    cfg = run.config
    sample = _C.sample_indices(run.targets, run.cpp_config)
    # The recipe caches its head phase's features itself (cache_frozen decides); its phases do not again.
    base = dataclasses.replace(cfg, sample_fraction=1.0, sample_size=None, freeze=None, class_weights=None,
                               cache_frozen=False, checkpoint_dir=None)
    val = (run.val_inputs, run.val_targets) if run.val_inputs is not None else None
    passed = {k: v for k, v in given.items() if k not in recipes.RECIPE_NEUTRAL}
    # Under torchrun the phases of the loop run data-parallel (the global batch is batch_size x world size, as in a
    # run of the settings as given); the decisions between them are rank 0's, shared (distributed.rank_0s).
    group = process_group(cfg.distributed, cfg.device, cfg.dist_timeout)
    world = group.size() if group is not None else 1
    journal, resuming = _recipe_journal(run, mode, given, resume, group, sample, val_fraction)
    phases_started = range_tests_run = 0

    def phase_directory(name: str) -> tuple[str | None, bool]:
        """Where the phase checkpoints (checkpoint_dir/01-full, ...), and whether a checkpoint there resumes (rank
        0's reading of a shared directory: the ranks resume together or not at all)."""
        nonlocal phases_started
        phases_started += 1
        if journal is None:
            return None, False
        directory = os.path.join(cfg.checkpoint_dir, f"{phases_started:02d}-{name}")
        return directory, rank_0s(resuming and checkpoint.find(directory) is not None, group)

    def given_form(split: Any) -> Any:
        """A split of the recipe's (inputs, targets) as train() takes it: ranking's y is None (no targets)."""
        return (split[0], None) if split is not None and cfg.task == "ranking" else split

    def train_phase(model: Any, train_data: Any, val_data: Any, settings: dict[str, Any],
                    stop_after: int | None, name: str) -> Result:
        directory, resumed = phase_directory(name)
        if settings.get("fit") == "probe":  # a convex fit, seconds long: fit again when the recipe is replayed
            return probe_phase(model, train_data, val_data, settings, name)
        if settings.get("fit") == "pairs":
            return settled(pairs_phase(model, train_data, settings["head"], directory, resumed, name), directory)
        # The refit has no validation data: the given monitor and patience were for the phases that had.
        kept = {k: v for k, v in passed.items() if val_data is not None or k not in ("monitor", "early_stopping")}
        phase_cfg = _readers_for(dataclasses.replace(base, **{**settings, **kept}, checkpoint_dir=directory),
                                 train_data, val_data)
        train_data, val_data = given_form(train_data), given_form(val_data)

        on_event, asked = asking(callback, stop_after)
        # The loop below train(): the phase's length is the recipe's decision (no "still learning" note).
        prepared = dataclasses.replace(_prepare(model, train_data, val_data, phase_cfg, {}, head="keep"), phase=name,
                                       stop_after=stop_after)
        return stop_if_asked(settled(_train_as_given(prepared, "the recipe's phase", callback=on_event,
                                                     callback_interval=callback_interval, resume=resumed),
                                     directory), asked)

    def asking(callback: Callable[[str, dict], bool | None] | None,
               stop_after: int | None) -> tuple[Callable[[str, dict], bool], list[int]]:
        """The phase's callback: the user's (whose True is noted in ``asked``, the epoch it came in) and the
        recipe's own stop after ``stop_after`` epochs."""
        asked: list[int] = []

        def on_event(kind: str, info: dict[str, Any]) -> bool:
            if callback is not None and callback(kind, info):
                asked.append(int(info.get("epoch", -1)))
                return True
            return stop_after is not None and kind == "epoch" and info["epoch"] + 1 >= stop_after

        return on_event, asked

    def stop_if_asked(result: Result, asked: list[int]) -> Result:
        """``result``, or the whole recipe stopped where the callback returned True (every rank, if one asked):
        a stop is the run's, not one phase's to be followed by the next."""
        if any_rank(bool(asked), group):
            raise recipes.Stopped(result, asked[0] if asked else None)
        return result

    def settled(result: Result, directory: str | None) -> Result:
        """A finished phase's result, its directory down to the last checkpoint (all a resumed recipe reads)."""
        if directory is not None and process_rank() == 0:
            checkpoint.settle(directory)
        return result

    def pairs_phase(model: Any, train_data: Any, head: str, directory: str | None, resumed: bool,
                    name: str) -> Result:
        """Phase "pairs" (finetune.pairs, SetFit's): the body trained on pairs of examples in the loop, its
        cosine similarity regressed on 1 (same class) or 0."""
        inputs, targets = train_data
        first, second, similarity = pairs.draw(targets, pairs.ITERATIONS, cfg.seed)
        siamese = pairs.Siamese(models.eager(model), head, run.mask_input)
        pair_cfg = dataclasses.replace(base, **pairs.SETTINGS, task="regression", runner="python", trim_padding=False,
                                       label_smoothing=0.0, early_stopping=0, restore_best=False, monitor="train_loss",
                                       checkpoint_dir=directory)
        prepared = _prepare(siamese, (pairs.pair_inputs(inputs, first, second), similarity), None, pair_cfg, {},
                            head="keep")
        on_event, asked = asking(callback, None)
        return stop_if_asked(_train_as_given(dataclasses.replace(prepared, phase=name), "the recipe's phase",
                                             callback=on_event, callback_interval=callback_interval, resume=resumed),
                             asked)

    def probe_phase(head: torch.nn.Linear, train_data: Any, val_data: Any, settings: dict[str, Any],
                    name: str) -> Result:
        """Phase "head" as the linear probe (finetune.probe): one fit to convergence, reported as one epoch."""
        start = time.perf_counter()
        (features,), targets = train_data
        n, regression = int(targets.shape[0]), cfg.task == "regression"
        if regression:  # ridge: |y - XW - b|^2 + alpha |W|^2 over the mean squared error's n x outputs terms
            fitted = probe.fit_ridge_layer(head, features, targets, settings["alpha"])
            penalty = 2.0 * settings["alpha"] / (n * head.out_features)
        else:  # |W|^2 / (2 C n) beside the mean loss: an L2 weight decay of 1 / (C n)
            weights = recipes.class_weight_tensor(settings["class_weights"], targets, head.out_features)
            fitted = probe.fit_layer(head, features, targets, settings["C"], weights, cfg.label_smoothing)
            penalty = 1.0 / (settings["C"] * n)
        broadcast_state(head, group)  # each rank fit the whole sample alone: rank 0's fit everywhere
        seconds = time.perf_counter() - start
        record = {"epoch": 0, "train_loss": fitted["loss"], "lr": 0.0, "seconds": seconds,
                  "samples_per_s": n * fitted["iterations"] / max(seconds, 1e-9)}
        metrics = {}
        if val_data is not None:
            metrics = {k: v for k, v in measure(head, val_data).items() if not isinstance(v, (list, np.ndarray))}
            record.update({f"val_{k}": v for k, v in metrics.items()})
        Progress(1, enabled=cfg.progress and process_rank() == 0, phase=name)("epoch", record)  # its one "epoch"
        return Result(model=head, history=[record], metrics=metrics, config=cfg,
                      class_counts=None if regression else
                      dict(enumerate(torch.bincount(targets, minlength=head.out_features).tolist())),
                      train_size=n, steps=fitted["iterations"], seconds=seconds, best_epoch=0,
                      best_value=metrics.get("loss"),
                      param_groups=[{"names": [name for name, _ in head.named_parameters()], "lr": 0.0,
                                     "weight_decay": penalty, "from_epoch": 0}])

    def find_rate(model: Any, train_data: Any, settings: dict[str, Any]) -> LrFinderResult:
        nonlocal range_tests_run
        range_tests_run += 1
        # The phase's settings, those given winning (but the rate: the test sweeps it).
        merged = {**settings, **{k: v for k, v in passed.items() if k != "lr"}}
        optimizer = merged.get("optimizer", base.optimizer)
        parameters = sum(v.numel() for v in model.state_dict().values())  # the head's, or the whole model's
        if journal is not None and range_tests_run <= len(journal["range_tests"]):  # resumed: as measured then
            entry = dict(journal["range_tests"][range_tests_run - 1])
            # Journals before either was recorded: not checked.
            then = (entry.pop("optimizer", optimizer), entry.pop("parameters", parameters))
            if then != (optimizer, parameters):
                raise ValueError(f"resume: the recipe journal's range test {range_tests_run} ran {then[0]!r} on "
                                 f"a model of {then[1]} values and this finetune runs {optimizer!r} on {parameters} "
                                 "there (a different version's recipe); start a new run in another checkpoint_dir")
            return LrFinderResult(**entry)
        probe_cfg = _readers_for(dataclasses.replace(base, **merged, progress=False), train_data)
        if world > 1 and isinstance(probe_cfg.batch_size, int):  # the test steps at the global batch the phase takes
            probe_cfg = dataclasses.replace(probe_cfg, batch_size=probe_cfg.batch_size * world)
        found = rank_0s(find_lr(model, given_form(train_data), num_steps=recipes.RANGE_STEPS, config=probe_cfg,
                                task=probe_cfg.task), group)  # the task: train's, checked where it was called
        if journal is not None:
            journal["range_tests"].append({"lrs": [float(v) for v in found.lrs], "suggestion": float(found.suggestion),
                                           "losses": [float(v) for v in found.losses], "diverged": bool(found.diverged),
                                           "optimizer": optimizer, "parameters": parameters})
            if process_rank() == 0:
                checkpoint.write_recipe_journal(cfg.checkpoint_dir, journal)
        return found

    def measure(model: Any, val_data: Any, calibrated: bool = False, per_example: bool = False) -> dict[str, Any]:
        readers = _readers_for(cfg, val_data)
        measured = evaluate(model, given_form(val_data), task=cfg.task, batch_size=cfg.eval_batch_size,
                            device=cfg.device, topk=cfg.topk, distributed="off", runner=cfg.runner,
                            num_workers=readers.num_workers, prefetch=readers.prefetch)
        if calibrated or per_example:  # what the recipe compares a transformer's phases, and phase scratch, by
            outputs = torch.from_numpy(predict(
                model, val_data[0], output="logits" if cfg.task == "classification" else "values", task=cfg.task,
                batch_size=cfg.eval_batch_size, device=cfg.device, runner=cfg.runner,
                num_workers=readers.num_workers, prefetch=readers.prefetch))
            if calibrated:
                measured["calibrated_loss"] = recipes.calibrated_loss(outputs, val_data[1])
            if per_example:
                measured["per_example_loss"] = recipes.per_example_loss(outputs, val_data[1], cfg.task)
        return rank_0s(measured, group)  # each rank measured the whole slice: what decides is rank 0's

    start = time.perf_counter()
    phases, plan, train_idx, metrics = recipes.run(
        train_phase, find_rate, measure, run.model, run.inputs, run.targets, val, sample, cfg, given,
        run.pretrained, val_fraction, mode, run.family, run.picked)
    stopped = next((d for d in plan.decisions if d.what == "stopped"), None)
    if stopped is not None and process_rank() == 0:
        log.warning("the callback stopped the recipe in phase %s: %s", stopped.value, stopped.reason)
    broadcast_state(run.model, group)  # the model returned is rank 0's on every rank, whichever phase it ends with
    plan.decisions.insert(0, recipes.Decision("recipe", mode, reason))
    last = phases[-1]  # the run that wrote the returned weights: its config, sizes and counts are the result's
    confusion = metrics.pop("confusion_matrix", None)
    # result.metrics holds numbers, as a run of the settings as given returns them; per-class figures: finetune.evaluate
    metrics = {k: v for k, v in metrics.items() if not isinstance(v, list | np.ndarray)}
    cached = next((d for d in plan.decisions if d.what == "head.cached_features"), None)
    history, offset = [], 0
    for number, phase in enumerate(phases):
        history += [{**h, "epoch": h["epoch"] + offset, "phase": number} for h in phase.history]
        offset += len(phase.history)
    return dataclasses.replace(
        last, history=history, metrics=metrics, confusion_matrix=confusion, steps=sum(p.steps for p in phases),
        seconds=time.perf_counter() - start, skipped_steps=sum(p.skipped_steps for p in phases),
        best_epoch=None, best_value=None, model=run.given, model_options=run.model_options,
        stopped=last.stopped or stopped is not None, sample_indices=train_idx.numpy(),
        recipe=[d.to_dict() for d in plan.decisions], runner=run.runner,
        # a head fit as the probe last (its refit) ran no loop: the run's batches are as its phases cut them
        trim_padding=last.trim_padding if last.trim_padding is not None else run.trim_padding,
        cache_frozen={"used": bool(cached.value), "reason": cached.reason} if cached is not None else
        {"used": False, "reason": "no head phase"})


def _readers_for(cfg: TrainConfig, *splits: Any) -> TrainConfig:
    """``cfg`` for a phase of the recipe on these (inputs, targets) splits: its num_workers and prefetch where one
    of them is streamed, the defaults where all are in memory (the head phase on features computed once)."""
    if any(split is not None and isinstance(split[0], streams.Stream) for split in splits):
        return cfg
    return dataclasses.replace(cfg, num_workers=0, prefetch=2)


def _on_features(run: _Run, found: frozen.FrozenFeatures) -> _Run:
    """The run of the head alone on the features the frozen part gave once (finetune.frozen)."""
    cfg = frozen.head_config(run.config, found)
    runner = models.runner_for(found.module, found.train, cfg.runner)
    return dataclasses.replace(run, model=found.module, cpp_model=runner.cpp, inputs=found.train, val_inputs=found.val,
                               config=cfg, cpp_config=cfg.to_cpp(), runner=runner.to_dict(), mask_input=-1,
                               trim_padding=run.trim_padding if run.mask_input < 0 else {
                                   "used": True, "reason": "the features were computed once on batches cut to their "
                                   "longest row; the head trains on them"})


def _train(run: _Run, callback: Callable[[str, dict], bool | None] | None, callback_interval: float,
           resume: bool | str | os.PathLike) -> Result:
    cfg = run.config
    resume_state = _resume_state(run, resume) if resume else None
    if cfg.checkpoint_dir and process_rank() == 0:  # writable, and every tensor of a kind a checkpoint holds
        checkpoint.preflight(cfg.checkpoint_dir, run.model)
    group = process_group(cfg.distributed, cfg.device, cfg.dist_timeout)
    progress = Progress(min(run.stop_after or cfg.epochs, cfg.epochs), enabled=cfg.progress and process_rank() == 0,
                        phase=run.phase)
    saved_config = cfg.to_dict()

    def on_event(kind: str, info: dict[str, Any]) -> bool:
        progress(kind, info)
        return bool(callback(kind, info)) if callback is not None else False

    def on_checkpoint(reason: str, state: _C.LoopState) -> None:
        is_best = reason == "epoch" and bool(state.history) and state.best_epoch == state.history[-1].epoch
        path = checkpoint.write(cfg.checkpoint_dir, run.model, checkpoint.saved_form(state), saved_config,
                                cfg.keep_last, is_best)
        log.debug("checkpoint (%s): %s", reason, path)

    try:
        with _sigterm_as_keyboard_interrupt():
            out = _C.train(run.cpp_model, run.inputs, run.targets, run.val_inputs, run.val_targets, run.cpp_config,
                           on_event, float(callback_interval), on_checkpoint if cfg.checkpoint_dir else None,
                           resume_state, group, mask_input=run.mask_input)
    finally:
        progress.close()
    monitored = out.best_epoch >= 0
    return Result(
        model=run.given,
        history=[record.as_dict() for record in out.history],
        metrics=dict(out.metrics.values),
        config=cfg,
        class_counts=dict(enumerate(out.class_counts)) if cfg.task == "classification" else None,
        train_size=out.train_size,
        steps=out.steps,
        seconds=out.seconds,
        confusion_matrix=out.metrics.confusion.numpy() if out.metrics.confusion is not None else None,
        stopped=out.stopped,
        skipped_steps=out.skipped_steps,
        world_size=group.size() if group is not None else 1,
        communication_seconds=out.communication_seconds,
        allreduce_overlap=out.buckets_overlapped / max(out.buckets_reduced, 1),
        best_epoch=out.best_epoch if monitored else None,
        best_value=out.best_value if monitored else None,
        param_groups=[{"names": g.names, "lr": g.lr, "weight_decay": g.weight_decay, "from_epoch": g.from_epoch}
                      for g in out.param_groups],
        model_options=run.model_options,
        runner=run.runner,
        trim_padding=run.trim_padding,
        streaming=run.inputs.reader.report() if isinstance(run.inputs, streams.Stream) else None,
    )


@dataclass
class LrFinderResult:
    lrs: list[float]
    losses: list[float]  # smoothed training loss at each rate
    # The recipe's rule: the rate of the lowest smoothed loss / ``divisor`` (recipe.lr_from_range, which also reads
    # a flat curve); the rate recipe="auto" would train this model's every layer at
    suggestion: float
    diverged: bool
    steepest: float | None = None  # where the smoothed loss falls fastest (fastai's former suggestion), to compare
    divisor: float | None = None  # recipe.range_divisor for the model (10 with trained weights, 100 from random)

    def plot(self, ax: Any = None) -> Any:
        """Loss against learning rate (log scale); needs matplotlib."""
        import matplotlib.pyplot as plt

        ax = ax or plt.figure().gca()
        ax.plot(self.lrs, self.losses)
        ax.axvline(self.suggestion, linestyle="--", color="gray")
        ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss",
               title=f"suggested lr {self.suggestion:.2e}" + (f" (lowest loss / {self.divisor:g})" if self.divisor else ""))
        return ax


# Settings of train's that a range test has nothing to act on: it sets the rate itself, step by step, runs no epochs
# and evaluates, stops early on, averages and checkpoints nothing.
NOT_FOR_FIND_LR = ("lr", "epochs", "eval_batch_size", "schedule", "warmup", "step_size", "gamma", "min_lr",
                   "pct_start", "cycle_momentum", "base_momentum", "max_momentum", "early_stopping", "monitor",
                   "restore_best", "ema", "checkpoint_dir", "checkpoint_every", "keep_last", "topk")


def find_lr(model: Any, train_data: tuple[Any, Any], *, start_lr: float = 1e-7, end_lr: float = 10.0,
            num_steps: int = 100, diverge_factor: float = 4.0, divisor: float | None = None,
            config: TrainConfig | None = None, **settings: Any) -> LrFinderResult:
    """fastai-style learning-rate range test in the C++ loop: ``num_steps`` steps with the rate growing
    exponentially from ``start_lr`` to ``end_lr``, stopping once the smoothed loss exceeds
    ``diverge_factor`` x its minimum. The model's weights are restored afterwards. Settings (optimizer,
    batch_size, freeze, lr_groups, ...) are those of :func:`train`.

    The suggestion is the recipe's rule, validated on its benchmarks (README, "The recipe", rule 4): the rate of
    the lowest smoothed loss / ``divisor`` -- by default the recipe's for this model (recipe.range_divisor: 10 for
    trained weights, 100 from random weights, the tabular MLP's own). A pretrained transformer's recipe uses
    BERT's rate instead; the test misreads it. ``steepest`` is fastai's former suggestion, the steepest descent."""
    if divisor is not None and (isinstance(divisor, bool) or not isinstance(divisor, (int, float))
                                or not math.isfinite(divisor) or divisor <= 0):
        raise ValueError(f"divisor must be a number > 0, got {divisor!r}")
    unused = sorted(set(settings) & set(NOT_FOR_FIND_LR))
    if unused:  # a setting given takes effect or is an error: these have nothing to act on in a range test
        them = "it" if len(unused) == 1 else "them"
        raise ValueError(f"find_lr runs steps at rates from start_lr to end_lr, not epochs of a schedule: "
                         f"{', '.join(f'{k}={settings[k]!r}' for k in unused)} would change nothing; leave {them} "
                         f"out (train takes {them})")
    settings.setdefault("progress", False)
    run = _prepare(model, train_data, None, config, settings,
                   task_given=_task_given(config, settings))
    with models.exclusive(run.model):  # it steps the weights (and restores them): not while a run trains them
        out = _C.find_lr(run.cpp_model, run.inputs, run.targets, run.cpp_config, float(start_lr), float(end_lr),
                         int(num_steps), float(diverge_factor), mask_input=run.mask_input)
    divisor = float(divisor) if divisor is not None else recipes.range_divisor(run.family, run.config.task,
                                                                               run.pretrained)
    return LrFinderResult(out["lrs"], out["losses"], recipes.lr_from_range(out["lrs"], out["losses"], divisor),
                          out["diverged"], steepest=out["suggestion"], divisor=divisor)


def evaluate(model: Any, eval_data: tuple[Any, Any], *, task: str | None = None, batch_size: int = 1024,
             device: str = "cpu", topk: int = 5, distributed: str = "auto",
             output_key: str | None = None, runner: str = "auto", trim_padding: bool | str = "auto",
             num_workers: int = 0, prefetch: int = 2, labels: Any = None) -> dict[str, Any]:
    """Loss and metrics of ``model`` on ``eval_data = (X, y)``: accuracy, balanced accuracy (the classes' mean
    recall), top-k accuracy (for k below the number of classes), macro-F1 and the confusion matrix for
    classification (rows and columns in class-id order; y as string labels where the model trained on them);
    RMSE, MAE and R² for regression (``task``: by default the one ``finetune.train`` trained the model for, else
    classification). ``trim_padding`` as in ``train``: token
    batches cut to their longest row where the model gives the same outputs so. ``eval_data`` may be streamed, as
    in ``train`` (a dataset -- its labels ``labels=`` where it carries none --, or a memory-mapped X), read ahead by
    ``num_workers`` processes.

    Under torchrun (``distributed="auto"``) every rank must call it with the same data: each evaluates its
    own shard and all of them get the metrics of the whole set, summed from the ranks' counts."""
    task = task_of(model, task)
    _check_batch_size(batch_size)
    cfg = TrainConfig(task=task, eval_batch_size=batch_size, device=device_for_rank(device), topk=topk,
                      distributed=distributed, trim_padding=trim_padding, num_workers=num_workers, prefetch=prefetch)
    cpp_config = cfg.to_cpp()
    _check_image_scale(model, eval_data[0] if isinstance(eval_data, tuple) and eval_data else eval_data, "eval_data")
    eval_data = _with_training_classes(model, eval_data)
    x, y = streams.split(streams.with_labels(eval_data, labels, "data"), "data")
    data.check_rows_aligned(x, y)
    trained = trained_for(model)
    y, _ = data.label_ids(y, "y", task, trained.classes if trained is not None else None, fit=False)
    given = x  # as the user passed it: its columns and example shape are the training's to compare
    found = streams.streamed(x, y, "data", task, models.parameter_dtype(model), cfg)
    if found is not None:
        inputs, targets = found
    else:
        streams.check_unused(cfg)
        _check_like_training(model, x)
        x = registry.encode_for(model, x)  # a "minilm"'s texts, an "mlp"'s category columns
        inputs = data.features(x, "X", models.parameter_dtype(model), missing=registry.takes_missing(model))
        registry.warn_unflagged_missing(model, given, inputs)
        targets = data.targets(y, "y", task, inputs[0].shape[0])
    group = process_group(cfg.distributed, cfg.device, cfg.dist_timeout)
    example = streams.head(inputs, 2)
    models.check_keyword_inputs(model, data.keywords(x), inputs)
    adapted = models.adapt(model, example, data.keywords(x), output_key)
    mask_input, _ = padding.plan(adapted, inputs, data.keywords(x), None, cfg, "evaluation")
    with _said_with_training_shape(model, given):
        out = _C.evaluate(models.to_cpp(adapted, example, runner), inputs, targets, cpp_config, group,
                          mask_input=mask_input)
    if "confusion_matrix" in out:
        out["confusion_matrix"] = out["confusion_matrix"].numpy()
    if task == "classification" and trained is not None and trained.classes is not None:
        out["classes"] = list(trained.classes)  # the confusion matrix's and per-class lists' order
    return out


def embed(model: Any, x: Any, *, head: str | None = None, batch_size: int = 1024,
          output_key: str | None = None) -> np.ndarray:
    """What the model's head reads for each example of ``x`` -- the body's features, in eval mode -- as a numpy
    array: for a scikit-learn model on the same features, or a look at them. ``head`` names the head module
    (default: found as ``train(head=...)`` finds it, the last ``nn.Linear`` the forward pass runs). The model
    must run in Python (an ``nn.Module``, or one finetune traced, such as ``"minilm"``) and its output must be
    its head's, or be built in C++ with a head ("mlp": the last hidden layer's activations, its input scaling
    applied; "cnn": the hidden layer's); otherwise a ValueError says why."""
    _check_batch_size(batch_size)
    _check_like_training(model, x)
    x = registry.encode_for(model, x)  # a "minilm"'s texts, an "mlp"'s category columns
    inputs = data.features(x, "X", models.parameter_dtype(model), missing=registry.takes_missing(model))
    if isinstance(model, models.NativeModel):
        return _native_features(model, inputs, head, batch_size)
    models.check_keyword_inputs(model, data.keywords(x), inputs)
    model = models.adapt(model, inputs, data.keywords(x), output_key)
    name = head if head is not None else heads.find_head(model, [t[:2] for t in inputs])
    features, why_not = heads.head_inputs(model, name, inputs, batch_size, split="embedded")
    if features is None:
        raise ValueError(f"embed: {why_not}")
    return features.numpy()


def _native_features(model: models.NativeModel, inputs: list[torch.Tensor], head: str | None,
                     batch_size: int) -> np.ndarray:
    """embed for a model built in C++ ("mlp", "cnn"): its own ``features``, the input of its last linear layer."""
    if head is not None:
        raise ValueError(f"embed: head={head!r} names a Python submodule, and {model.name!r} is built in C++: its "
                         "features are what its last linear layer reads (pass no head)")
    parts, training = [], model.training
    with models.exclusive(model), torch.no_grad():  # in eval mode (dropout off, batch norm's running statistics)
        try:
            model.eval()
            for batch in streams.batches(inputs, batch_size):
                part = model.features(*batch)
                if part is None:
                    raise ValueError(f"embed: model {model.name!r} has no head to read features before (its output "
                                     "is not a linear layer's)")
                parts.append(part.detach().to("cpu"))
        finally:
            model.train(training)
    return torch.cat(parts).numpy()


OUTPUTS = ("classes", "probabilities", "logits", "values")


def predict(model: Any, x: Any, *, output: str | None = None, task: str | None = None, batch_size: int = 1024,
            device: str = "cpu", output_key: str | None = None, runner: str = "auto",
            trim_padding: bool | str = "auto", num_workers: int = 0, prefetch: int = 2) -> np.ndarray:
    """The model's predictions for ``x`` as a numpy array: class ids (default for classification; the labels
    themselves where the training y held string labels), ``output="probabilities"`` or ``"logits"`` (their columns
    in class-id order: ``result.classes`` for labels); for ``task="regression"`` the predicted values, in the shape of
    the y it was trained on ((N,) for a 1-D y; one output of a model with no training on record: (N,)) (``task``:
    by default the one ``finetune.train`` trained the model for, else classification). A DataFrame ``x`` must
    have the training DataFrame's columns in the same order (so must ``evaluate``'s and ``embed``'s). ``x`` may be a
    dict of keyword inputs; ``output_key`` picks the entry of a dict output and ``trim_padding`` cuts token batches
    (as in ``train``). ``x`` may be streamed: a memory-mapped array, or a dataset -- its items ``(inputs, label)``
    when it has ``targets``/``labels`` (the labels are not read), else its items are the inputs."""
    task = task_of(model, task)
    if output is None:
        output = "classes" if task == "classification" else "values"
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {list(OUTPUTS)}, got {output!r}")
    trained = trained_for(model)
    if output == "values" and trained is not None and trained.task == "classification":
        raise ValueError(f"output='values' (task={task!r}) reads a regression model's values, and this model was "
                         "trained for classification: output='logits' gives its class scores")
    _check_batch_size(batch_size)
    cfg = TrainConfig(task=task, eval_batch_size=batch_size, device=device, trim_padding=trim_padding,
                      num_workers=num_workers, prefetch=prefetch)
    cpp_config = cfg.to_cpp()
    _check_image_scale(model, x, "X")
    if isinstance(x, tuple) and len(x) == 2 and trained is not None and trained.example_shape is not None:
        # the model trained on one array: a pair is evaluate's (X, y), not two inputs
        raise ValueError("predict(model, X) takes X alone, and X is a tuple of 2: for (X, y) use "
                         "finetune.evaluate(model, (X, y))")
    labeled = streams.is_dataset(x) and any(getattr(x, a, None) is not None for a in streams.LABEL_ATTRIBUTES)
    given = x  # as the user passed it: its columns and example shape are the training's to compare
    found = streams.streamed(x, None, "X", "regression", models.parameter_dtype(model), cfg, labeled=labeled)
    if found is not None:
        inputs = found[0]
    else:
        streams.check_unused(cfg)
        _check_like_training(model, x)
        x = registry.encode_for(model, x)  # a "minilm"'s texts, an "mlp"'s category columns
        inputs = data.features(x, "X", models.parameter_dtype(model), missing=registry.takes_missing(model))
        registry.warn_unflagged_missing(model, given, inputs)
    example = streams.head(inputs, 2)
    models.check_keyword_inputs(model, data.keywords(x), inputs)
    adapted = models.adapt(model, example, data.keywords(x), output_key)
    mask_input, _ = padding.plan(adapted, inputs, data.keywords(x), None, cfg, "prediction")
    with _said_with_training_shape(model, given):
        raw = _C.predict(models.to_cpp(adapted, example, runner), inputs, cpp_config, mask_input=mask_input)
    if output in ("classes", "probabilities") and (raw.dim() < 2 or raw.shape[1] < 2):
        raise ValueError(f"output={output!r} reads class scores, and the model gives one value per example (every "
                         "row would be class 0): pass task='regression' for its values")
    if output == "classes" and trained is not None and trained.classes is not None:
        # the labels the model was trained on (a wider head's extra classes are none of them)
        return np.asarray(trained.classes)[raw[:, :len(trained.classes)].argmax(1).numpy()]
    if output == "classes":
        raw = raw.argmax(1)
    elif output == "probabilities":
        raw = torch.softmax(raw.double(), dim=1)
    elif output == "values":
        raw = _values_shaped(model, raw)
    return raw.numpy()
