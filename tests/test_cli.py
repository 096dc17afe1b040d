"""The `finetune` command through subprocess: each command, user mistakes, overrides, run directories."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from finetune import runs
from finetune.config import TrainConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytest.importorskip("sklearn")


def finetune_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finetune", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


@pytest.fixture(scope="module")
def wine_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "wine"
    done = finetune_cli("train", str(EXAMPLES / "wine.toml"), "train.epochs=20", "model.hidden=[32]",
                        "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout
    return out


def test_train_writes_a_complete_run_directory(wine_run):
    names = sorted(p.name for p in wine_run.iterdir())
    expected = ["checkpoints", "config.toml", "history.csv", "metrics.json", "model.safetensors", "report.html",
                "tensorboard"]
    assert [n for n in names if n != "plots.png"] == expected
    config = tomllib.loads((wine_run / "config.toml").read_text())
    assert config["train"]["epochs"] == 20 and config["model"]["hidden"] == [32]  # the overrides, resolved
    assert len(config["train"]["class_weights"]) == 3  # "balanced", resolved from the data
    with open(wine_run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert 1 <= len(rows) <= 20
    assert {"epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds", "samples_per_s"} <= set(rows[0])
    metrics = json.loads((wine_run / "metrics.json").read_text())
    assert {"test", "validation", "class_counts", "samples_per_s", "environment", "seconds"} <= set(metrics)
    assert metrics["environment"]["torch"].startswith("2.13")
    assert metrics["distributed"] == {"world_size": 1, "global_batch": 16, "communication_seconds": 0.0,
                                      "allreduce_overlap": 0.0}
    assert metrics["test"]["accuracy"] > 0.8
    html = (wine_run / "report.html").read_text()
    assert "<svg" in html and f"{metrics['test']['accuracy']:.4f}" in html and "confusion matrix" in html
    assert "http" not in html.replace("http://www.w3.org/2000/svg", "")  # self-contained


def test_saved_config_round_trips(wine_run, tmp_path):
    cfg = runs.load_config(wine_run / "config.toml")  # file -> dataclass
    (tmp_path / "again.toml").write_text(runs.write_toml(cfg.to_dict()))  # dataclass -> file
    assert runs.load_config(tmp_path / "again.toml").to_dict() == cfg.to_dict()
    cpp = cfg.train.to_cpp()  # dataclass -> C++ struct
    assert [getattr(cpp, f) for f in ("epochs", "optimizer", "lr")] == [20, "adamw", 3e-3]
    assert isinstance(cfg.train, TrainConfig)


def test_evaluate_and_predict(wine_run, tmp_path):
    done = finetune_cli("evaluate", str(wine_run))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accuracy"] == pytest.approx(
        json.loads((wine_run / "metrics.json").read_text())["test"]["accuracy"])
    from finetune import datasets

    np.savez(tmp_path / "new.npz", X=datasets.load("wine").x_test[:7])
    done = finetune_cli("predict", str(wine_run), "--input", str(tmp_path / "new.npz"), "--output",
                        str(tmp_path / "p.csv"))
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and set(rows[0]) == {"prediction", "p0", "p1", "p2"}
    assert all(abs(sum(float(r[f"p{c}"]) for c in range(3)) - 1) < 1e-4 for r in rows)


def test_compare_shows_differences_and_metrics(wine_run, tmp_path):
    other = tmp_path / "wine2"
    assert finetune_cli("train", str(EXAMPLES / "wine.toml"), "train.epochs=5", "--out", str(other),
                        "--quiet").returncode == 0
    done = finetune_cli("compare", str(wine_run), str(other))
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0]
    assert "train.epochs" in header and "model.hidden" in header and "test accuracy" in header
    assert "train.lr" not in header  # only what differs


@pytest.mark.parametrize("args, message", [
    (["train", "nowhere.toml"], "config file 'nowhere.toml' does not exist"),
    (["train", str(EXAMPLES / "wine.toml"), "train.lrr=3"], "unknown key(s) ['train.lrr']"),
    (["train", str(EXAMPLES / "wine.toml"), "train.lr=-1"], "[train] lr must be a finite number > 0, got -1"),
    (["train", str(EXAMPLES / "wine.toml"), "lr=3"], "override 'lr=3' must look like section.key=value"),
    (["train", str(EXAMPLES / "wine.toml"), "data.dataset=\"cifar\""], "dataset must be one of"),
    (["train", str(EXAMPLES / "wine.toml"), "extra.x=1"], "unknown section(s) ['extra']"),
    (["evaluate", "no-such-run"], "does not exist"),
])
def test_user_mistakes_are_one_line_errors(args, message, tmp_path):
    done = finetune_cli(*args, "--out", str(tmp_path / "r")) if args[0] == "train" else finetune_cli(*args)
    assert done.returncode == 2
    assert done.stderr.startswith("finetune: error: ") and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_verbose_shows_the_traceback():
    done = finetune_cli("--verbose", "train", "nowhere.toml")
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_every_command_has_help():
    for command in ("train", "evaluate", "predict", "find-lr", "compare", "datasets", "demo"):
        done = finetune_cli(command, "--help")
        assert done.returncode == 0 and "usage: finetune" in done.stdout, command


SLOW_EXAMPLES = {"rotten-tomatoes.toml"}  # MiniLM on a CPU: minutes


@pytest.mark.parametrize("config", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_EXAMPLES else name
                                    for name in sorted(p.name for p in EXAMPLES.glob("*.toml"))])
def test_example_configs_run_as_written(config, tmp_path):
    done = finetune_cli("train", str(EXAMPLES / config), "--out", str(tmp_path / "run"), "--quiet")
    if done.returncode == 2 and "needs" in done.stderr and "install" in done.stderr:
        pytest.skip(done.stderr.strip())  # an optional data set or model package is not installed
    assert done.returncode == 0, done.stderr
    assert "run written to" in done.stdout


def test_report_renders_in_headless_chromium(wine_run, tmp_path):
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium installed")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", f"--screenshot={shot}",
                    (wine_run / "report.html").as_uri()], capture_output=True, timeout=120)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000  # a real page, not a blank one


def test_tensorboard_event_file_is_valid(wine_run):
    from finetune import tensorboard

    assert tensorboard.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    (events,) = list((wine_run / "tensorboard").glob("events.out.tfevents.*"))
    records = tensorboard.read_records(events)  # lengths and checksums verified
    with open(wine_run / "history.csv") as f:
        epochs = len(list(csv.DictReader(f)))
    assert len(records) == 1 + epochs and b"brain.Event:2" in records[0] and b"validation/accuracy" in records[1]
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return  # the format itself was checked above
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    assert len(accumulator.Scalars("train/loss")) == epochs


def test_plots_png_decodes_when_matplotlib_is_installed(wine_run):
    pytest.importorskip("matplotlib")
    image = pytest.importorskip("PIL.Image")
    with image.open(wine_run / "plots.png") as png:
        png.load()
        assert png.size[0] > 1000 and png.size[1] > 200


def test_result_plot_draws_curves(wine_run):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import finetune
    from finetune import datasets

    wine = datasets.load("wine")
    result = finetune.train("mlp", (wine.x_train, wine.y_train), val=(wine.x_test, wine.y_test), epochs=3,
                            progress=False)
    axes = result.plot()
    assert len(axes[0].lines) == 2 and len(axes[1].lines) == 1
