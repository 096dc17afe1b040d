"""Fine-tuning practices in the C++ loop, each against the same computation written with torch.optim."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import finetune
from finetune import _C
from finetune.config import TrainConfig

from helpers import mlp, torch_loop


class Net(torch.nn.Module):
    """A small "pretrained" network: a body with batch norm and a head."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                        torch.nn.Linear(32, 32), torch.nn.ReLU())
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.fixture
def small(digits):
    x, y, x_test, y_test = digits
    return torch.from_numpy(x[:300]), torch.from_numpy(y[:300]), x_test, y_test


def reference(model, x, y, cfg: TrainConfig, groups, *, loss_fn=F.cross_entropy, clip=0.0, ema=0.0,
              on_epoch=None):
    """A plain PyTorch loop over the same batches as finetune's; `groups` are torch.optim param groups."""
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    subset = _C.sample_indices(y, cfg.to_cpp())
    shadow = [p.detach().clone() for p in model.parameters()]
    for epoch in range(cfg.epochs):
        if on_epoch:
            on_epoch(epoch, opt)
        model.train()
        order = _C.epoch_order(subset, cfg.seed, epoch, cfg.shuffle)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            if clip:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], clip)
            opt.step()
            with torch.no_grad():
                for s, p in zip(shadow, model.parameters()):
                    s.mul_(ema).add_(p, alpha=1 - ema)
    if ema:
        with torch.no_grad():
            for s, p in zip(shadow, model.parameters()):
                p.copy_(s)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, atol=1e-5):
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(p.float(), q.float(), atol=atol, rtol=0, msg=name)


def named(model, prefix):
    return [p for n, p in model.named_parameters() if n.startswith(prefix)]


def test_frozen_body_gets_no_update_and_its_batchnorm_stays_in_eval(small):
    x, y, _, _ = small
    model = Net()
    body_before = copy.deepcopy(model.body.state_dict())
    ours_ref = copy.deepcopy(model)
    cfg = TrainConfig(epochs=2, lr=0.05, freeze=["body"], progress=False)
    result = finetune.train(model, (x, y), config=cfg)
    for key, value in model.body.state_dict().items():  # weights *and* running statistics unchanged
        assert torch.equal(value, body_before[key]), key
    assert all(p.requires_grad for p in model.parameters())  # the caller's flags are restored
    assert [g["names"] for g in result.param_groups] == [["head.weight", "head.bias"]]

    # the reference: only the head in the optimizer, the frozen batch norm in eval mode
    for p in ours_ref.body.parameters():
        p.requires_grad_(False)
    original_train = ours_ref.train

    def train_keeping_bn_eval(mode=True):
        original_train(mode)
        ours_ref.body[1].eval()
        return ours_ref

    ours_ref.train = train_keeping_bn_eval
    reference(ours_ref, x, y, cfg, [{"params": list(ours_ref.head.parameters())}])
    assert_same_weights(model, ours_ref)


def test_freeze_accepts_regex_and_callable(small):
    x, y, _, _ = small
    by_regex = finetune.train(Net(), (x, y), epochs=1, freeze=[r"body\.\d\.bias"], progress=False)
    assert all(not n.startswith("body.") or not n.endswith("bias") for g in by_regex.param_groups for n in g["names"])
    by_callable = finetune.train(Net(), (x, y), epochs=1, freeze=lambda name: "head" not in name, progress=False)
    assert [n for g in by_callable.param_groups for n in g["names"]] == ["head.weight", "head.bias"]


def test_gradual_unfreezing_equals_adding_a_param_group(small):
    x, y, _, _ = small
    model = Net()
    ref = copy.deepcopy(model)
    cfg = TrainConfig(epochs=3, lr=0.05, freeze=["body"], unfreeze_at={1: ["body"]}, progress=False)
    result = finetune.train(model, (x, y), config=cfg)
    assert [g["from_epoch"] for g in result.param_groups] == [0, 1]

    def unfreeze(epoch, opt):
        if epoch == 1:
            opt.add_param_group({"params": list(ref.body.parameters())})

    original_train = ref.train
    state = {"epoch": 0}

    def train(mode=True):  # batch norm frozen (eval) during epoch 0 only
        original_train(mode)
        if state["epoch"] == 0:
            ref.body[1].eval()
        return ref

    ref.train = train

    def on_epoch(epoch, opt):
        state["epoch"] = epoch
        unfreeze(epoch, opt)

    reference(ref, x, y, cfg, [{"params": list(ref.head.parameters())}], on_epoch=on_epoch)
    assert_same_weights(model, ref)


