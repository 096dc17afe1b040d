"""The C++ loop against a plain PyTorch loop, and learning on real data."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import finetune
from finetune import _C
from finetune.config import TrainConfig

from helpers import mlp

# finetune's SGD, Adam and AdamW step through ATen's fused kernels, the ones torch.optim's fused=True calls: the
# same update to the bit, which a run of hundreds of one-example steps needs (an ulp a step grows to 3e-4 there).
# test_fused_steps_equal_the_per_parameter_update checks them against torch.optim's default update as well.
OPTIMIZERS = {
    "sgd": lambda p, c, fused=True: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                                                    weight_decay=c.weight_decay, fused=fused),
    "adam": lambda p, c, fused=True: torch.optim.Adam(p, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps,
                                                      weight_decay=c.weight_decay, fused=fused),
    "adamw": lambda p, c, fused=True: torch.optim.AdamW(p, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps,
                                                        weight_decay=c.weight_decay, fused=fused),
    "rmsprop": lambda p, c: torch.optim.RMSprop(p, lr=c.lr, alpha=c.alpha, eps=c.eps, weight_decay=c.weight_decay),
}
SETTINGS = {
    "sgd": dict(lr=0.05, momentum=0.9, weight_decay=1e-3),
    "sgd-nesterov": dict(lr=0.05, momentum=0.9, nesterov=True),
    "sgd-plain": dict(lr=0.1, momentum=0.0),
    "adam": dict(lr=1e-3, weight_decay=1e-3),
    "adamw": dict(lr=1e-3, weight_decay=0.05),
    "rmsprop": dict(lr=1e-3, alpha=0.9, weight_decay=1e-3),
}


def reference_loop(model, x, y, cfg: TrainConfig, optimizer=None):
    """The same fine-tune written the usual way in PyTorch, visiting batches in the loop's order. Weight decay
    applies to every parameter here, so the runs compared use decay_norm_and_bias=True."""
    opt = (optimizer or OPTIMIZERS[cfg.optimizer])(model.parameters(), cfg)
    subset = _C.sample_indices(y, cfg.to_cpp())
    batch = len(subset) if cfg.batch_size == "full" else cfg.batch_size
    for epoch in range(cfg.epochs):
        order = _C.epoch_order(subset, cfg.seed, epoch, cfg.shuffle)
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


def test_optimizer_registry_lists_known_names():
    assert finetune.optimizers() == sorted(OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(SETTINGS))
@pytest.mark.parametrize("fraction, batch_size", [(1.0, 16), (0.3, 1), (0.5, "full")])
def test_weights_match_plain_pytorch_loop(digits, name, fraction, batch_size):
    x, y, _, _ = digits
    x, y = torch.from_numpy(x[:400]), torch.from_numpy(y[:400])
    cfg = TrainConfig(optimizer=name.split("-")[0], epochs=2, batch_size=batch_size, sample_fraction=fraction,
                      seed=3, progress=False, decay_norm_and_bias=True, **SETTINGS[name])
    ours, reference = mlp(), None
    reference = copy.deepcopy(ours)
    finetune.train(ours, (x, y), config=cfg)
    reference_loop(reference, x, y, cfg)
    for (name_a, a), (_, b) in zip(ours.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"{name}: parameter {name_a} differs")


@pytest.mark.parametrize("name", ["sgd", "sgd-nesterov", "adam", "adamw"])
def test_fused_steps_equal_the_per_parameter_update(digits, name):
    """The fused kernels against torch.optim's default (one parameter at a time) update, 50 steps."""
    x, y, _, _ = digits
    x, y = torch.from_numpy(x[:400]), torch.from_numpy(y[:400])
    cfg = TrainConfig(optimizer=name.split("-")[0], epochs=2, batch_size=16, seed=3, progress=False,
                      decay_norm_and_bias=True, **SETTINGS[name])
    ours = mlp()
    reference = copy.deepcopy(ours)
    finetune.train(ours, (x, y), config=cfg)
    per_parameter = lambda p, c: OPTIMIZERS[cfg.optimizer](p, c, fused=False)
    reference_loop(reference, x, y, cfg, optimizer=per_parameter)
    for (name_a, a), (_, b) in zip(ours.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=f"{name}: parameter {name_a} differs")


