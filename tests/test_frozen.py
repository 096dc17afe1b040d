"""Frozen features computed once (cache_frozen): the same run as the uncached one, and said when it cannot be."""

from __future__ import annotations

import copy

import pytest
import torch

import finetune


class EncoderHead(torch.nn.Module):
    """A body and a head, as fine-tuned models are built: the body frozen, the head trained on what it gives."""

    def __init__(self, dropout: float = 0.0, norm: bool = False, deep_head: bool = False):
        super().__init__()
        layers = [torch.nn.Linear(64, 32)] + ([torch.nn.BatchNorm1d(32)] if norm else []) + [torch.nn.ReLU()]
        layers += [torch.nn.Dropout(dropout)] if dropout else []
        self.encoder = torch.nn.Sequential(*layers, torch.nn.Linear(32, 24), torch.nn.ReLU())
        self.head = (torch.nn.Sequential(torch.nn.Linear(24, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
                     if deep_head else torch.nn.Linear(24, 10))

    def forward(self, x):
        return self.head(self.encoder(x))


def pair(model: torch.nn.Module, data, val, **settings):
    """The run cached and uncached from the same weights: (cached result, cached model, uncached model)."""
    plain = copy.deepcopy(model)
    settings = {"epochs": 3, "lr": 0.05, "batch_size": 32, "progress": False, "seed": 1, **settings}
    cached = finetune.train(model, data, val, **settings)
    uncached = finetune.train(plain, data, val, cache_frozen=False, **settings)
    assert uncached.cache_frozen == {"used": False, "reason": "cache_frozen=False"}
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"{name} differs")
    for h, g in zip(cached.history, uncached.history):
        assert h["train_loss"] == pytest.approx(g["train_loss"], abs=1e-5)
        assert h["val_loss"] == pytest.approx(g["val_loss"], abs=1e-5)
    return cached, uncached


@pytest.fixture
def split(digits):
    x, y, xv, yv = digits
    return (torch.from_numpy(x[:600]), torch.from_numpy(y[:600])), (torch.from_numpy(xv[:200]), torch.from_numpy(yv[:200]))


@pytest.mark.parametrize("variant", [{}, {"norm": True}, {"deep_head": True}])
def test_cached_run_ends_with_the_uncached_weights(split, variant):
    torch.manual_seed(0)
    cached, uncached = pair(EncoderHead(**variant), *split, freeze=["encoder"])
    assert cached.cache_frozen["used"], cached.cache_frozen
    assert "'head'" in cached.cache_frozen["reason"]
    assert cached.steps == uncached.steps and cached.train_size == uncached.train_size
    assert cached.runner == uncached.runner
    assert [n for g in cached.param_groups for n in g["names"]] == [n for g in uncached.param_groups for n in g["names"]]


def test_a_head_partly_frozen_keeps_its_frozen_part(split):
    torch.manual_seed(0)
    model = EncoderHead(deep_head=True)
    model.head[0].weight.requires_grad_(False)  # frozen by requires_grad inside the head, the rest by `freeze`
    before = model.head[0].weight.detach().clone()
    cached, _ = pair(model, *split, freeze=["encoder"], early_stopping=2, restore_best=True)
    assert cached.cache_frozen["used"]
    assert torch.equal(model.head[0].weight, before)


def test_early_stopping_and_class_weights_run_the_same(split):
    torch.manual_seed(0)
    cached, uncached = pair(EncoderHead(), *split, freeze=["encoder"], early_stopping=1, restore_best=True,
                            class_weights="balanced", sample_fraction=0.5, schedule="cosine")
    assert cached.cache_frozen["used"] and cached.best_epoch == uncached.best_epoch


def test_minilm_head_only_is_cached_and_exact():
    texts = ["a fine film", "dull and slow", "loved it", "a waste of time"] * 8
    labels = torch.tensor([1, 0, 1, 0] * 8)
    results = []
    for cache in ("auto", False):
        results.append(finetune.train("minilm", (texts, labels), epochs=2, lr=0.1, batch_size=8, freeze=["encoder"],
                                      dropout=False, cache_frozen=cache, progress=False, seed=0))
    assert results[0].cache_frozen["used"], results[0].cache_frozen
    for (name, a), (_, b) in zip(results[0].model.state_dict().items(), results[1].model.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"{name} differs")


def test_minilm_with_dropout_in_training_is_not_cached():
    """The trace's training graph (forward_train) keeps the encoder's dropout: features computed once would not be
    what the loop computes each step."""
    texts, labels = ["a fine film", "dull and slow", "loved it", "a waste of time"] * 4, [1, 0, 1, 0] * 4
    result = finetune.train("minilm", (texts, labels), epochs=1, freeze=["encoder"], progress=False)
    assert not result.cache_frozen["used"] and "training mode" in result.cache_frozen["reason"], result.cache_frozen


@pytest.mark.parametrize("model, settings, reason", [
    (lambda: EncoderHead(), {"freeze": ["encoder"], "precision": "bf16"}, "precision='bf16'"),
    (lambda: EncoderHead(dropout=0.5), {"freeze": ["encoder"]}, "differently in training mode"),
    (lambda: EncoderHead(), {}, "every parameter trains"),
    (lambda: EncoderHead(), {"freeze": ["encoder"], "unfreeze_at": {1: ["encoder"]}, "epochs": 2}, "unfreeze_at"),
    (lambda: EncoderHead(), {"freeze": ["encoder"], "cache_frozen_gb": 1e-6}, "over cache_frozen_gb=1e-06"),
    (lambda: EncoderHead(), {"freeze": ["encoder.2"]}, "not all in one submodule"),
    (lambda: EncoderHead(), {"freeze": ["encoder"], "lr_groups": {"head": 2.0}}, "lr_groups"),
    (lambda: finetune.build("mlp", in_features=64, hidden=[32], num_classes=10), {"freeze": ["layers.0"]},
     "runs outside Python"),
])
def test_not_cached_says_why_and_true_is_an_error(split, model, settings, reason):
    data, val = split
    settings = {"epochs": 1, "progress": False, **settings}
    result = finetune.train(model(), data, val, **settings)
    assert not result.cache_frozen["used"] and reason in result.cache_frozen["reason"], result.cache_frozen
    with pytest.raises(ValueError, match=f"cache_frozen=True, but .*{reason.split()[0]}"):
        finetune.train(model(), data, val, cache_frozen=True, **settings)


def test_cache_frozen_setting_is_checked():
    with pytest.raises(ValueError, match="cache_frozen must be 'auto', True or False, got 'yes'"):
        finetune.TrainConfig(cache_frozen="yes").to_cpp()
    with pytest.raises(ValueError, match="cache_frozen_gb must be > 0, got 0"):
        finetune.train(EncoderHead(), (torch.randn(8, 64), torch.arange(8)), epochs=1, cache_frozen_gb=0.0,
                       progress=False)


def test_cache_frozen_true_without_a_head_phase_is_an_error(split):
    with pytest.raises(ValueError, match="cache_frozen=True, but .*no head phase"):
        finetune.train("mlp", split[0], cache_frozen=True, progress=False)  # recipe="auto": from scratch, one phase


def test_recipe_head_phase_follows_the_setting(split):
    data, val = split
    decisions = {}
    for cache in ("auto", False):
        result = finetune.train(EncoderHead(), data, val, recipe="head", cache_frozen=cache, progress=False)
        decisions[cache] = next(d for d in result.recipe if d["what"] == "head.cached_features")
        assert result.cache_frozen["used"] == decisions[cache]["value"]
    assert decisions["auto"]["value"] is True
    assert decisions[False] == {"what": "head.cached_features", "value": False, "reason": "cache_frozen=False"}
