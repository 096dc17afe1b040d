"""The one place models are found by name (timm's ``register_model``, in small): the native C++ models, the
MiniLM text classifier and the pretrained digit CNN.

    finetune.registry.names()                       # ['cnn', 'digit_cnn', 'mf', 'minilm', 'mlp', 'ncf']
    finetune.registry.options("cnn")                # every option with its default
    finetune.registry.get("cnn").infer_options(X, y)  # the options the data decides (in_channels, height, ...)
    finetune.build("cnn", in_channels=1, height=8, width=8, num_classes=10)
    finetune.train("cnn", (X, y), channels=[8, 16])  # the options left out are read off X and y

An entry is a factory (its keyword parameters are the model's options, their defaults the defaults), an
``infer_options(inputs, targets, task)`` that reads the sizes the data decides (from the model's input tensors
and the target tensor), and, for a model that reads something other than numbers, ``encode(X, options)``
(MiniLM: texts to token ids; "mlp": a table's category columns one-hot, finetune.categories). Adding a model is
one decorated factory:

    @finetune.register_model("linear", infer_options=lambda inputs, y, task: {"in_features": inputs[0].shape[1]})
    def linear(in_features: int, num_classes: int = 2) -> torch.nn.Module:
        return torch.nn.Linear(in_features, num_classes)
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
import numbers
import typing
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import _C, categories, data, models
from .config import did_you_mean

Infer = Callable[[Sequence[torch.Tensor], torch.Tensor, str], dict[str, Any]]
Encode = Callable[[Any, dict[str, Any], Any], Any]


class _Required:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED = _Required()  # the default of an option without one: given, or read off the data by infer_options


@dataclass(frozen=True)
class ModelEntry:
    """A model finetune builds by name."""

    name: str
    factory: Callable[..., Any]  # factory(**options) -> what finetune.train trains (a NativeModel or an nn.Module)
    defaults: dict[str, Any]  # every option -> its default (REQUIRED where there is none)
    types: dict[str, type]  # option -> the type it takes, where known (an annotation, or its default's type)
    infer: Infer  # (input tensors, target tensor, task) -> the options the data decides
    # (X as given, options, the rows it reports on or None) -> X as numbers (MiniLM: texts to token ids, a warning
    # counting the texts cut among the rows -- the training sample, not a pool it was drawn from)
    encode: Encode | None = None
    every_split: tuple[str, ...] = ()  # options a run reads off all its data, test rows included (id table sizes)
    example_shape: Callable[[dict[str, Any]], tuple[int, ...]] | None = None  # one example's shape, from the options
    check_value: Callable[[str, Any], None] | None = None  # a check of its own (native: the C++ struct's setter)
    # Whether the model built with these options carries trained weights (recipe="auto" then trains its head first)
    trained_weights: Callable[[dict[str, Any]], bool] | None = None
    # (X as given, options) -> the options the training data decides before it is encoded (MiniLM: max_length)
    choose: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None
    # The rules recipe="auto" trains it by (recipe.FAMILIES): "recommender" for factor tables trained as Funk SVD,
    # "neural recommender" for embeddings under an MLP, "tabular" for an MLP on tabular features, "transformer"
    # for a transformer encoder (its full phase by BERT's settings), "sentence encoder" for a transformer trained
    # for cosine similarity (the same, and few-shot: SetFit's pairs before the head)
    recipe: str = "default"
    # Options read off the training data in groups ("mlp"'s input scaling, its target scaling): giving any of a
    # group keeps the rest of it from being read (a given center is never paired with a scale read off the data).
    # A run directory keeps them with the weights (model.safetensors), not in config.toml, so its config run on
    # other data reads them anew.
    statistics: tuple[tuple[str, ...], ...] = ()
    # A group's switch and the value that turns the group off ("mlp"'s linear: "none"): the switch given alone at
    # another value still has the rest of its group read off the data (linear="probabilities" alone is the default
    # made explicit, not a linear model without its inputs' standardisation).
    switches: dict[str, Any] = field(default_factory=dict)
    mask_input: int | None = None  # which of its inputs is an attention mask (trim_padding): MiniLM's second
    # Options added after run directories began saving their model's options, with what a saved set without them
    # meant (MiniLM's normalize: its head read the raw mean before): a saved run rebuilds as it trained.
    saved_before: dict[str, Any] = field(default_factory=dict)
    missing: bool = False  # its inputs may hold NaN, which the model fills itself ("mlp": MlpOptions::missing_columns)
    texts: bool = False  # its X is texts: a run config's CSV gives them as one column (data.text)
    pairs: bool = False  # its X is (user, item) id pairs: a run config's CSV gives them as two columns of ids
    # The (mean, std) an image model's pretraining normalised its [0, 1] pixels by: a run config's image folder is
    # read at that scale unless data.image_mean / image_std say otherwise (None: pixels in [0, 1])
    image_mean_std: tuple[float, float] | None = None

    def build_saved(self, options: dict[str, Any]) -> Any:
        """The model a run directory saved with ``options``, an option it predates at the value it meant then."""
        return self.build(**{**self.saved_before, **options})

    def choose_options(self, x: Any, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with what the training inputs ``x`` decide before encoding (once, so that every split is
        encoded alike); the options given are kept."""
        return self.choose(x, options) if self.choose is not None else options

    def pretrained(self, options: dict[str, Any]) -> bool:
        return bool(self.trained_weights({**self.defaults, **options})) if self.trained_weights is not None else False

    @property
    def option_names(self) -> list[str]:
        return sorted(self.defaults)

    def takes(self, key: str) -> str:
        """What the option ``key`` takes, in words: "an array, e.g. [128]"."""
        words = type_words(self.types[key]) if key in self.types else "a value of another type"
        return words if self.defaults[key] is REQUIRED else f"{words}, e.g. {self.defaults[key]!r}"

    def check(self, key: str, value: Any) -> None:
        """A TypeError when ``value`` has the wrong type for the option ``key``."""
        if self.check_value is not None:
            self.check_value(key, value)
            return
        kind = self.types.get(key)
        if kind is None:
            return
        accepted = isinstance(value, _ACCEPTED.get(kind, kind)) and (kind is bool or not isinstance(value, bool))
        if not accepted:
            raise TypeError(f"model option {key}={value!r} has the wrong type for model {self.name!r} "
                            f"(it takes {self.takes(key)})")

    def split_options(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Takes this model's options (in_features=..., hidden=...) out of ``settings``, a dict of keywords."""
        return {k: settings.pop(k) for k in list(settings) if k in self.defaults}

    def build(self, **options: Any) -> Any:
        """The model with ``options``: an unknown option, or a value of the wrong type, is a TypeError."""
        for key, value in options.items():
            if key not in self.defaults:
                raise TypeError(f"unknown option {key!r} for model {self.name!r}"
                                f"{did_you_mean([key], self.option_names)}; known options: {self.option_names}")
            self.check(key, value)
        missing = [k for k, v in self.defaults.items() if v is REQUIRED and k not in options]
        if missing:
            raise TypeError(f"model {self.name!r} needs the option(s) {missing} (finetune.train reads them off the data)")
        model = self.factory(**options)
        remember(model, self, options)  # what evaluate/predict/embed need to read its inputs as given (texts)
        return model

    def encode_inputs(self, x: Any, options: dict[str, Any], rows: np.ndarray | None = None) -> Any:
        """``x`` as numbers the model reads (texts tokenised for MiniLM); numbers are returned as they are.
        ``rows``: the examples that train (a sample of x), for what the encoding reports (texts cut)."""
        return self.encode(x, {**self.defaults, **options}, rows) if self.encode is not None else x

    def build_for(self, inputs: Sequence[torch.Tensor], targets: torch.Tensor, task: str,
                  options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """(the model for this data, every option's value): the options left out are read off the data."""
        options = {**self._inferred(inputs, targets, task, options), **options}
        model = self.build(**options)
        resolved = model.options if isinstance(model, models.NativeModel) else {**self.defaults, **options}
        self._warn_unnormalised(inputs[0], resolved)
        return model, resolved

    def _warn_unnormalised(self, x: torch.Tensor, options: dict[str, Any]) -> None:
        """A warning when pretrained weights that know normalised pixels are given pixels in [0, 1] (their
        pretraining's mean then lies far from the inputs' background: digit_cnn's -0.42 against 0)."""
        if self.image_mean_std is None or not self.pretrained(options) or not x.numel():
            return
        if float(x.min()) >= 0.0 and float(x.max()) <= 1.0:
            mean, std = self.image_mean_std
            logging.getLogger("finetune").warning(
                f"model {self.name!r} was pretrained on pixels normalised as (x - {mean}) / {std}, and X lies in "
                f"[0, 1]: pass (X - {mean}) / {std} (an ImageFolder: mean={mean}, std={std}) to fine-tune it at the "
                "scale its weights know")

    def infer_options(self, x: Any, y: Any, task: str = "classification", **given: Any) -> dict[str, Any]:
        """The options ``(x, y)`` decide (sizes, numbers of classes, users, ...), except those ``given``."""
        chosen = self.choose_options(x, given)  # what the inputs decide before encoding (mlp's categories)
        x = self.encode_inputs(x, chosen)
        inputs = data.features(x, "X", torch.float32, examples=data.length(y), missing=self.missing)
        y, _ = data.label_ids(y, "y", task, None, fit=True)  # text labels: the ids finetune.train gives them
        targets = data.targets(y, "y", task, inputs[0].shape[0])
        inferred = {**chosen, **self._inferred(inputs, targets, task, chosen)}
        return {k: v for k, v in inferred.items() if k not in given}

    def _inferred(self, inputs: Sequence[torch.Tensor], targets: torch.Tensor, task: str,
                  given: dict[str, Any]) -> dict[str, Any]:
        inferred = self.infer(inputs, targets, task)
        for group in self.statistics:
            said = [k for k in group if k in given]
            switched_on = len(said) == 1 and said[0] in self.switches and given[said[0]] != self.switches[said[0]]
            if said and not switched_on:
                inferred = {k: v for k, v in inferred.items() if k not in group}
        return inferred

    def statistic_names(self) -> tuple[str, ...]:
        """Every option read off the training data (the groups of ``statistics``)."""
        return tuple(k for group in self.statistics for k in group)


MODELS: dict[str, ModelEntry] = {}


def names() -> list[str]:
    return sorted(MODELS)


def get(name: Any) -> ModelEntry:
    """The entry of ``name``; an unknown name is a ValueError listing the models."""
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"unknown model {name!r}; the models are {names()}")
    return MODELS[name]


def options(name: str) -> dict[str, Any]:
    """Every option of the model ``name`` with its default (REQUIRED: given, or read off the data)."""
    return dict(get(name).defaults)


def build(name: str, **options: Any) -> Any:
    """A model by name: ``build("mlp", in_features=64, num_classes=10, hidden=[128])``."""
    return get(name).build(**options)


# Models finetune built by name, with the options they were built with, found again by what is given the model
# alone: evaluate/predict/embed (and a second train) encode texts for a "minilm" at its max_length, the recipe's
# phases find its attention mask. Weak: remembering a model does not keep it alive.
_built: "weakref.WeakKeyDictionary[Any, tuple[ModelEntry, dict[str, Any]]]" = weakref.WeakKeyDictionary()


def remember(model: Any, entry: ModelEntry, options: dict[str, Any]) -> None:
    try:
        _built[model] = (entry, dict(options))
    except TypeError:  # not weak-referenceable: nothing remembered
        pass


def built(model: Any) -> tuple[ModelEntry, dict[str, Any]] | None:
    """(the registry entry, the options) of a model finetune built by name, else None."""
    try:
        return _built.get(model)
    except TypeError:  # not weak-referenceable (a name where a model belongs)
        return None


def takes_missing(model: Any) -> bool:
    """Whether ``model`` -- a name, or a model finetune built -- fills missing values (NaN) in its inputs itself."""
    if isinstance(model, str):
        return model in MODELS and MODELS[model].missing
    found = built(model)
    return found is not None and found[0].missing


def warn_unflagged_missing(model: Any, x: Any, inputs: Sequence[torch.Tensor]) -> None:
    """A warning where the inputs of a model that fills missing values ("mlp") hold one in a column that held none
    in training: filled with the column's median and not flagged, the row is predicted as if the value were typical.
    ``x``: the inputs as given (a DataFrame names the columns), ``inputs``: as encoded (number columns first)."""
    found = built(model)
    if found is None or not found[0].missing or len(inputs) != 1 or inputs[0].dim() != 2:
        return
    options = getattr(model, "options", found[1])
    holes, flagged = torch.isnan(inputs[0]), set(options.get("missing_columns", []))
    columns = [j for j in holes.any(0).nonzero().flatten().tolist() if j not in flagged]
    if not columns:
        return
    table = categories.table_columns(x)
    words = {c["column"] for c in options.get("categories", [])}
    names = [categories.column_key(n) for n, _ in table or [] if categories.column_key(n) not in words]
    said = [names[j] if j < len(names) else j for j in columns]
    rows = int(holes[:, columns].any(1).sum())
    logging.getLogger("finetune").warning(
        f"X: {rows} row(s) hold missing values in column(s) {said[:6]}{' ...' if len(said) > 6 else ''} that held "
        "none in training: the model fills them with the column's median, unflagged, so those rows are predicted as "
        "if the value were typical")


def encode_for(model: Any, x: Any, rows: np.ndarray | None = None) -> Any:
    """X as the numbers ``model`` reads, where finetune built it: texts tokenised for a "minilm" at its max_length,
    a table's category columns one-hot for an "mlp" by its levels; X as given for any other model. ``rows`` as in
    ModelEntry.encode_inputs."""
    found = built(model)
    return found[0].encode_inputs(x, found[1], rows) if found is not None else x


def register_model(name: str, *, infer_options: Infer | None = None, encode: Encode | None = None,
                   every_split: Sequence[str] = (),
                   example_shape: Callable[[dict[str, Any]], tuple[int, ...]] | None = None,
                   trained_weights: Callable[[dict[str, Any]], bool] | None = None,
                   choose: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None,
                   mask_input: int | None = None, recipe: str = "default",
                   saved_before: dict[str, Any] | None = None, texts: bool = False,
                   image_mean_std: tuple[float, float] | None = None) -> Callable:
    """Decorator: the factory's keyword parameters are the model's options, their defaults the defaults and their
    annotations (int, float, bool, str, list) the types checked. ``infer_options(inputs, targets, task)`` returns
    the options the data decides; ``encode(X, options)`` turns what users pass into numbers, where it is not;
    ``trained_weights(options)`` says whether the built model is pretrained (default: it is not); ``mask_input``
    which of its inputs is an attention mask (batches are then cut to their longest row); ``recipe`` the rules
    recipe="auto" trains it by (finetune.recipe.FAMILIES); ``saved_before`` the options added since run directories
    saved the model's options, at the value their absence meant; ``texts`` whether its X is texts (a run config's
    CSV then gives them as one column); ``image_mean_std`` the normalisation of the pixels its weights were trained
    on (a run config's image folder is read at it)."""
    def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
        defaults = _signature_defaults(factory)
        _add(ModelEntry(name, factory, defaults, _option_types(factory, defaults), infer_options or _nothing_inferred,
                        encode, tuple(every_split), example_shape, trained_weights=trained_weights, choose=choose,
                        mask_input=mask_input, recipe=recipe, saved_before=dict(saved_before or {}), texts=texts,
                        image_mean_std=image_mean_std))
        return factory

    return decorator


def _add(entry: ModelEntry) -> None:
    if entry.name in MODELS:
        raise ValueError(f"model {entry.name!r} is already registered")
    MODELS[entry.name] = entry


def _nothing_inferred(inputs: Sequence[torch.Tensor], targets: torch.Tensor, task: str) -> dict[str, Any]:
    return {}


def _signature_defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: REQUIRED if p.default is inspect.Parameter.empty else p.default
            for p in inspect.signature(factory).parameters.values() if p.kind in kinds}


