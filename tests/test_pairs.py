"""SetFit's contrastive phase (finetune.pairs): the pairs drawn, the Siamese model, and the recipe's phase "pairs"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import finetune
from finetune import pairs, recipe, registry
from helpers import decisions


def test_each_example_gets_a_positive_and_a_negative_pair_per_iteration():
    targets = torch.tensor([0, 0, 0, 1, 1, 2])
    first, second, similarity = pairs.draw(targets, iterations=3, seed=0)
    positives = 3 * 5 * 1  # the five examples with a classmate; example 5 is alone in class 2
    assert len(first) == positives + 3 * 6 and similarity.shape == (len(first), 1)
    same = targets[first] == targets[second]
    assert torch.equal(same, similarity.flatten() == 1.0) and not (first == second).any()
    assert int((first == 5).sum()) == 3 and not same[first == 5].any()  # negatives only
    again = pairs.draw(targets, iterations=3, seed=0)
    assert all(torch.equal(a, b) for a, b in zip((first, second, similarity), again))
    assert not torch.equal(second, pairs.draw(targets, iterations=3, seed=1)[1])


class Encoder(torch.nn.Module):
    """Token embeddings mean-pooled under the attention mask, then a linear head: a sentence encoder in small."""

    def __init__(self, classes: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(50, 16)
        self.mix = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, classes)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = torch.tanh(self.mix(self.embed(ids)))
        weights = mask.unsqueeze(-1).to(states.dtype)
        return self.head((states * weights).sum(1) / weights.sum(1).clamp(min=1.0))


def tokens(n: int, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Class 0 uses tokens 1-24, class 1 tokens 25-49; rows padded on the right to 12."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    lengths = rng.integers(3, 9, n)
    ids = np.zeros((n, 12), dtype=np.int64)
    for i in range(n):
        ids[i, : lengths[i]] = rng.integers(1, 25, lengths[i]) + 24 * y[i]
    return [torch.from_numpy(ids), torch.from_numpy((ids > 0).astype(np.int64))], torch.from_numpy(y)


def test_siamese_output_is_the_cosine_of_the_features_the_head_reads_trimmed_or_not():
    model = Encoder()
    (ids, mask), _ = tokens(8)
    features = []
    hook = model.head.register_forward_pre_hook(lambda m, args: features.append(args[0]))
    model(ids, mask)
    hook.remove()
    expected = torch.nn.functional.cosine_similarity(features[0][:4], features[0][4:]).unsqueeze(1)
    for mask_input in (-1, 1):  # untrimmed, and cut to the batch's longest row
        siamese = pairs.Siamese(model, "head", mask_input)
        torch.testing.assert_close(siamese(ids[:4], mask[:4], ids[4:], mask[4:]), expected, atol=1e-6, rtol=0)


@pytest.fixture
def sentence_encoder():
    """A tiny model registered as a sentence encoder with trained weights (the family "minilm" has)."""
    @finetune.register_model("tiny_encoder", trained_weights=lambda o: True, recipe=recipe.SENTENCE_ENCODER,
                             mask_input=1)
    def tiny_encoder(num_classes: int = 2) -> torch.nn.Module:
        return Encoder(num_classes, seed=torch.initial_seed())

    yield "tiny_encoder"
    del registry.MODELS["tiny_encoder"]


def test_the_recipe_trains_a_sentence_encoder_on_pairs_before_its_head(sentence_encoder):
    x, y = tokens(40)
    result = finetune.train(sentence_encoder, (x, y), seed=0, progress=False)
    found = decisions(result)
    assert found["pairs"]["value"]["iterations"] == pairs.ITERATIONS
    assert found["head.fit"]["value"] == "linear probe" and found["kept"]["value"] == "head"
    assert found["full"]["value"] is None and "full.lr" not in found  # SetFit's procedure: pairs, then the head
    assert "shrunk" not in found
    # Nothing is decided on held-out examples here: none are held out, every example trains once (no refit).
    assert found["validation"]["value"] == {"examples": 0} and "refit" not in found
    assert found["pairs.result"]["value"]["pairs"] == 2 * 40 * pairs.ITERATIONS
    assert result.train_size == 40 and result.metrics == {}
    assert "after phase pairs, SetFit's head" in found["head.C"]["reason"]  # not cross-validated on them
    features = torch.from_numpy(finetune.embed(result.model, x)).double()  # the final body's: C is the rule's on them
    assert found["head.C"]["value"] == pytest.approx(recipe.PAIRS_HEAD_C / float(features.square().sum(1).mean()),
                                                     rel=1e-5)
    untrained = finetune.build(sentence_encoder)
    assert not torch.equal(result.model.mix.weight, untrained.mix.weight)  # the body trained
    assert finetune.evaluate(result.model, (x, y))["accuracy"] > 0.9  # the two classes learned (chance: 0.5)


def test_with_val_fraction_the_pairs_run_is_measured_on_a_slice_then_refit_to_the_same_weights(sentence_encoder):
    """val_fraction= asks for a held-out measure: the slice is carved, the phases run and are measured on it, then
    run again on the whole sample (the refit) -- which gives bitwise the weights the default run gives in one pass."""
    x, y = tokens(40)
    once = finetune.train(sentence_encoder, (x, y), seed=0, progress=False)
    measured = finetune.train(sentence_encoder, (x, y), seed=0, val_fraction=0.2, progress=False)
    found = decisions(measured)
    assert found["validation"]["value"] == {"examples": 8, "fraction": 0.2}
    assert found["pairs.result"]["value"]["pairs"] == 2 * 32 * pairs.ITERATIONS  # the slice held out
    assert found["refit"]["value"]["phases"] == ["pairs", "head"] and measured.metrics["accuracy"] == 1.0
    features = torch.from_numpy(finetune.embed(measured.model, x)).double()  # the refit's head: the final body's C
    assert found["refit.head.C"]["value"] == pytest.approx(recipe.PAIRS_HEAD_C / float(features.square().sum(1).mean()),
                                                           rel=1e-5)
    for name, value in once.model.state_dict().items():
        assert torch.equal(value, measured.model.state_dict()[name]), name
    assert once.steps < measured.steps


def test_no_pairs_above_the_few_shot_bound_or_with_a_setting_for_the_loop(sentence_encoder):
    x, y = tokens(2 * recipe.PAIRS_MAX_PER_CLASS + 40)
    found = decisions(finetune.train(sentence_encoder, (x, y), seed=0, recipe="auto", epochs=1, progress=False))
    assert found["pairs"]["value"] is None and "training examples, over 64" in found["pairs"]["reason"]
    x, y = tokens(40)
    found = decisions(finetune.train(sentence_encoder, (x, y), seed=0, recipe="auto", lr=0.01, epochs=1,
                                     progress=False))
    assert found["pairs"]["reason"] == "not run: settings given for the loop (epochs, lr)"


def test_after_the_pairs_the_probe_fits_setfits_strength_instead_of_cross_validating():
    """Folds of examples the pairs just trained the body on judge the head optimistically: after phase pairs the
    probe's C is SetFit's C = 1 on features scaled to a unit norm on average, whatever the features' scale --
    the same fit as scikit-learn's LogisticRegression(C=1) on the features divided by their root mean square norm."""
    from sklearn.linear_model import LogisticRegression

    generator = torch.Generator().manual_seed(0)
    targets = torch.arange(30) % 3
    features = torch.randn(30, 6, generator=generator, dtype=torch.float64)
    features[:, :3] += 2.0 * torch.nn.functional.one_hot(targets, 3)
    config = finetune.TrainConfig()
    for scale in (1.0, 10.0):
        x = scale * features
        plan = recipe.Plan({})
        settings = recipe._probe_settings(plan, torch.nn.Linear(6, 3), ([x], targets), {}, config, after_pairs=True)
        found = {d.what: d for d in plan.decisions}
        assert settings["fit"] == "probe" and found["head.C"].value == settings["C"]
        assert "SetFit's head" in found["head.C"].reason
        weight, bias, _ = finetune.probe.fit(x, targets, 3, settings["C"])
        rms = float(x.square().sum(1).mean().sqrt())
        reference = LogisticRegression(C=recipe.PAIRS_HEAD_C, tol=1e-10, max_iter=10_000).fit(
            (x / rms).numpy(), targets.numpy())
        np.testing.assert_allclose(torch.softmax(x @ weight.t() + bias, 1).numpy(),
                                   reference.predict_proba((x / rms).numpy()), atol=1e-5)
    plan = recipe.Plan({})
    cross_validated = recipe._probe_settings(plan, torch.nn.Linear(6, 3), ([features], targets), {}, config)
    assert cross_validated["C"] in finetune.probe.STRENGTHS  # without the pairs: chosen by the folds