def test_layer_decay_and_lr_groups_resolve_to_param_groups(small):
    x, y, _, _ = small
    model = Net()
    ref = copy.deepcopy(model)
    cfg = TrainConfig(epochs=2, lr=0.05, layer_decay=0.5, lr_groups={r"body\.0\..*": 0.1}, progress=False)
    result = finetune.train(model, (x, y), config=cfg)
    lr_of = {n: g["lr"] for g in result.param_groups for n in g["names"]}
    # modules back from the head: head (0), body.3 (1), body.1 (2), body.0 (3)
    assert lr_of["head.weight"] == pytest.approx(0.05)
    assert lr_of["body.3.weight"] == pytest.approx(0.05 * 0.5)
    assert lr_of["body.1.weight"] == pytest.approx(0.05 * 0.25)
    assert lr_of["body.0.weight"] == pytest.approx(0.05 * 0.1 * 0.125)
    params = dict(ref.named_parameters())
    reference(ref, x, y, cfg, [{"params": [params[n] for n in g["names"]], "lr": g["lr"]} for g in result.param_groups])
    assert_same_weights(model, ref)


def test_weight_decay_skips_biases_and_norms_unless_asked(small):
    x, y, _, _ = small
    model = Net()
    ref = copy.deepcopy(model)
    cfg = TrainConfig(epochs=2, lr=0.05, weight_decay=0.1, progress=False)
    result = finetune.train(model, (x, y), config=cfg)
    decay = {n: g["weight_decay"] for g in result.param_groups for n in g["names"]}
    assert decay == {n: (0.1 if p.dim() > 1 else 0.0) for n, p in model.named_parameters()}
    params = dict(ref.named_parameters())
    reference(ref, x, y, cfg, [{"params": [params[n] for n in g["names"]], "weight_decay": g["weight_decay"]}
                               for g in result.param_groups])
    assert_same_weights(model, ref)
    everything = finetune.train(Net(), (x, y), epochs=1, weight_decay=0.1, decay_norm_and_bias=True, progress=False)
    assert [g["weight_decay"] for g in everything.param_groups] == [0.1]


@pytest.mark.parametrize("settings, reference_settings", [
    (dict(lr=0.5, clip_grad_norm=0.1), dict(clip=0.1)),  # torch.nn.utils.clip_grad_norm_
    (dict(lr=0.05, ema=0.9), dict(ema=0.9)),  # an exponential moving average of the weights, then swapped in
], ids=["clip_grad_norm", "ema"])
def test_matches_the_reference_loop(small, settings, reference_settings):
    x, y, _, _ = small
    model = mlp()
    ref = copy.deepcopy(model)
    cfg = TrainConfig(epochs=2, progress=False, **settings)
    finetune.train(model, (x, y), config=cfg)
    reference(ref, x, y, cfg, ref.parameters(), **reference_settings)
    assert_same_weights(model, ref)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_accumulation_equals_the_large_batch_including_a_partial_last_group(small, optimizer):
    x, y, _, _ = small  # 300 examples: 9 full groups of 32 and a last group of 12 (micro-batches 8, 4)
    model = mlp()
    large = copy.deepcopy(model)
    common = dict(epochs=2, lr=0.05 if optimizer == "sgd" else 1e-3, optimizer=optimizer, seed=5, progress=False)
    accumulated = finetune.train(model, (x, y), batch_size=8, accumulate=4, **common)
    one_batch = finetune.train(large, (x, y), batch_size=32, **common)
    assert accumulated.steps == one_batch.steps == 2 * 10
    assert_same_weights(model, large, atol=1e-6)
    assert accumulated.history[-1]["train_loss"] == pytest.approx(one_batch.history[-1]["train_loss"], rel=1e-6)


def test_balanced_class_weights_and_label_smoothing_match_cross_entropy(small):
    x, y, _, _ = small
    keep = (y != 3) | (torch.arange(len(y)) % 5 == 0)  # make class 3 rare
    x, y = x[keep], y[keep]
    model = mlp()
    ref = copy.deepcopy(model)
    cfg = TrainConfig(epochs=2, lr=0.05, class_weights="balanced", label_smoothing=0.1, progress=False)
    result = finetune.train(model, (x, y), config=cfg)
    counts = torch.bincount(y).double()
    expected = (len(y) / (10 * counts)).tolist()
    assert result.config.class_weights == pytest.approx(expected)
    weight = torch.tensor(expected, dtype=torch.float32)
    reference(ref, x, y, cfg.replace(class_weights=None), ref.parameters(),
              loss_fn=lambda out, t: F.cross_entropy(out, t, weight=weight, label_smoothing=0.1))
    assert_same_weights(model, ref)


