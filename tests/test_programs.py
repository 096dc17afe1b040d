"""The C++ programs built with the package (the article's example, the benchmark) and the IDX reader they use."""

from __future__ import annotations

import gzip
import re
import struct
import subprocess

import numpy as np
import pytest
import torch

from finetune import _C
from finetune.__main__ import bin_path

IDX_TYPES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, IDX_TYPES[array.dtype.type], array.ndim)
    header += b"".join(struct.pack(">I", n) for n in array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(payload)


@pytest.mark.parametrize("dtype", list(IDX_TYPES))
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trips(tmp_path, dtype, compress):
    array = (np.arange(2 * 3 * 5) * 7 - 40).reshape(2, 3, 5).astype(dtype) if dtype != np.uint8 else \
        (np.arange(30) * 7 % 256).reshape(2, 3, 5).astype(np.uint8)
    path = tmp_path / "a.idx"
    write_idx(path, array, compress)
    np.testing.assert_array_equal(_C.read_idx(str(path)).numpy(), array)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "t.idx"
    write_idx(path, np.zeros((10, 4), np.float32), compress=False)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match=r"IDX file '.*t.idx' is truncated or corrupt"):
        _C.read_idx(str(path))
    path.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(ValueError, match=r"is not an IDX file \(bad magic number\)"):
        _C.read_idx(str(path))


@pytest.fixture(scope="module")
def digits_idx(tmp_path_factory, digits):
    """scikit-learn's digits written as a small MNIST-style IDX data set."""
    x_train, y_train, x_test, y_test = digits
    folder = tmp_path_factory.mktemp("idx")
    for prefix, x, y in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", (x.reshape(-1, 8, 8) * 255).astype(np.uint8), True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y.astype(np.uint8), True)
    return folder


