"""Recipe search: Optuna over the fine-tuning rate, schedule, freezing, layer decay, sample fraction, ...

Every trial is a fine-tune in the C++ loop; a median pruner stops poor trials after an epoch, from what the
loop reports at each epoch's end. A search space maps TrainConfig fields to

    {"low": 1e-4, "high": 0.1, "log": True}     a float (an int when low and high are ints)
    {"choices": ["cosine", "onecycle"]}         one of these (any JSON-able values, lists included)
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from . import _C
from .config import TrainConfig, config_fields, did_you_mean
from .training import _task_given, recipe_for, resolve_config, train

log = logging.getLogger("finetune")


@dataclass
class TuneResult:
    best_params: dict[str, Any]
    best_value: float
    best_config: TrainConfig
    trials: list[dict[str, Any]] = field(default_factory=list)  # number, state, value, params, epochs


def _check_space(space: dict[str, Any], base: TrainConfig) -> None:
    """Every entry of ``space`` a range or choices of valid values for its setting, checked before any trial
    trains: a choice misspelt ("cosinee") was found only when a trial drew it, after others had trained, and a
    range upside down or of log 0 failed inside Optuna with its traceback."""
    unknown = sorted(set(space) - set(config_fields()))
    if unknown:
        raise ValueError(f"search space names unknown setting(s) {unknown}{did_you_mean(unknown, config_fields())}; "
                         f"known: {config_fields()}")
    for name, spec in space.items():
        shape = "{'low': .., 'high': .. [, 'log': true]} or {'choices': [...]}"
        if not isinstance(spec, dict) or not (set(spec) in ({"low", "high"}, {"low", "high", "log"}, {"choices"})):
            raise ValueError(f"search space '{name}' must be {shape}, got {spec!r}")
        if "choices" in spec:
            values = spec["choices"]
            if not isinstance(values, list) or not values:
                raise ValueError(f"search space '{name}': choices must be a non-empty list, got {values!r}")
        else:
            low, high = spec["low"], spec["high"]
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                          for v in (low, high))
            if not numbers:
                raise ValueError(f"search space '{name}': low and high must be numbers, got {low!r} and {high!r}")
            if not low < high:
                raise ValueError(f"search space '{name}': low must be below high, got low={low!r}, high={high!r}")
            if spec.get("log") and low <= 0:
                raise ValueError(f"search space '{name}': a log range needs low > 0, got low={low!r}")
            values = [low, high]
        for value in values:  # each value the trials may draw is a valid setting (TrainConfig checks as it is made)
            try:
                base.replace(**{name: value})
            except (TypeError, ValueError) as error:
                raise ValueError(f"search space '{name}': {value!r} is no valid value ({error})") from None


def _suggest(trial: Any, name: str, spec: dict[str, Any]) -> Any:
    if "choices" in spec:
        # Optuna's categorical takes scalars only: choose an index, keep the value (a list, say) as given.
        index = trial.suggest_categorical(name, [json.dumps(c) for c in spec["choices"]])
        return json.loads(index)
    if isinstance(spec["low"], int) and isinstance(spec["high"], int) and not spec.get("log"):
        return trial.suggest_int(name, spec["low"], spec["high"])
    return trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False)))


def tune(model_factory: Callable[[], Any] | str, train_data: tuple[Any, Any], val: tuple[Any, Any], *,
         space: dict[str, dict[str, Any]], trials: int = 20, metric: str = "val_loss", seed: int = 0,
         config: TrainConfig | None = None, on_trial: Callable[[dict], None] | None = None,
         **settings: Any) -> TuneResult:
    """Searches `space` with Optuna (TPE sampler seeded by `seed`, median pruner) for the best `metric` on
    `val`; `model_factory()` makes a fresh model per trial (or a built-in name)."""
    try:
        import optuna
    except ImportError:
        raise ImportError("finetune.tune needs Optuna: pip install 'finetune[tune]' (or optuna)") from None
    base = resolve_config(config, {**settings, "progress": False})
    _check_space(space, base)
    task_given = _task_given(config, settings)  # each trial's config is base's: say the task only if the user did
    minimise = _C.lower_is_better(metric)  # the loop's own rule for early stopping and the best epoch
    records: list[dict[str, Any]] = []

    def objective(trial: "optuna.Trial") -> float:
        params = {name: _suggest(trial, name, spec) for name, spec in space.items()}
        values: list[float] = []
        pruned = False
        trial_config = base.replace(**params)
        # Settings that shape nothing (sample_fraction, batch_size, ...) leave the recipe on: its phases each count
        # epochs from 0 and its model is the phase kept, so such a trial is not pruned by epoch and scores as the
        # model the recipe returns (its validation metrics)
        by_recipe = recipe_for(trial_config)[0] != "none"

        def report(kind: str, info: dict[str, Any]) -> bool:
            nonlocal pruned
            if kind != "epoch":
                return False
            if metric not in info:
                raise ValueError(f"metric {metric!r} is not reported; the epoch has {sorted(info)}")
            values.append(info[metric])
            if by_recipe:
                return False
            trial.report(info[metric], info["epoch"])
            pruned = trial.should_prune()
            return pruned  # True stops the C++ loop after this epoch

        model = model_factory() if callable(model_factory) else model_factory
        try:
            result = train(model, train_data, val=val, config=trial_config, callback=report,
                           **({"task": trial_config.task} if task_given else {}))
        except ValueError as error:  # said with the trial's settings, the ones the space drew
            raise ValueError(f"trial {trial.number} ({json.dumps(params)}): {error}") from error
        except Exception:  # another kind keeps its type; which trial is logged (Optuna's own line is off)
            log.error("tune: trial %d (%s) failed", trial.number, json.dumps(params))
            raise
        # The trial's score is its returned model's: the best epoch's where its config restores it, else the last
        # epoch's. The best epoch's of a run that returns the last made a score best.toml did not reproduce
        # (0.0313 reported, 0.0549 trained: the best of 20 epochs was the 2nd).
        kept = result.best_epoch if trial_config.restore_best and result.best_epoch is not None else len(values) - 1
        worst = math.inf * (1 if minimise else -1)
        best = values[kept] if 0 <= kept < len(values) and math.isfinite(values[kept]) else worst
        returned = result.metrics.get(metric.removeprefix("val_")) if by_recipe else None
        if returned is not None:
            best = returned if math.isfinite(returned) else worst
        record = {"number": trial.number, "state": "pruned" if pruned else "complete", "value": best,
                  "epochs": len(values), "params": params}
        records.append(record)
        if on_trial:
            on_trial(record)
        if pruned:
            raise optuna.TrialPruned()
        return best

    # Optuna's own lines would repeat a failed trial's error with its traceback before the error itself: the
    # trials are said by on_trial, an error by the exception raised
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="minimize" if minimise else "maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    study.optimize(objective, n_trials=trials)
    best = next(r for r in records if r["number"] == study.best_trial.number)
    return TuneResult(best["params"], study.best_value, base.replace(**best["params"]), records)