def test_balanced_sampler_draws_classes_evenly(small):
    x, y, _, _ = small
    keep = (y != 3) | (torch.arange(len(y)) % 10 == 0)
    y = y[keep]
    drawn = torch.cat([_C.balanced_epoch_order(y, torch.arange(len(y)), 0, e) for e in range(20)])
    share = torch.bincount(y[drawn], minlength=10).double() / len(drawn)
    assert torch.allclose(share, torch.full((10,), 0.1, dtype=torch.float64), atol=0.02), share
    result = finetune.train("mlp", (x[keep], y), epochs=1, sampler="balanced", progress=False)
    assert result.steps == -(-len(y) // 32)


def test_early_stopping_and_restore_best(digits):
    x, y, x_test, y_test = digits
    # a rate high enough that the validation loss stops improving
    seen = []  # the epochs the callback was told of: the one early stopping ends on too (its progress line)
    result = finetune.train("mlp", (x[:200], y[:200]), val=(x_test, y_test), epochs=60, lr=0.3,
                            early_stopping=3, restore_best=True, progress=False,
                            callback=lambda kind, info: seen.append(info["epoch"]) if kind == "epoch" else None)
    losses = [h["val_loss"] for h in result.history]
    assert result.stopped and len(losses) < 60
    assert seen == list(range(len(losses)))
    assert result.best_epoch == int(np.argmin(losses)) and len(losses) == result.best_epoch + 4
    assert result.best_value == pytest.approx(min(losses))
    assert finetune.evaluate(result.model, (x_test, y_test))["loss"] == pytest.approx(min(losses), rel=1e-9)
    assert result.metrics["loss"] == pytest.approx(min(losses), rel=1e-9)


def test_monitor_can_maximise_accuracy(digits):
    x, y, x_test, y_test = digits
    result = finetune.train("mlp", (x, y), val=(x_test, y_test), epochs=6, monitor="val_accuracy", progress=False)
    accuracies = [h["val_accuracy"] for h in result.history]
    assert result.best_epoch == int(np.argmax(accuracies))
    with pytest.raises(ValueError, match=r"monitor must be one of \['train_loss', 'val_accuracy'.*got 'val_auc'"):
        finetune.train("mlp", (x, y), val=(x_test, y_test), epochs=1, monitor="val_auc", progress=False)
    with pytest.raises(ValueError, match=r"monitor 'val_loss' needs validation data"):
        finetune.train("mlp", (x, y), epochs=1, early_stopping=2, progress=False)


def test_bf16_autocast_learns(digits):
    x, y, x_test, y_test = digits
    fp32 = finetune.train("mlp", (x, y), val=(x_test, y_test), epochs=8, lr=0.05, progress=False)
    bf16 = finetune.train("mlp", (x, y), val=(x_test, y_test), epochs=8, lr=0.05, precision="bf16", progress=False)
    assert bf16.metrics["accuracy"] > 0.85
    assert bf16.history[-1]["train_loss"] != fp32.history[-1]["train_loss"]  # it really ran in bf16


def test_find_lr_restores_weights_and_suggests_a_rate_inside_the_sweep(digits):
    x, y, _, _ = digits
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    curve = finetune.find_lr(model, (x, y), start_lr=1e-5, end_lr=100.0, num_steps=120)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert curve.diverged and len(curve.lrs) < 120
    assert 1e-5 <= curve.suggestion <= curve.lrs[-1]
    assert min(curve.losses) < curve.losses[0]  # the loss fell somewhere in the sweep
    assert curve.lrs == sorted(curve.lrs)


def test_find_lr_suggests_the_recipes_rate_for_the_model(digits):
    """The suggestion is the rule the recipe trains by (the lowest loss's rate / its divisor for this model), not
    the steepest descent, which was never validated; that one stays beside it to compare."""
    from finetune import recipe

    x, y, _, _ = digits
    passed = finetune.find_lr(mlp(), (x, y), num_steps=80)  # an nn.Module passed in: trained weights
    assert passed.divisor == recipe.LR_DIVISOR == 10
    assert passed.suggestion == recipe.lr_from_range(passed.lrs, passed.losses, 10.0)
    assert passed.steepest is not None and passed.lrs[0] <= passed.steepest <= passed.lrs[-1]
    by_name = finetune.find_lr("cnn", (x.reshape(-1, 1, 8, 8), y), num_steps=40)  # built by name: random weights
    assert by_name.divisor == recipe.SCRATCH_LR_DIVISOR == 100
    assert by_name.suggestion == recipe.lr_from_range(by_name.lrs, by_name.losses, 100.0)
    assert finetune.find_lr("mlp", (x, y), num_steps=40).divisor == recipe.TABULAR_LR_DIVISOR["classification"]
    given = finetune.find_lr(mlp(), (x, y), num_steps=80, divisor=3)
    assert given.divisor == 3 and given.suggestion == recipe.lr_from_range(given.lrs, given.losses, 3.0)
    for bad in (0, -1.0, float("nan"), True, "10"):
        with pytest.raises(ValueError, match=f"divisor must be a number > 0, got {re.escape(repr(bad))}"):
            finetune.find_lr(mlp(), (x, y), num_steps=10, divisor=bad)


def test_find_lr_does_not_call_a_lucky_first_batch_a_minimum():
    # The model predicts 0; the first batch's targets are 0 (loss 0), every other batch's are 1. The smoothed
    # loss of the first steps averages a few batches: 4x its first value is no divergence until it settles.
    model = torch.nn.Linear(1, 1)
    torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)
    x, y = torch.zeros(64, 1), torch.ones(64)
    y[:8] = 0.0
    curve = finetune.find_lr(model, (x, y), start_lr=1e-9, end_lr=1e-8, num_steps=30, task="regression",
                             batch_size=8, shuffle=False, optimizer="sgd")
    assert curve.losses[0] == 0.0 and not curve.diverged and len(curve.losses) == 30