def _option_types(factory: Callable[..., Any], defaults: dict[str, Any]) -> dict[str, type]:
    """Each option's annotation where it is a plain type (int, list, ...), else its default's type."""
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: the defaults' types only
        hints = {}
    types = {k: type(v) for k, v in defaults.items() if v is not REQUIRED and v is not None}
    types.update({k: hint for k, hint in hints.items() if k in defaults and isinstance(hint, type)})
    return types


_ACCEPTED: dict[type, Any] = {int: numbers.Integral, float: numbers.Real, bool: (bool, np.bool_), list: (list, tuple)}
_WORDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table"}


def type_words(kind: type) -> str:
    """A type in the words of a config file's errors: "an integer", "an array"."""
    return _WORDS.get(kind, f"a {kind.__name__}")


# --- the native C++ models: their options are the fields of the C++ options struct ----------------------------

def _outputs(targets: torch.Tensor, task: str) -> int:
    """Classes for classification; values per example for regression."""
    if task == "classification":
        return int(targets.max()) + 1
    return targets[0].numel() if targets.dim() > 1 else 1


def _native(name: str, make_options: Callable[[], Any], make_module: Callable[[Any], Any], infer: Infer,
            encoding: dict[str, tuple[Any, Callable[[Any], None]]] | None = None, **extra: Any) -> None:
    """A native model as an entry: its options and their defaults are the C++ struct's fields, and ``encoding``'s
    (option -> (default, check)): options of the Python step that turns X into the numbers the C++ model reads
    ("mlp"'s categories), kept with the model's options (saved, remembered) but never given to C++."""
    encoding = encoding or {}
    fields = [k for k in dir(make_options()) if not k.startswith("_")]
    defaults = {**{k: getattr(make_options(), k) for k in fields}, **{k: v[0] for k, v in encoding.items()}}

    def factory(**options: Any) -> models.NativeModel:
        model = models.native(name, make_options, make_module, {k: v for k, v in options.items() if k not in encoding})
        model.options.update({k: options[k] if k in options else copy.deepcopy(default)
                              for k, (default, _) in encoding.items()})
        return model

    def check(key: str, value: Any) -> None:
        if key in encoding:
            encoding[key][1](value)
            return
        try:
            setattr(make_options(), key, list(value) if isinstance(value, tuple) else value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"model option {key}={value!r} has the wrong type (default is {defaults[key]!r})") from None

    _add(ModelEntry(name, factory, defaults, {k: type(v) for k, v in defaults.items()}, infer, check_value=check,
                    **extra))


