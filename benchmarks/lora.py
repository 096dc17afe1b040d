"""LoRA beside full fine-tuning and head-only training: MiniLM on Rotten Tomatoes 10%, accuracy, seconds, memory.

    python benchmarks/lora.py [--seeds 3] [--epochs 3] [--threads 2]

Each (method, seed) runs in a fresh process, so that its peak resident memory is its own. The same MiniLM
classifier (finetune.text, the encoder run in Python), the same stratified 10% of the training split (1,280
snippets), AdamW with weight decay 0.01, batches of 16, linear decay after a 10% warm-up, max 48 tokens (the
README's text recipe); test accuracy on the 3,200-snippet test split.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time

METHODS = {
    "head only (encoder frozen)": dict(freeze=["encoder"], lr=1e-3),
    "full fine-tune": dict(lr=5e-5),
    "LoRA r=8 on query, value (merged)": dict(lora={"r": 8, "alpha": 16, "targets": ["query", "value"]}, lr=1e-3),
}


def run(method: str, seed: int, epochs: int, threads: int) -> dict:
    import torch

    import finetune
    from finetune import datasets, models, text

    torch.set_num_threads(threads)
    split = datasets.load("rotten-tomatoes", seed=seed)
    keep, _ = datasets.stratified_split(split.y_train, 0.9, seed)
    x, y = split.x_train[keep], split.y_train[keep]
    # normalize=False, layers=1: the raw mean of the last layer, as the README's table was measured
    traced, tokenize = text.minilm_classifier(2, max_length=48, seed=seed, normalize=False, layers=1,
                                              dropout=method != "head only (encoder frozen)")
    model = models.eager(traced)  # the Python module: LoRA changes its layers
    tokens, test_tokens = tokenize(list(x)), tokenize(list(split.x_test))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = finetune.train(model, (tokens, y), epochs=epochs, batch_size=16, optimizer="adamw", weight_decay=0.01,
                            schedule="linear", warmup=0.1, seed=seed, progress=False, **METHODS[method])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    accuracy = finetune.evaluate(model, (test_tokens, split.y_test), batch_size=256)["accuracy"]
    return {"accuracy": accuracy, "seconds": seconds, "peak_mb": peak / 1024, "growth_mb": (peak - before) / 1024,
            "runner": result.runner["runner"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    rows: dict[str, list[dict]] = {name: [] for name in METHODS}
    start = time.perf_counter()
    with context.Pool(1, maxtasksperchild=1) as pool:
        for seed in range(args.seeds):
            for name in METHODS:
                rows[name].append(pool.apply(run, (name, seed, args.epochs, args.threads)))
                print(name, seed, rows[name][-1], flush=True)
    print(f"\n### MiniLM on Rotten Tomatoes 10%: {args.seeds} seeds, {args.epochs} epochs, {args.threads} thread(s)\n")
    print("| method | test accuracy | seconds | peak memory (MB) | growth during training (MB) |\n|---|---|---|---|---|")
    for name, values in rows.items():
        def stat(key: str, digits: int) -> str:
            series = [v[key] for v in values]
            return f"{statistics.mean(series):.{digits}f} ± {statistics.pstdev(series):.{digits}f}"
        print(f"| {name} | {stat('accuracy', 3)} | {stat('seconds', 0)} | {stat('peak_mb', 0)} | {stat('growth_mb', 0)} |")
    print(f"\nTook {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