class LayeredEncoder(Encoder):
    """Encoder whose head reads ``layers`` copies of the pooled states, as "minilm"'s reads its last layers."""

    def __init__(self, classes: int = 2, seed: int = 0, layers: int = 4):
        super().__init__(classes, seed)
        self.layers = layers
        self.head = torch.nn.Linear(16 * layers, classes)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = torch.tanh(self.mix(self.embed(ids)))
        weights = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(torch.cat([pooled] * self.layers, 1))


@pytest.mark.parametrize("largest, layers", [(8, None), (16, None), (17, 1), (64, 1), (65, None)])
def test_the_recipe_reads_the_last_layer_alone_where_pairs_train_on_17_to_64_a_class(largest, layers):
    """recipe.picked_model_options: a sentence encoder's head reads the last layer alone where phase pairs trains
    the body on more than PAIRS_FOUR_LAYERS_MAX examples in a class (and at most PAIRS_MAX_PER_CLASS); not where
    layers is given, for a regression, with adapters or with a setting for the loop (no phase pairs)."""
    targets = np.array([0] * largest + [1] * 5)
    picked = recipe.picked_model_options(recipe.SENTENCE_ENCODER, "classification", targets, [], [], False)
    assert {k: v for k, (v, _) in picked.items()} == ({} if layers is None else {"layers": layers})
    for family, task, settings, options, adapted in ((recipe.SENTENCE_ENCODER, "classification", [], ["layers"], False),
                                                     (recipe.SENTENCE_ENCODER, "regression", [], [], False),
                                                     (recipe.SENTENCE_ENCODER, "classification", ["lr"], [], False),
                                                     (recipe.SENTENCE_ENCODER, "classification", [], [], True),
                                                     ("default", "classification", [], [], False)):
        assert recipe.picked_model_options(family, task, targets, settings, options, adapted) == {}
    assert recipe.picked_model_options(recipe.SENTENCE_ENCODER, "classification", targets, ["seed", "sample_size"],
                                       [], False) == picked  # settings the recipe honours keep its path