def _infer_mlp(inputs: Sequence[torch.Tensor], targets: torch.Tensor, task: str) -> dict[str, Any]:
    if inputs[0].dim() < 2:
        raise ValueError(f"model 'mlp' needs X shaped (rows, features), got X of shape {tuple(inputs[0].shape)}: "
                         "one feature is a column, X.reshape(-1, 1) (or df[[name]] for a DataFrame)")
    x = inputs[0].flatten(1)
    return {"in_features": x.shape[1], "num_classes": _outputs(targets, task), **robust_scaling(x),
            **(target_scaling(targets) if task == "regression" else {}), **linear_slot(x, task), **point_masses(x),
            "missing_columns": torch.isnan(x).any(0).nonzero().flatten().tolist()}


def linear_slot(x: torch.Tensor, task: str) -> dict[str, Any]:
    """The linear model "mlp" holds beside its layers (MlpOptions::linear; the recipe fits it and chooses its share,
    recipe.LINEAR_SHARES): how the two are averaged for ``task``, and the inputs' standardisation it reads -- each
    feature's mean and 1 / (population) standard deviation, 0 for a constant feature -- as scikit-learn's
    StandardScaler gives a linear model its inputs. None for a ranking."""
    if task not in ("classification", "regression"):
        return {}
    values = x.detach().cpu().double()
    center = values.nanmean(0).nan_to_num(0.0)  # of the values present (a missing one is filled with it)
    spread = ((values - center) ** 2).nanmean(0).nan_to_num(0.0).sqrt()
    scale = torch.where(spread > 0, 1.0 / spread, torch.zeros_like(spread))
    return {"linear": "probabilities" if task == "classification" else "values",
            "linear_center": center.tolist(), "linear_scale": scale.tolist()}


