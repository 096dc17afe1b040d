"""Models as people pass them: Hugging Face classifiers as-is, X as a dict of keyword inputs, dict / tuple outputs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import finetune
from finetune import recipe
from finetune.config import TrainConfig
from helpers import batches

transformers = pytest.importorskip("transformers")


def bert(num_labels: int = 3) -> torch.nn.Module:
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=37, max_position_embeddings=32, num_labels=num_labels,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(config)


def distilbert(num_labels: int = 3) -> torch.nn.Module:
    config = transformers.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, hidden_dim=37,
                                           max_position_embeddings=32, num_labels=num_labels, dropout=0.0,
                                           attention_dropout=0.0, seq_classif_dropout=0.0)
    return transformers.DistilBertForSequenceClassification(config)


def token_data(n: int = 96, length: int = 12, classes: int = 3, seed: int = 0):
    """Token ids whose class is told by one token, padded to `length` with an attention mask of random lengths."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    ids = rng.integers(5, 100, (n, length))
    ids[:, 1] = y + 1  # the class token
    lengths = rng.integers(4, length + 1, n)
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}, y


def plain_loop(model, x, y, cfg: TrainConfig) -> None:
    """finetune's batches, written as a Hugging Face user would: keyword inputs, `.logits`, SGD with momentum."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    x = {k: torch.from_numpy(v) for k, v in x.items()}
    y = torch.from_numpy(y)
    model.train()
    for idx in batches(y, cfg):
        opt.zero_grad()
        F.cross_entropy(model(**{k: v[idx] for k, v in x.items()}).logits, y[idx]).backward()
        opt.step()


@pytest.mark.parametrize("make", [bert, distilbert], ids=["bert", "distilbert"])
def test_a_hugging_face_classifier_as_is_trains_as_a_plain_loop_does(make):
    x, y = token_data()
    torch.manual_seed(0)
    model = make()
    ref = copy.deepcopy(model)
    settings = dict(epochs=2, batch_size=16, lr=0.05, optimizer="sgd")
    result = finetune.train(model, (x, y), progress=False, **settings)
    plain_loop(ref, x, y, TrainConfig(**settings))
    assert result.model is model and result.head is None  # its own classifier fits the 3 labels: kept
    assert result.runner["runner"] in ("python", "trace")
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=name)
    ref.eval()
    with torch.no_grad():
        logits = ref(**{k: torch.from_numpy(v) for k, v in x.items()}).logits
    np.testing.assert_allclose(finetune.predict(model, x, output="logits"), logits.numpy(), atol=1e-5)
    assert finetune.evaluate(model, (x, y))["accuracy"] == pytest.approx(float((logits.argmax(1).numpy() == y).mean()))


def test_a_tokenizer_batch_encoding_is_a_dict_of_inputs():
    x, y = token_data()
    encoding = transformers.BatchEncoding(x)
    result = finetune.train(bert(), (encoding, y), epochs=1, lr=0.05, progress=False)
    assert result.train_size == len(y)
    assert finetune.predict(result.model, encoding).shape == (len(y),)


def test_the_recipe_fine_tunes_a_hugging_face_model_with_a_new_head():
    # The recipe takes a model passed in for a pretrained one: this BERT is first trained on a three-class version
    # of the task. Five labels for its three outputs: head="auto" replaces its `classifier`; the recipe fits it
    # first (the head found by name), then every layer by BERT's rules (recipe.TRANSFORMER: a Hugging Face model).
    model = bert(num_labels=3)
    x0, y0 = token_data(n=300, classes=3, seed=1)
    finetune.train(model, (x0, y0), epochs=10, lr=1e-3, optimizer="adamw", progress=False)
    x, y = token_data(n=200, classes=5)
    result = finetune.train(model, (x, y), progress=False)
    assert result.head["name"] == "classifier" and model.classifier.out_features == 5
    decided = {d["what"]: d["value"] for d in result.recipe}
    assert decided["head"] == "classifier" and decided["head.fit"] == "linear probe"
    assert (decided["full.lr"], decided["full.schedule"], decided["full.layer_decay"], decided["full.batch_size"]) == (
        recipe.TRANSFORMER_LR, "linear", 1.0, recipe.TRANSFORMER_BATCH)
    assert decided["full.optimizer"] == "adamw"  # rule 4's SGD is for networks that are not transformers
    # 160 training examples: 10 steps an epoch, so the 200-step budget asks for 20 epochs.
    assert decided["full.budget"] == {"epochs": 20, "steps_per_epoch": 10} and decided["full.epochs"] == 20
    assert decided["scratch"] is None and "scratch.lr" not in decided  # no from-scratch candidate for a transformer
    # nor phases shrunk and shrunk_low, whose rates the range test would set: at BERT's fixed rate they were one
    assert decided["shrunk"] is None and "shrunk.lr" not in decided and "shrunk_low.result" not in decided
    x_test, y_test = token_data(n=200, classes=5, seed=7)
    assert finetune.evaluate(model, (x_test, y_test))["accuracy"] > 0.9


class TwoOutputs(torch.nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.body = torch.nn.Linear(64, 16)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        h = torch.relu(self.body(x))
        if self.kind == "dict":
            return {"features": h, "scores": self.head(h)}
        return h.sum(1), self.head(h)


def test_a_dict_output_gives_the_entry_named_by_output_key(digits):
    x, y, x_test, y_test = digits
    model = TwoOutputs("dict")
    # Its forward is traced (the tracer notes nothing), with the warning that a trace fixes control flow.
    with pytest.warns(UserWarning, match=r"model TwoOutputs could not be scripted \(called with keyword inputs or "
                                         r"reduced to one output tensor.*traced instead"):
        result = finetune.train(model, (x, y), val=(x_test, y_test), epochs=3, lr=0.1, output_key="scores",
                                progress=False)
    assert result.runner["runner"] == "trace"
    assert result.metrics["accuracy"] > 0.8
    assert finetune.evaluate(model, (x_test, y_test), output_key="scores")["accuracy"] == result.metrics["accuracy"]
    with pytest.raises(ValueError, match=r"output_key='logits' is not in the model's output, which has \['features', 'scores'\]"):
        finetune.train(TwoOutputs("dict"), (x, y), epochs=1, output_key="logits", progress=False)


def test_a_tuple_output_gives_its_first_tensor_and_output_key_on_a_tensor_is_an_error(digits):
    x, y, _, _ = digits
    model = TwoOutputs("tuple")
    with pytest.raises(ValueError, match=r"model output has shape \[32\] but task='classification' needs"):
        finetune.train(model, (x, y), epochs=1, runner="python", progress=False)  # the first tensor: a (batch,) sum
    with pytest.raises(ValueError, match=r"output_key='scores' names an entry of a dict output, but the model returns a tensor"):
        finetune.train(torch.nn.Linear(64, 10), (x, y), epochs=1, output_key="scores", progress=False)


def test_dict_inputs_that_do_not_match_are_one_line_errors():
    x, y = token_data()
    with pytest.raises(ValueError, match=r"X_val's inputs \['input_ids'\] differ from X's \['input_ids', 'attention_mask'\]"):
        finetune.train(bert(), (x, y), val=({"input_ids": x["input_ids"]}, y), epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"X's keys are passed to the model as keyword arguments and must be names, got 0"):
        finetune.train(bert(), ({0: x["input_ids"]}, y), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"X\['attention_mask'\] has|the inputs of X have different numbers of rows"):
        finetune.train(bert(), ({"input_ids": x["input_ids"], "attention_mask": x["attention_mask"][:5]}, y),
                       epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"X as a dict \(keyword inputs\) needs an nn.Module called in Python"):
        finetune.train("mlp", ({"x": np.zeros((4, 3), np.float32)}, np.array([0, 1, 0, 1])), epochs=1, progress=False)


def test_a_new_head_updates_the_hugging_face_config_and_the_model_is_freed_after():
    import gc
    import weakref

    x, y = token_data(n=64, classes=5)
    model = bert(num_labels=2)
    finetune.train(model, (x, y), epochs=1, lr=0.05, progress=False)
    assert model.config.num_labels == 5 and len(model.config.id2label) == 5  # its loss and save_pretrained agree
    assert model.num_labels == 5  # BERT's loss reads this copy: its own forward with labels= works after
    model(input_ids=torch.as_tensor(x["input_ids"][:4]), attention_mask=torch.as_tensor(x["attention_mask"][:4]),
          labels=torch.as_tensor(y[:4]))
    model.eval()
    finetune.predict(model, x)
    assert not model.training  # the caller's mode, as it is now (not as it was when first adapted)
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None  # no cache of finetune's keeps a model alive


@pytest.mark.parametrize("trim", ["auto", False])
def test_float_token_ids_are_one_error_saying_ids_are_integers(trim):
    """Token ids given as floats fail in the model's embedding: one ValueError with the inputs' shapes and dtypes
    and the fix, whether the padding probe (trim_padding="auto") or the loop meets it first -- not torch's error
    from a forward pass finetune made."""
    x, y = token_data(n=32)
    x = {"input_ids": x["input_ids"].astype(np.float32), "attention_mask": x["attention_mask"]}
    with pytest.raises(ValueError, match=r"model forward\(\) failed on training inputs of shape .*(float32|Float).*an "
                                         r"embedding reads integer ids: pass them as int64"):
        finetune.train(bert(), (x, y), epochs=1, lr=1e-3, recipe="none", trim_padding=trim, progress=False)


def test_tracing_a_hugging_face_model_logs_nothing_its_attribute_reads_set_off():
    """torch.jit's trace reads every attribute of each module; a Hugging Face model's loss_function property logs
    "loss_type=None ... ForCausalLMLoss" when read -- a line about a loss the user never asked for (BertForSequenceClassification's BertModel logs it). Not while
    finetune traces (the line is logged once per process: its cache is cleared first, and reading the property by
    hand afterwards shows the handler sees it)."""
    import logging

    class Kept(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    kept = Kept()
    logging.getLogger("transformers").addHandler(kept)
    verbosity = transformers.logging.get_verbosity()  # "minilm" sets it to errors, for the whole process
    transformers.logging.set_verbosity_warning()
    try:
        x, y = token_data()
        model = bert()
        logging.Logger.warning_once.cache_clear()
        finetune.train(model, (x, y), epochs=1, lr=1e-3, recipe="none", progress=False)
        assert not [line for line in kept.lines if "loss_type" in line]
        logging.Logger.warning_once.cache_clear()
        model.bert.loss_function  # the encoder inside: a PreTrainedModel of no loss type
        assert [line for line in kept.lines if "loss_type" in line]
    finally:
        logging.getLogger("transformers").removeHandler(kept)
        transformers.logging.set_verbosity(verbosity)


def test_a_misspelled_key_and_ids_beyond_the_vocabulary_are_errors_naming_them():
    """BERT's forward takes **kwargs: "input_id" went into them and the model said "You must specify exactly one of
    input_ids or inputs_embeds"; an id past its 100 tokens said "index out of range in self". Each is one error
    naming the key or the id, in train, evaluate, predict and embed alike; a key no parameter is close to passes
    to a forward that takes **kwargs (the model's to read)."""
    x, y = token_data()
    model = bert()
    finetune.train(model, (x, y), epochs=1, lr=1e-3, recipe="none", progress=False)
    misspelled = {"input_id": x["input_ids"], "attention_mask": x["attention_mask"]}
    beyond = {"input_ids": x["input_ids"] + 50, "attention_mask": x["attention_mask"]}
    negative = {"input_ids": x["input_ids"] - 10, "attention_mask": x["attention_mask"]}
    calls = {"train": lambda X: finetune.train(bert(), (X, y), epochs=1, lr=1e-3, recipe="none", progress=False),
             "evaluate": lambda X: finetune.evaluate(model, (X, y)), "predict": lambda X: finetune.predict(model, X),
             "embed": lambda X: finetune.embed(model, X)}
    for call in calls.values():
        with pytest.raises(ValueError, match=r"^X's key 'input_id' is no parameter of BertForSequenceClassification"
                                             r"\.forward \(its parameters: input_ids, attention_mask, .*\): did you "
                                             r"mean 'input_ids'\?$"):
            call(misspelled)
        with pytest.raises(ValueError, match=r"^X\['input_ids'\] holds the id 149, and the model's vocabulary has "
                                             r"100 tokens \(ids 0 to 99\)"):
            call(beyond)
        with pytest.raises(ValueError, match=r"holds the id -\d+, and the model's vocabulary has 100 tokens"):
            call(negative)
    with pytest.raises(ValueError, match=r"^X_val\['input_ids'\] holds the id 149"):
        finetune.train(bert(), (x, y), val=(beyond, y), epochs=1, lr=1e-3, recipe="none", progress=False)
    extra = {**x, "return_dict": np.ones(len(y), dtype=np.int64)}  # in **kwargs, close to no parameter: passes
    finetune.models.check_keyword_inputs(model, list(extra), [torch.as_tensor(v) for v in extra.values()])


def test_a_forward_without_kwargs_names_its_parameters_for_a_key_it_lacks():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)

        def forward(self, features, scale):
            return self.linear(features) * scale

    x = {"features": np.ones((8, 3), np.float32), "weights": np.ones((8, 1), np.float32)}
    with pytest.raises(ValueError, match=r"^X's key 'weights' is no parameter of Two\.forward \(its parameters: "
                                         r"features, scale\)$"):
        finetune.train(Two(), (x, np.arange(8) % 2), epochs=1, lr=0.1, recipe="none", progress=False)
