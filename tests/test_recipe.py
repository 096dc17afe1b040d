"""recipe="auto" and its parts: the validation slice, the range-test rule, the head, settings that win or conflict."""

from __future__ import annotations

import inspect
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import finetune
from finetune import heads, probe, recipe
from finetune.demo import load_digits_split
from helpers import decisions


def blobs(n: int = 240, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, 6)).astype(np.float32) + 2.0 * np.eye(classes, 6, dtype=np.float32)[y]
    return x, y


def mlp(outputs: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, outputs))


def test_validation_slice_is_stratified_disjoint_and_keeps_a_training_example_per_class():
    targets = torch.tensor([0] * 50 + [1] * 10 + [2] * 2 + [3] * 1)
    sample = torch.arange(len(targets))
    train, val = recipe.split_validation(targets, sample, classification=True, seed=3)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == sample.tolist()
    val_counts = torch.bincount(targets[val], minlength=4).tolist()
    assert val_counts == [10, 2, 1, 0]  # 20% rounded; one of two; a class of one stays in training
    again = recipe.split_validation(targets, sample, classification=True, seed=3)
    assert torch.equal(again[1], val)
    assert not torch.equal(recipe.split_validation(targets, sample, True, seed=4)[1], val)


def test_validation_slice_for_regression_is_a_seeded_fifth():
    targets = torch.randn(100)
    train, val = recipe.split_validation(targets, torch.arange(100), classification=False, seed=0)
    assert len(val) == 20 and len(train) == 80


def test_rate_rule_is_the_lowest_loss_after_the_first_steps_divided_by_ten():
    lrs = list(np.logspace(-6, 0, 60))
    losses = [0.1] + [2.0 - 0.02 * i for i in range(1, 40)] + [2.0 + 0.5 * i for i in range(20)]
    # The first point (a lucky batch) is lower than any later one but is not taken.
    assert recipe.lr_from_range(lrs, losses) == pytest.approx(lrs[39] / 10)


def test_rate_rule_reads_a_flat_curve_where_its_plateau_ends():
    # A model that already fits its batches: the loss wanders within batch noise, then rises. Its lowest point
    # (here the first compared step) is noise; the rate is where the plateau ends, / 10.
    lrs = list(np.logspace(-7, 1, 100))
    noise = [0.005 * ((7 * i) % 5 - 2) / 2 for i in range(100)]  # +-1%, no trend
    losses = [0.5 + noise[i] if i < 80 else 0.5 * 1.1 ** (i - 79) for i in range(100)]
    losses[recipe.RANGE_SKIP] = 0.49  # the lowest, at a rate that changes nothing
    assert recipe.lr_from_range(lrs, losses) == pytest.approx(lrs[79] / 10)
    # A curve that descends past the tolerance keeps the lowest-loss rule.
    losses[60] = 0.4
    assert recipe.lr_from_range(lrs, losses) == pytest.approx(lrs[60] / 10)


def test_rate_rule_reads_a_dip_within_the_batch_noise_as_flat():
    # digit-recognizer's CNN on Fashion-MNIST after its head phase (the full phase's range test, rounded): the first
    # compared step happens to be a high batch, and a dip 7% below it at 1.7e-4 read as a descent (a rate of
    # 1.7e-5, 40 epochs that changed nothing). Against the noise floor -- the lowest of the first FLAT_FLOOR_STEPS
    # compared steps, 0.513 -- the dip is 1% lower: flat, and the rate is where the plateau ends, / 10.
    lrs = list(np.logspace(-7, 1, 100))
    losses = [0.55] * 20 + [0.545, 0.53, 0.52, 0.519, 0.525, 0.53, 0.52, 0.513, 0.52, 0.516] * 2 + [0.51, 0.508] \
        + [0.52, 0.53] * 19 + [0.525 + 0.02 * i for i in range(20)]
    assert len(losses) == 100 and min(losses[20:]) == 0.508
    plateau_end = max(i for i in range(20, 100) if losses[i] <= 1.05 * 0.508)
    assert recipe.lr_from_range(lrs, losses) == pytest.approx(lrs[plateau_end] / 10)
    assert lrs[plateau_end] / 10 > 100 * lrs[losses.index(0.508)] / 10
    # The rule before (the first compared step as the reference) took the dip.
    assert finetune._C.rate_from_range(lrs, losses, 10.0, recipe.FLAT_TOLERANCE, 1) == pytest.approx(
        lrs[losses.index(0.508)] / 10)


def test_rate_rule_leaves_out_a_diverged_tests_last_step():
    lrs = list(np.logspace(-6, 0, 60))
    losses = [2.0 - 0.02 * i for i in range(59)] + [float("nan")]
    assert recipe.lr_from_range(lrs, losses) == pytest.approx(lrs[58] / 10)


def _reference_rate(lrs, losses, divisor):
    """README rule 4 in plain numpy: the reference for the core's rate_from_range, which lr_from_range calls."""
    finite = [(lr, loss) for lr, loss in zip(lrs, losses) if np.isfinite(loss)]
    lrs, losses = np.array([lr for lr, _ in finite]), np.array([loss for _, loss in finite])
    skip = min(recipe.RANGE_SKIP, len(lrs) // 2)
    compared = losses[skip:]
    noise_floor = compared[:recipe.FLAT_FLOOR_STEPS].min()
    if compared.min() < (1 - recipe.FLAT_TOLERANCE) * noise_floor:
        return lrs[skip + np.argmin(compared)] / divisor
    return lrs[skip + np.nonzero(compared <= (1 + recipe.FLAT_TOLERANCE) * compared.min())[0][-1]] / divisor


@pytest.mark.parametrize("seed", range(12))
def test_rate_rule_matches_a_plain_reference_on_random_curves(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 120))
    lrs = np.logspace(-7, 1, n)
    shape = ["descent", "flat", "noise"][seed % 3]
    trend = {"descent": np.minimum(2 - np.linspace(0, 1.5, n), 0.2 + np.linspace(0, 4, n) ** 2),
             "flat": np.full(n, 0.5), "noise": np.zeros(n)}[shape]
    losses = trend + rng.normal(0, 0.01 if shape != "noise" else 1, n)
    if seed % 4 == 0:
        losses[-1] = np.inf if seed % 8 else np.nan  # a diverged test's last step
    divisor = [10.0, 30.0, 100.0][seed % 3]
    assert recipe.lr_from_range(list(lrs), list(losses), divisor) == pytest.approx(
        _reference_rate(lrs, losses, divisor), rel=1e-12)


@pytest.mark.parametrize("tolerance, floor_steps, message", [(1.0, 20, "flat_tolerance must be in \\[0, 1\\), got 1"),
                                                             (0.05, 0, "floor_steps must be >= 1, got 0")])
def test_rate_rule_names_a_bad_tolerance_or_floor(tolerance, floor_steps, message):
    with pytest.raises(ValueError, match=message):
        finetune._C.rate_from_range([1e-3, 1e-2], [1.0, 0.5], 10.0, tolerance, floor_steps)


def test_rate_rule_without_a_finite_step_is_a_clear_error():
    with pytest.raises(ValueError, match="no step with a finite loss"):
        recipe.lr_from_range([1e-3, 1e-2], [float("nan"), float("inf")])


def test_the_cpp_recipe_runs_recipe_py_numbers():
    """recipe.h mirrors the constants of recipe.py it uses (the C++ example's recipe), and the range test's span is
    finetune.find_lr's."""
    constants = finetune._C.recipe_constants()
    defaults = inspect.signature(finetune.find_lr).parameters
    span = {"RANGE_START": "start_lr", "RANGE_END": "end_lr", "RANGE_DIVERGE": "diverge_factor"}
    assert len(constants) == 31
    for name, value in constants.items():
        expected = defaults[span[name]].default if name in span else getattr(recipe, name)
        assert value == expected and type(value) is type(expected), name
    # recipe.cpp trains phases shrunk and shrunk_low at these two (rule 4's two rules, as named there).
    assert recipe.SHRUNK_LR_DIVISORS == (constants["LR_DIVISOR"], constants["SCRATCH_LR_DIVISOR"])