def target_scaling(targets: torch.Tensor) -> dict[str, Any]:
    """The output scaling "mlp" reads off its training targets for regression: each output's mean and (population)
    standard deviation, 1 where it is 0. The layers then fit a standardised target, so the recipe's rates (AdamW,
    whose steps do not grow with the gradient) serve a price in dollars and a fraction alike (RealMLP standardises
    regression targets too); the predictions come back in the target's units. The training loss's value stays in
    those units, its gradient is the standardised target's (the loop's batch_loss): plain SGD's rate serves any
    units too."""
    values = targets.detach().cpu().double().reshape(targets.shape[0], -1)
    center, spread = values.mean(0), values.std(0, correction=0)
    spread = torch.where(spread > 0, spread, torch.ones_like(spread))
    return {"target_center": center.tolist(), "target_scale": spread.tolist()}


SMOOTH_CLIP = 3.0  # RealMLP's bound: a scaled value v becomes v / sqrt(1 + (v / 3)^2)
SCALING_ROWS = 100_000  # at most this many rows (drawn, seeded) give the quartiles


def _statistics_rows(x: torch.Tensor) -> np.ndarray:
    """The rows the input statistics are read off, as float32 numpy: at most SCALING_ROWS, drawn seeded (quartiles
    of 100,000 rows are as good as of all), so every run on the same data reads the same ones."""
    values = x.detach().cpu().float()
    if values.shape[0] > SCALING_ROWS:
        rows = torch.randperm(values.shape[0], generator=torch.Generator().manual_seed(0))[:SCALING_ROWS]
        values = values.index_select(0, rows)
    return values.numpy()