def test_a_sentence_encoder_built_by_name_gets_the_layers_the_recipe_picks():
    """finetune.train("minilm"-like, ...) with recipe="auto": 20 examples a class build the model with layers=1
    (result.recipe says why), 8 a class with its default; a given layers, or recipe="none", keep what is given."""
    @finetune.register_model("layered_encoder", trained_weights=lambda o: True, recipe=recipe.SENTENCE_ENCODER,
                             mask_input=1)
    def layered_encoder(num_classes: int = 2, layers: int = 4) -> torch.nn.Module:
        return LayeredEncoder(num_classes, seed=torch.initial_seed(), layers=layers)

    try:
        x, y = tokens(40)
        result = finetune.train("layered_encoder", (x, y), seed=0, progress=False)
        found = decisions(result)
        assert found["model.layers"]["value"] == 1 and "largest class has 20 training examples" in \
            found["model.layers"]["reason"]
        assert result.model.layers == 1 and result.model_options["layers"] == 1
        assert finetune.train("layered_encoder", (x, y), seed=0, layers=4, progress=False).model.layers == 4
        assert finetune.train("layered_encoder", (x, y), seed=0, recipe="none", epochs=1,
                              progress=False).model.layers == 4
        x, y = tokens(16)
        few = finetune.train("layered_encoder", (x, y), seed=0, progress=False)
        assert few.model.layers == 4 and "model.layers" not in decisions(few)
    finally:
        del registry.MODELS["layered_encoder"]