class SparseBag(torch.nn.Module):
    """Sparse embedding gradients, which the fused kernels do not take: the step falls back to LibTorch's."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(50, 8, sparse=True)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.embedding(x).mean(1))


def test_sparse_gradients_train_like_torch_optim():
    torch.manual_seed(0)
    x, y = torch.randint(0, 50, (64, 5)), torch.randint(0, 3, (64,))
    cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, epochs=2, batch_size=16, seed=3, progress=False,
                      decay_norm_and_bias=True)
    ours = SparseBag()
    reference = copy.deepcopy(ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scripting fails on a class defined in a test (no source): traced
        finetune.train(ours, (x, y), config=cfg, recipe="none")
    reference_loop(reference, x, y, cfg, optimizer=lambda p, c: OPTIMIZERS["sgd"](p, c, fused=False))
    for (name_a, a), (_, b) in zip(ours.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=f"parameter {name_a} differs")


def test_module_is_updated_in_place_and_returned(digits):
    x, y, _, _ = digits
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    result = finetune.train(model, (x, y), epochs=1, progress=False)
    assert result.model is model
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_fine_tune_on_digits_reaches_90_percent(digits):
    x, y, x_test, y_test = digits
    result = finetune.train(mlp(hidden=128), (x, y), val=(x_test, y_test), epochs=15, lr=0.05, progress=False)
    assert result.metrics["accuracy"] >= 0.9, result.metrics
    assert len(result.history) == 15
    assert result.history[-1]["val_accuracy"] == result.metrics["accuracy"]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.mark.parametrize("batch_size, epochs, lr", [(1, 2, 0.01), (32, 10, 0.05), ("full", 150, 0.5)])
def test_stochastic_minibatch_and_full_batch_all_learn(digits, batch_size, epochs, lr):
    x, y, x_test, y_test = digits
    result = finetune.train("mlp", (x, y), val=(x_test, y_test), batch_size=batch_size, epochs=epochs, lr=lr,
                            progress=False)
    steps_per_epoch = {1: len(x), 32: -(-len(x) // 32), "full": 1}[batch_size]
    assert result.steps == steps_per_epoch * epochs
    assert result.metrics["accuracy"] >= 0.85, (batch_size, result.metrics)


def test_sampled_fraction_is_stratified_and_reported(digits):
    x, y, _, _ = digits
    result = finetune.train("mlp", (x, y), sample_fraction=0.1, epochs=1, progress=False)
    full = np.bincount(y)
    assert result.train_size == round(0.1 * len(y))
    for c, n in result.class_counts.items():
        assert abs(n - full[c] * result.train_size / len(y)) < 1


def test_native_models_train_predict_and_round_trip_state(digits):
    x, y, x_test, y_test = digits
    images = x.reshape(-1, 1, 8, 8)
    result = finetune.train("cnn", (images, y), val=(x_test.reshape(-1, 1, 8, 8), y_test), epochs=5, lr=0.05,
                            channels=[8, 16], progress=False)
    model = result.model
    assert isinstance(model, finetune.NativeModel) and model.options["channels"] == [8, 16]
    assert result.metrics["accuracy"] > 0.8
    probs = finetune.predict(model, x_test.reshape(-1, 1, 8, 8), output="probabilities")
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    assert (probs.argmax(1) == finetune.predict(model, x_test.reshape(-1, 1, 8, 8))).all()
    clone = finetune.build("cnn", height=8, width=8, channels=[8, 16])
    clone.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(finetune.predict(clone, x_test.reshape(-1, 1, 8, 8), output="logits"),
                                  finetune.predict(model, x_test.reshape(-1, 1, 8, 8), output="logits"))


def test_batchnorm_and_dropout_follow_train_and_eval_mode(digits):
    x, y, x_test, _ = digits

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                            torch.nn.Dropout(0.5), torch.nn.Linear(32, 10))

        def forward(self, x):
            return self.body(x)

    model = Net()
    finetune.train(model, (x, y), epochs=1, progress=False)
    bn = model.body[1]
    assert bn.num_batches_tracked.item() == -(-len(x) // 32)  # running stats updated in train mode only
    assert model.training  # the caller's mode is restored
    a = finetune.predict(model, x_test, output="logits")
    b = finetune.predict(model, x_test, output="logits")
    np.testing.assert_array_equal(a, b)  # eval mode: dropout off, running statistics used
    model.eval()
    np.testing.assert_allclose(a, model(torch.from_numpy(x_test)).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_regression_reports_rmse_mae_r2():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.1 * rng.normal(size=600)).astype(np.float32)
    result = finetune.train("mlp", (x[:500], y[:500]), val=(x[500:], y[500:]), task="regression", epochs=30,
                            lr=0.01, progress=False)
    assert result.class_counts is None
    assert set(result.metrics) == {"loss", "rmse", "mae", "r2"}
    assert result.metrics["r2"] > 0.95, result.metrics
    pred = finetune.predict(result.model, x[500:], task="regression")
    assert pred.shape == (100,)  # y is 1-D


class Scriptable(torch.nn.Module):
    """Dropout and batch norm: what behaves differently in training and in eval mode."""

    def __init__(self):
        super().__init__()
        self.a, self.bn, self.b = torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.Linear(32, 10)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x):
        return self.b(self.drop(torch.relu(self.bn(self.a(x)))))


class VarArgs(Scriptable):
    def forward(self, *inputs):  # *inputs: torch.jit.script rejects it, tracing works
        return super().forward(inputs[0])


def test_a_traced_model_trains_in_training_mode_and_evaluates_in_eval_mode(digits):
    # A model that cannot be scripted is traced twice (training and eval graphs): it must train exactly as the
    # same model scripted does, with the same dropout draws and batch statistics, and evaluate the same.
    x, y, x_test, y_test = digits
    torch.manual_seed(0)
    scripted, traced = Scriptable(), VarArgs()
    traced.load_state_dict(scripted.state_dict())
    settings = dict(val=(x_test, y_test), epochs=2, batch_size=64, lr=0.05, progress=False)
    expected = finetune.train(scripted, (x, y), **settings)
    with pytest.warns(UserWarning, match="traced instead"):
        result = finetune.train(traced, (x, y), **settings)
    for (name, a), b in zip(traced.state_dict().items(), scripted.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)  # weights and running statistics
    assert result.metrics == pytest.approx(expected.metrics, abs=1e-9)
    assert traced.training  # the caller's mode is kept
    np.testing.assert_array_equal(finetune.predict(traced, x_test), finetune.predict(scripted, x_test))


def test_callback_sees_steps_and_epochs_and_can_stop(digits):
    x, y, _, _ = digits
    events = []

    def callback(kind, info):
        events.append((kind, info))
        return kind == "epoch" and info["epoch"] == 1

    result = finetune.train("mlp", (x, y), epochs=5, progress=False, callback=callback)
    kinds = [k for k, _ in events]
    assert "step" in kinds and kinds.count("epoch") == 2
    step = next(info for kind, info in events if kind == "step")
    assert {"epoch", "step", "loss", "lr", "samples"} <= set(step)


def test_step_callback_returning_true_stops_early(digits):
    x, y, _, _ = digits
    result = finetune.train("mlp", (x, y), epochs=5, progress=False, callback=lambda kind, info: kind == "step")
    assert result.stopped and len(result.history) == 1


def test_keyboard_interrupt_from_callback_propagates(digits):
    x, y, _, _ = digits

    def interrupt(kind, info):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune.train("mlp", (x, y), epochs=2, progress=False, callback=interrupt)


def test_progress_bar_prints_epochs(digits, capsys):
    x, y, x_test, y_test = digits
    finetune.train("mlp", (x, y), val=(x_test, y_test), epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "val_accuracy" in err and "samples/s" in err
    finetune.train("mlp", (x, y), epochs=2, progress=False)
    assert capsys.readouterr().err == ""


def test_an_unwatched_long_epoch_prints_where_it_is(digits, capsys, monkeypatch):
    """Redirected (no bar), an epoch longer than STEP_LINE_SECONDS prints a plain line of its step, loss and time
    left: a log that stays silent for minutes (SetFit's one epoch of pairs on MiniLM) reads as a hang."""
    from finetune import progress

    x, y, _, _ = digits
    monkeypatch.setattr(progress, "STEP_LINE_SECONDS", 0.0)
    finetune.train("mlp", (x, y), epochs=1, batch_size=8, progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if "step" in line]
    assert lines and all("epoch 1/1  step " in line and "left in the epoch" in line for line in lines), lines
    monkeypatch.setattr(progress, "STEP_LINE_SECONDS", 3600.0)
    finetune.train("mlp", (x, y), epochs=1, batch_size=8, progress=True)
    assert not [line for line in capsys.readouterr().err.splitlines() if "step" in line]


def test_seeded_runs_are_identical(digits):
    x, y, _, _ = digits
    images = x.reshape(-1, 1, 8, 8)
    runs = [finetune.train("cnn", (images, y), epochs=2, sample_fraction=0.5, seed=7, progress=False).model
            for _ in range(2)]
    torch.manual_seed(123)  # the global generator's state before the call must not matter
    runs.append(finetune.train("cnn", (images, y), epochs=2, sample_fraction=0.5, seed=7, progress=False).model)
    first = runs[0].state_dict()
    for other in runs[1:]:
        for key, value in other.state_dict().items():
            assert torch.equal(first[key], value), key


class Terminal:
    """A stderr that says it is a terminal, keeping what is written."""

    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return True


@pytest.mark.parametrize("terminal", [False, True])
def test_the_step_bar_is_drawn_only_on_a_terminal_and_the_epoch_lines_always(monkeypatch, capsys, terminal):
    """A new user's script redirected to a file got ~5 KB of carriage-return bars a run."""
    pytest.importorskip("tqdm")
    fake = Terminal()
    if terminal:
        monkeypatch.setattr("sys.stderr", fake)
    x = np.random.default_rng(0).random((64, 4), dtype=np.float32)
    finetune.train("mlp", (x, np.arange(64) % 2), epochs=2, progress=True)
    written = fake.text if terminal else capsys.readouterr().err
    lines = [line for line in written.replace("\r", "\n").splitlines() if line.startswith("epoch ")]
    assert any(line.startswith("epoch 1/2  train_loss") for line in lines)
    assert any(line.startswith("epoch 2/2  train_loss") for line in lines)
    assert ("\r" in written) == terminal  # tqdm redraws its bar with carriage returns


def test_find_lr_refuses_settings_a_range_test_has_nothing_to_act_on():
    """A setting given takes effect or is an error: lr, epochs, a schedule, early stopping, the moving average,
    ... were accepted by find_lr and changed nothing (the same curve)."""
    import re

    x, y = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32), np.arange(64) % 2
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with pytest.raises(ValueError, match=re.escape("epochs=50, lr=123.0 would change nothing; leave them out")):
        finetune.find_lr(model, (x, y), lr=123.0, epochs=50, num_steps=10)
    with pytest.raises(ValueError, match=re.escape("ema=0.99 would change nothing; leave it out (train takes it)")):
        finetune.find_lr(model, (x, y), ema=0.99, num_steps=10)
    curve = finetune.find_lr(model, (x, y), optimizer="adamw", batch_size=16, num_steps=10)  # these act on it
    assert len(curve.lrs) >= 2