@pytest.mark.parametrize("seed", range(4))
def test_the_cpp_validation_slice_holds_out_what_the_python_rule_does(seed):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.cat([torch.tensor([0] * 50 + [1] * 10 + [2] * 2 + [3] * 1 + [4] * 7),
                         torch.randint(0, 5, (40,), generator=generator)])
    sample = torch.randperm(len(targets), generator=generator)[:90].sort().values
    train, val = finetune._C.recipe_split_validation(targets, sample, True, seed, recipe.VAL_FRACTION)
    assert sorted(train.tolist() + val.tolist()) == sample.tolist()
    assert torch.equal(val, val.sort().values)
    py_train, py_val = recipe.split_validation(targets, sample, classification=True, seed=seed)
    assert torch.bincount(targets[val], minlength=5).tolist() == torch.bincount(targets[py_val], minlength=5).tolist()
    again = finetune._C.recipe_split_validation(targets, sample, True, seed, recipe.VAL_FRACTION)
    assert torch.equal(again[1], val)
    train, val = finetune._C.recipe_split_validation(torch.randn(100), torch.arange(100), False, seed, 0.2)
    assert len(val) == 20 and len(train) == 80 and set(train.tolist()).isdisjoint(val.tolist())


def test_find_head_by_name_or_last_layer():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)
            self.body = torch.nn.Linear(4, 4)

    assert heads.find_head(Net()) == "fc"
    assert heads.find_head(mlp()) == "2"
    assert heads.find_head(finetune.build("cnn", in_channels=1, height=8, width=8, num_classes=10)) == "classifier.3"


def test_a_new_head_is_seeded_and_sized_for_the_labels():
    model = mlp(outputs=2)
    replaced = heads.replace_head(model, heads.find_head(model), 5, seed=7)
    assert replaced == {"name": "2", "old_outputs": 2, "new_outputs": 5, "in_features": 16}
    torch.manual_seed(7)
    reference = torch.nn.Linear(16, 5)
    assert torch.equal(model[2].weight, reference.weight) and torch.equal(model[2].bias, reference.bias)


def test_head_auto_replaces_a_head_too_small_and_keep_leaves_the_loop_to_refuse_it():
    x, y = blobs()
    result = finetune.train(mlp(outputs=2), (x, y), epochs=1, progress=False)
    assert result.head == {"name": "2", "old_outputs": 2, "new_outputs": 3, "in_features": 16}
    assert result.model[2].out_features == 3
    with pytest.raises(ValueError, match="outputs 2 classes but the labels need 3"):
        finetune.train(mlp(outputs=2), (x, y), epochs=1, progress=False, head="keep")
    with pytest.raises(ValueError, match="head must be one of"):
        finetune.train(mlp(), (x, y), epochs=1, progress=False, head="fresh")
    kept = finetune.train(mlp(outputs=3), (x, y), epochs=1, progress=False)
    assert kept.head is None


def test_head_new_replaces_even_a_head_of_the_right_size():
    x, y = blobs()
    model = mlp(outputs=3)
    old = model[2]
    result = finetune.train(model, (x, y), epochs=1, progress=False, head="new")
    assert result.head["new_outputs"] == 3 and model[2] is not old


def test_no_shaping_setting_runs_the_recipe_and_records_each_decision():
    x, y = blobs()
    result = finetune.train(mlp(), (x, y), progress=False, seed=1)
    found = decisions(result)
    assert found["recipe"]["value"] == "auto"
    assert found["validation"]["value"]["examples"] == 48  # 20% of each class of 240
    assert found["head"]["value"] == "2"
    assert found["head.fit"]["value"] == "linear probe" and found["head.C"]["value"] in probe.STRENGTHS
    assert found["full.lr"]["value"] > 0 and found["full.optimizer"]["value"] == "sgd"  # rule 4: a pretrained network that is no transformer
    assert found["kept"]["value"] in ("head", "full", "shrunk", "shrunk_low")
    assert "refit" in found  # decided on the slice, then trained on the whole sample
    assert result.sample_indices.tolist() == list(range(240))
    assert set(result.metrics) >= {"loss", "accuracy"}
    assert result.metrics["accuracy"] > 0.8
    assert {h["phase"] for h in result.history} >= {0, 1, 2}  # head, full, shrunk (then shrunk_low's or the refit's)
    assert ("shrunk_low.lr" in found) != (found.get("shrunk_low", {}).get("value", 0) is None)  # run, or why not


def test_a_keyword_that_turns_the_recipe_off_says_so_once_and_recipe_none_or_a_config_does_not(monkeypatch, caplog):
    """lr=1e-3 alone runs SGD at that rate for 10 epochs: a new user meant the recipe at that rate as often as not."""
    from finetune import training

    monkeypatch.setattr(training, "_SAID_RECIPE_OFF", set())
    x, y = blobs()
    with caplog.at_level("WARNING", logger="finetune"):
        for _ in range(2):
            finetune.train(mlp(), (x, y), lr=1e-3, epochs=1, progress=False)
        finetune.train(mlp(), (x, y), lr=1e-3, epochs=1, progress=False, recipe="none")
        finetune.train(mlp(), (x, y), config=finetune.TrainConfig(lr=1e-3, epochs=1, progress=False))
    said = [r.getMessage() for r in caplog.records if "the recipe is off" in r.getMessage()]
    assert said == ["epochs=1, lr=0.001 given: the recipe is off and the settings run as given, the rest at the loop "
                    "defaults (optimizer='sgd', schedule='constant'); recipe='auto' runs the recipe with them, "
                    "recipe='none' says this is meant (and silences this line)"]


