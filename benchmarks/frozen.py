"""Head-only fine-tuning with the frozen encoder computed once (cache_frozen) beside a plain PyTorch loop.

    python benchmarks/frozen.py [--epochs 10] [--repeats 1] [--threads 1]

MiniLM (finetune.text's classifier, encoder frozen and run as in inference: dropout=False) on a stratified 10% of
Rotten Tomatoes' training split (1,024 snippets, 48 tokens), SGD on the head, batches of 32, in one process,
round-robin after a one-epoch warm-up of each variant. The plain loop is the usual one: the encoder frozen with
requires_grad_(False) and run every step. finetune runs the same steps uncached (cache_frozen=False) and cached
(the default where it is exact), whose time includes computing the features once. The bound is the epoch count:
the plain loop runs the encoder `epochs` times per example, the cached run once. Test accuracy (2,562 snippets)
shows the runs agree.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import finetune
from finetune import datasets, models, text


def plain_loop(model: torch.nn.Module, tokens: list[torch.Tensor], y: torch.Tensor, epochs: int, seed: int) -> None:
    """Head-only fine-tuning written the usual way: the encoder frozen, run every step."""
    model.encoder.requires_grad_(False)
    model.train()
    model.encoder.eval()  # as finetune's dropout=False runs it
    opt = torch.optim.SGD(model.head.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 32):
            idx = order[start:start + 32]
            opt.zero_grad()
            F.cross_entropy(model(*[t[idx] for t in tokens]), y[idx]).backward()
            opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = datasets.load("rotten-tomatoes", seed=0)
    keep, _ = datasets.stratified_split(split.y_train, 0.9, 0)
    _, tokenize = text.minilm_classifier(2, max_length=48, seed=0, dropout=False)

    def minilm() -> torch.nn.Module:
        """finetune's MiniLM classifier with dropout=False: a trace of the module in eval mode (the encoder runs as
        in inference while the head trains), the module itself kept for finetune.frozen's hooks."""
        # normalize=False, layers=1: the raw mean of the last layer, as the README's table was measured
        return text.minilm_classifier(2, max_length=48, seed=0, dropout=False, normalize=False, layers=1)[0]
    tokens = [torch.from_numpy(a) for a in tokenize(list(split.x_train[keep]))]
    y = torch.from_numpy(split.y_train[keep])
    test = (tokenize(list(split.x_test)), split.y_test)

    def finetune_run(cache: bool | str, epochs: int):
        def go(model: torch.nn.Module) -> None:
            result = finetune.train(model, (tokens, y), epochs=epochs, batch_size=32, lr=0.05, freeze=["encoder"],
                                    cache_frozen=cache, progress=False, seed=0)
            assert result.cache_frozen["used"] == (cache is not False), result.cache_frozen
        return go

    # name: (a fresh model with the initial weights, the run for some epochs) - only the run is timed
    variants = {
        "plain PyTorch loop (encoder every step)": (lambda: models.eager(minilm()),
                                                    lambda epochs: lambda m: plain_loop(m, tokens, y, epochs, 0)),
        "finetune.train, cache_frozen=False": (minilm, lambda epochs: finetune_run(False, epochs)),
        "finetune.train, cached (default)": (minilm, lambda epochs: finetune_run("auto", epochs)),
    }
    print(f"torch {torch.__version__}, {args.threads} thread(s), {len(y)} examples x {args.epochs} epochs, "
          f"median of {args.repeats} round-robin repeat(s)\n")
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    accuracy: dict[str, float] = {}
    for repeat in range(args.repeats + 1):
        for name, (prepare, make) in variants.items():
            model = prepare()
            start = time.perf_counter()
            make(1 if repeat == 0 else args.epochs)(model)  # repeat 0: a one-epoch warm-up
            if repeat > 0:
                seconds[name].append(time.perf_counter() - start)
                accuracy[name] = finetune.evaluate(model, test, batch_size=256)["accuracy"]
    baseline = statistics.median(seconds["plain PyTorch loop (encoder every step)"])
    print(f"{'variant':<42} {'seconds':>8} {'vs plain':>8} {'test accuracy':>14}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<42} {median:>8.1f} {baseline / median:>7.2f}x {accuracy[name]:>14.4f}")


if __name__ == "__main__":
    main()