def robust_scaling(x: torch.Tensor) -> dict[str, Any]:
    """The input scaling "mlp" reads off its training inputs (RealMLP's, Holzmueller et al. 2024): each feature
    centred on its median and divided by its interquartile range (by half its range where the quartiles meet; a
    constant feature is multiplied by 0), then smoothly clipped at SMOOTH_CLIP. Features on any scale (raw
    dollars next to fractions) reach the first layer on one scale, and an outlier cannot dominate a step."""
    values = _statistics_rows(x)
    with warnings.catch_warnings():  # a column with no value present: center 0, scale 0 (it tells nothing)
        warnings.simplefilter("ignore", RuntimeWarning)
        low, center, high = np.nan_to_num(np.nanquantile(values, [0.25, 0.5, 0.75], axis=0))  # of values present
        spread = high - low
        flat = spread == 0
        spread[flat] = np.nan_to_num(0.5 * (np.nanmax(values[:, flat], 0) - np.nanmin(values[:, flat], 0)))
    scale = np.divide(1.0, spread, out=np.zeros_like(spread), where=spread > 0)
    return {"center": center.astype(np.float64).tolist(), "scale": scale.astype(np.float64).tolist(),
            "clip": SMOOTH_CLIP}


POINT_MASS_SHARE = 0.10  # a column's most common value, at its edge, holds at least this share of the rows ...
POINT_MASS_LEVELS = 10  # ... of a column with at least this many distinct values (fewer: levels a layer tells apart)
POINT_MASS_SPIKE = 5.0  # ... and at least this many times the rows of the value next to it: a spike, not a count's 0
POINT_MASS_MOST = 0.5  # none where more than this share of the columns hold a mass at their edge: pixels' background