def test_with_augmentation_the_recipe_runs_the_body_in_its_head_phase():
    """augment_crop/augment_flip change the images every epoch: the head phase's features cannot be computed once
    (cached, they were not images any more and the augmentation failed on them)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.data / 16).astype(np.float32).reshape(-1, 1, 8, 8)[:400], digits.target[:400]
    torch.manual_seed(0)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 10))
    finetune.train(cnn, (x[:100], y[:100]), epochs=1, progress=False)  # trained weights: the recipe fine-tunes
    result = finetune.train(cnn, (x, y), augment_flip=True, augment_crop=1, progress=False)
    found = decisions(result)
    assert found["recipe"]["value"] == "auto" and found["head.cached_features"]["value"] is False
    assert found["head.cached_features"]["reason"].startswith("augmentation (augment_crop, augment_flip) changes")
    assert found["head.fit"]["value"] == "loop" and found["head.lr"]["value"] > 0


def test_shrink_perturb_shrinks_the_body_adds_seeded_noise_and_leaves_the_head():
    model = mlp()
    model[0].bias.requires_grad_(False)  # a parameter the user froze is not the recipe's to change
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe._shrink_perturb(model, recipe._outside("2"), seed=3)
    noise = model[0].weight.detach() - recipe.SHRINK * before["0.weight"]
    assert 0.5 < float(noise.std()) / (recipe.PERTURB / 6 ** 0.5) < 1.5  # fan-in 6
    assert torch.equal(model[0].bias, before["0.bias"])
    for name in ("2.weight", "2.bias"):
        assert torch.equal(model.state_dict()[name], before[name])
    again = mlp()
    again[0].bias.requires_grad_(False)
    recipe._shrink_perturb(again, recipe._outside("2"), seed=3)
    assert torch.equal(again[0].weight, model[0].weight)  # seeded: a refit draws the same noise


class FakeRun:
    """recipe.run's three callables, recording each phase's starting weights; "training" adds 1 to what trains.
    ``losses``: the validation loss of each phase in PHASES order (a phase not listed measures 2.0, never kept);
    ``best`` (phase name -> best epoch, counted from 0; default 0): the epoch each phase restores."""

    PHASES = ["head", "full", "shrunk", "shrunk_low", "scratch"]

    def __init__(self, losses: list[float], best: dict[str, int] | None = None, spread: float = 0.0):
        self.losses, self.best, self.spread = dict(zip(self.PHASES, losses)), best or {}, spread
        self.starts, self.names, self.range_tests = [], [], 0

    def train_phase(self, model, data, val, settings, stop_after, name):
        self.starts.append({k: v.clone() for k, v in model.state_dict().items()})
        self.names.append(name)
        with torch.no_grad():
            for parameter_name, parameter in model.named_parameters():
                if settings["freeze"] is None or not settings["freeze"](parameter_name):
                    parameter.add_(1.0)
        best = self.best.get(name, 0) if stop_after is None else stop_after - 1
        return SimpleNamespace(history=[{"epoch": e} for e in range(best + 1)], best_epoch=best)

    def find_rate(self, model, data, settings):
        self.range_tests += 1
        return SimpleNamespace(lrs=list(np.geomspace(1e-5, 1, 100)), losses=list(np.linspace(2, 1, 100)))

    def measure(self, model, val, calibrated=False, per_example=False):
        """The phase's loss; per example, that loss plus ``spread`` x a draw of the phase's own (mean 0, std 1)."""
        loss = self.losses.get(self.names[-1], 2.0)
        if not per_example:
            return {"loss": loss}
        draw = torch.randn(len(val[1]), generator=torch.Generator().manual_seed(self.PHASES.index(self.names[-1])),
                           dtype=torch.float64)
        return {"loss": loss, "per_example_loss": loss + self.spread * (draw - draw.mean()) / draw.std()}


def fake_decisions(fake: FakeRun, examples: int | None = None) -> dict:
    """recipe.run on blobs' first ``examples`` (all by default) with ``fake``'s phases: its decisions by name."""
    x, y = blobs()
    sample = torch.arange(len(y) if examples is None else examples)
    _, plan, _, _ = recipe.run(fake.train_phase, fake.find_rate, fake.measure, mlp(), [torch.from_numpy(x)],
                               torch.from_numpy(y), None, sample, finetune.TrainConfig(cache_frozen=False),
                               {}, pretrained=True)
    return {d.what: d for d in plan.decisions}


@pytest.mark.parametrize("losses, kept", [([1.0, 0.8, 0.5, 0.6], "shrunk"), ([1.0, 0.8, 0.6, 0.5], "shrunk_low"),
                                          ([1.0, 0.5, 0.8, 0.9], "full"), ([0.5, 0.8, 0.9, 0.9], "head"),
                                          ([1.0, 0.8, 0.6, 0.5, 0.4], "scratch")])
def test_phase_shrunk_starts_from_the_head_phase_and_the_refit_runs_what_the_kept_phase_continues(losses, kept):
    x, y = blobs()
    model, config = mlp(), finetune.TrainConfig(cache_frozen=False, seed=5)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    fake = FakeRun(losses)
    inputs, targets = [torch.from_numpy(x)], torch.from_numpy(y)
    _, plan, _, _ = recipe.run(fake.train_phase, fake.find_rate, fake.measure, model, inputs, targets, None,
                               torch.arange(len(y)), config, {}, pretrained=True)
    names = [d.what for d in plan.decisions]
    assert names.index("head.lr") < names.index("full.lr") < names.index("shrunk.lr") < names.index("shrunk_low.lr") \
        < names.index("scratch.lr")
    assert next(d.value for d in plan.decisions if d.what == "kept") == kept
    rates = {d.what: d.value for d in plan.decisions if d.what.endswith(".lr")}  # the fake curve's lowest: at 1.0
    assert rates["shrunk.lr"] == pytest.approx(1 / recipe.LR_DIVISOR)
    assert rates["shrunk_low.lr"] == pytest.approx(1 / recipe.SCRATCH_LR_DIVISOR)
    assert rates["scratch.lr"] == pytest.approx(1 / recipe.SCRATCH_LR_DIVISOR)  # the from-scratch rule
    decided = {d.what: d.value for d in plan.decisions}
    assert "scratch.layer_decay" not in decided and decided["full.layer_decay"] == recipe.LAYER_DECAY
    assert decided["scratch.epochs"] == recipe.SCRATCH_EPOCHS and decided["scratch.early_stopping"] == recipe.SCRATCH_PATIENCE
    assert fake.range_tests == 4  # head, full, one for the shrunk weights (both shrunk phases read it), scratch

    def expected_start(head_trained: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        expected = mlp()
        expected.load_state_dict({k: v + 1.0 if k.startswith("2.") else v for k, v in head_trained.items()})
        recipe._shrink_perturb(expected, recipe._outside("2"), seed=5)
        return expected.state_dict()

    def same(a, b):
        return all(torch.allclose(a[k], b[k]) for k in a)

    assert same(fake.starts[0], initial) and same(fake.starts[2], expected_start(initial))  # head, then shrunk
    assert same(fake.starts[3], expected_start(initial))  # shrunk_low: the same shrunk weights, another rate
    fresh = mlp(seed=5).state_dict()  # the network as PyTorch builds it from the run's seed
    assert same(fake.starts[4], fresh) and not same(fresh, initial)  # scratch: re-initialised, nothing kept
    refit = fake.starts[5:]
    assert len(refit) == {"head": 1, "full": 2, "shrunk": 2, "shrunk_low": 2, "scratch": 1}[kept]
    assert same(refit[0], fresh if kept == "scratch" else initial)  # the refit re-draws the same fresh weights
    if kept.startswith("shrunk"):  # the refit replays head then shrunk, with the same noise, from its own head phase
        assert same(refit[1], expected_start(initial))
    assert next(d.value for d in plan.decisions if d.what == "refit")["phases"] == \
        {"head": ["head"], "full": ["head", "full"], "shrunk": ["head", "shrunk"],
         "shrunk_low": ["head", "shrunk_low"], "scratch": ["scratch"]}[kept]


@pytest.mark.parametrize("shrunk_best, runs", [(12, True), (13, False), (30, False)])
def test_phase_shrunk_low_runs_only_when_phase_shrunk_had_its_best_epoch_early(monkeypatch, shrunk_best, runs):
    """SHRUNK_LOW_GATE: of FULL_EPOCHS = 40, shrunk's best epoch 13 (counted from 1) or earlier runs shrunk_low."""
    x, y = blobs()
    fake = FakeRun([1.0, 0.8, 0.6, 0.5], best={"shrunk": shrunk_best})  # shrunk_low, if run, validates best
    _, plan, _, _ = recipe.run(fake.train_phase, fake.find_rate, fake.measure, mlp(), [torch.from_numpy(x)],
                               torch.from_numpy(y), None, torch.arange(len(y)), finetune.TrainConfig(cache_frozen=False, seed=5), {},
                               pretrained=True)
    found = {d.what: d for d in plan.decisions}
    assert int(recipe.SHRUNK_LOW_GATE * recipe.FULL_EPOCHS) == 13
    assert ("shrunk_low.lr" in found) == runs and ("shrunk_low" in found) != runs
    if not runs:
        assert found["shrunk_low"].value is None
        assert f"best epoch ({shrunk_best + 1} of 40) is past the first 33%" in found["shrunk_low"].reason
    assert found["kept"].value == ("shrunk_low" if runs else "shrunk")
    assert found["refit"].value == {"examples": len(y), "phases": ["head", found["kept"].value],
                                    "epochs": [1, shrunk_best + 1 if not runs else 1]}
    assert len(fake.starts) == (5 if runs else 4) + 2  # the phases run (scratch last), then the refit's two


def test_phase_shrunk_is_not_run_for_a_large_model(monkeypatch):
    x, y = blobs()
    monkeypatch.setattr(recipe, "SHRINK_MAX_PARAMS", 100)
    result = finetune.train(mlp(), (x, y), progress=False, recipe="auto", epochs=2)
    found = decisions(result)
    assert found["shrunk"]["value"] is None and "more than 100" in found["shrunk"]["reason"]
    assert "shrunk.lr" not in found and "shrunk_low.lr" not in found