def run_example(digits_idx, *options):
    out = subprocess.run([str(bin_path("finetune_example")), "--data", str(digits_idx), "--fraction", "0.3",
                          "--pretrain-epochs", "10", "--threads", "1", *options], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out


def test_article_example_runs_the_recipe_by_default(digits_idx):
    out = run_example(digits_idx)
    before, after, scratch = map(float, re.search(
        r"before fine-tuning ([\d.]+), after ([\d.]+), from scratch on the same sample ([\d.]+)", out.stdout).groups())
    assert before < 0.6 and after > 0.9 and scratch > 0.85, out.stdout
    decisions = dict(re.findall(r"^  (\S+) +(.+?)  \(", out.stdout, re.MULTILINE))
    assert {"validation", "head.lr", "full.lr", "shrunk.lr", "scratch.lr", "kept", "refit"} <= decisions.keys(), out.stdout
    assert ("shrunk_low.lr" in decisions) != (decisions.get("shrunk_low") == "not run"), out.stdout  # the gate
    assert decisions["kept"] in ("head", "full", "shrunk", "shrunk_low", "scratch")
    assert "from scratch with the recipe:  full.lr" in out.stdout
    assert decisions["optimizer"] == "sgd", out.stdout  # rule 4


@pytest.mark.parametrize("seed", [0, 1])
def test_article_example_keeps_fresh_weights_only_when_the_paired_test_says_so(digits_idx, seed):
    """Phase scratch (the CNN with fresh weights, AdamW, every layer at one rate) is kept exactly when its
    per-example validation losses are SCRATCH_Z standard errors below the best fine-tuned phase's; a refit then
    trains fresh weights alone, and otherwise continues the head phase."""
    out = run_example(digits_idx, "--seed", str(seed))
    decisions = dict(re.findall(r"^  (\S+) +(.+?)  \(", out.stdout, re.MULTILINE))
    assert decisions["scratch"] == "epochs 50, patience 8, / 100", out.stdout
    z, lower_by, error = map(float, re.match(r"z = (\S+) \(lower by (\S+), standard error (\S+), \d+ examples\)",
                                              decisions["scratch.gain"]).groups())
    assert z == pytest.approx(lower_by / error, rel=2e-2)  # printed to 3 digits: the paired t statistic's parts
    examples = int(re.match(r"(\d+) examples", decisions["validation"]).group(1))
    assert f"{examples} examples)" in decisions["scratch.gain"]
    if z >= 1.645:  # recipe.SCRATCH_Z
        assert decisions["kept"] == "scratch" and re.fullmatch(r"scratch \d+ epochs?", decisions["refit"]), out.stdout
    else:
        assert decisions["kept"] != "scratch" and decisions["refit"].startswith("head "), out.stdout
    if "shrunk.full_gain" in decisions:  # full was kept when shrunk ran: shrunk replaces it unless z >= FULL_Z
        full_z = float(re.match(r"z = (\S+) ", decisions["shrunk.full_gain"]).group(1))
        assert decisions["kept"] != ("shrunk" if full_z >= 1.645 else "full"), out.stdout


def test_article_example_runs_no_phase_scratch_on_a_slice_too_small_to_decide_it(digits_idx):
    out = run_example(digits_idx, "--limit", "400")
    decisions = dict(re.findall(r"^  (\S+) +(.+?)  \(", out.stdout, re.MULTILINE))
    assert decisions["validation"] == "25 examples" and decisions["scratch"] == "not run", out.stdout
    assert "the validation slice holds 25 examples, fewer than 30" in out.stdout
    assert "scratch.lr" not in decisions and decisions["kept"] != "scratch", out.stdout


def test_article_example_fine_tunes_with_adamw_when_asked(digits_idx):
    """--fine-tune-optimizer adamw runs rule 4 as it was before SGD: the range tests read AdamW's curves."""
    rates = {}
    for optimizer in ("sgd", "adamw"):
        out = run_example(digits_idx, "--fine-tune-optimizer", optimizer)
        decisions = dict(re.findall(r"^  (\S+) +(.+?)  \(", out.stdout, re.MULTILINE))
        assert decisions["optimizer"] == optimizer, out.stdout
        rates[optimizer] = float(decisions["head.lr"])
    assert rates["sgd"] != rates["adamw"], rates


@pytest.mark.parametrize("options, message", [
    (["--epochs", "3"], "--epochs 3 sets the plain SGD run's epochs: pass --recipe none"),
    (["--recipe", "sgd"], "--recipe must be auto or none, got sgd"),
    (["--seed", "x"], "--seed needs a number, got x"),
    (["--fraction", "0.3x"], "--fraction needs a number, got 0.3x"),
    (["--fraction", "2"], "--fraction must be in (0, 1], got 2"),
    (["--pretrain-epochs", "0"], "--pretrain-epochs must be >= 1, got 0"),
    (["--limit", "-5"], "--limit must be >= 0, got -5"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--threads", "-1"], "--threads must be >= 0, got -1"),
    (["--recipe", "none", "--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--fine-tune-optimizer", "adam"], "--fine-tune-optimizer must be sgd or adamw, got adam"),
    (["--recipe", "none", "--fine-tune-optimizer", "adamw"], "--fine-tune-optimizer adamw chooses the recipe's"),
])
def test_article_example_refuses_bad_options_before_it_trains(digits_idx, options, message):
    out = subprocess.run([str(bin_path("finetune_example")), "--data", str(digits_idx), *options],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == "", (out.stdout, out.stderr)
    assert out.stderr.startswith(f"error: {message}") and out.stderr.count("\n") == 1, out.stderr  # one line


def test_article_example_repeats_its_figures_for_a_seed(digits_idx):
    """The pretrained model's initial weights come from LibTorch's global generator, seeded at random in each
    process unless the program seeds it: two runs of the same command must print the same numbers."""
    def run(*seed):
        out = subprocess.run([str(bin_path("finetune_example")), "--data", str(digits_idx), "--fraction", "0.3",
                              "--recipe", "none", "--epochs", "2", "--pretrain-epochs", "3", "--threads", "1", *seed],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return re.sub(r"[\d.]+ samples/s", "", out.stdout)  # throughput is the only figure that may differ

    first = run()
    assert run() == first and run("--seed", "0") == first
    assert run("--seed", "1") != first


def test_article_example_fine_tunes_and_improves_with_plain_sgd(digits_idx):
    out = subprocess.run([str(bin_path("finetune_example")), "--data", str(digits_idx), "--fraction", "0.3",
                          "--recipe", "none", "--epochs", "15", "--pretrain-epochs", "10", "--threads", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    match = re.search(r"before fine-tuning ([\d.]+), after ([\d.]+)", out.stdout)
    assert match, out.stdout
    before, after = map(float, match.groups())
    assert before < 0.6  # the pretrained model knows only digits 0-4
    assert after > 0.85 and after > before + 0.3, out.stdout
    assert "class counts:" in out.stdout


def test_article_example_reports_missing_data(tmp_path):
    out = subprocess.run([str(bin_path("finetune_example")), "--data", str(tmp_path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and "cannot open IDX file" in out.stderr


def test_benchmark_binary_reports_throughput():
    out = subprocess.run([str(bin_path("finetune_bench")), "--steps", "20"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith(("mlp", "cnn"))]
    assert len(rows) == 5 and all(float(row[-1]) > 0 for row in rows)
