"""Recipe search with Optuna: seeded, pruned, every trial in the C++ loop, a ready-to-run best config."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import finetune
from finetune import datasets, runs
from finetune.tune import tune

pytest.importorskip("optuna")
pytest.importorskip("sklearn")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

SPACE = {"lr": {"low": 1e-4, "high": 3e-2, "log": True},
         "schedule": {"choices": ["constant", "cosine"]},
         "freeze": {"choices": [[], ["layers.0"]]}}


def test_finetune_tune_is_the_function_the_readme_names():
    assert finetune.tune is tune and "tune" in finetune.__all__


def run_search(seed: int):
    wine = datasets.load("wine")
    return tune("mlp", (wine.x_train, wine.y_train), (wine.x_test, wine.y_test), space=SPACE, trials=10,
                seed=seed, epochs=8, batch_size=16, optimizer="adamw")


def test_search_is_seeded_prunes_and_returns_a_runnable_best_config():
    first, again = run_search(0), run_search(0)
    assert [t["params"] for t in first.trials] == [t["params"] for t in again.trials]
    assert first.best_value == pytest.approx(again.best_value)
    states = {t["state"] for t in first.trials}
    assert "complete" in states and len(first.trials) == 10
    assert any(t["state"] == "pruned" and t["epochs"] < 8 for t in first.trials) or states == {"complete"}
    completed = [t["value"] for t in first.trials if t["state"] == "complete"]
    assert first.best_value == min(completed)
    wine = datasets.load("wine")
    result = finetune.train("mlp", (wine.x_train, wine.y_train), val=(wine.x_test, wine.y_test),
                            config=first.best_config)
    # The score is the returned model's (here the last epoch's: no restore_best), what best_config trains to
    assert finetune.evaluate(result.model, (wine.x_test, wine.y_test))["loss"] == pytest.approx(first.best_value,
                                                                                              rel=1e-5)
    restored = tune("mlp", (wine.x_train, wine.y_train), (wine.x_test, wine.y_test), space=SPACE, trials=3, seed=0,
                    epochs=8, batch_size=16, optimizer="adamw", restore_best=True, early_stopping=8)
    again = finetune.train("mlp", (wine.x_train, wine.y_train), val=(wine.x_test, wine.y_test),
                           config=restored.best_config)
    assert finetune.evaluate(again.model, (wine.x_test, wine.y_test))["loss"] == pytest.approx(restored.best_value,
                                                                                              rel=1e-5)
    assert restored.best_value == pytest.approx(min(h["val_loss"] for h in again.history), rel=1e-6)


@pytest.mark.parametrize("spec, said", [
    ({"lr": {"low": 1e-1, "high": 1e-3}}, "search space 'lr': low must be below high, got low=0.1, high=0.001"),
    ({"lr": {"low": 0, "high": 1e-2, "log": True}}, "search space 'lr': a log range needs low > 0, got low=0"),
    ({"schedule": {"choices": ["cosine", "cosinee"]}}, "search space 'schedule': 'cosinee' is no valid value "
                                                        "(schedule must be one of"),
    ({"schedule": {"choices": []}}, "search space 'schedule': choices must be a non-empty list, got []"),
    ({"lr": {"low": 1e-3, "high": 1e-1, "step": 2}}, "search space 'lr' must be"),
    ({"epochs": {"low": 0, "high": 4}}, "search space 'epochs': 0 is no valid value")])
def test_a_search_space_is_checked_before_any_trial_trains(spec, said):
    """Each mistake is one error before the first trial: a misspelt choice was found only when drawn, after other
    trials had trained; an upside-down or log-0 range failed inside Optuna with its traceback."""
    wine = datasets.load("wine")
    calls = []
    with pytest.raises(ValueError) as error:
        tune(lambda: calls.append(1) or "mlp", (wine.x_train, wine.y_train), (wine.x_test, wine.y_test), space=spec,
             trials=3, epochs=2)
    assert said in str(error.value) and not calls


def test_bad_search_spaces_are_clear_errors():
    wine = datasets.load("wine")
    with pytest.raises(ValueError, match=r"search space names unknown setting\(s\) \['lrate'\]"):
        tune("mlp", (wine.x_train, wine.y_train), (wine.x_test, wine.y_test), space={"lrate": {"low": 1, "high": 2}})
    with pytest.raises(ValueError, match=r"search space 'lr' must be"):
        tune("mlp", (wine.x_train, wine.y_train), (wine.x_test, wine.y_test), space={"lr": [0.1, 0.01]})


def test_tune_command_writes_best_config_and_trials(tmp_path):
    done = subprocess.run([sys.executable, "-m", "finetune", "tune", str(EXAMPLES / "wine-tune.toml"), "tune.trials=6",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ready-to-run config" in done.stdout
    best = tomllib.loads((tmp_path / "best.toml").read_text())
    assert set(best) == {"data", "model", "train"} and "lr" in best["train"]
    trials = list(csv.DictReader((tmp_path / "trials.csv").read_text().splitlines()))
    assert len(trials) == 6 and {t["schedule"] for t in trials} <= {"constant", "cosine", "onecycle"}  # bare words
    assert {t["sample_fraction"] for t in trials} <= {"0.5", "1.0"}
    assert "loop defaults" not in done.stderr  # [train] sets epochs; the space, the schedule
    run = subprocess.run([sys.executable, "-m", "finetune", "train", str(tmp_path / "best.toml"), "--out",
                          str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_tune_says_which_loop_defaults_its_trials_run(tmp_path, caplog):
    """A [tune] table without [train]: each trial trains the settings as given, so 10 epochs at a constant rate
    (the loop's defaults) -- said, not run silently; lr is in the space, so not named."""
    (tmp_path / "t.toml").write_text('[data]\ndataset = "iris"\n[model]\nname = "mlp"\n[tune]\ntrials = 1\n'
                                     'lr = { low = 0.001, high = 0.1, log = true }\n')
    with caplog.at_level(logging.WARNING, logger="finetune"):
        runs.tune_run(runs.load_config(tmp_path / "t.toml"), tmp_path / "out")
    said = [r.getMessage() for r in caplog.records if "loop defaults" in r.getMessage()]
    assert len(said) == 1 and "(optimizer='sgd', epochs=10, schedule='constant'); set them in [train]" in said[0], said


def test_a_trial_that_fails_is_one_error_naming_its_settings(capfd):
    """A drawn value TrainConfig accepts but training refuses (a freeze pattern that names no parameter): the
    error says which trial and settings, and Optuna's own lines (its traceback of the same error) are not shown."""
    wine = datasets.load("wine")
    with pytest.raises(ValueError, match=r"^trial 0 \(\{\"freeze\": \[\"nothing_here\"\]\}\): freeze pattern "
                                         r"'nothing_here' matches no parameter"):
        tune("mlp", (wine.x_train, wine.y_train), (wine.x_test, wine.y_test), trials=2, epochs=1,
             space={"freeze": {"choices": [["nothing_here"]]}})
    assert "failed" not in capfd.readouterr().err


def test_a_search_over_settings_that_leave_the_recipe_on_scores_each_trial_as_the_recipe_returns(recwarn):
    """sample_fraction and batch_size shape nothing: each trial runs the recipe, whose phases count epochs from 0 each
    (reported to Optuna, they were ignored with a warning per step) -- no pruning by epoch, and the score is the
    returned model's, what best_config trains to."""
    wine = datasets.load("wine")
    found = tune("mlp", (wine.x_train, wine.y_train), (wine.x_test, wine.y_test), trials=2, seed=0,
                 space={"sample_fraction": {"choices": [0.5, 1.0]}})
    assert all(t["state"] == "complete" for t in found.trials)
    assert not [w for w in recwarn if "already reported" in str(w.message)]
    again = finetune.train("mlp", (wine.x_train, wine.y_train), val=(wine.x_test, wine.y_test),
                           config=found.best_config, progress=False)
    assert again.recipe[0]["value"] == "auto"
    assert finetune.evaluate(again.model, (wine.x_test, wine.y_test))["loss"] == pytest.approx(found.best_value,
                                                                                              rel=1e-5)