def test_find_lr_equals_a_plain_range_test(small):
    # fastai's range test in plain PyTorch over the same batches: exponential rates, SGD steps, the loss
    # (class-weighted mean, as train computes it) smoothed with a bias-corrected moving average.
    x, y, _, _ = small
    weights = [0.5 + 0.1 * c for c in range(10)]
    model = mlp()
    ref = copy.deepcopy(model)
    curve = finetune.find_lr(model, (x, y), start_lr=1e-4, end_lr=1.0, num_steps=25, optimizer="sgd", momentum=0.9,
                             batch_size=64, class_weights=weights, seed=5)
    cfg = TrainConfig(batch_size=64, seed=5)
    opt = torch.optim.SGD(ref.parameters(), lr=1e-4, momentum=0.9)
    subset = _C.sample_indices(y, cfg.to_cpp())
    order, position, epoch, average, expected = None, 0, 0, 0.0, []
    for t in range(25):
        if order is None or position >= len(order):
            order, position, epoch = _C.epoch_order(subset, cfg.seed, epoch, cfg.shuffle), 0, epoch + 1
        for group in opt.param_groups:
            group["lr"] = 1e-4 * (1.0 / 1e-4) ** (t / 24)
        idx = order[position:position + 64]
        position += 64
        opt.zero_grad()
        loss = F.cross_entropy(ref(x[idx]), y[idx], weight=torch.tensor(weights))
        loss.backward()
        opt.step()
        average = 0.98 * average + 0.02 * loss.item()
        expected.append(average / (1 - 0.98 ** (t + 1)))
    assert len(curve.losses) == 25 and not curve.diverged
    np.testing.assert_allclose(curve.losses, expected, rtol=1e-5)
    np.testing.assert_allclose(curve.lrs, [1e-4 * 1e4 ** (t / 24) for t in range(25)], rtol=1e-12)


class Tied(torch.nn.Module):
    """An output layer sharing its weight with the input layer (as language models tie embeddings)."""

    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(10, 10)
        self.out = torch.nn.Linear(10, 10)
        self.out.weight = self.inp.weight

    def forward(self, x):
        return self.out(torch.tanh(self.inp(x)))


def test_tied_weights_are_stepped_once_like_torch_optim():
    torch.manual_seed(0)
    x, y = torch.randn(96, 10), torch.randint(0, 10, (96,))
    model = Tied()
    ref = copy.deepcopy(model)
    cfg = TrainConfig(epochs=2, batch_size=32, optimizer="adamw", lr=0.01, weight_decay=0.1, progress=False)
    result = finetune.train(model, (x, y), config=cfg)
    assert [n for g in result.param_groups for n in g["names"]] == ["inp.weight", "inp.bias", "out.bias"]
    assert model.out.weight is model.inp.weight
    opt = torch.optim.AdamW([{"params": [ref.inp.weight], "weight_decay": 0.1},
                             {"params": [ref.inp.bias, ref.out.bias], "weight_decay": 0.0}], lr=0.01)
    torch_loop(ref, x, y, cfg, opt)
    assert_same_weights(model, ref)
