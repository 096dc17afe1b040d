"""SetFit's contrastive phase: a sentence encoder trained on pairs of the few labelled examples before its head is fit.

Tunstall et al. 2022 (SetFit): with a handful of examples per class, fine-tuning a sentence encoder on pairs --
two examples of one class should embed alike (cosine similarity 1), of two classes apart (0), a mean squared
error on the cosine -- turns n examples into 2 x n x 20 training signals, and a linear head fit on the new
embeddings beats fine-tuning the classifier directly. Here the pairs train the model's body through the loop
(``Siamese``: the body's features -- what the head reads -- for both examples of a pair, their cosine as a
regression output), with SetFit's sampling and settings; the recipe then fits the head (README, rule 3).
"""

from __future__ import annotations

import torch

# SetFit 1.x's defaults: 20 iterations (each example gets one positive and one negative pair per iteration),
# batches of 16 pairs, one epoch, AdamW at 2e-5 with sentence-transformers' weight decay 0.01 and linear warm-up
# over a tenth of the steps then linear decay.
ITERATIONS = 20
SETTINGS = {"optimizer": "adamw", "lr": 2e-5, "weight_decay": 0.01, "batch_size": 16, "epochs": 1,
            "schedule": "linear", "warmup": 0.1}


def draw(targets: torch.Tensor, iterations: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first, second, similarity) of SetFit's pairs: for each iteration and each example, a pair with another
    example of its class (1.0) and a pair with an example of another class (0.0), drawn with a seeded generator.
    A class with one example gets no positive pair; with one class there is no negative pair."""
    generator = torch.Generator().manual_seed(int(seed))
    n = len(targets)
    positions = torch.arange(n)
    first, second, similarity = [], [], []
    for _ in range(iterations):
        for i in range(n):
            same = positions[(targets == targets[i]) & (positions != i)]
            other = positions[targets != targets[i]]
            for pool, value in ((same, 1.0), (other, 0.0)):
                if len(pool):
                    first.append(i)
                    second.append(int(pool[torch.randint(len(pool), (1,), generator=generator)]))
                    similarity.append(value)
    return torch.tensor(first), torch.tensor(second), torch.tensor(similarity).unsqueeze(1)


class Siamese(torch.nn.Module):
    """The model's body on both examples of a pair: forward(*first_inputs, *second_inputs) is the cosine
    similarity of the features its head reads for each, shape (batch, 1). Token inputs are cut to the batch's
    longest row first (``mask_input``: the attention mask's index; exact for a masked encoder)."""

    def __init__(self, model: torch.nn.Module, head: str, mask_input: int = -1):
        super().__init__()
        self.model = model
        self.head = head
        self.mask_input = mask_input

    def features(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if self.mask_input >= 0:
            mask = inputs[self.mask_input]
            length = int(torch.nonzero(mask.any(0)).max()) + 1 if mask.any() else mask.shape[1]
            inputs = tuple(t[:, :length] if t.shape[:2] == mask.shape else t for t in inputs)
        seen: list[torch.Tensor] = []
        hook = self.model.get_submodule(self.head).register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        try:
            self.model(*inputs)
        finally:
            hook.remove()
        return seen[-1]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        half = len(inputs) // 2
        first, second = self.features(inputs[:half]), self.features(inputs[half:])
        return torch.nn.functional.cosine_similarity(first, second).unsqueeze(1)


def pair_inputs(inputs: list[torch.Tensor], first: torch.Tensor, second: torch.Tensor) -> list[torch.Tensor]:
    """The Siamese model's inputs: each input of the first examples, then each of the second."""
    return [t[first] for t in inputs] + [t[second] for t in inputs]