def point_masses(x: torch.Tensor) -> dict[str, Any]:
    """The indicator inputs "mlp" reads off its training inputs (MlpOptions::indicator_columns; README, rule 8).
    A column with POINT_MASS_LEVELS distinct values or more whose most common value is its smallest or largest,
    holds POINT_MASS_SHARE of the rows or more and POINT_MASS_SPIKE times the rows of the value next to it -- a
    "none" state such as $0 spent or no barium, a spike set apart from the amounts beside it, not the 0 of a count
    with about as many 1s -- gets an input saying whether a row holds that value. Where most columns hold a mass at
    their edge (an image's background pixels, a sparse count matrix) it is the data's background, not a state of
    one column: none. Measured on 13 unseen tables (benchmarks/point_masses.py, 10 splits): CreditCard +5.19
    points of accuracy (SE 0.46), PSID1976 +0.79 (0.24), fgl's balanced accuracy -2.41 (1.62), the rest within
    1.8 standard errors of level; the built-in sets unchanged (no column qualifies)."""
    values = _statistics_rows(x)
    at_edge, columns, masses = 0, [], []
    for column in range(values.shape[1]):
        present = values[:, column]
        levels, counts = np.unique(present[~np.isnan(present)], return_counts=True)
        if len(levels) == 0:
            continue
        most = int(counts.argmax())
        if (len(levels) < POINT_MASS_LEVELS or most not in (0, len(levels) - 1)
                or counts[most] < POINT_MASS_SHARE * values.shape[0]):
            continue
        at_edge += 1
        if counts[most] >= POINT_MASS_SPIKE * counts[1 if most == 0 else -2]:
            columns.append(column)
            masses.append(float(levels[most]))
    if at_edge > POINT_MASS_MOST * values.shape[1]:
        return {"indicator_columns": [], "indicator_values": []}
    return {"indicator_columns": columns, "indicator_values": masses}


def _infer_cnn(inputs: Sequence[torch.Tensor], targets: torch.Tensor, task: str) -> dict[str, Any]:
    x = inputs[0]
    if x.dim() != 4:
        raise ValueError(f"model 'cnn' needs images shaped (N, channels, height, width), got X of shape {tuple(x.shape)}")
    return {"in_channels": x.shape[1], "height": x.shape[2], "width": x.shape[3], "num_classes": _outputs(targets, task)}


def _infer_ids(name: str) -> Infer:
    def infer(inputs: Sequence[torch.Tensor], targets: torch.Tensor, task: str) -> dict[str, Any]:
        pairs = inputs[0] if len(inputs) == 1 else torch.stack([inputs[0], inputs[1]], 1)
        if pairs.dim() != 2 or pairs.shape[1] != 2 or pairs.is_floating_point():
            raise ValueError(f"model {name!r} needs integer (user, item) pairs shaped (N, 2), got X of shape "
                             f"{tuple(pairs.shape)} and dtype {pairs.dtype}")
        options = {"num_users": int(pairs[:, 0].max()) + 1, "num_items": int(pairs[:, 1].max()) + 1,
                   "mean": float(targets.float().mean())}
        if name == "mf" and task == "ranking":
            # BPR scores pairs against each other: with the rating model's reg 0.1 the recipe's HR@10 on MovieLens
            # (leave-last-out) is 0.534, below popularity's 0.544; with 1e-4, 0.681 (recipe.py, REC_ADAMW_LR)
            options["reg"] = RANKING_REG
        elif name == "mf" and targets.numel() > 1:
            # Ratings spread wider than RATING_SPREAD train in units that bring them back to it, so that 0-100
            # points train as 1-5 stars do (README, rule 9)
            spread = float(targets.double().std())
            options["scale"] = max(1.0, spread / RATING_SPREAD) if math.isfinite(spread) else 1.0
        return options

    return infer