@pytest.mark.parametrize("scratch_loss, spread, kept", [(0.45, 0.01, "scratch"), (0.45, 1.0, "shrunk_low"),
                                                  (0.6, 0.01, "shrunk_low")])
def test_phase_scratch_is_kept_only_when_its_validation_loss_is_clearly_lower_example_by_example(
        monkeypatch, scratch_loss, spread, kept):
    """SCRATCH_Z: against shrunk_low's 0.5, scratch's 0.45 is kept when the examples agree (a spread of 0.01 each),
    not when they scatter (1.0 each: the difference's standard error ~0.2 on 48 examples); 0.6 never is."""
    found = fake_decisions(FakeRun([1.0, 0.8, 0.6, 0.5, scratch_loss], best={"shrunk": 0}, spread=spread))
    gain = found["scratch.gain"].value
    assert found["kept"].value == kept and gain["examples"] == 48
    assert gain["lower_by"] == pytest.approx(0.5 - scratch_loss)
    assert (gain["z"] >= recipe.SCRATCH_Z) == (kept == "scratch")
    assert ("not clearly lower" in found["kept"].reason) == (scratch_loss == 0.45 and kept != "scratch")


@pytest.mark.parametrize("full_loss, spread, kept", [(0.45, 1.0, "shrunk"), (0.45, 0.01, "full"),
                                                     (0.6, 1.0, "shrunk")])
def test_phase_full_is_kept_over_shrunk_only_when_its_validation_loss_is_clearly_lower(full_loss, spread, kept):
    """FULL_Z: full's 0.45 against shrunk's 0.5 is kept when the examples agree (a spread of 0.01 each), not when
    they scatter (1.0 each: the difference's standard error ~0.2 on 48 examples) -- then shrunk takes its place,
    and the reason says that full's loss was lower; full's 0.6 never is."""
    found = fake_decisions(FakeRun([1.0, full_loss, 0.5, 2.0], spread=spread))
    gain = found["shrunk.full_gain"].value
    assert found["kept"].value == kept and gain["examples"] == 48
    assert gain["lower_by"] == pytest.approx(0.5 - full_loss)
    assert (gain["z"] >= recipe.FULL_Z) == (kept == "full")
    said = "the phase with a validation loss (0.5000) above full's, 0.4500, but not clearly (z = "
    assert found["kept"].reason.startswith(said) == (full_loss == 0.45 and kept == "shrunk"), found["kept"].reason
    assert "shrunk_low.full_gain" not in found  # shrunk_low (loss 2.0) is above shrunk: not set against full


@pytest.mark.parametrize("losses, spread, kept", [
    ([1.0, 0.4, 0.5, 0.45, 2.0], 0.01, "full"),  # shrunk_low below shrunk: set against full, clearly lower
    ([1.0, 0.4, 0.45, 0.5, 2.0], 1.0, "shrunk"),  # shrunk takes full's place; shrunk_low above shrunk: not compared
    ([1.0, 0.4, 0.5, 0.55, 2.0], 0.01, "full"),  # full clearly below shrunk; shrunk_low above shrunk: not compared
])
def test_shrunk_low_is_set_against_full_only_when_below_shrunk(losses, spread, kept):
    """After full beat shrunk clearly, a shrunk_low above shrunk's loss does not get a second, noisier chance
    against full; one below shrunk's does (and loses here: full is clearly lower)."""
    found = fake_decisions(FakeRun(losses, best={"shrunk": 0}, spread=spread))
    assert found["kept"].value == kept, found["kept"].reason
    assert ("shrunk_low.full_gain" in found) == (losses[3] < losses[2] and found["shrunk.full_gain"].value["z"]
                                                 >= recipe.FULL_Z)


def test_a_slice_too_small_for_the_paired_test_keeps_the_lower_loss_between_full_and_shrunk():
    """Under SCRATCH_MIN_VAL validation examples z is not read: full's lower loss is kept, as before FULL_Z."""
    found = fake_decisions(FakeRun([1.0, 0.45, 0.5, 2.0], spread=1.0), examples=100)  # a 20% slice: 20
    assert found["kept"].value == "full" and "shrunk.full_gain" not in found
    assert found["kept"].reason.startswith("the phase with the lowest validation loss (0.4500)")


def test_paired_gain_is_scipys_paired_t_statistic():
    from scipy import stats

    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(300, generator=generator, dtype=torch.float64)
    candidate = reference - 0.02 + 0.1 * torch.randn(300, generator=generator, dtype=torch.float64)
    gain = recipe.paired_gain(reference, candidate)
    expected = stats.ttest_rel(reference.numpy(), candidate.numpy())
    assert gain["z"] == pytest.approx(expected.statistic, rel=1e-12)
    assert gain["lower_by"] == pytest.approx(float((reference - candidate).mean()), rel=1e-12)
    assert recipe.paired_gain(reference, reference)["z"] == 0.0


@pytest.mark.parametrize("shift, z", [(0.5, math.inf), (-0.5, -math.inf), (math.nan, None), (math.inf, None)])
def test_paired_gain_is_signed_when_every_example_differs_alike_and_nan_when_a_loss_is_not_finite(shift, z):
    """No spread (every difference the same) is certainty either way; a diverged loss (NaN, inf) is no evidence,
    and a NaN z is never >= SCRATCH_Z, so such a candidate is never kept."""
    reference = torch.arange(50, dtype=torch.float64) / 4  # exact: every difference is exactly the shift
    candidate = reference - shift if math.isfinite(shift) else reference.clone().index_fill_(0, torch.tensor([3]), shift)
    found = recipe.paired_gain(reference, candidate)["z"]
    assert found == z if z is not None else math.isnan(found)
    assert not found >= recipe.SCRATCH_Z or z == math.inf


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_paired_gain_keeps_a_finite_candidate_over_a_diverged_reference(bad):
    """A fine-tune whose slice losses are not finite is worse than fresh weights that are: z = +inf, kept."""
    candidate = torch.arange(50, dtype=torch.float64) / 4
    reference = (candidate + 0.1).index_fill_(0, torch.tensor([7]), bad)
    gain = recipe.paired_gain(reference, candidate)
    assert gain["z"] == math.inf and gain["z"] >= recipe.SCRATCH_Z and gain["examples"] == 50
    both = recipe.paired_gain(reference, candidate.clone().index_fill_(0, torch.tensor([2]), bad))
    assert math.isnan(both["z"])  # both diverged: no evidence, not kept


def test_per_example_loss_refuses_a_task_it_does_not_define():
    with pytest.raises(ValueError, match="task='ranking'"):
        recipe.per_example_loss(torch.zeros(4, 1), torch.zeros(4), "ranking")


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_per_example_losses_average_to_the_loss_evaluate_reports(task):
    x, y = blobs()
    model = mlp() if task == "classification" else torch.nn.Sequential(torch.nn.Linear(x.shape[1], 2))
    targets = torch.from_numpy(y) if task == "classification" else torch.randn(len(y), 2)
    outputs = finetune.predict(model, x, output="logits" if task == "classification" else "values", task=task)
    losses = recipe.per_example_loss(torch.from_numpy(outputs), targets, task)
    assert losses.shape == (len(y),)
    loss = finetune.evaluate(model, (x, targets.numpy()), task=task)["loss"]
    assert float(losses.mean()) == pytest.approx(loss, rel=1e-5)


def test_reinitialise_draws_the_weights_pytorch_builds_the_network_with_and_leaves_the_random_state():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(144, 10))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(3.0)
    model[1].running_mean.fill_(2.0)
    torch.manual_seed(11)
    expected_next = torch.rand(3)
    torch.manual_seed(11)
    recipe._reinitialise(model, seed=4)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream is untouched
    torch.manual_seed(4)
    reference = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                    torch.nn.Linear(144, 10))
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key  # running statistics reset too


