"""Token batches without their padding (trim_padding) and batches of similar lengths (group_by_length)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import finetune
from finetune import _C

from test_hf_models import bert, token_data


class MeanTokens(torch.nn.Module):
    """Token embeddings averaged under the mask; records the widths of the batches it is given."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(100, 16)
        self.head = torch.nn.Linear(16, 3)
        self.widths: list[int] = []

    def forward(self, input_ids, attention_mask):
        self.widths.append(input_ids.shape[1])
        mask = attention_mask.unsqueeze(-1).float()
        return self.head((self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1))


class ReadsPadding(torch.nn.Module):
    """A model that averages every position, padded or not: trimming would change its outputs."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(100, 4)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, input_ids, attention_mask):
        return self.head(self.embedding(input_ids).mean(1))


class FixedLength(torch.nn.Module):
    """A model whose layers are sized for the padded length: a trimmed batch does not fit it."""

    def __init__(self, length: int = 12):
        super().__init__()
        self.embedding = torch.nn.Embedding(100, 4)
        self.head = torch.nn.Linear(4 * length, 3)

    def forward(self, input_ids, attention_mask):
        return self.head(self.embedding(input_ids).flatten(1))


def test_a_trimmed_run_ends_with_the_padded_runs_weights():
    """Hugging Face BERT (dropout off), keyword inputs with an attention mask: trimmed and padded, to 1e-5."""
    x, y = token_data(n=96, length=12)
    torch.manual_seed(0)
    trimmed = bert()
    padded = copy.deepcopy(trimmed)
    settings = dict(epochs=2, batch_size=16, lr=0.05, progress=False, seed=2)
    result = finetune.train(trimmed, (x, y), (x, y), **settings)
    plain = finetune.train(padded, (x, y), (x, y), trim_padding=False, **settings)
    assert result.trim_padding["used"] and "input 1 is an attention mask" in result.trim_padding["reason"]
    assert plain.trim_padding == {"used": False, "reason": "trim_padding=False"}
    for (name, a), (_, b) in zip(trimmed.state_dict().items(), padded.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"{name} differs")
    assert result.history[-1]["val_loss"] == pytest.approx(plain.history[-1]["val_loss"], abs=1e-5)


def test_each_batch_is_cut_to_its_longest_row():
    x, y = token_data(n=64, length=12)
    model = MeanTokens()
    finetune.train(model, (x, y), epochs=1, batch_size=8, runner="python", progress=False, seed=0)
    lengths = x["attention_mask"].sum(1)
    order = _C.epoch_order(_C.sample_indices(torch.from_numpy(y), finetune.TrainConfig().to_cpp()), 0, 0, True)
    expected = [int(lengths[order[i:i + 8].numpy()].max()) for i in range(0, 64, 8)]
    assert model.widths[-8:] == expected  # the last 8 calls are the epoch's 8 batches (probes ran before)
    assert min(expected) < 12


@pytest.mark.parametrize("step_examples", [1, 3, 8])
def test_group_by_length_sorts_within_mega_batches_and_keeps_a_permutation(step_examples):
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 50, (1000,), generator=generator)
    order = torch.randperm(1000, generator=generator)
    grouped = _C.group_by_length(order, lengths, step_examples)
    assert sorted(grouped.tolist()) == list(range(1000))
    mega = 50 * step_examples
    # Hugging Face's LengthGroupedSampler without its longest-first swap: each mega-batch sorted, longest first
    expected = [i for s in range(0, 1000, mega)
                for i in sorted(order[s:s + mega].tolist(), key=lambda i: int(lengths[i]), reverse=True)]
    assert grouped.tolist() == expected


def test_group_by_length_batches_have_similar_lengths_and_resume_exactly(tmp_path):
    x, y = token_data(n=256, length=12)
    settings = dict(epochs=2, batch_size=8, lr=0.05, group_by_length=True, runner="python", progress=False, seed=3)
    torch.manual_seed(0)
    reference, model = MeanTokens(), MeanTokens()
    model.load_state_dict(reference.state_dict())
    result = finetune.train(reference, (x, y), **settings)
    assert result.trim_padding["used"]

    def interrupt(kind, info):
        if kind == "step" and info["step"] == 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune.train(model, (x, y), checkpoint_dir=tmp_path, callback=interrupt, callback_interval=0, **settings)
    finetune.train(model, (x, y), checkpoint_dir=tmp_path, resume=True, **settings)
    for a, b in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)


def test_grouped_batches_are_narrower_than_shuffled_ones():
    x, y = token_data(n=512, length=12)
    widths = {}
    for grouped in (False, True):
        model = MeanTokens()
        finetune.train(model, (x, y), epochs=1, batch_size=8, runner="python", group_by_length=grouped,
                       progress=False, seed=0)
        widths[grouped] = np.mean(model.widths[-64:])
    assert widths[True] < widths[False] - 1


@pytest.mark.parametrize("make, x, reason", [
    (ReadsPadding, token_data(length=12)[0], "outputs change"),
    (FixedLength, token_data(length=12)[0], "fails on a batch cut to its longest row"),
    (MeanTokens, [token_data()[0]["input_ids"], token_data()[0]["attention_mask"]], "no input is an attention mask"),
    (MeanTokens, {"input_ids": np.ones((96, 12), np.int64), "attention_mask": np.ones((96, 12), np.int64)},
     "no row ends in padding"),
])
def test_not_trimmed_says_why_and_true_is_an_error(make, x, reason):
    y = token_data()[1]
    result = finetune.train(make(), (x, y), epochs=1, runner="python", progress=False)
    assert not result.trim_padding["used"] and reason in result.trim_padding["reason"], result.trim_padding
    for setting in ({"trim_padding": True}, {"group_by_length": True}):
        name = next(iter(setting))
        with pytest.raises(ValueError, match=f"{name}=True, but batches cannot be cut to their longest row: .*{reason}"):
            finetune.train(make(), (x, y), epochs=1, runner="python", progress=False, **setting)


class NormedTokens(MeanTokens):
    """Batch norm over token positions: the same outputs trimmed in eval mode, not in training mode."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(16)

    def forward(self, input_ids, attention_mask):
        states = self.norm(self.embedding(input_ids).transpose(1, 2)).transpose(1, 2)
        mask = attention_mask.unsqueeze(-1).float()
        return self.head((states * mask).sum(1) / mask.sum(1).clamp(min=1))