RANKING_REG = 1e-4  # mf's reg for task="ranking" unless given
# The widest spread (standard deviation) of ratings "mf" trains in their own units, where the recipe's per-rating
# rate was measured; wider ones train in units of spread / RATING_SPREAD (its scale). MovieLens (1-5 stars, spread
# 1.06) and its ratings x 2 (1-10, 2.1) scored 0.8749 and 0.8754 at scale 1 (seed 0), x 5 0.8835, x 10 0.9245 (the
# bias baseline 0.891) and x 20 diverged; at this scale x 20 scores 0.876, x 2 0.876. The spread itself as the unit (scale
# 1.06 on MovieLens) cost 0.0014 RMSE on each of seeds 0-2.
RATING_SPREAD = 2.0


_native("mlp", _C.MlpOptions, _C.make_mlp, _infer_mlp,
        encoding={"categories": ([], categories.check)}, encode=categories.encode, choose=categories.choose,
        statistics=(("center", "scale", "clip"), ("target_center", "target_scale"),
                    ("linear", "linear_center", "linear_scale"), ("indicator_columns", "indicator_values"),
                    ("missing_columns",), ("categories",)),
        switches={"linear": "none"}, recipe="tabular", missing=True)
_native("cnn", _C.CnnOptions, _C.make_cnn, _infer_cnn,
        example_shape=lambda o: (o["in_channels"], o["height"], o["width"]))
_native("mf", _C.MfOptions, _C.make_mf, _infer_ids("mf"), every_split=("num_users", "num_items"), recipe="recommender",
        pairs=True)
_native("ncf", _C.NcfOptions, _C.make_ncf, _infer_ids("ncf"), every_split=("num_users", "num_items"),
        recipe="neural recommender", pairs=True)


# --- pretrained models read from installed packages -----------------------------------------------------------

def as_texts(x: Any) -> list[str] | None:
    """``x`` as a list of texts where it is one -- a list, tuple, 1-D array, pandas Series or one-column DataFrame
    holding a string -- else None. An item that is not a string among them (None, NaN: a missing text) is an error
    naming its row."""
    if isinstance(x, str):
        raise TypeError(f"X is one string ({x[:40]!r}): pass a list of texts, [text] for one")
    if data.is_frame(x) and x.shape[1] == 1:
        x = x.iloc[:, 0]  # df[["review"]]: its one column
    index = x.index if data.is_series(x) else None
    if data.is_series(x):
        x = x.tolist()
    if not isinstance(x, (list, tuple, np.ndarray)) or not len(x) or np.ndim(x) != 1:
        return None
    example = next((v for v in x if isinstance(v, str)), None)
    if example is None:
        return None
    bad = next((i for i, v in enumerate(x) if not isinstance(v, str)), None)
    if bad is not None:
        raise TypeError(f"X {data.row_name(bad, index)} is {x[bad]!r} among texts such as {example[:40]!r}: every "
                        "text must be a string (drop the rows without one, or fill them with '')")
    return list(x)


def _texts_to_ids(x: Any, options: dict[str, Any], rows: np.ndarray | None = None) -> Any:
    """Texts (a list, 1-D array or pandas Series of strings) as [input_ids, attention_mask] at options'
    max_length, the texts cut counted among ``rows`` (None: all); token ids as given; anything else an error
    naming what was found."""
    texts = as_texts(x)
    if texts is None:
        if isinstance(x, (list, tuple, np.ndarray)) and len(x) == 0 or data.is_series(x) and x.empty:
            raise ValueError("X is empty (0 examples)")
        if isinstance(x, (list, tuple)) and len(x) == 2 and all(np.ndim(t) == 2 for t in x):
            return x  # [input_ids, attention_mask], tokenised already
        if data.keywords(x) is not None:
            return x  # keyword inputs: the forward pass names what it lacks
        found = (f"a {type(x).__name__} of {type(x[0]).__name__} (e.g. {x[0]!r})"
                 if isinstance(x, (list, tuple)) and len(x) and np.ndim(x[0]) == 0
                 else f"a {type(x).__name__} of {len(x)} arrays of shapes {[tuple(np.shape(t)) for t in x]}"
                 if isinstance(x, (list, tuple))
                 else f"{type(x).__name__} of shape {tuple(np.shape(x))}" if hasattr(x, "shape")
                 else type(x).__name__)
        raise ValueError(f"model 'minilm' reads texts (a list of strings) or [input_ids, attention_mask], each "
                        f"(N, length); got {found}")
    from . import text

    if not options["max_length"]:
        raise ValueError("model 'minilm': max_length=0 is chosen from the training texts first "
                         "(ModelEntry.choose_options); give max_length to encode texts on their own")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:  # a CSV's empty cell reads as "": a text with no words, which the model still gives a class
        logging.getLogger("finetune").warning(
            f"X: {len(empty)} of {len(texts)} texts are empty (e.g. row {empty[0]}): the model reads no words in them")
    return text.tokenizer(options["max_length"])(texts, counted=rows)