def test_reinitialise_draws_a_built_in_model_as_the_registry_builds_it_from_the_seed():
    """A built-in model's layers live in C++ (no reset_parameters): it is built again with its options."""
    x, y = blobs()
    model = finetune.train("cnn", (x.reshape(-1, 1, 2, 3).repeat(4, 2).repeat(4, 3), y), epochs=1,
                           progress=False).model
    options = finetune.registry.built(model)[1]
    recipe._reinitialise(model, seed=9)
    torch.manual_seed(9)
    reference = finetune.build("cnn", **options)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert recipe._why_not_reinitialisable(model) is None


class Scaled(torch.nn.Module):
    """A layer with a parameter of its own and no reset_parameters: nothing re-draws it."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x * self.scale


@pytest.mark.parametrize("change, reason", [
    ("large", "more than 100"), ("frozen", "frozen (0.bias) would be re-drawn"),
    ("raw", "no module's reset_parameters re-draws 3.scale"), ("off", "SCRATCH_CANDIDATE is off"),
    ("small slice", "the validation slice holds 24 examples, fewer than 30"),
    ("ranking", "task='ranking': the paired test")])
def test_phase_scratch_is_not_run_where_fresh_weights_cannot_be_drawn_trained_or_judged(monkeypatch, change, reason):
    x, y = blobs(n=120 if change == "small slice" else 240)
    model = mlp()
    if change == "small slice":
        assert recipe.SCRATCH_MIN_VAL == 30
    elif change == "large":
        monkeypatch.setattr(recipe, "SHRINK_MAX_PARAMS", 100)
    elif change == "frozen":
        model[0].bias.requires_grad_(False)
    elif change == "raw":
        model.append(Scaled())
    elif change != "ranking":
        monkeypatch.setattr(recipe, "SCRATCH_CANDIDATE", False)
    fake = FakeRun([1.0, 0.8, 0.6, 0.5, 0.1])
    config = finetune.TrainConfig(cache_frozen=False, task="ranking" if change == "ranking" else "classification")
    _, plan, _, _ = recipe.run(fake.train_phase, fake.find_rate, fake.measure, model, [torch.from_numpy(x)],
                               torch.from_numpy(y), None, torch.arange(len(y)), config, {}, pretrained=True)
    found = {d.what: d for d in plan.decisions}
    assert found["scratch"].value is None and reason in found["scratch"].reason
    assert "scratch" not in fake.names and found["kept"].value != "scratch"


def test_the_recipe_keeps_phase_scratch_when_the_pretrained_weights_are_worse_than_none():
    """End to end: "pretrained" weights whose hidden units are all dead (a ReLU after a bias of -100: no gradient
    reaches the body, and shrinking it halves the bias only) cannot be fine-tuned past the class frequencies; the
    same network trained from fresh weights can, and the recipe returns it."""
    x, y = blobs(n=300)
    model = mlp()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    result = finetune.train(model, (x, y), progress=False, seed=2)
    found = decisions(result)
    assert found["kept"]["value"] == "scratch", found["kept"]
    assert found["refit"]["value"]["phases"] == ["scratch"]
    assert "scratch.layer_decay" not in found
    assert found["full.optimizer"]["value"] == "sgd" and found["scratch.optimizer"]["value"] == "adamw"  # rule 4
    assert finetune.evaluate(result.model, (x, y))["accuracy"] > 0.8


def test_a_bare_linear_layer_on_features_is_fit_as_the_linear_probe_like_scikit_learn():
    """A new nn.Linear on features (finetune.embed's) is a linear model: all of it the head, fit as the probe at the
    cross-validated C, refit on the whole sample -- scikit-learn's LogisticRegression at that C on the same data."""
    from sklearn.linear_model import LogisticRegression

    x, y = blobs()
    torch.manual_seed(0)
    layer = torch.nn.Linear(x.shape[1], 3)
    found = decisions(finetune.train(layer, (x, y), progress=False, seed=0))
    assert found["head"]["value"] == "" and found["phases"]["value"] == ["head"]
    assert found["head.fit"]["value"] == "linear probe" and "full.lr" not in found and "scratch" not in found
    assert found["refit"]["value"]["phases"] == ["head"] and found["refit"]["value"]["examples"] == len(y)
    reference = LogisticRegression(C=found["head.C"]["value"], tol=1e-10, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(layer.weight.detach().numpy(), reference.coef_, atol=2e-3)
    np.testing.assert_allclose(layer.bias.detach().numpy(), reference.intercept_, atol=2e-3)


def test_a_bare_linear_layer_for_regression_is_fit_as_ridge_and_in_the_loop_with_cache_frozen_false():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x @ rng.normal(size=6) + 0.1 * rng.normal(size=200)).astype(np.float32)[:, None]
    found = decisions(finetune.train(torch.nn.Linear(6, 1), (x, y), task="regression", progress=False, seed=0))
    assert found["head.fit"]["value"] == "linear probe" and "head.alpha" in found
    # Rule 4's SGD fine-tunes a body under a head; a bare linear layer trained in the loop has no head phase to
    # start from, and SGD at its range test's rate was unstable there (README, rule 4): AdamW.
    x, y = blobs()
    found = decisions(finetune.train(torch.nn.Linear(6, 3), (x, y), cache_frozen=False, progress=False, seed=0))
    assert found["head.cached_features"]["value"] is False and found["head.fit"]["value"] == "loop"
    assert found["head.optimizer"]["value"] == "adamw" and "full.lr" not in found


def test_a_built_in_model_by_name_starts_from_scratch_in_one_phase():
    x, y = blobs()
    result = finetune.train("mlp", (x, y), progress=False)
    found = decisions(result)
    assert found["model"]["value"] == "from scratch"
    assert "head" not in found and "head.lr" not in found and "full.lr" in found
    assert found["full.optimizer"]["value"] == "adamw"  # the from-scratch rules were measured with AdamW


@pytest.mark.parametrize("given, phase", [({"momentum": 0.95}, "scratch"), ({"nesterov": True}, "scratch")])
def test_sgds_own_settings_with_a_phase_on_adamw_are_refused_before_anything_trains(given, phase):
    """Rule 4 runs phase scratch on AdamW, which takes no momentum: refused at once, not minutes into the run."""
    x, y = blobs()
    fake = FakeRun([1.0, 0.8, 0.6, 0.5, 0.4])
    with pytest.raises(ValueError, match=f"{next(iter(given))}=.* is an SGD setting, and the recipe runs AdamW for "
                                         f"phase '{phase}'.*optimizer='sgd'"):
        recipe.run(fake.train_phase, fake.find_rate, fake.measure, mlp(), [torch.from_numpy(x)], torch.from_numpy(y),
                   None, torch.arange(len(y)), finetune.TrainConfig(cache_frozen=False), given, pretrained=True)
    assert fake.names == []
    _, plan, _, _ = recipe.run(fake.train_phase, fake.find_rate, fake.measure, mlp(), [torch.from_numpy(x)],
                               torch.from_numpy(y), None, torch.arange(len(y)), finetune.TrainConfig(cache_frozen=False),
                               {**given, "optimizer": "sgd"}, pretrained=True)
    assert {d.value for d in plan.decisions if d.what.endswith(".optimizer")} == {"sgd"}


def test_a_shaping_setting_runs_the_settings_as_given():
    x, y = blobs()
    result = finetune.train(mlp(), (x, y), epochs=2, progress=False)
    assert result.recipe[0]["value"] == "none" and "epochs" in result.recipe[0]["reason"]
    assert len(result.history) == 2


@pytest.mark.parametrize("weights", [None, [], "balanced"])
def test_class_weights_given_keep_the_recipe_and_win_over_its_choice(weights):
    """A new user's trial (Chile, 4.7x imbalance): class_weights=None, to keep plain accuracy, ran 10 plain epochs.
    [] is a config file's None (TOML has no null): no weights, in the loop and in the probe alike."""
    x, y = blobs()
    keep = np.concatenate([np.flatnonzero(y != 0), np.flatnonzero(y == 0)[:10]])  # class 0 7x rarer: rule 7 weighs
    result = finetune.train(mlp(), (x[keep], y[keep]), class_weights=weights, progress=False)
    assert result.recipe[0]["value"] == "auto"
    assert decisions(result)["class_weights"] == {"what": "class_weights", "value": weights, "reason": "given"}
    assert np.isfinite(result.metrics["loss"]) and result.metrics["accuracy"] > 0.5


def test_the_recipes_class_weights_are_announced_when_it_chooses_them(caplog):
    """A new user's trial on movie titles (46x imbalanced) read an accuracy below the majority class's with no word
    of why: the recipe's weights trade plain accuracy for the rare classes' recall, and it says so as it runs."""
    x, y = blobs()
    keep = np.concatenate([np.flatnonzero(y != 0), np.flatnonzero(y == 0)[:10]])  # class 0 7x rarer: rule 7 weighs
    result = finetune.train(mlp(), (x[keep], y[keep]), progress=False)
    assert decisions(result)["class_weights"]["value"] == "balanced"
    said = [r.getMessage() for r in caplog.records if "imbalanced" in r.getMessage()]
    assert len(said) == 1 and "class_weights=None keeps plain accuracy" in said[0] and "8.0x" in said[0]
    caplog.clear()
    finetune.train(mlp(), (x[keep], y[keep]), class_weights=None, progress=False)  # given: nothing to announce
    finetune.train(mlp(), (x, y), progress=False)  # balanced classes: no weights
    assert not any("imbalanced" in r.getMessage() for r in caplog.records)


def test_each_progress_line_names_the_recipes_phase(capsys):
    """The phases' epochs count from 1 each: a line without its phase ("epoch 1/4" after "epoch 4/4") reads as a
    run started over."""
    x, y = blobs()
    finetune.train(mlp(), (x, y), recipe="auto", progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if "epoch" in line]
    phases = [line.split(": epoch")[0] for line in lines]
    assert phases[0] == "head" and "full" in phases and phases[-1].startswith("refit-"), lines  # head: the probe
    assert all(": epoch " in line for line in lines)


def test_with_the_recipe_explicit_settings_win():
    x, y = blobs()
    result = finetune.train(mlp(), (x, y), recipe="auto", lr=0.02, epochs=3, optimizer="sgd", progress=False)
    found = decisions(result)
    for key in ("head.lr", "full.lr"):
        assert found[key] == {"what": key, "value": 0.02, "reason": "given"}
    assert found["full.optimizer"]["value"] == "sgd" and found["full.epochs"]["value"] == 3
    assert all(g["lr"] <= 0.02 + 1e-12 for g in result.param_groups)
    assert max(h["epoch"] for h in result.history) < 3 * 6  # at most 3 epochs a phase (4 phases, two refits)


@pytest.mark.parametrize("settings, match", [
    (dict(freeze=["0"]), "cannot be set with it"),
    (dict(restore_best=True), "cannot be set with it"),
    (dict(resume="somewhere/step-00000010"), "resumes from its checkpoint_dir"),
])
def test_settings_that_conflict_with_the_recipe_are_errors(settings, match):
    x, y = blobs()
    with pytest.raises(ValueError, match=match):
        finetune.train(mlp(), (x, y), recipe="auto", progress=False, **settings)


def test_an_unknown_recipe_lists_the_known_ones():
    x, y = blobs()
    with pytest.raises(ValueError, match=r"recipe must be one of \['auto', 'head', 'none'\]"):
        finetune.train(mlp(), (x, y), recipe="fast", progress=False)


def test_val_fraction_holds_out_a_stratified_share():
    x, y = blobs()
    result = finetune.train(mlp(), (x, y), epochs=2, val_fraction=0.25, progress=False)
    assert "val_loss" in result.history[0]
    assert result.train_size == 180 and len(result.sample_indices) == 180
    assert np.bincount(y[result.sample_indices]).tolist() == [60, 60, 60]
    with pytest.raises(ValueError, match="val is given too"):
        finetune.train(mlp(), (x, y), (x, y), epochs=1, val_fraction=0.25, progress=False)
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\), got 1.5"):
        finetune.train(mlp(), (x, y), epochs=1, val_fraction=1.5, progress=False)


