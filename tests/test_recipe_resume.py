"""The recipe checkpoints: killed or interrupted in any phase, a resumed recipe run ends with the weights, decisions
and history of the run never interrupted; what cannot be resumed is a clear error."""

from __future__ import annotations

import json
import random
import signal

import numpy as np
import pytest
import torch

import finetune
from finetune import checkpoint, recipe

from helpers import mlp
from test_checkpoint import assert_bitwise_equal, finish, run_until, start

SETTINGS = dict(sample_fraction=0.3, seed=3, progress=False)  # nothing that shapes the training: the recipe runs


@pytest.fixture(scope="module")
def recipe_reference(tmp_path_factory) -> tuple[dict[str, torch.Tensor], int]:
    """The recipe run of tests/resume_worker.py, never interrupted: its weights and how many steps it took."""
    root = tmp_path_factory.mktemp("recipe")
    proc = start(root / "ckpt", root / "weights.safetensors", "--recipe")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    steps = sum(line.startswith("step ") for line in stdout.splitlines())
    assert steps > 100  # phases full, shrunk, scratch and the refit step in the loop (the head is the probe's fit)
    return checkpoint.load_tensors(root / "weights.safetensors")[0], steps


_KILL_AT = random.Random(2027)


@pytest.mark.parametrize("fraction", sorted(_KILL_AT.uniform(0.02, 0.98) for _ in range(3)))
def test_a_recipe_run_killed_anywhere_then_resumed_is_bitwise_identical(tmp_path, recipe_reference, fraction):
    """SIGKILL at a random step of the recipe (any phase; the worker rebuilds its model from scratch, as a new
    process does), then resume=True: the weights of the run never killed, bit for bit."""
    reference, steps = recipe_reference
    proc = start(tmp_path / "ckpt", tmp_path / "w.safetensors", "--recipe")
    run_until(proc, f"step {max(1, int(fraction * steps))}", signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    resumed = finish(tmp_path / "ckpt", tmp_path / "w.safetensors", "--recipe", "--resume")
    assert_bitwise_equal(resumed, reference)


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target


def _without_clock(history):
    return [{k: v for k, v in h.items() if k not in ("seconds", "samples_per_s")} for h in history]


@pytest.fixture(scope="module")
def uninterrupted_recipe():
    x, y = _digits()
    torch.manual_seed(0)
    model = mlp()
    start_state = {k: v.clone() for k, v in model.state_dict().items()}
    steps = [0]

    def count(kind, info):
        steps[0] += kind == "step"

    result = finetune.train(model, (x, y), callback=count, callback_interval=0, **SETTINGS)
    return start_state, model.state_dict(), result, steps[0]


def _phase_directories(result) -> list[str]:
    """The directories a recipe run with checkpoint_dir writes: one per phase of the loop, numbered in the order the
    phases started (the probe's fits of phase head and its refit are counted but write none)."""
    ran = [d["what"][:-len(".result")] for d in result.recipe if d["what"].endswith(".result")]
    refit = next(d["value"]["phases"] for d in result.recipe if d["what"] == "refit")
    probe = next(d["value"] for d in result.recipe if d["what"] == "head.fit") == "linear probe"
    started = ran + [f"refit-{name}" for name in refit]
    return [f"{number:02d}-{name}" for number, name in enumerate(started, 1)
            if not (probe and name in ("head", "refit-head"))]


# Its ~2,200 steps (AMD EPYC): phase full first 23%, shrunk and shrunk_low to 58%, scratch to 79%, then the refit
# (the head phases are the probe's fit): a stop in each.
@pytest.mark.parametrize("stop_fraction", [0.01, 0.3, 0.7, 0.9])
def test_ctrl_c_in_a_phase_then_resume_with_the_same_model(tmp_path, uninterrupted_recipe, stop_fraction):
    """Ctrl-C in a notebook, then resume=True with the model object that trained meanwhile: the recipe starts
    again from its initial weights (kept in the checkpoint directory), reads its range tests back, and ends as
    the run never interrupted -- weights, every decision and the history."""
    start_state, reference, expected, steps = uninterrupted_recipe
    x, y = _digits()
    model = mlp()
    model.load_state_dict(start_state)
    seen = [0]

    def interrupt(kind, info):
        if kind == "step":
            seen[0] += 1
            if seen[0] == int(stop_fraction * steps):
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune.train(model, (x, y), checkpoint_dir=tmp_path, callback=interrupt, callback_interval=0, **SETTINGS)
    journal = json.loads((tmp_path / "recipe.json").read_text())
    assert journal["recipe"] == "auto" and journal["range_tests"]
    result = finetune.train(model, (x, y), checkpoint_dir=tmp_path, resume=True, **SETTINGS)
    for key, value in reference.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert result.recipe[0] == {"what": "recipe", "value": "auto",
                                "reason": "resumed: checkpoint_dir holds a recipe='auto' run"}
    assert result.recipe[1:] == expected.recipe[1:]
    assert _without_clock(result.history) == _without_clock(expected.history)
    # A directory for each phase of the loop, numbered in order (01-head and the refit's head: the probe's fits).
    directories = _phase_directories(expected)
    assert directories[0] == "02-full" and any(d.endswith("-scratch") for d in directories)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(directories + ["initial.safetensors", "recipe.json"])
    for phase in directories:  # finished: its last checkpoint alone is kept
        assert sorted(p.name for p in (tmp_path / phase).iterdir() if not p.name.startswith("step-")) == ["latest"]
        assert len([p for p in (tmp_path / phase).iterdir() if p.name.startswith("step-")]) == 1


def test_a_finished_recipe_run_resumed_trains_nothing_more(tmp_path, uninterrupted_recipe):
    start_state, reference, _, _ = uninterrupted_recipe
    x, y = _digits()
    model = mlp()
    model.load_state_dict(start_state)
    finetune.train(model, (x, y), checkpoint_dir=tmp_path, **SETTINGS)
    steps = []
    finetune.train(model, (x, y), checkpoint_dir=tmp_path, resume=True, callback_interval=0,
                   callback=lambda kind, info: steps.append(info) if kind == "step" else None, **SETTINGS)
    assert steps == []
    for key, value in reference.items():
        assert torch.equal(model.state_dict()[key], value), key


@pytest.fixture
def recipe_dir(tmp_path):
    """A checkpoint directory holding a finished recipe run of a small MLP."""
    x, y = _digits()
    finetune.train(mlp(), (x[:300], y[:300]), checkpoint_dir=tmp_path, **SETTINGS)
    return tmp_path


@pytest.mark.parametrize("call, match", [
    (dict(), r"already holds a recipe run .*resume=True \(the CLI.s --resume\) continues it"),
    (dict(resume=True, batch_size=16), r"of other settings or data \(batch_size: checkpoint None vs now 16\)"),
    (dict(resume=True, val_fraction=0.3), r"of other settings or data \(val_fraction: checkpoint None vs now 0.3\)"),
    (dict(resume=True, sample_fraction=0.5), r"of other settings or data \(data: checkpoint '\w+' vs now '\w+'"),
    (dict(resume=True, recipe="none"), "holds a recipe='auto' run .*resume it with recipe=None"),
    (dict(resume=True, recipe="head"), "holds a recipe='auto' run; resume it with recipe='auto'"),
])
def test_what_cannot_resume_a_recipe_run_is_an_error(recipe_dir, call, match):
    x, y = _digits()
    with pytest.raises(ValueError, match=match):
        finetune.train(mlp(), (x[:300], y[:300]), checkpoint_dir=recipe_dir, **{**SETTINGS, **call})


def test_a_recipe_run_resumed_on_other_data_is_an_error(recipe_dir):
    x, y = _digits()
    with pytest.raises(ValueError, match=r"other settings or data \(data: "):
        finetune.train(mlp(), (x[:300] + 0.01, y[:300]), checkpoint_dir=recipe_dir, resume=True, **SETTINGS)
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        finetune.train(mlp(), (x[:300], y[:300]), resume=True, **SETTINGS)


def test_a_recipe_cannot_resume_a_run_of_the_settings_as_given(tmp_path):
    x, y = _digits()
    finetune.train(mlp(), (x[:300], y[:300]), checkpoint_dir=tmp_path, epochs=1, **SETTINGS)
    with pytest.raises(ValueError, match="holds the checkpoints of a run of the settings as given"):
        finetune.train(mlp(), (x[:300], y[:300]), checkpoint_dir=tmp_path, resume=True, recipe="auto", **SETTINGS)
    # With no recipe= a resume runs what the directory holds: here the settings as given.
    result = finetune.train(mlp(), (x[:300], y[:300]), checkpoint_dir=tmp_path, resume=True, epochs=1, **SETTINGS)
    assert result.recipe[0]["value"] == "none"


@pytest.mark.parametrize("edit, match", [
    (lambda j: {**j, "format": 2}, "format must be 1, got 2"),
    (lambda j: {**j, "recipe": "fast"}, r"recipe must be one of \['auto', 'head'\], got 'fast'"),
    (lambda j: {k: v for k, v in j.items() if k != "given"}, "given is missing"),
    (lambda j: {**j, "range_tests": [{"lrs": [1e-3], "losses": [], "suggestion": 1e-3, "diverged": False}]},
     r"range_tests\[0\].losses must be a non-empty list"),
    (lambda j: {**j, "range_tests": [{"lrs": [1e-3], "losses": ["x"], "suggestion": 1e-3, "diverged": False}]},
     r"range_tests\[0\].losses\[0\] must be a number, got 'x'"),
    (lambda j: {**j, "range_tests": [{"lrs": [1e-3, 1e-2], "losses": [1.0], "suggestion": 1e-3, "diverged": False}]},
     r"range_tests\[0\] has 2 lrs and 1 losses"),
    (lambda j: {**j, "range_tests": [{"lrs": [1e-3], "losses": [1.0], "suggestion": 1e-3, "diverged": False,
                                      "parameters": "many"}]},
     r"range_tests\[0\].parameters must be a count >= 0, got 'many'"),
    (lambda j: {**j, "extra": 1}, r"unexpected key\(s\) \['extra'\]"),
    (lambda j: {**j, "run": {**j["run"], "data": None, "more": 1}}, r"run has unexpected key\(s\) \['more'\]"),
    (lambda j: {**j, "range_tests": [{"lrs": [1e-3, 1e-4], "losses": [1.0, 0.9], "suggestion": 1e-3,
                                      "diverged": False}]}, r"range_tests\[0\].lrs must be finite rates > 0, rising"),
    (lambda j: {**j, "range_tests": [{"lrs": [1e-3], "losses": [1.0], "suggestion": -1, "diverged": False}]},
     r"range_tests\[0\].suggestion must be a finite rate > 0, got -1"),
    (lambda j: {**j, "range_tests": [{**j["range_tests"][0], "optimizer": "lion"}]},
     r"range_tests\[0\].optimizer must be one of adam, adamw, rmsprop, sgd, got 'lion'"),
])
def test_a_crafted_recipe_journal_is_a_one_line_error_naming_the_field(recipe_dir, edit, match):
    path = recipe_dir / "recipe.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    x, y = _digits()
    with pytest.raises(ValueError, match=match) as error:
        finetune.train(mlp(), (x[:300], y[:300]), checkpoint_dir=recipe_dir, resume=True, **SETTINGS)
    assert "recipe.json" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("key, then, match", [
    ("optimizer", "adamw", r"range test 1 ran 'adamw' on a model of \d+ values and this finetune runs 'sgd' on"),
    ("parameters", 99, r"range test 1 ran 'sgd' on a model of 99 values and this finetune runs 'sgd' on \d+"),
])
def test_a_recipe_journal_whose_range_test_ran_another_optimizer_or_model_is_an_error(recipe_dir, key, then, match):
    """A journal written by a finetune whose rules chose another optimizer, or ran the test on another part of the
    model (a regression head now fit by the probe was range-tested in the loop): its curves would set this
    version's rates wrongly, silently -- an error naming both, before anything trains."""
    path = recipe_dir / "recipe.json"
    journal = json.loads(path.read_text())
    assert journal["range_tests"][0]["optimizer"] == "sgd"  # rule 4: the pretrained MLP's phase full
    assert journal["range_tests"][0]["parameters"] == sum(p.numel() for p in mlp().state_dict().values())
    journal["range_tests"][0][key] = then
    path.write_text(json.dumps(journal))
    x, y = _digits()
    with pytest.raises(ValueError, match=match):
        finetune.train(mlp(), (x[:300], y[:300]), checkpoint_dir=recipe_dir, resume=True, **SETTINGS)


def test_a_recipe_run_without_its_initial_weights_is_an_error(recipe_dir):
    (recipe_dir / "initial.safetensors").unlink()
    x, y = _digits()
    with pytest.raises(FileNotFoundError, match="initial.safetensors is missing"):
        finetune.train(mlp(), (x[:300], y[:300]), checkpoint_dir=recipe_dir, resume=True, **SETTINGS)


def test_the_callbacks_stop_ends_the_whole_recipe_with_the_best_weights_it_has(tmp_path):
    """True from the callback ends the recipe, not one phase (the next ran after it, and the refit): no later
    epoch reaches the callback, result.recipe says where it stopped, and the model is the phase kept among those
    run (here the one stopped, its best epoch restored), trained on the training slice (no refit); resume=True
    goes on with the later phases."""
    x, y = _digits()
    epochs = []

    def stop_at_2(kind, info):
        if kind == "epoch":
            epochs.append(info["epoch"])
            return info["epoch"] >= 2
        return None

    torch.manual_seed(0)
    model = mlp()
    stopped = finetune.train(model, (x, y), callback=stop_at_2, checkpoint_dir=tmp_path, **SETTINGS)
    assert epochs == [0, 1, 2] and stopped.stopped
    what = [d["what"] for d in stopped.recipe]
    assert "refit" not in what and "shrunk.result" not in what and what.index("stopped") < what.index("kept")
    note = next(d for d in stopped.recipe if d["what"] == "stopped")
    assert note["value"] == "full" and "at epoch 2" in note["reason"]  # the first phase of the loop (head: the probe)
    assert len(stopped.sample_indices) < round(0.3 * len(y))  # the training slice: the validation slice held out
    assert [h["phase"] for h in stopped.history] == [0, 1, 1, 1]  # the probe's fit, then full's 3 epochs
    resumed = finetune.train(model, (x, y), checkpoint_dir=tmp_path, resume=True, **SETTINGS)
    what = [d["what"] for d in resumed.recipe]
    assert "stopped" not in what and "refit" in what  # the later phases and the refit, full as it ended


def test_a_stop_in_the_refit_returns_the_weights_the_recipe_chose(monkeypatch):
    """A stop once the decisions are made (at the refit's first epoch) returns the kept phase's weights as trained
    on the training slice -- those of the same run without a refit, bit for bit -- not a refit half run."""
    x, y = _digits()

    def stop_in_refit(kind, info):  # the refit's epochs are the only ones with nothing held out to measure
        return kind == "epoch" and "val_loss" not in info

    torch.manual_seed(0)
    model = mlp()
    stopped = finetune.train(model, (x, y), callback=stop_in_refit, **SETTINGS)
    note = next(d for d in stopped.recipe if d["what"] == "stopped")
    assert note["value"].startswith("refit-") and "kept phase's" in note["reason"] and stopped.stopped
    monkeypatch.setattr(recipe, "REFIT", False)
    torch.manual_seed(0)
    unrefit = mlp()
    finetune.train(unrefit, (x, y), **SETTINGS)
    assert_bitwise_equal(model.state_dict(), unrefit.state_dict())