MAX_TOKENS = 256  # the longest max_length chosen from the data: attention's cost grows with the square of it
COVERED = 0.95  # max_length chosen to keep this share of the training texts whole


def _choose_max_length(x: Any, options: dict[str, Any]) -> dict[str, Any]:
    """max_length=0 (the default): the length that keeps 95% of the training texts whole, rounded up to a
    multiple of 8, between 8 and 256 tokens (MiniLM reads 512 at most; on a CPU each doubling costs > 2x)."""
    texts = as_texts(x)
    if options.get("max_length", 0) != 0 or texts is None:
        return options
    from . import text

    lengths = text.token_lengths(texts)
    covering = int(np.ceil(np.quantile(lengths, COVERED)))
    return {**options, "max_length": int(min(MAX_TOKENS, max(8, -(-covering // 8) * 8)))}


def _infer_minilm(inputs: Sequence[torch.Tensor], targets: torch.Tensor, task: str) -> dict[str, Any]:
    ids = inputs[0]
    if len(inputs) != 2 or ids.dim() != 2 or ids.is_floating_point():
        raise ValueError("model 'minilm' reads texts (a list of strings) or [input_ids, attention_mask] from its "
                         f"tokenizer (finetune.text.tokenizer), each (N, length) int64; got X of shapes "
                         f"{[tuple(t.shape) for t in inputs]}")
    return {"num_classes": _outputs(targets, task), "max_length": int(ids.shape[1])}


@register_model("minilm", infer_options=_infer_minilm, encode=_texts_to_ids, trained_weights=lambda o: True,
                choose=_choose_max_length, mask_input=1, recipe="sentence encoder",
                saved_before={"normalize": False, "layers": 1}, texts=True)
def minilm(num_classes: int, max_length: int = 0, dropout: bool = True,
           normalize: bool = True, layers: int = 4) -> torch.jit.ScriptModule:
    """finetune.text.minilm_classifier's model (texts are tokenised at max_length; 0, the default: the length
    that keeps 95% of the training texts whole, up to 256). The head reads the mean-pooled states of the encoder's
    last ``layers`` layers (4 unless given -- but recipe="auto" builds it with 1 where phase pairs trains on 17 to
    64 examples a class, recipe.picked_model_options; a run saved before the option existed read the last alone),
    each unit length unless normalize=False. The head's initial weights come from torch's current seed (finetune.train sets it
    to the run's seed before it builds a model)."""
    from . import text

    if max_length == 0:
        raise ValueError("model 'minilm' with max_length=0 chooses it from the training texts, which finetune.build "
                         "does not see: give max_length (e.g. 64), or let finetune.train choose it")
    if num_classes < 1 or max_length < 1:
        raise ValueError(f"model 'minilm' needs num_classes and max_length >= 1, got {num_classes} and {max_length}")
    return text.minilm_classifier(num_classes, max_length, seed=torch.initial_seed(), dropout=dropout,
                                  normalize=normalize, layers=layers)[0]


def _infer_digit_cnn(inputs: Sequence[torch.Tensor], targets: torch.Tensor, task: str) -> dict[str, Any]:
    x = inputs[0]
    if len(inputs) != 1 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError("model 'digit_cnn' reads MNIST-sized images (N, 1, 28, 28), scaled by "
                         f"finetune.pretrained.mnist_normalize; got X of shape {tuple(x.shape)}")
    return {"num_classes": _outputs(targets, task)}


@register_model("digit_cnn", infer_options=_infer_digit_cnn, example_shape=lambda o: (1, 28, 28),
                trained_weights=lambda o: o["pretrained"], image_mean_std=(0.1307, 0.3081))  # MNIST's
def digit_cnn(num_classes: int = 10, pretrained: bool = True) -> torch.nn.Module:
    """finetune.pretrained.digit_cnn: digit-recognizer-py's MNIST CNN (a new head for other than 10 classes)."""
    from . import pretrained as weights

    return weights.digit_cnn(pretrained=pretrained, num_classes=num_classes)