def test_sample_indices_are_the_stratified_sample():
    x, y = blobs()
    result = finetune.train(mlp(), (x, y), epochs=1, sample_fraction=0.5, progress=False)
    assert len(result.sample_indices) == 120 and np.bincount(y[result.sample_indices]).tolist() == [40, 40, 40]


def test_regression_runs_the_recipe_with_its_own_monitor():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    y = (x @ rng.normal(size=6)).astype(np.float32)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    result = finetune.train(model, (x, y), task="regression", progress=False)
    found = decisions(result)
    assert "class_weights" not in found and found["full.monitor"]["value"] == "val_loss"
    assert result.metrics["r2"] > 0.8


def digits_story(seed: int, defaults: bool = True) -> dict[str, float]:
    """The issue's story: a CNN pretrained on digits 0-4, adapted to all ten on a stratified 20% sample; the test
    accuracy of the recipe, of the old defaults (``defaults``) and of the same CNN from scratch with the recipe."""
    x_train, x_test, y_train, y_test = load_digits_split(seed)
    old = y_train < 5
    pretrained = finetune.train("cnn", (x_train[old], y_train[old]), epochs=10, num_classes=10, optimizer="sgd",
                                lr=0.05, batch_size=32, seed=seed, recipe="none", progress=False).model
    state = {k: v.clone() for k, v in pretrained.state_dict().items()}
    out = {}
    for name, settings in (("auto", {}), ("defaults", {"recipe": "none"}))[:2 if defaults else 1]:
        model = finetune.build("cnn", **pretrained.options)
        model.load_state_dict(state)
        tuned = finetune.train(model, (x_train, y_train), sample_fraction=0.2, seed=seed, progress=False, **settings)
        out[name] = finetune.evaluate(tuned.model, (x_test, y_test))["accuracy"]
    scratch = finetune.train("cnn", (x_train, y_train), sample_fraction=0.2, seed=seed, progress=False)
    out["scratch"] = finetune.evaluate(scratch.model, (x_test, y_test))["accuracy"]
    return out


DIGITS_STORY_SEEDS = 30  # a lead of ~0.6-0.9 points against one seed's spread of ~1.5: see below


def test_the_recipe_beats_scratch_and_the_old_defaults_on_the_digits_story():
    """The issue's story: the recipe's fine-tune above the same CNN from scratch with the recipe (the mean over
    seeds 0-29), well above the old defaults (seeds 0-9), and no seed's fine-tune failing.

    The number of seeds is chosen from the measured spread: one seed's difference (fine-tune minus scratch)
    spreads by about 1.5 points, so the mean of 5 seeds has a standard error of ~0.7 -- as large as the lead
    itself on 1 thread, where 40 seeds (AMD EPYC) gave 0.65 points (0.52 before FULL_Z): a CPU whose arithmetic
    draws other seeds' luck would see 5 seeds behind about once in six. The mean of 30 has an error of ~0.27.
    Measured as this test runs (2 threads, AMD EPYC, alone; 124 s): the fine-tune 0.9683 +- 0.0099,
    scratch 0.9593 +- 0.0127 -- a lead of 0.90 points, SE 0.27, ahead on 19 seeds, behind on 4 --, the old
    defaults 0.897 (seeds 0-9), the worst seed 0.9426.

    The worst seed's bound is for the failures the range-test rules fixed (0.844, 0.785: a rate of 2e-8 and the
    head-only weights kept). Before phase "shrunk" the fine-tune lost to scratch (0.940 against 0.956 over seeds
    0-4), which fails here."""
    runs = [digits_story(seed, defaults=seed < 10) for seed in range(DIGITS_STORY_SEEDS)]
    auto, scratch = (np.mean([r[k] for r in runs]) for k in ("auto", "scratch"))
    assert auto > scratch, runs
    assert np.mean([r["auto"] for r in runs[:10]]) > np.mean([r["defaults"] for r in runs[:10]]) + 0.03, runs
    assert min(r["auto"] for r in runs) > 0.90, runs