def test_batch_norm_keeps_the_padding():
    x, y = token_data()
    result = finetune.train(NormedTokens(), (x, y), epochs=1, runner="python", progress=False)
    assert not result.trim_padding["used"] and "batch norm" in result.trim_padding["reason"]


def test_the_recipe_trims_too():
    """recipe="auto" (a Hugging Face model passed with nothing else) runs phases of its own: each one trims."""
    x, y = token_data(n=128)
    torch.manual_seed(0)
    result = finetune.train(bert(), (x, y), progress=False)
    assert result.recipe[0]["value"] == "auto"
    assert result.trim_padding["used"], result.trim_padding


def test_evaluate_and_predict_trim_and_agree_with_padded_batches():
    x, y = token_data(n=64)
    torch.manual_seed(0)
    model = bert()
    trimmed, padded = (finetune.evaluate(model, (x, y), batch_size=16, trim_padding=t) for t in ("auto", False))
    assert trimmed["loss"] == pytest.approx(padded["loss"], abs=1e-5)
    logits = [finetune.predict(model, x, output="logits", batch_size=16, trim_padding=t) for t in ("auto", False)]
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)
    recorder = MeanTokens()
    finetune.predict(recorder, x, batch_size=2, runner="python")
    lengths = x["attention_mask"].sum(1)
    expected = [int(lengths[i:i + 2].max()) for i in range(0, 64, 2)]
    assert recorder.widths[-32:] == expected and min(expected) < 12


def test_group_by_length_without_trimming_is_an_error():
    x, y = token_data()
    with pytest.raises(ValueError, match="group_by_length=True groups rows of similar lengths for trimming, and "
                                         "trim_padding is off"):
        finetune.train(MeanTokens(), (x, y), epochs=1, trim_padding=False, group_by_length=True, progress=False)
