"""The Python dataclass and the C++ struct agree field for field; types are checked with clear errors."""

from __future__ import annotations

import dataclasses

import pytest

import finetune
from finetune import _C
from finetune.config import TrainConfig, config_fields


def test_fields_match_in_name_and_order():
    assert config_fields() == _C.TrainConfig.field_names()


def test_defaults_match():
    python_defaults = TrainConfig().to_cpp()
    cpp_defaults = _C.TrainConfig()
    for name in config_fields():
        assert getattr(python_defaults, name) == getattr(cpp_defaults, name), name


def test_every_field_round_trips_to_cpp():
    # A setting of one optimizer or schedule under another is an error (it would have no effect), so the
    # fields are changed over three valid configs that together change every field.
    common = dict(task="classification", epochs=3, batch_size=7, eval_batch_size=9, lr=0.3, weight_decay=0.1,
                  decay_norm_and_bias=True, freeze=["features"], unfreeze_at={2: ["features.0"]},
                  lr_groups={"head": 10.0, "body": 0.5}, layer_decay=0.8, clip_grad_norm=1.0,
                  accumulate=4, class_weights=[1.0, 2.0], label_smoothing=0.1, augment_crop=2, augment_flip=True,
                  sampler="balanced", early_stopping=3, monitor="val_accuracy", restore_best=True, ema=0.99,
                  precision="bf16", on_nan="skip", checkpoint_dir="/tmp/checkpoints", checkpoint_every=5, keep_last=2,
                  distributed="off", bucket_mb=1.0, dist_timeout=30.0, sample_fraction=0.5, sample_size=11,
                  stratify=False, shuffle=False, drop_last=True, seed=42, device="cpu", runner="python",
                  trim_padding=True, group_by_length=True, cache_frozen=False, cache_frozen_gb=0.5, num_workers=3, prefetch=4,
                  output_key="logits", topk=3, progress=False)
    configs = [
        TrainConfig(**common, optimizer="sgd", momentum=0.5, nesterov=True, schedule="step", step_size=3, gamma=0.5),
        TrainConfig(**common, optimizer="adamw", beta1=0.8, beta2=0.99, eps=1e-6, schedule="cosine", min_lr=0.01,
                    warmup=5),
        TrainConfig(**common, optimizer="rmsprop", alpha=0.9, schedule="onecycle", pct_start=0.25,
                    cycle_momentum=False, base_momentum=0.8, max_momentum=0.9),
    ]
    defaults = TrainConfig()
    changed = {f for c in configs for f in config_fields() if getattr(c, f) != getattr(defaults, f)}
    assert changed == set(config_fields()) - {"task", "device"}
    for config in configs:
        cpp = config.to_cpp()
        expected = {**dataclasses.asdict(config), "lr_groups": [("head", 10.0), ("body", 0.5)], "cache_frozen": "false",
                    "trim_padding": "true"}
        for name, value in expected.items():
            assert getattr(cpp, name) == value, name


def test_special_values_map_to_cpp():
    assert TrainConfig(batch_size="full").to_cpp().batch_size == 0
    assert TrainConfig(sample_size=None).to_cpp().sample_size == 0
    assert TrainConfig(checkpoint_every="epoch").to_cpp().checkpoint_every == 0
    assert TrainConfig(checkpoint_dir=None).to_cpp().checkpoint_dir == ""
    assert TrainConfig(output_key=None).to_cpp().output_key == ""
    assert [TrainConfig(cache_frozen=v).to_cpp().cache_frozen for v in ("auto", True, False)] == ["auto", "true", "false"]


def test_dict_round_trip_through_json():
    import json

    cfg = TrainConfig(unfreeze_at={2: ["body"]}, lr_groups={"head": 3.0}, freeze=["body"], class_weights=[1.0, 2.0])
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(TypeError, match=r"unknown config key\(s\) \['lrate'\]"):
        TrainConfig.from_dict({"lrate": 0.1})


@pytest.mark.parametrize("field, value", [("epochs", "10"), ("lr", "0.1"), ("stratify", 1), ("task", 3),
                                          ("seed", 1.5), ("momentum", True), ("batch_size", 2.0)])
def test_wrong_type_names_field_and_value(field, value):
    with pytest.raises(TypeError, match=f"{field} must be .*{value!r}"):
        TrainConfig(**{field: value}).to_cpp()


def test_unknown_setting_lists_known_ones(digits):
    x, y, _, _ = digits
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['lrr'\].*'lr'"):
        finetune.train("mlp", (x, y), lrr=0.1, progress=False)


def test_stub_lists_every_compiled_function_and_field():
    import ast
    from pathlib import Path

    stub = ast.parse((Path(finetune.__file__).parent / "_C.pyi").read_text())
    names = {n.name for n in stub.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    public = {n for n in dir(_C) if not n.startswith("_")}
    assert public <= names, sorted(public - names)
    config_stub = next(n for n in stub.body if isinstance(n, ast.ClassDef) and n.name == "TrainConfig")
    stubbed = [n.target.id for n in config_stub.body if isinstance(n, ast.AnnAssign)]
    assert stubbed == _C.TrainConfig.field_names()


def test_a_config_is_checked_as_it_is_made():
    """TrainConfig(lr=-1) is an error where it is written, naming the field and value, not later in train();
    replace() checks too; the two fields resolved from the model and the data (a freeze predicate, balanced or
    array-like class weights) wait for train()."""
    import numpy as np

    with pytest.raises(ValueError, match=r"lr must be a finite number > 0, got -1"):
        TrainConfig(lr=-1)
    with pytest.raises(TypeError, match=r"epochs must be int, got '3' \(str\)"):
        TrainConfig(epochs="3")
    with pytest.raises(ValueError, match=r"epochs must be >= 1, got 0"):
        TrainConfig().replace(epochs=0)
    assert TrainConfig(freeze=lambda name: True, class_weights="balanced").class_weights == "balanced"
    assert TrainConfig(class_weights=np.ones(3)).class_weights is not None