class Doubled(torch.nn.Module):
    """A model whose output is not its head's: the head's output is scaled afterwards."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.head(self.body(x))


def test_head_inputs_are_the_bodys_eval_mode_output():
    x, _ = blobs()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.5), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    model.train()
    features, why = heads.head_inputs(model, "3", [torch.from_numpy(x)], batch_size=100)
    assert why == "" and model.training  # the mode is restored
    with torch.no_grad():
        expected = model[2](model[0](torch.from_numpy(x)))  # dropout is off in eval mode
    torch.testing.assert_close(features, expected, rtol=0, atol=0)
    features, why = heads.head_inputs(Doubled(), "head", [torch.from_numpy(x)])
    assert features is None and "not the head 'head'" in why


def test_the_head_phase_trains_on_cached_features_where_they_are_exact():
    x, y = blobs()
    cached = decisions(finetune.train(mlp(), (x, y), progress=False))
    assert cached["head.cached_features"]["value"] is True
    uncached = decisions(finetune.train(Doubled(), (x, y), progress=False))
    assert uncached["head.cached_features"]["value"] is False
    assert "something follows it" in uncached["head.cached_features"]["reason"]
    native = decisions(finetune.train(finetune.build("mlp", in_features=6, num_classes=3), (x, y), progress=False))
    assert native["head.cached_features"]["value"] is False  # C++ layers: no hook sees the head's input


def test_a_cached_head_phase_is_training_the_head_alone_on_the_features():
    """The reference: the head module trained by itself, with the recorded settings, on the body's eval-mode
    features computed by hand, on the same training slice -- the same losses, epoch by epoch, and the same head."""
    x, y = blobs()
    result = finetune.train(mlp(seed=3), (x, y), recipe="auto", progress=False, epochs=2, lr=0.05)
    found = decisions(result)
    epochs_run = found["head.result"]["value"]["epochs_run"]
    assert found["head.optimizer"]["value"] == "sgd"  # rule 4; momentum 0.9, TrainConfig's, in both runs
    reference = mlp(seed=3)
    train_idx, val_idx = recipe.split_validation(torch.from_numpy(y), torch.arange(len(y)), True, seed=0)
    with torch.no_grad():
        features = reference[1](reference[0](torch.from_numpy(x)))
    alone = finetune.train(reference[2], (features[train_idx], y[train_idx.numpy()]),
                           (features[val_idx], y[val_idx.numpy()]), optimizer=found["head.optimizer"]["value"],
                           lr=0.05, epochs=2,
                           weight_decay=0.01, schedule="cosine", warmup=0.1, early_stopping=3, restore_best=True,
                           progress=False)
    assert [h["train_loss"] for h in result.history[:epochs_run]] == [h["train_loss"] for h in alone.history]
    assert [h["val_loss"] for h in result.history[:epochs_run]] == [h["val_loss"] for h in alone.history]


def test_embed_returns_the_features_the_head_reads():
    x, _ = blobs()
    model = mlp(seed=2)
    with torch.no_grad():
        expected = model[1](model[0](torch.from_numpy(x))).numpy()
    np.testing.assert_array_equal(finetune.embed(model, x), expected)
    with pytest.raises(ValueError, match="embed: the model's output is not the head 'head'"):
        finetune.embed(Doubled(), x)


def test_a_run_that_ends_still_learning_says_so(caplog):
    x, y = blobs()
    short = finetune.train(mlp(), (x, y), epochs=2, lr=0.01, progress=False)
    note = decisions(short)["still_learning"]
    assert note["value"] > 0.05 and "more epochs" in note["reason"]
    assert any("still learning" in r.getMessage() for r in caplog.records)
    converged = finetune.train(mlp(), (x, y), epochs=60, lr=0.05, optimizer="adam", progress=False)
    assert "still_learning" not in decisions(converged)


def test_a_classifier_whose_loss_stays_at_chance_says_so(caplog):
    """recipe="none" at a rate far too low: the training loss stays at ln(classes), and the run says the model did
    not learn (result.recipe's not_learning, a logged warning naming the rate); a run that learns says nothing."""
    x, y = blobs()
    stuck = finetune.train(mlp(), (x, y), epochs=2, lr=1e-7, optimizer="sgd", progress=False)
    note = decisions(stuck)["not_learning"]
    classes = len(np.unique(y))
    assert note["value"] >= 0.98 * np.log(classes) and "lr=1e-07, optimizer='sgd'" in note["reason"]
    assert any("stayed at chance" in r.getMessage() for r in caplog.records)
    assert "over 2 epochs" in note["reason"]
    one = finetune.train(mlp(), (x, y), epochs=1, lr=1e-7, optimizer="sgd", progress=False)
    assert "the one epoch's mean" in decisions(one)["not_learning"]["reason"]  # no "0.69 -> 0.69" of one epoch
    learned = finetune.train(mlp(), (x, y), epochs=60, lr=0.05, optimizer="adam", progress=False)
    assert "not_learning" not in decisions(learned)


def test_a_classifier_that_predicts_one_class_for_every_validation_example_says_so(caplog):
    """A head biased far to one class and a rate too low to move it: every validation example gets that class, and
    the run says so with the class's label (result.recipe's one_class, a logged warning); a model that separates
    the classes says nothing -- and neither does a validation set of one class, which one answer can fit."""
    x, y = blobs()
    labels = np.array(["ant", "bee", "cow"])[y]
    stuck = mlp()
    with torch.no_grad():
        stuck[2].bias.copy_(torch.tensor([0.0, 100.0, 0.0]))
    result = finetune.train(stuck, (x[:180], labels[:180]), val=(x[180:], labels[180:]), epochs=1, lr=1e-7,
                            optimizer="sgd", progress=False)
    assert result.confusion_matrix[:, 1].sum() == 60 and result.confusion_matrix.sum() == 60  # the setup held
    note = decisions(result)["one_class"]
    assert note["value"] == "bee" and "every one of the 60 validation examples (of 3 classes)" in note["reason"]
    assert f"{result.metrics['accuracy']:.4g}" in note["reason"]
    assert any("predicts class 'bee'" in r.getMessage() for r in caplog.records)
    learned = finetune.train(mlp(), (x[:180], y[:180]), val=(x[180:], y[180:]), progress=False)
    assert "one_class" not in decisions(learned)
    one_kind = finetune.train(stuck, (x[:180], y[:180]), val=(x[180:][y[180:] == 1], y[180:][y[180:] == 1]),
                              epochs=1, lr=1e-7, optimizer="sgd", progress=False)
    assert "one_class" not in decisions(one_kind)


def test_the_recipes_phases_never_say_still_learning(caplog, monkeypatch):
    """The recipe decides its phases' length (a decayed refit's last epoch may still fall fast): no note from them,
    even where every run given its epochs would get one."""
    from finetune import training

    monkeypatch.setattr(training, "STILL_FALLING", -1.0)
    x, y = blobs()
    result = finetune.train(mlp(), (x, y), seed=0, progress=False)
    assert decisions(result)["recipe"]["value"] == "auto" and "still_learning" not in decisions(result)
    assert not any("still learning" in r.getMessage() for r in caplog.records)
    given = finetune.train(mlp(), (x, y), epochs=3, progress=False)
    assert "still_learning" in decisions(given)


def test_recipe_head_trains_the_head_alone():
    x, y = blobs()
    model = mlp(seed=4)
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("2.")}
    result = finetune.train(model, (x, y), recipe="head", progress=False)
    found = decisions(result)
    assert found["recipe"] == {"what": "recipe", "value": "head", "reason": "given"}
    assert "full.lr" not in found and found["head.cached_features"]["value"] is True
    for key, value in body.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert result.metrics["accuracy"] > 0.8
    found = decisions(finetune.train(torch.nn.Linear(6, 3), (x, y), recipe="head", progress=False))
    assert found["head"]["value"] == "" and found["head.fit"]["value"] == "linear probe"  # a bare layer: all head

    class Weights(torch.nn.Module):  # its one parameter is its own: no head layer to find
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(6, 3))

        def forward(self, x):
            return x @ self.weight

    with pytest.raises(ValueError, match="recipe='head' trains the model's head alone, and the model's last"):
        finetune.train(Weights(), (x, y), recipe="head", progress=False)


def test_an_explicit_recipe_says_it_was_given():
    x, y = blobs()
    result = finetune.train(mlp(), (x, y), recipe="auto", epochs=2, progress=False)
    assert result.recipe[0] == {"what": "recipe", "value": "auto", "reason": "given"}


def test_head_new_on_a_head_that_is_not_linear_names_it():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())
    x, y = np.zeros((8, 1, 4, 4), dtype=np.float32), np.arange(8) % 2
    with pytest.raises(ValueError, match=r"the head '0' is a Conv2d, not an nn.Linear; replace it yourself "
                                         r"\(model.0 = nn.Linear\(...\)\)"):
        finetune.train(model, (x, y), epochs=1, head="new", progress=False)


def test_calibrated_loss_is_the_cross_entropy_at_the_best_temperature():
    # The recipe compares phases by it (recipe.calibrated_loss): a reference minimises over the temperature with
    # scipy; scaling the logits (an over- or underconfident copy of the same ranking) changes nothing.
    from scipy.optimize import minimize_scalar

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 4, generator=generator, dtype=torch.float64)
    targets = torch.where(torch.rand(200, generator=generator) < 0.7, logits.argmax(1), torch.randint(4, (200,), generator=generator))
    plain = float(torch.nn.functional.cross_entropy(logits, targets))
    reference = minimize_scalar(lambda log_t: float(torch.nn.functional.cross_entropy(logits / 10**log_t, targets)),
                                bounds=(-2, 2), method="bounded").fun
    assert recipe.calibrated_loss(logits, targets) == pytest.approx(reference, abs=1e-4)
    assert recipe.calibrated_loss(logits, targets) < plain
    assert recipe.calibrated_loss(logits * 10, targets) == pytest.approx(recipe.calibrated_loss(logits, targets), abs=1e-9)


def test_the_recipes_class_weights_are_scikit_learns_up_to_ten_times_and_capped_past():
    """Past CLASS_WEIGHT_CAP x the lightest class's weight the recipe caps scikit-learn's "balanced" weights: a class
    of a few examples weighted as a whole class made "mlp" predict it for most rows (breast cancer at 20x: accuracy
    0.278 uncapped, 0.830 capped, 0.961 unweighted; benchmarks/imbalance.py)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.utils.class_weight import compute_class_weight

    counts = torch.tensor([200, 0, 40, 5])
    reference = compute_class_weight("balanced", classes=np.array([0, 2, 3]), y=np.repeat([0, 2, 3], [200, 40, 5]))
    np.testing.assert_allclose(recipe.balanced_weights(counts)[[0, 2, 3]].numpy(), reference)
    capped = recipe.capped_balanced_weights(counts, 10.0)
    assert capped[1] == 0.0 and capped[:3:2] == pytest.approx(reference[:2].tolist())
    assert capped[3] == pytest.approx(10 * reference[0])  # 40x the lightest, cut to 10x

    d = load_breast_cancer()
    keep = np.r_[np.flatnonzero(d.target == 1), np.flatnonzero(d.target == 0)[:12]]  # 357 against 12: ~30x
    x, y = d.data[keep].astype(np.float32), d.target[keep]
    result = finetune.train("mlp", (x, y), seed=0, progress=False)
    weights = decisions(result)["class_weights"]["value"]
    assert weights[0] == pytest.approx(10 * weights[1]) and "capped at 10x" in decisions(result)["class_weights"]["reason"]
    assert (finetune.predict(result.model, x) == y).mean() > 0.9
    moderate = np.r_[np.flatnonzero(d.target == 1), np.flatnonzero(d.target == 0)[:60]]  # ~6x: scikit-learn's
    result = finetune.train("mlp", (d.data[moderate].astype(np.float32), d.target[moderate]), seed=0, progress=False)
    assert decisions(result)["class_weights"]["value"] == "balanced"


def test_a_network_of_the_users_on_raw_scales_is_warned_about(caplog):
    """Tabular columns on their raw scales (one in the hundreds) reaching a network passed in: result.recipe and
    the log say so and how to fix it; standardised columns, and "mlp" (which scales its inputs), say nothing."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    raw = x * np.array([1.0, 1.0, 300.0], np.float32)

    def network():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

    with caplog.at_level(logging.WARNING, logger="finetune"):
        noted = finetune.train(network(), (raw, y), progress=False).recipe
    inputs = [d for d in noted if d["what"] == "inputs"]
    assert inputs and inputs[0]["value"] == "raw scales" and "column 2" in inputs[0]["reason"]
    assert "StandardScaler" in caplog.text
    assert not [d for d in finetune.train(network(), (x, y), progress=False).recipe if d["what"] == "inputs"]
    assert not [d for d in finetune.train("mlp", (raw, y), progress=False).recipe if d["what"] == "inputs"]


def test_labels_a_model_cannot_output_are_errors_naming_head_or_val():
    """head="keep" with a head narrower than the labels, under the recipe, is an error naming head (the probe
    once failed on targets out of its range); validation labels beyond y's would widen the head for classes
    training never shows: an error, not a head sized for them (accuracy 0.01 on labels shifted by one)."""
    x, y = blobs()
    with pytest.raises(ValueError, match=r"head '2' outputs 2 classes but the labels need 3: head='auto'"):
        finetune.train(mlp(outputs=2), (x, y), progress=False, head="keep")
    with pytest.raises(ValueError, match=r"y_val holds label\(s\) up to 3, beyond y's largest, 2: head='auto' would "
                                         r"size the head for 4 classes"):
        finetune.train(mlp(outputs=3), (x, y), val=(x, y + 1), progress=False)
    wide = finetune.train(mlp(outputs=4), (x, y), val=(x, np.minimum(y + 1, 3)), epochs=1, progress=False)
    assert wide.head is None  # a head wide enough for the validation labels is the model's own: kept


def test_a_default_family_classifier_trains_each_phase_but_the_head_on_the_weights_moving_average():
    """Rule 4's EMA: phases full, shrunk and scratch (and so the refit) of a module fine-tuned for classification
    run the loop with ema=EMA, which reaches the loop's config; the head phase, regression, an "mlp" by name on a
    table (its own rules) and a transformer do not; a given ema wins."""
    x, y = blobs()
    result = finetune.train(mlp(), (x, y), progress=False)
    found = decisions(result)
    phases = [k[:-len(".result")] for k in found if k.endswith(".result")]
    assert {"full", "scratch"} <= set(phases)
    assert "head.ema" not in found  # the head alone, on cached features or in the loop, trains as it did
    assert all(found[f"{phase}.ema"]["value"] == recipe.EMA for phase in phases if phase != "head")
    assert result.config.ema == recipe.EMA  # the refit's last phase ran with it
    given = decisions(finetune.train(mlp(), (x, y), ema=0.5, recipe="auto", progress=False))
    assert given["full.ema"]["value"] == 0.5 and given["full.ema"]["reason"] == "given"
    regression = decisions(finetune.train(mlp(outputs=1), (x, x[:, 0] * 2.0), task="regression", progress=False))
    assert not any(k.endswith(".ema") for k in regression)
    table = decisions(finetune.train("mlp", (x, y), progress=False))
    assert not any(k.endswith(".ema") for k in table)
