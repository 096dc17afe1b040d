"""The `finetune` command through subprocess: each command, user mistakes, overrides, run directories."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from finetune import data, runs
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


def _refuse(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


def test_metrics_json_writes_numbers_that_are_not_finite_as_strings():
    """A diverged loss (NaN) or a paired test with no spread (z = inf) must not make metrics.json unreadable
    to a strict parser (jq, a browser): Python's json would write NaN and Infinity bare."""
    value = {"loss": float("nan"), "gain": {"z": float("inf"), "lower_by": -float("inf")}, "history": [1.5, (2,)]}
    text = json.dumps(runs.strict_json(value))
    assert json.loads(text, parse_constant=_refuse) == {"loss": "NaN", "gain": {"z": "Infinity", "lower_by": "-Infinity"},
                                                       "history": [1.5, [2]]}


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
    metrics = json.loads((wine_run / "metrics.json").read_text(), parse_constant=_refuse)  # strict JSON
    assert {"test", "validation", "class_counts", "samples_per_s", "environment", "seconds"} <= set(metrics)
    assert metrics["environment"]["torch"].startswith("2.13")
    assert metrics["recipe"][0]["value"] == "none" and "were given in" in metrics["recipe"][0]["reason"] and \
        "(early_stopping, epochs, lr, optimizer, restore_best, weight_decay)" in metrics["recipe"][0]["reason"]
    assert metrics["distributed"] == {"world_size": 1, "global_batch": 16, "communication_seconds": 0.0,
                                      "allreduce_overlap": 0.0}
    assert metrics["test"]["accuracy"] > 0.8
    html = (wine_run / "report.html").read_text()
    assert "<svg" in html and f"{metrics['test']['accuracy']:.4f}" in html and "confusion matrix" in html
    assert "http" not in html.replace("http://www.w3.org/2000/svg", "")  # self-contained


def test_a_config_that_shapes_nothing_runs_the_recipe_and_its_config_runs_it_again(tmp_path):
    """No [train] setting that shapes the training: the run directory gets the recipe (finetune.train's default),
    its decisions in metrics.json and report.html, its phases' checkpoints with its journal, and a config.toml
    that runs the recipe again -- not the last phase's settings, which would run as given."""
    (tmp_path / "iris.toml").write_text('[data]\ndataset = "iris"\n\n[model]\nname = "mlp"\n')
    for name in ("one", "two"):
        source = tmp_path / "iris.toml" if name == "one" else tmp_path / "one" / "config.toml"
        done = finetune_cli("train", str(source), "--out", str(tmp_path / name), "--quiet")
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "one" / "checkpoints" / "recipe.json").is_file()
    assert (tmp_path / "one" / "checkpoints" / "01-full" / "latest").is_file()  # a built MLP: one phase, refit
    one, two = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("one", "two"))
    assert one["recipe"][0] == {"what": "recipe", "value": "auto",
                                "reason": "the default: no setting that shapes the training was given"}
    decided = {d["what"]: d["value"] for d in one["recipe"]}
    assert decided["kept"] == "full" and decided["full.optimizer"] == "adamw" and decided["full.label_smoothing"] == 0.1
    assert tomllib.loads((tmp_path / "one" / "config.toml").read_text())["train"] == {}
    assert two["recipe"] == one["recipe"] and two["test"] == one["test"]  # the same recipe, the same seed
    html = (tmp_path / "one" / "report.html").read_text()
    assert "what the recipe decided" in html and "full.lr" in html
    with open(tmp_path / "one" / "history.csv") as f:
        assert "phase" in next(csv.reader(f))


def test_a_shaping_key_says_where_it_was_set_and_that_the_recipe_is_off(capsys, caplog, tmp_path):
    """The file sets a neutral key (seed), an override the rate: the reason names the override alone, and the run
    says in one line that the recipe is off, with the loop defaults the rest runs at (lr alone: SGD, 10 epochs)."""
    (tmp_path / "run.toml").write_text('[data]\ndataset = "iris"\n[model]\nname = "mlp"\n[train]\nseed = 1\n')
    with caplog.at_level("WARNING", logger="finetune"):
        code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "train.lr=0.05", "--out", str(tmp_path / "r"))
    assert code == 0, err
    reason = json.loads((tmp_path / "r" / "metrics.json").read_text())["recipe"][0]["reason"]
    assert reason.startswith("settings that shape the training were given in override 'train.lr=0.05' (lr): "), reason
    assert "train.lr set in override 'train.lr=0.05': the recipe is off and the settings run as given, the rest at " \
           "the loop defaults (optimizer = 'sgd', epochs = 10, schedule = 'constant')" in caplog.text


def test_a_neutral_setting_keeps_the_recipe_and_a_shaping_one_at_any_value_runs_as_given(tmp_path):
    """A key the file sets counts as given at any value, as a keyword to train() does: lr = 0.01 is the default's
    value and still runs the settings as given (with checkpoints); seed = 1 shapes nothing and keeps the recipe,
    written back to config.toml. compare shows what the recipe chose ("(recipe: 0.0067)"), not the defaults."""
    base = '[data]\ndataset = "iris"\n\n[model]\nname = "mlp"\n\n[train]\n'
    for name, line in (("given", "lr = 0.01\n"), ("neutral", "seed = 1\n")):
        (tmp_path / f"{name}.toml").write_text(base + line)
        done = finetune_cli("train", str(tmp_path / f"{name}.toml"), "--out", str(tmp_path / name), "--quiet")
        assert done.returncode == 0, done.stderr
    given, neutral = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("given", "neutral"))
    assert given["recipe"][0]["value"] == "none" and any((tmp_path / "given" / "checkpoints").iterdir())
    assert neutral["recipe"][0]["value"] == "auto" and (tmp_path / "neutral" / "checkpoints" / "recipe.json").exists()
    assert tomllib.loads((tmp_path / "neutral" / "config.toml").read_text())["train"] == {"seed": 1}
    table = runs.compare([tmp_path / "given", tmp_path / "neutral"])
    row = dict(zip(table[0], table[2]))
    decided = {d["what"]: d["value"] for d in neutral["recipe"]}
    kept = decided["kept"]
    # what the kept phase ran with, its epochs the refit's
    assert row["recipe"] == "auto" and row["train.seed"] == "1"  # words bare, as trials.csv writes them
    assert row["train.optimizer"] == f'(recipe: {decided[kept + ".optimizer"]})'
    rate = float(f"{decided[kept + '.lr']:.3g}")
    assert row["train.lr"] == f'(recipe: {rate})'
    assert row["train.epochs"] == f'(recipe: {decided["refit"]["epochs"][0]})'
    assert dict(zip(table[0], table[1]))["train.optimizer"] == "sgd"
    assert all(not row.get(k, "").startswith('(recipe') for k in ("train.task", "train.device"))  # never decided
    assert row["train.class_weights"] == "(recipe: none)"  # decided without a phase's prefix; None as none
    assert "train.beta2" not in table[0] and "train.gamma" not in table[0]  # no run gave them, no recipe said


def test_charts_leave_gaps_where_the_recipes_phases_logged_nothing(tmp_path):
    """The recipe's history: phases with validation columns, a refit without, a head fit with no rate. The report's
    charts, plots.png and Result.plot draw what there is (Result.plot raised a KeyError on the refit's rows)."""
    from finetune import report
    from finetune.training import Result

    history = [{"epoch": 0, "train_loss": 0.9, "lr": 0.0, "val_loss": 0.8, "val_accuracy": 0.5, "phase": 0},
               {"epoch": 1, "train_loss": 0.7, "lr": 1e-3, "val_loss": 0.6, "val_accuracy": 0.7, "phase": 1},
               {"epoch": 2, "train_loss": 0.6, "lr": 0.0, "phase": 2},
               {"epoch": 3, "train_loss": 0.5, "lr": 1e-3, "val_loss": 0.5, "val_accuracy": 0.8, "phase": 3}]
    values = report.series(history, "val_loss")
    assert values[:2] == [0.8, 0.6] and np.isnan(values[2]) and values[3] == 0.5
    assert report._chart("loss", {"v": values}).count("<polyline") == 2  # the gap splits the line
    assert report._chart("lr", {"lr": report.series(history, "lr")}, log_y=True).count("<polyline") == 2
    metrics = {"test": {"accuracy": 0.9}, "validation": {}, "data": "d", "train_size": 3, "class_counts": {},
               "best_epoch": None, "steps": 3, "seconds": 1.0, "samples_per_s": 1.0, "environment": {},
               "recipe": [{"what": "kept", "value": "full", "reason": "the lowest validation loss"}]}
    html = report.html({"model": {"name": "mlp"}}, history, metrics)
    assert html.count("<svg") == 4 and "the lowest validation loss" in html  # loss, accuracy, rate, phase
    assert "each phase&#x27;s: see Recipe" in html and ">None<" not in html  # a recipe run's best epochs: its phases'
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    assert report.plots_png(str(tmp_path / "plots.png"), history, metrics)
    Result(model=None, history=history, metrics={}, config=TrainConfig(), class_counts={}, train_size=3, steps=3,
           seconds=1.0).plot()


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

    split = datasets.load("wine")
    np.savez(tmp_path / "new.npz", X=(split.x_test * split.x_scale[1] + split.x_scale[0])[:7])  # as sklearn ships
    done = finetune_cli("predict", str(wine_run), "--input", str(tmp_path / "new.npz"), "--output",
                        str(tmp_path / "p.csv"))
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and set(rows[0]) == {"prediction", "p0", "p1", "p2"}
    assert all(abs(sum(float(r[f"p{c}"]) for c in range(3)) - 1) < 1e-4 for r in rows)


def test_a_csv_run_remembers_its_columns_for_predict(capsys, tmp_path):
    """A model trained on a CSV file keeps its feature columns: new rows whose columns moved or went missing are one
    error naming the column (they once fed each input another feature: other predictions, no error), in the CLI and
    in Python after finetune.load; the same columns in the same order predict as before."""
    import pandas as pd

    import finetune

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 3))
    frame = pd.DataFrame({"age": x[:, 0], "bmi": x[:, 1], "glu": x[:, 2], "type": (x[:, 0] > 0).astype(int)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "t.csv"}"\nlabel = "type"\n[model]\nname = "mlp"\n'
                                       "[train]\nepochs = 2\n")
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0, err
    new = frame.drop(columns="type")[:5]
    new.to_csv(tmp_path / "same.csv", index=False)
    assert run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "same.csv"), "--output",
                    str(tmp_path / "same_p.csv"))[0] == 0
    new[new.columns[::-1]].to_csv(tmp_path / "moved.csv", index=False)
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "moved.csv"), "--output",
                         str(tmp_path / "p.csv"))
    assert_one_line_error(code, err, "moved.csv's columns are in another order than in training ('glu' at position 0, "
                          "where training had 'age'): write its columns in the training order ['age', 'bmi', 'glu']")
    new.drop(columns="bmi").to_csv(tmp_path / "fewer.csv", index=False)
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "fewer.csv"), "--output",
                         str(tmp_path / "p.csv"))
    assert_one_line_error(code, err, "fewer.csv's columns differ from the ones the model was trained on: missing ['bmi']")
    model = finetune.load(tmp_path / "r" / "model.safetensors")
    with open(tmp_path / "same_p.csv") as f:
        assert finetune.predict(model, new).tolist() == [int(row["prediction"]) for row in csv.DictReader(f)]
    with pytest.raises(ValueError, match=r"X's columns are in another order than in training"):
        finetune.predict(model, new[new.columns[::-1]])
    # --keep: an id column (not a feature: not read, quoted where it holds a comma) and a feature, copied first
    new.assign(id=[f"p{i}, a" for i in range(5)])[["id", "age", "bmi", "glu"]].to_csv(tmp_path / "ids.csv", index=False)
    assert run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "ids.csv"), "--output",
                    str(tmp_path / "ids_p.csv"), "--keep", "id", "age")[0] == 0
    kept = pd.read_csv(tmp_path / "ids_p.csv")
    assert list(kept.columns[:3]) == ["id", "age", "prediction"] and kept["id"].tolist()[1] == "p1, a"
    np.testing.assert_allclose(kept["age"], new["age"], rtol=1e-6)
    # --output never overwrites the data or the run: the input, the training file, the model, its metrics
    before = {p: p.read_bytes() for p in (tmp_path / "same.csv", tmp_path / "t.csv", tmp_path / "r" / "model.safetensors",
                                          tmp_path / "r" / "metrics.json")}
    for target, said in ((tmp_path / "same.csv", "is the --input file"), (tmp_path / "t.csv", "is the run's training data"),
                         (tmp_path / "r" / "model.safetensors", "is a file of the run directory"),
                         (tmp_path / "r" / "metrics.json", "is a file of the run directory")):
        code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "same.csv"), "--output",
                             str(target))
        assert_one_line_error(code, err, f"--output '{target}' {said}")
    assert all(p.read_bytes() == data for p, data in before.items())
    assert run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "same.csv"), "--output",
                    str(tmp_path / "r" / "predictions.csv"))[0] == 0  # a new file beside the run's is the user's
    assert kept.drop(columns=["id", "age"]).equals(pd.read_csv(tmp_path / "same_p.csv"))
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "ids.csv"), "--output",
                         str(tmp_path / "p.csv"), "--keep", "ids")
    assert_one_line_error(code, err, "--keep 'ids' is not a column of", "(did you mean 'id'?)")


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
    (["train", str(EXAMPLES / "wine.toml"), "train.lrr=3"],
     "unknown key(s) ['train.lrr'] (did you mean 'lr'?) in override 'train.lrr=3'"),
    (["train", str(EXAMPLES / "wine.toml"), "model.hiden=[4]"],
     "unknown option(s) ['model.hiden'] (did you mean 'hidden'?) for model 'mlp' in override 'model.hiden=[4]'"),
    (["train", str(EXAMPLES / "wine.toml"), "data.test_fractoin=0.3"],
     "unknown key 'data.test_fractoin' (did you mean 'test_fraction'?) in override 'data.test_fractoin=0.3'"),
    (["train", str(EXAMPLES / "wine.toml"), 'train.recipe="none"'],
     "train.recipe in override 'train.recipe=\"none\"' is not a setting: a run gets recipe='auto' unless its [train] "
     "table sets one that shapes the training"),
    (["train", str(EXAMPLES / "wine.toml"), "train.lr=-1"], "[train] lr must be a finite number > 0, got -1"),
    (["train", str(EXAMPLES / "wine.toml"), "lr=3"], "override 'lr=3' must look like section.key=value"),
    (["train", str(EXAMPLES / "wine.toml"), "data.dataset=\"cifar\""], "dataset must be one of"),
    (["train", str(EXAMPLES / "wine.toml"), "extra.x=1"], "unknown section(s) ['extra']"),
    (["evaluate", "no-such-run"], "does not exist"),
    (["compare", "no-such-run", "nor-this"], "'no-such-run' is not a finished run directory (no config.toml and "
     "metrics.json: it does not exist)"),
    (["train", str(EXAMPLES / "wine.toml"), "train.task=\"regression\""],
     "train.task='regression' does not fit dataset 'wine', a classification set"),
])
def test_user_mistakes_are_one_line_errors(args, message, tmp_path):
    done = finetune_cli(*args, "--out", str(tmp_path / "r")) if args[0] == "train" else finetune_cli(*args)
    assert done.returncode == 2
    assert done.stderr.startswith("finetune: error: ") and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_csv_whose_label_looks_like_a_quantity_needs_train_task(tmp_path):
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    np.savetxt(tmp_path / "diabetes.csv", np.column_stack([d.data, d.target]), delimiter=",", comments="",
               header=",".join([f"x{i}" for i in range(10)] + ["progression"]))
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "diabetes.csv"}"\nlabel = "progression"\n'
                                       '[model]\nname = "mlp"\n')
    done = finetune_cli("train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and "pass train.task='regression'" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    # train.task = "classification" said: find-lr takes the values as classes (it once checked them again)
    (tmp_path / "run.toml").write_text((tmp_path / "run.toml").read_text() + '[train]\ntask = "classification"\n')
    done = finetune_cli("find-lr", str(tmp_path / "run.toml"))
    assert done.returncode == 0, done.stderr


def test_verbose_shows_the_traceback():
    done = finetune_cli("--verbose", "train", "nowhere.toml")
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_version_is_the_installed_package_metadata():
    import importlib.metadata

    import finetune

    assert finetune.__version__ == importlib.metadata.version("finetune")


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


def read_events(path: Path, partial: bool = False) -> list:
    """The Event protos of a TensorBoard event file, each record's length and data checksums verified (with
    `partial`, a last record still being written is left out)."""
    import struct

    pytest.importorskip("tensorboardX")
    from tensorboardX.crc32c import crc32c
    from tensorboardX.proto.event_pb2 import Event

    def masked(data: bytes) -> int:
        crc = crc32c(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    data, events, offset = path.read_bytes(), [], 0
    while offset < len(data):
        header = data[offset:offset + 8]
        if partial and (len(header) < 8 or offset + 16 + struct.unpack("<Q", header)[0] > len(data)):
            break
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[offset + 8:offset + 12])[0] == masked(header), f"length checksum at {offset}"
        body = data[offset + 12:offset + 12 + length]
        assert struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])[0] == masked(body), offset
        events.append(Event.FromString(body))
        offset += 16 + length
    return events


def scalars(events: list) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for event in events:
        for value in event.summary.value:
            out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_event_file_is_valid(wine_run):
    (events_file,) = list((wine_run / "tensorboard").glob("events.out.tfevents.*"))
    events = read_events(events_file)
    with open(wine_run / "history.csv") as f:
        history = list(csv.DictReader(f))
    assert events[0].file_version == "brain.Event:2"
    curves = scalars(events)
    assert [step for step, _ in curves["train/loss"]] == list(range(1, len(history) + 1))
    assert [v for _, v in curves["validation/accuracy"]] == pytest.approx(
        [float(row["val_accuracy"]) for row in history], rel=1e-6)
    assert {"lr", "seconds", "samples_per_s", "validation/loss"} <= set(curves)
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return  # the format itself was checked above
    accumulator = EventAccumulator(str(events_file.parent))
    accumulator.Reload()
    assert len(accumulator.Scalars("train/loss")) == len(history)


def test_tensorboard_events_are_written_as_each_epoch_ends(tmp_path):
    pytest.importorskip("tensorboardX")
    cfg = runs.load_config(EXAMPLES / "wine.toml", ["train.epochs=3", "train.early_stopping=0"])
    seen: list[list[int]] = []

    def callback(kind, info):
        if kind != "epoch":
            return
        # the run logged this epoch before calling this callback; its writer thread puts it on disk within ~1 s
        (events_file,) = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
        deadline = time.monotonic() + 20
        while True:
            steps = [step for step, _ in scalars(read_events(events_file, partial=True)).get("train/loss", [])]
            if steps and steps[-1] == info["epoch"] + 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        seen.append(steps)

    runs.run(cfg, tmp_path / "run", quiet=True, callback=callback)
    assert seen == [[1], [1, 2], [1, 2, 3]]  # live: each epoch on disk as it ends, not all of them at the end
    events = read_events(next((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*")))
    times = [e.wall_time for e in events if e.summary.value]
    assert times == sorted(times) and times[0] < times[-1]  # each epoch at its own time


def test_without_tensorboardx_a_run_skips_events_and_an_explicit_request_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed: importing it raises ImportError
    cfg = runs.load_config(EXAMPLES / "wine.toml", ["train.epochs=1"])
    with pytest.raises(ImportError, match=r"need tensorboardX: pip install tensorboardX"):
        runs.run(cfg, tmp_path / "asked", quiet=True, tensorboard=True)
    assert not (tmp_path / "asked").exists()  # refused before any work
    runs.run(cfg, tmp_path / "run", quiet=True)
    assert (tmp_path / "run" / "metrics.json").is_file() and not (tmp_path / "run" / "tensorboard").exists()


def test_the_plotted_metric_is_accuracy_or_r2_and_none_without_validation():
    from finetune import report

    assert report.plotted_metric([{"epoch": 0, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5,
                                   "val_top5_accuracy": 0.9}]) == "val_accuracy"
    assert report.plotted_metric([{"epoch": 0, "train_loss": 1.0, "val_rmse": 2.0, "val_r2": 0.1}]) == "val_r2"
    assert report.plotted_metric([{"epoch": 0, "train_loss": 1.0}]) is None
    assert report.plotted_metric([]) is None


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
    assert len(axes[0].lines) == 2 and len(axes[1].lines) == 1 and axes[1].get_visible()
    alone = finetune.train("mlp", (wine.x_train, wine.y_train), epochs=2, progress=False).plot()
    assert len(alone[0].lines) == 1 and not alone[1].get_visible()  # no validation: no empty second panel


# --- config mistakes: each exits 2 with one line naming the key, the value and the file ---------------------

def run_main(capsys, *args: str) -> tuple[int, str]:
    """`finetune ARGS` in this process (no interpreter start-up): (exit status, stderr)."""
    from finetune.__main__ import main

    code = main(list(args))
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, stderr: str, *fragments: str) -> None:
    assert code == 2, stderr
    assert stderr.startswith("finetune: error: ") and len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, (fragment, stderr)


def test_an_unknown_model_lists_the_models_not_the_train_settings(capsys, tmp_path):
    code, err = run_main(capsys, "train", str(EXAMPLES / "digits.toml"), 'model.name="resnet"',
                         "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "model.name = 'resnet'", "['cnn', 'digit_cnn', 'mf', 'minilm', 'mlp', 'ncf']")
    assert "epochs" not in err and "settings" not in err
    assert runs.model_names() == ["cnn", "digit_cnn", "mf", "minilm", "mlp", "ncf"]


def test_an_unknown_model_option_lists_that_models_options(capsys, tmp_path):
    code, err = run_main(capsys, "train", str(EXAMPLES / "wine.toml"), "model.foo=1", "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "unknown option(s) ['model.foo'] for model 'mlp'",
                          str(runs.model_options("mlp")))
    assert {"hidden", "dropout", "in_features", "num_classes"} <= set(runs.model_options("mlp"))
    assert "epochs" not in err
    code, err = run_main(capsys, "train", str(EXAMPLES / "digits.toml"), 'model.name="minilm"', "--out",
                         str(tmp_path / "r"))  # digits.toml's channels and hidden are not MiniLM options
    assert_one_line_error(code, err, "unknown option(s) ['model.channels', 'model.hidden'] for model 'minilm'",
                          "['dropout', 'layers', 'max_length', 'normalize', 'num_classes']")


def test_a_model_option_of_the_wrong_type_is_named(capsys, tmp_path):
    code, err = run_main(capsys, "train", str(EXAMPLES / "wine.toml"), 'model.hidden="wide"', "--out",
                         str(tmp_path / "r"))
    assert_one_line_error(code, err, "model.hidden = 'wide' in override 'model.hidden=\"wide\"'",
                          "wrong type for model 'mlp'")


@pytest.mark.parametrize("toml, fragments", [
    ('data = 5\n[model]\nname = "mlp"\n', ["data = 5", "must be a table", "an integer"]),
    ('model = "cnn"\n[data]\ndataset = "wine"\n', ["model = 'cnn'", "must be a table", "a string"]),
    ('train = [1, 2]\n[data]\ndataset = "wine"\n', ["train = [1, 2]", "must be a table"]),
    ('tune = 3\n[data]\ndataset = "wine"\n', ["tune = 3", "must be a table"]),
    ('[data]\ndataset = "wine"\nseed = -1\n', ["data.seed must be an integer >= 0", "got -1"]),
    ('[data]\ndataset = "wine"\nval_fraction = "half"\n', ["data.val_fraction must be a number", "'half'"]),
    ('[data]\npath = "x.csv"\nencoding_errors = "skip"\n', ["data.encoding_errors must be one of", "'skip'"]),
    ('[data]\npath = "x.csv"\nencoding = "klingon"\n', ["data.encoding must be a text encoding", "'klingon'"]),
])
def test_config_tables_and_data_values_are_checked(capsys, tmp_path, toml, fragments):
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    code, err = run_main(capsys, "train", str(config), "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, str(config), *fragments)


def test_an_override_of_a_whole_section_is_named(capsys, tmp_path):
    code, err = run_main(capsys, "train", str(EXAMPLES / "wine.toml"), "data=5", "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "override 'data=5'", "[data]", "data.KEY=VALUE")


@pytest.mark.parametrize("value", ["0", "1", "-0.1", "true"])
def test_val_fraction_out_of_range_names_val_fraction(capsys, tmp_path, value):
    code, err = run_main(capsys, "train", str(EXAMPLES / "wine.toml"), f"data.val_fraction={value}", "--out",
                         str(tmp_path / "r"))
    assert_one_line_error(code, err, "data.val_fraction must be a number between 0 and 1")
    assert "test_fraction" not in err


def test_a_val_fraction_that_leaves_no_training_rows_says_so(capsys, tmp_path):
    code, err = run_main(capsys, "train", str(EXAMPLES / "wine.toml"), "data.val_fraction=0.999", "--out",
                         str(tmp_path / "r"))
    assert_one_line_error(code, err, "data.val_fraction = 0.999 in override 'data.val_fraction=0.999'",
                          "leaves no training rows", "validation")  # the override named, not the file
    code, err = run_main(capsys, "train", str(EXAMPLES / "wine.toml"), "data.val_fraction=0.001", "--out",
                         str(tmp_path / "r"))
    assert_one_line_error(code, err, "data.val_fraction = 0.001", "leaves no validation rows")
    (tmp_path / "d.csv").write_text("a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(10)))
    (tmp_path / "d.toml").write_text(f'[data]\npath = "{tmp_path / "d.csv"}"\ntest_fraction = 0.99\n')
    code, err = run_main(capsys, "find-lr", str(tmp_path / "d.toml"))  # a file's test split: test_fraction
    assert_one_line_error(code, err, "data.test_fraction = 0.99", "leaves no training rows", "d.csv")
    (tmp_path / "one.csv").write_text("a,label\n1,0\n")
    (tmp_path / "one.toml").write_text(f'[data]\npath = "{tmp_path / "one.csv"}"\n')
    code, err = run_main(capsys, "find-lr", str(tmp_path / "one.toml"))  # the default's, not the file's
    assert_one_line_error(code, err, f"data.test_fraction = 0.2 (the default; {tmp_path / 'one.toml'} sets none) "
                          "leaves no test rows (of 1 rows of")


def test_a_files_test_split_is_test_fraction_and_validation_val_fraction(capsys, tmp_path):
    """data.val_fraction holds out validation rows alone (it once cut a file's test split too); test_fraction
    cuts the file's test split, and is an error beside a built-in set, which has its own."""
    from finetune import runs

    (tmp_path / "d.csv").write_text("a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(200)))
    (tmp_path / "d.toml").write_text(f'[data]\npath = "{tmp_path / "d.csv"}"\nval_fraction = 0.25\n')
    split = runs.load_data(runs.load_config(tmp_path / "d.toml", []))
    assert len(split.y_test) == 40  # 20% of 200, whatever val_fraction
    split = runs.load_data(runs.load_config(tmp_path / "d.toml", ["data.test_fraction=0.3"]))
    assert len(split.y_test) == 60
    code, err = run_main(capsys, "train", str(EXAMPLES / "wine.toml"), "data.test_fraction=0.3", "--out",
                         str(tmp_path / "r"))
    assert_one_line_error(code, err, "data.test_fraction = 0.3", "dataset 'wine' comes with its own test split")
    # A run directory records the file's test split; one written before test_fraction was split by val_fraction.
    assert run_main(capsys, "train", str(tmp_path / "d.toml"), "--quiet", "--out", str(tmp_path / "run"),
                    "train.epochs=1")[0] == 0
    written = tomllib.loads((tmp_path / "run" / "config.toml").read_text())["data"]
    assert written["test_fraction"] == 0.2 and written["val_fraction"] == 0.25
    (tmp_path / "run" / "config.toml").write_text(
        (tmp_path / "run" / "config.toml").read_text().replace("test_fraction = 0.2\n", ""))
    assert runs.load_run(tmp_path / "run")[0].data["test_fraction"] == 0.25


def test_test_fraction_0_trains_on_every_row_and_evaluate_then_needs_input(capsys, tmp_path):
    """data.test_fraction = 0: no test split, every row of the file trains (the recipe still holds out its own
    slice, and refits on it); metrics.json's test is empty, evaluate without --input says why, with --input scores
    the new rows. Below 0 is still an error."""
    (tmp_path / "d.csv").write_text("a,b,label\n" + "".join(f"{i % 7},{i % 5},{int(i % 7 > 3)}\n" for i in range(120)))
    (tmp_path / "d.toml").write_text(f'[data]\npath = "{tmp_path / "d.csv"}"\ntest_fraction = 0\n')
    split = runs.load_data(runs.load_config(tmp_path / "d.toml"))
    assert len(split.y_train) == 120 and len(split.y_test) == 0
    from finetune.__main__ import main

    assert main(["train", str(tmp_path / "d.toml"), "--out", str(tmp_path / "r")]) == 0
    assert "no test split (data.test_fraction = 0: every row trained)" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["test"] == {} and metrics["train_size"] == 120 and metrics["validation"]  # refit on all 120
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"))
    assert_one_line_error(code, err, "trained on every row of", "(data.test_fraction = 0): it has no test split to "
                          "score; pass --input with new labelled rows")
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "d.csv"))
    assert code == 0, err
    assert main(["train", str(tmp_path / "d.toml"), "train.seed=1", "--out", str(tmp_path / "r1"), "--quiet"]) == 0
    table = runs.compare([tmp_path / "r", tmp_path / "r1"])  # no test metrics: the validation slice's, so named
    assert "validation accuracy" in table[0] and not any(h.startswith("test ") for h in table[0])
    assert dict(zip(table[0], table[1]))["validation accuracy"] == f"{metrics['validation']['accuracy']:.4f}"
    code, err = run_main(capsys, "train", str(tmp_path / "d.toml"), "data.test_fraction=-0.1", "--out",
                         str(tmp_path / "bad"))
    assert_one_line_error(code, err, "data.test_fraction must be a number between 0 and 1", "0 for none")
    code, err = run_main(capsys, "train", str(tmp_path / "d.toml"), "data.label=nope", "--out", str(tmp_path / "bad"))
    assert_one_line_error(code, err, "has no label column 'nope'")
    assert not (tmp_path / "bad").exists()  # a run that fails on its data leaves no empty run directory behind
    code, err = run_main(capsys, "train", str(tmp_path / "d.toml"), "train.epochs=five", "--out", str(tmp_path / "bad"))
    assert_one_line_error(code, err, "override 'train.epochs=five': [train] epochs must be int")  # not the file


def test_config_files_that_cannot_be_read_are_one_line_errors(capsys, tmp_path):
    (tmp_path / "latin.toml").write_bytes(b'[data]\ndataset = "wine"\n# caf\xe9\n')
    code, err = run_main(capsys, "train", str(tmp_path / "latin.toml"))
    assert_one_line_error(code, err, "latin.toml' is not UTF-8 text (line 3")
    code, err = run_main(capsys, "train", str(tmp_path))
    assert_one_line_error(code, err, "is a directory")
    (tmp_path / "broken.toml").write_text("[data\n")
    code, err = run_main(capsys, "train", str(tmp_path / "broken.toml"))
    assert_one_line_error(code, err, "is not valid TOML")
    (tmp_path / "file").write_text("")
    code, err = run_main(capsys, "train", str(EXAMPLES / "wine.toml"), "train.epochs=1", "--out",
                         str(tmp_path / "file" / "run"), "--quiet")  # a run directory that cannot be made
    assert_one_line_error(code, err, "file")


def test_yaml_configs_that_cannot_be_read_are_one_line_errors(capsys, tmp_path):
    pytest.importorskip("yaml")
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    code, err = run_main(capsys, "train", str(tmp_path / "bad.yaml"))
    assert_one_line_error(code, err, "bad.yaml' is not valid YAML")
    (tmp_path / "list.yaml").write_text("- data\n- model\n")
    code, err = run_main(capsys, "train", str(tmp_path / "list.yaml"))
    assert_one_line_error(code, err, "list.yaml' must hold the tables")


def test_train_help_describes_the_config_and_lists_the_models():
    from finetune.__main__ import CONFIG_HELP

    assert f"name = one of {', '.join(runs.model_names())}," in CONFIG_HELP
    done = finetune_cli("train", "--help")
    assert done.returncode == 0 and "[model]" in done.stdout and "minilm" in done.stdout


# --- finetune example / bench: options after the command go to the C++ program ----------------------------

@pytest.fixture
def fake_programs(tmp_path, monkeypatch):
    """finetune_example and finetune_bench stand-ins that print the arguments they were given."""
    import finetune.__main__ as cli

    for program in ("finetune_example", "finetune_bench"):
        path = tmp_path / program
        path.write_text(f'#!/bin/sh\necho "{program} got: $*"\n')
        path.chmod(0o755)
    monkeypatch.setattr(cli, "program_dirs", lambda: [tmp_path])
    return tmp_path


@pytest.mark.parametrize("args", [["bench", "--threads", "1"], ["--verbose", "bench", "--threads", "1"],
                                  ["example", "--threads", "2", "--data", "DIR"],
                                  ["example", "--data", "DIR", "--fraction", "0.1", "--epochs", "3"]])
def test_program_options_pass_through_unchanged(fake_programs, capfd, args):
    from finetune.__main__ import main

    assert main(args) == 0
    command = args[args.index("bench") if "bench" in args else args.index("example")]
    passed = args[args.index(command) + 1:]
    assert capfd.readouterr().out == f"finetune_{command} got: {' '.join(passed)}\n"


def test_example_without_data_names_the_package_to_install(fake_programs, capfd, monkeypatch):
    from finetune import datasets
    from finetune.__main__ import main

    monkeypatch.setattr(datasets, "FASHION_MNIST", fake_programs / "no-such-folder")
    code = main(["example", "--threads", "2"])
    err = capfd.readouterr().err
    assert_one_line_error(code, err, "apt-get install dataset-fashion-mnist", "--data DIR")


def test_a_program_that_is_not_built_is_a_one_line_error(tmp_path, monkeypatch, capfd):
    import finetune.__main__ as cli

    monkeypatch.setattr(cli, "program_dirs", lambda: [tmp_path])
    code = cli.main(["bench", "--threads", "1"])
    assert_one_line_error(code, capfd.readouterr().err, "C++ program finetune_bench is not built", "pip install .")


def test_program_help_needs_no_program(tmp_path, monkeypatch, capsys):
    import finetune.__main__ as cli

    monkeypatch.setattr(cli, "program_dirs", lambda: [tmp_path])
    assert cli.main(["bench", "--help"]) == 0
    assert "usage: finetune bench [--threads N] [--steps N]" in capsys.readouterr().out
    assert cli.main(["example", "-h"]) == 0 and "--pretrain-epochs N" in capsys.readouterr().out


def test_bench_runs_the_built_program_with_its_options():
    from finetune.__main__ import bin_path

    assert bin_path("finetune_bench") is not None  # every install builds the C++ programs (CMakeLists.txt)
    done = finetune_cli("bench", "--threads", "1", "--steps", "5")
    assert done.returncode == 0, done.stderr
    assert len([line for line in done.stdout.splitlines() if line.startswith(("mlp", "cnn"))]) == 5


# --- data files that are not UTF-8 -------------------------------------------------------------------------

LATIN1_ROWS = {  # loader -> (file text, keyword arguments); the third line holds "café" in Latin-1
    "load_text_csv": ("text,label\ngood,pos\ncaf\xe9 ok,neg\n", {}),
    "load_ratings": ("user,item,rating\nann,m1,4\ncaf\xe9,m2,3\n", {}),
    "load_file": ("a,label\n1,0\n2\xe9,1\n", {}),
}


@pytest.mark.parametrize("loader", sorted(LATIN1_ROWS))
@pytest.mark.parametrize("gz", [False, True])
def test_loaders_name_the_file_and_row_of_bytes_that_are_not_utf8(tmp_path, loader, gz):
    import gzip

    from finetune import datasets

    text, kwargs = LATIN1_ROWS[loader]
    path = tmp_path / ("t.csv.gz" if gz else "t.csv")
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(text.encode("latin-1"))
    with pytest.raises(ValueError, match=r"t\.csv(\.gz)?' row 3: byte\(s\) b'\\xe9' \(line 3, byte \d\) are not "
                                         r"valid utf-8 text .*encoding='latin-1'.*errors='replace'") as caught:
        getattr(datasets, loader)(path, **kwargs)
    assert not isinstance(caught.value, UnicodeDecodeError)


def test_loaders_read_other_encodings_and_replace_or_ignore_bad_bytes(tmp_path):
    from finetune import datasets

    path = tmp_path / "t.csv"
    path.write_bytes("text,label\ngood,pos\ncaf\xe9 ok,neg\n".encode("latin-1"))
    assert datasets.load_text_csv(path, encoding="latin-1")[0].tolist() == ["good", "café ok"]
    assert datasets.load_text_csv(path, errors="replace")[0].tolist() == ["good", "caf\ufffd ok"]
    assert datasets.load_text_csv(path, errors="ignore")[0].tolist() == ["good", "caf ok"]
    ratings = tmp_path / "r.csv"
    ratings.write_bytes("user,item,rating\nann,m1,4\ncaf\xe9,m2,3\n".encode("cp1252"))
    assert set(datasets.load_ratings(ratings, encoding="cp1252")[2]) == {"ann", "café"}
    assert set(datasets.load_ratings(ratings, errors="ignore")[2]) == {"ann", "caf"}
    numbers = tmp_path / "n.csv"
    numbers.write_bytes(b"\xef\xbb\xbfa,label\n1,0\n2,1\n")  # a UTF-8 byte-order mark is skipped, as pandas does
    assert datasets.load_file(numbers)[1].tolist() == [0, 1]
    numbers.write_bytes("a,label\n1,0\n2\xa0,1\n".encode("latin-1"))  # a no-break space, dropped
    assert datasets.load_file(numbers, errors="ignore")[0].tolist() == [[1.0], [2.0]]
    numbers.write_bytes("a,label\n1,0\n\xe9,1\n".encode("latin-1"))  # replaced: then not a number, named
    with pytest.raises(ValueError, match=r"n\.csv' row 3, column 'a': '\ufffd' is not a number$"):
        datasets.load_file(numbers, errors="replace")
    for loader in (datasets.load_file, datasets.load_ratings, datasets.load_text_csv):
        with pytest.raises(ValueError, match=r"errors must be one of \['strict', 'replace', 'ignore'\], got 'skip'"):
            loader(path, errors="skip")
        with pytest.raises(ValueError, match=r"encoding 'klingon' is not a known codec"):
            loader(path, encoding="klingon")


def test_a_run_config_reads_a_csv_in_its_encoding(capsys, tmp_path):
    rows = "".join(f"{i % 7}.5,{i % 3},{i % 2}\n" for i in range(40))
    (tmp_path / "d.csv").write_bytes(("x,caf\xe9,label\n" + rows).encode("latin-1"))
    (tmp_path / "d.toml").write_text(f'[data]\npath = "{tmp_path / "d.csv"}"\n')
    code, err = run_main(capsys, "find-lr", str(tmp_path / "d.toml"), "--steps", "5")
    assert_one_line_error(code, err, "d.csv' row 1: byte(s) b'\\xe9'")
    cfg = runs.load_config(tmp_path / "d.toml", ['data.encoding="latin-1"'])
    split = runs.load_data(cfg)
    assert split.x_train.shape[1] == 2 and len(split.y_train) + len(split.y_test) == 40



def test_ctrl_c_in_train_says_how_to_resume(capsys, tmp_path, monkeypatch):
    """Ctrl-C ends `finetune train` with status 130 and one line naming --resume and the run directory."""
    from finetune.__main__ import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "run", interrupted)
    code = main(["train", str(EXAMPLES / "wine.toml"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 130 and err == (f"finetune: interrupted; the same command with --resume continues it from its "
                                   f"checkpoints in {tmp_path / 'r'}")
    assert main(["train", str(EXAMPLES / "wine.toml"), "--out", str(tmp_path / "r"), "--resume"]) == 130
    assert capsys.readouterr().err.strip() == "finetune: interrupted"

def test_an_interrupted_run_directory_resumes_with_resume_and_is_not_overwritten_without(tmp_path):
    """A recipe run directory stopped by Ctrl-C (its checkpoints written, no metrics.json): a new run there is a
    one-line error saying --resume continues it; `finetune train --resume` ends with the model of the run never
    stopped, bit for bit, and the same test metrics. A finished run's directory is simply run again."""
    from finetune import checkpoint

    (tmp_path / "digits.toml").write_text('[data]\ndataset = "digits"\n\n[model]\nname = "mlp"\n')
    cfg = runs.load_config(str(tmp_path / "digits.toml"), [])
    whole = runs.run(cfg, tmp_path / "whole", quiet=True)

    def stop(kind, info):
        if kind == "step" and info["step"] >= 300:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.run(cfg, tmp_path / "stopped", quiet=True, callback=stop)
    assert not (tmp_path / "stopped" / "metrics.json").exists()
    again = finetune_cli("train", str(tmp_path / "digits.toml"), "--out", str(tmp_path / "stopped"), "--quiet")
    assert again.returncode == 2 and "holds an interrupted run" in again.stderr and "--resume" in again.stderr
    resumed = finetune_cli("train", str(tmp_path / "digits.toml"), "--out", str(tmp_path / "stopped"), "--quiet",
                           "--resume")
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert metrics["test"] == whole["test"] and metrics["recipe"][1:] == whole["recipe"][1:]
    a, b = (checkpoint.load_tensors(tmp_path / n / "model.safetensors")[0] for n in ("whole", "stopped"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(tmp_path / "stopped" / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == len(whole_history(tmp_path / "whole"))
    # A new run into a finished run's directory that fails before its first checkpoint leaves the run as it was.
    bad = finetune_cli("train", str(tmp_path / "digits.toml"), "--out", str(tmp_path / "stopped"), "--quiet",
                       'train.freeze=["no_such_layer"]')
    assert bad.returncode == 2 and "no_such_layer" in bad.stderr
    assert json.loads((tmp_path / "stopped" / "metrics.json").read_text()) == metrics
    assert (tmp_path / "stopped" / "checkpoints" / "recipe.json").is_file()
    rerun = finetune_cli("train", str(tmp_path / "digits.toml"), "--out", str(tmp_path / "stopped"), "--quiet")
    assert rerun.returncode == 0, rerun.stderr  # finished: its checkpoints give way to the new run's
    assert not list((tmp_path / "stopped").glob(".*.replaced"))
    nothing = finetune_cli("train", str(tmp_path / "digits.toml"), "--out", str(tmp_path / "new"), "--resume")
    assert nothing.returncode == 2 and "holds no checkpoints to resume" in nothing.stderr


def whole_history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


def test_overrides_after_an_option_are_overrides(tmp_path):
    """`finetune train CONFIG --quiet train.epochs=1` as `finetune train CONFIG train.epochs=1 --quiet`; an
    unknown word after an option is still argparse's error."""
    from finetune.__main__ import main

    assert main(["train", str(EXAMPLES / "wine.toml"), "--quiet", "--out", str(tmp_path / "run"),
                 "train.epochs=1", "train.early_stopping=0"]) == 0
    config = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    assert config["train"]["epochs"] == 1
    with pytest.raises(SystemExit):
        main(["train", str(EXAMPLES / "wine.toml"), "--quiet", "stray"])


def refused_then_dropped(capsys, caplog, out: Path, toml: str, refused: str, dropped: str) -> None:
    """A run config (``toml``, written beside ``out``) whose file has rows without a label: an error naming the
    first and pointing at data.missing_labels; with data.missing_labels="drop" a run that leaves them out, counted
    in a warning."""
    config = out.parent / "run.toml"
    config.write_text(toml)
    code, err = run_main(capsys, "train", str(config), "--out", str(out), "--quiet")
    assert_one_line_error(code, err, refused)
    with caplog.at_level("WARNING", logger="finetune"):
        code, err = run_main(capsys, "train", str(config), 'data.missing_labels="drop"', "--out", str(out), "--quiet")
    assert code == 0, err
    assert dropped in caplog.text, caplog.text


def test_rows_without_a_label_are_an_error_or_left_out_by_data_missing_labels(capsys, caplog, tmp_path):
    """A real CSV has rows without a label (penguins' sex): an error pointing at data.missing_labels, or with "drop"
    those rows left out, counted in a warning, and read the same way again by evaluate (the same test split)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 2))
    labels = np.where(x[:, 0] > 0, "up", "down").astype(object)
    labels[[4, 40, 77]] = ["", "NA", ""]
    import pandas as pd

    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "answer": labels}).to_csv(tmp_path / "t.csv", index=False)
    refused_then_dropped(capsys, caplog, tmp_path / "r",
                         f'[data]\npath = "{tmp_path / "t.csv"}"\nlabel = "answer"\n[model]\nname = "mlp"\n',
                         "t.csv' row 6, column 'answer': the label is empty (fill it or drop the row; a run config's "
                         "data.missing_labels = \"drop\" leaves such rows out)",
                         "t.csv': 3 row(s) without a label left out (data.missing_labels = \"drop\"; rows [6, 42, 79])")
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    tested = sum(map(sum, metrics["test_confusion_matrix"]))
    assert metrics["train_size"] + tested == 147 and sum(metrics["class_counts"].values()) == 118, metrics
    again = runs.evaluate_run(tmp_path / "r")  # the same 147 rows, the same split
    assert {k: again[k] for k in metrics["test"]} == pytest.approx(metrics["test"])
    for override, what in (('data.dataset="iris"', "dataset 'iris' is a built-in set"),):
        code, err = run_main(capsys, "train", str(EXAMPLES / "wine.toml"), 'data.missing_labels="drop"', override,
                             "--out", str(tmp_path / "w"))
        assert_one_line_error(code, err, f"data.missing_labels = 'drop' in override 'data.missing_labels=\"drop\"' "
                              f"says what a CSV row without a label (or rating) is, and {what}: leave missing_labels out")


def test_a_ratings_csv_with_a_missing_or_infinite_rating_is_an_error_or_left_out_by_missing_labels(
        capsys, caplog, tmp_path):
    """"nan" is a float to Python: a ratings file's "nan" was read as a rating and the loss went NaN. A missing
    rating (empty, NA, nan) is an error naming its row and pointing at data.missing_labels, which leaves such rows
    out with "drop" (as for a CSV of features); an infinite one is an error. A ranker reads no ratings: there
    missing_labels is an error saying so."""
    rng = np.random.default_rng(0)
    rows = [f"u{rng.integers(30)},m{rng.integers(40)},{rng.integers(1, 6)}" for _ in range(400)]
    rows[9], rows[20] = "u1,m1,nan", "u2,m2,"
    (tmp_path / "r.csv").write_text("user,item,rating\n" + "\n".join(rows) + "\n")
    refused_then_dropped(capsys, caplog, tmp_path / "r", f'[data]\npath = "{tmp_path / "r.csv"}"\nlabel = "rating"\n'
                         '[model]\nname = "mf"\n[train]\nepochs = 2\n',
                         "r.csv' row 11, column 'rating': the rating is 'nan', a missing value (fill it or drop the "
                         "row; a run config's data.missing_labels = \"drop\" leaves such rows out)",
                         "r.csv': 2 row(s) without a rating left out (data.missing_labels = \"drop\"; rows [11, 22])")
    assert np.isfinite(json.loads((tmp_path / "r" / "metrics.json").read_text())["test"]["rmse"])
    (tmp_path / "new.csv").write_text("user,item,rating\n" + "\n".join(rows[:30]) + "\n")  # evaluate reads alike
    assert np.isfinite(runs.evaluate_run(tmp_path / "r", tmp_path / "new.csv")["rmse"])
    rows[9] = "u1,m1,inf"
    (tmp_path / "r.csv").write_text("user,item,rating\n" + "\n".join(rows) + "\n")
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), 'data.missing_labels="drop"', "--out",
                         str(tmp_path / "i"), "--quiet")
    assert_one_line_error(code, err, "r.csv' row 11, column 'rating': the rating 'inf' is not a finite number")
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), 'data.missing_labels="drop"',
                         'train.task="ranking"', "--out", str(tmp_path / "k"), "--quiet")
    assert_one_line_error(code, err, "a ranker reads '", "r.csv' as (user, item) interactions, which have no labels: "
                          "leave missing_labels out")


def test_a_csv_with_text_labels_trains_evaluates_and_predicts_them(capsys, tmp_path):
    """A label column of words ("Yes"/"No", as a spreadsheet exports it) trains as classes in sorted order; the run's
    reports count them by label, evaluate reads the test split's labels, and predict writes the label and a p_LABEL
    column per class (quoted where a label holds a comma)."""
    import pandas as pd

    import finetune

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    labels = np.where(x[:, 0] > 0.3, "Yes", np.where(x[:, 0] < -0.3, "No", "Maybe, later"))
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "answer": labels}).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "t.csv"}"\nlabel = "answer"\n'
                                       '[model]\nname = "mlp"\n')
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0, err
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(metrics["class_counts"]) == {"Maybe, later", "No", "Yes"}
    assert metrics["test_per_class"]["classes"] == ["Maybe, later", "No", "Yes"]  # the confusion matrix's order
    assert "<th>Maybe, later</th>" in (tmp_path / "r" / "report.html").read_text()
    assert finetune.load(tmp_path / "r").options["in_features"] == 2  # a run directory loads as its model
    assert metrics["test"]["accuracy"] > 0.8, metrics["test"]
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"))
    assert code == 0, err
    pd.DataFrame({"a": x[:6, 0], "b": x[:6, 1]}).to_csv(tmp_path / "new.csv", index=False)
    assert run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "new.csv"), "--output",
                    str(tmp_path / "p.csv"))[0] == 0
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["prediction", "p_Maybe, later", "p_No", "p_Yes"]
    model = finetune.load(tmp_path / "r" / "model.safetensors")
    predicted = finetune.predict(model, x[:6].astype(np.float32))
    assert [row["prediction"] for row in rows] == predicted.tolist()
    assert (predicted == labels[:6]).mean() >= 5 / 6
    # New rows that still hold the label column (the training file's own rows): it is left out, unread.
    pd.DataFrame({"a": x[:6, 0], "b": x[:6, 1], "answer": labels[:6]}).to_csv(tmp_path / "labelled.csv", index=False)
    assert run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "labelled.csv"), "--output",
                    str(tmp_path / "p2.csv"))[0] == 0
    assert (tmp_path / "p2.csv").read_text() == (tmp_path / "p.csv").read_text()
    # "mlp" fills missing values itself: an empty cell (or NA) reads as NaN, predicted as finetune.predict does
    (tmp_path / "gap.csv").write_text("a,b\n0.5,1\n0.1,\nNA,2\n")
    assert run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "gap.csv"), "--output",
                    str(tmp_path / "p3.csv"))[0] == 0
    with open(tmp_path / "p3.csv") as f:
        assert [row["prediction"] for row in csv.DictReader(f)] == finetune.predict(
            model, np.array([[0.5, 1], [0.1, np.nan], [np.nan, 2]], np.float32)).tolist()
    (tmp_path / "word.csv").write_text("a,b\n0.5,1\n0.1,high\n")
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "word.csv"), "--output",
                         str(tmp_path / "p4.csv"))
    assert_one_line_error(code, err, "word.csv' row 3, column 'b': 'high' is not a number")


def assert_same_metrics(found: dict, expected: dict) -> None:
    """Two evaluate_run results alike: the same keys, numbers to float precision, the rest (the confusion matrix,
    the classes) equal (pytest.approx takes no nested lists in a dict)."""
    assert found.keys() == expected.keys()
    for key, value in expected.items():
        numbers = isinstance(value, float) or (isinstance(value, list) and all(isinstance(v, float) for v in value))
        assert found[key] == (pytest.approx(value) if numbers else value), key


def test_evaluate_reads_new_labelled_rows(capsys, tmp_path):
    """`finetune evaluate RUN --input FILE` scores the run's model on new labelled rows, read as predict reads them
    (the model's columns, its category columns as words) with the label column: the run's own test split written
    as a CSV scores what `evaluate RUN` scores; an .npz's X and y the same; a file without the labels, with a label
    training never saw, or with its columns moved is one line naming it."""
    import pandas as pd

    from finetune import runs

    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 2))
    colour = rng.choice(["red", "green", "blue"], size=150)
    answer = np.where(x[:, 0] + (colour == "red") > 0.3, "Yes", "No")
    frame = pd.DataFrame({"a": x[:, 0], "colour": colour, "b": x[:, 1], "answer": answer})
    frame.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "t.csv"}"\nlabel = "answer"\n'
                                       '[model]\nname = "mlp"\n[train]\nepochs = 3\n')
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0, err
    assert run_main(capsys, "evaluate", str(tmp_path / "r"))[0] == 0
    own = runs.evaluate_run(tmp_path / "r")
    split = runs.load_data(runs.load_config(tmp_path / "r" / "config.toml"))
    test = pd.DataFrame(split.x_test, columns=["a", "colour", "b"]).assign(answer=split.y_test)
    test.to_csv(tmp_path / "test.csv", index=False)
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "test.csv"))
    assert code == 0, err
    assert_same_metrics(runs.evaluate_run(tmp_path / "r", tmp_path / "test.csv"), own)
    assert own["classes"] == ["No", "Yes"] and len(split.y_test) == 30
    test[test.answer == "Yes"].to_csv(tmp_path / "yes.csv", index=False)  # other rows: other metrics
    yes = runs.evaluate_run(tmp_path / "r", tmp_path / "yes.csv")
    assert sum(yes["confusion_matrix"][1]) == (split.y_test == "Yes").sum() and sum(yes["confusion_matrix"][0]) == 0
    test.drop(columns="answer").to_csv(tmp_path / "unlabelled.csv", index=False)
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "unlabelled.csv"))
    assert_one_line_error(code, err, "unlabelled.csv' has no label column 'answer'", "evaluate needs the labels")
    test.assign(answer="Maybe").to_csv(tmp_path / "maybe.csv", index=False)
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "maybe.csv"))
    assert_one_line_error(code, err, "maybe.csv' label column 'answer' holds label(s) ['Maybe'] that training did not have")
    test[["b", "colour", "a", "answer"]].to_csv(tmp_path / "moved.csv", index=False)
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "moved.csv"))
    assert_one_line_error(code, err, "moved.csv's columns are in another order than in training")
    np.savez(tmp_path / "x_only.npz", X=x[:5])
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "x_only.npz"))
    assert_one_line_error(code, err, "x_only.npz' lacks the array(s) ['y']")


def test_evaluate_reads_an_npz_of_new_rows(wine_run, tmp_path):
    from finetune import datasets

    split = datasets.load("wine")  # its rows as scikit-learn ships them: the run standardises them as it trained
    np.savez(tmp_path / "test.npz", X=split.x_test * split.x_scale[1] + split.x_scale[0], y=split.y_test)
    done = finetune_cli("evaluate", str(wine_run), "--input", str(tmp_path / "test.npz"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accuracy"] == pytest.approx(
        json.loads((wine_run / "metrics.json").read_text())["test"]["accuracy"])


def test_a_failed_run_is_replaced_by_a_new_run_and_an_interrupted_one_is_not(capsys, tmp_path):
    """A run that stopped on an error after writing checkpoints (a diverged loss, here a callback's error) leaves
    failed.txt with the error: the same command then starts afresh (resuming would meet the error again), where
    an interrupted run (Ctrl-C) asks for --resume; the new run's success removes failed.txt."""
    (tmp_path / "wine.toml").write_text('[data]\ndataset = "wine"\n[model]\nname = "mlp"\n'
                                        "[train]\nepochs = 6\ncheckpoint_every = 1\n")
    cfg = runs.load_config(str(tmp_path / "wine.toml"), [])

    def fail(kind, info):
        if kind == "epoch" and info["epoch"] >= 2:
            raise RuntimeError("the loss went to NaN (a stand-in)")

    with pytest.raises(RuntimeError):
        runs.run(cfg, tmp_path / "r", quiet=True, callback=fail)
    assert (tmp_path / "r" / "failed.txt").read_text() == "RuntimeError: the loss went to NaN (a stand-in)\n"
    assert any((tmp_path / "r" / "checkpoints").iterdir())
    code, err = run_main(capsys, "train", str(tmp_path / "wine.toml"), "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0, err
    assert not (tmp_path / "r" / "failed.txt").exists() and (tmp_path / "r" / "metrics.json").is_file()


def test_a_folder_that_is_not_a_run_is_not_overwritten_by_one(capsys, tmp_path):
    """--out naming a folder of one's own that bears a run's names (a metrics.json, a checkpoints/ of other files)
    is an error, every file left as it was; a folder of other files, or an empty one, takes the run."""
    (tmp_path / "wine.toml").write_text('[data]\ndataset = "wine"\n[model]\nname = "mlp"\n[train]\nepochs = 1\n')
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "metrics.json").write_text('{"mine": 1}')
    (mine / "checkpoints" / "notes.txt").write_text("mine")
    code, err = run_main(capsys, "train", str(tmp_path / "wine.toml"), "--out", str(mine), "--quiet")
    assert_one_line_error(code, err, f"--out '{mine}' is not a finetune run directory", "metrics.json, checkpoints")
    assert (mine / "metrics.json").read_text() == '{"mine": 1}' and (mine / "checkpoints" / "notes.txt").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, err = run_main(capsys, "train", str(tmp_path / "wine.toml"), "--out", str(other), "--quiet")
    assert code == 0, err
    assert (other / "notes.txt").read_text() == "mine" and (other / "metrics.json").is_file()
    code, err = run_main(capsys, "train", str(tmp_path / "wine.toml"), "--out", str(other), "--quiet")
    assert code == 0, err  # a finished run: a new one replaces it


def test_an_infinite_cell_is_named_by_its_file_row_and_column_before_training(capsys, tmp_path):
    """inf in a CSV (or a number float32 holds as inf) is an error naming the file's row and column as the file is
    read -- not, where the test split drew it, after the whole run trained, leaving a directory to resume."""
    rows = [f"{i % 3},{i * 0.5},{i % 2}" for i in range(40)]
    rows[5] = "1,inf,0"
    (tmp_path / "t.csv").write_text("a,income,churn\n" + "\n".join(rows) + "\n")
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "t.csv"}"\nlabel = "churn"\n[model]\nname = "mlp"\n')
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"), "--quiet")
    assert_one_line_error(code, err, "t.csv' row 7, column 'income': 'inf' is not a finite number")
    assert not (tmp_path / "r").exists()
    rows[5] = "1,1e39,0"
    (tmp_path / "t.csv").write_text("a,income,churn\n" + "\n".join(rows) + "\n")
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"), "--quiet")
    assert_one_line_error(code, err, "t.csv' row 7, column 'income': '1e39' is not a finite number")


def _reviews_csv(path: Path, rows: int = 60) -> list[str]:
    """A CSV of short reviews (id, review, sentiment), the review column's texts returned; one holds a comma and a
    quote, one is a number, one is empty: each read as written."""
    rng = np.random.default_rng(0)
    good = ["great movie", "loved it", 'a "delight", truly', "brilliant and moving", "10"]
    bad = ["terrible plot", "awful", "boring and long", "a mess", ""]
    labels = rng.choice(["pos", "neg"], size=rows)
    texts = [str(rng.choice(good if label == "pos" else bad)) for label in labels]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "review", "sentiment"])
        writer.writerows([f"r{i}", t, label] for i, (t, label) in enumerate(zip(texts, labels)))
    return texts


def test_a_text_model_trains_evaluates_and_predicts_a_csv_of_texts(capsys, tmp_path):
    """A run config for "minilm" reads a CSV's column of texts (data.text, or the file's one column besides the
    label), as written; the run directory predicts a new file's texts by that column's name, as finetune.predict
    predicts the same texts, and evaluates labelled ones as its test split."""
    import finetune

    texts = _reviews_csv(tmp_path / "reviews.csv")
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "reviews.csv"}"\nlabel = "sentiment"\n'
                                       'text = "review"\n[model]\nname = "minilm"\n'
                                       "[train]\nepochs = 1\nlr = 1e-4\nbatch_size = 16\n")
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0, err
    assert tomllib.loads((tmp_path / "r" / "config.toml").read_text())["data"]["text"] == "review"
    split = runs.load_data(runs.load_config(tmp_path / "r" / "config.toml"))
    assert sorted(split.x_train.tolist() + split.x_test.tolist()) == sorted(texts) and "" in texts
    assert runs.evaluate_run(tmp_path / "r", tmp_path / "reviews.csv")["accuracy"] >= 0  # labelled: all 60 rows
    import pandas as pd

    test = pd.DataFrame({"review": split.x_test, "sentiment": split.y_test})
    test.to_csv(tmp_path / "test.csv", index=False)
    assert_same_metrics(runs.evaluate_run(tmp_path / "r", tmp_path / "test.csv"), runs.evaluate_run(tmp_path / "r"))
    new = pd.DataFrame({"when": ["today", "now"], "review": ["loved it, truly", "a mess"], "id": ["a", "b"]})
    new.to_csv(tmp_path / "new.csv", index=False)  # other columns, in any order: not read
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "new.csv"), "--output",
                         str(tmp_path / "p.csv"), "--keep", "id")
    assert code == 0, err
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    model = finetune.load(tmp_path / "r")
    assert [r["id"] for r in rows] == ["a", "b"]
    assert [r["prediction"] for r in rows] == finetune.predict(model, ["loved it, truly", "a mess"]).tolist()
    new.drop(columns="review").to_csv(tmp_path / "no_text.csv", index=False)
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "no_text.csv"),
                         "--output", str(tmp_path / "p.csv"))
    assert_one_line_error(code, err, "no_text.csv' has no text column 'review'")
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "new.csv"))
    assert_one_line_error(code, err, "new.csv' has no label column 'sentiment'")


def test_a_csv_of_texts_without_data_text(capsys, tmp_path):
    """data.text left out: the file's one column besides the label holds the texts; with more, one line asks for
    data.text; data.text given to a model of numbers, or beside a built-in set, or naming no column, is an error."""
    texts = _reviews_csv(tmp_path / "reviews.csv", rows=20)
    source = f'[data]\npath = "{tmp_path / "reviews.csv"}"\nlabel = "sentiment"\n[model]\nname = "minilm"\n'
    (tmp_path / "run.toml").write_text(source)
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "reviews.csv' has 2 columns besides the label 'sentiment' (['id', 'review']): "
                          "set data.text in")
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), 'data.label="mood"', "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "reviews.csv' has no label column 'mood' (data.label in")
    import pandas as pd

    pd.read_csv(tmp_path / "reviews.csv", keep_default_na=False).drop(columns="id").to_csv(tmp_path / "two.csv",
                                                                                          index=False)
    cfg = runs.load_config(tmp_path / "run.toml", [f'data.path="{tmp_path / "two.csv"}"'])
    assert runs.text_column(cfg, tmp_path / "two.csv") == "review"
    split = runs.load_data(cfg)
    assert sorted(split.x_train.tolist() + split.x_test.tolist()) == sorted(texts)
    (tmp_path / "builtin.toml").write_text('[data]\ndataset = "rotten-tomatoes"\ntext = "review"\n'
                                           '[model]\nname = "minilm"\n')
    for config, overrides, messages in (
            ("run.toml", ['data.text="title"'], ["has no text column 'title' (its columns: ['id', 'review', "
                                                 "'sentiment'])"]),
            ("run.toml", ['data.text="review"', 'model.name="mlp"'],
             ["data.text = 'review' in", "names the column of texts of a model that reads texts (['minilm']), and "
              "model 'mlp' is not one: leave data.text out"]),
            ("builtin.toml", [], ["data.text = 'review' in", "dataset 'rotten-tomatoes' is a built-in set: leave "
                                  "text out"])):
        code, err = run_main(capsys, "train", str(tmp_path / config), *overrides, "--out", str(tmp_path / "r"))
        assert_one_line_error(code, err, *messages)


def _image_folder(root: Path, per_class: int, seed: int, size: tuple[int, int] = (12, 16),
                  mode: str = "RGB") -> None:
    """root/across and root/down: images of horizontal and vertical stripes (a class each), of one size and mode."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name in ("across", "down"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            stripes = (np.arange(size[0])[:, None] % 4 < 2) if name == "across" else (np.arange(size[1])[None] % 4 < 2)
            pixels = np.broadcast_to(stripes, size) * 200 + rng.integers(0, 50, size)
            image = Image.fromarray(pixels.astype(np.uint8), "L").convert(mode)
            image.save(root / name / f"{name}{i}.{'png' if i % 2 else 'jpg'}")


def test_an_image_folder_trains_evaluates_and_predicts(capsys, tmp_path):
    """A run config's path may be a folder with a sub-folder of images per class: "cnn" reads them at
    data.image_size (default 32 x 32), grayscale when every file is; the run directory predicts a folder of new
    images, each row named by its file, and evaluates a labelled folder as its test split."""
    import finetune
    from finetune import datasets

    _image_folder(tmp_path / "photos", per_class=30, seed=0, mode="L")
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "photos"}"\n[model]\nname = "cnn"\n'
                                       "[train]\nepochs = 15\nlr = 0.05\n")
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0, err
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.9, metrics["test"]
    assert set(metrics["class_counts"]) == {"across", "down"}
    model = finetune.load(tmp_path / "r")
    assert [model.options[k] for k in ("in_channels", "height", "width")] == [1, 32, 32]  # grayscale files
    _image_folder(tmp_path / "new", per_class=3, seed=1, mode="RGB")  # read as the model reads: grayscale
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "new"), "--output",
                         str(tmp_path / "p.csv"))
    assert code == 0, err
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [f"{c}/{c}{i}.{'png' if i % 2 else 'jpg'}" for c in ("across", "down")
                                         for i in range(3)]
    files = datasets.image_files(tmp_path / "new")
    images = np.stack([datasets.read_image(f, (32, 32), "L") for f in files])
    assert [r["prediction"] for r in rows] == finetune.predict(model, images).tolist()
    assert list(rows[0]) == ["file", "prediction", "p_across", "p_down"]
    new = runs.evaluate_run(tmp_path / "r", tmp_path / "new")
    assert new["classes"] == ["across", "down"] and sum(map(sum, new["confusion_matrix"])) == 6
    shutil.copytree(tmp_path / "new" / "down", tmp_path / "some" / "down")  # one of the classes: scored as "down"
    some = runs.evaluate_run(tmp_path / "r", tmp_path / "some")
    down = np.stack([datasets.read_image(f, (32, 32), "L") for f in datasets.image_files(tmp_path / "some")])
    assert some["accuracy"] == pytest.approx(float(np.mean(finetune.predict(model, down) == "down")))
    assert some["confusion_matrix"][0] == [0, 0] and sum(some["confusion_matrix"][1]) == 3
    (tmp_path / "new" / "sideways").mkdir()
    (tmp_path / "new" / "across" / "across0.jpg").rename(tmp_path / "new" / "sideways" / "s.jpg")
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "new"))
    assert_one_line_error(code, err, "new' has class folder(s) ['sideways'] that training did not have")


def test_an_image_folder_of_one_class_or_one_image_for_a_folder_is_one_line(capsys, tmp_path):
    """A folder with one class sub-folder cannot train a classifier; an image file given where predict reads a
    folder, or a file of another kind, names what it takes."""
    _image_folder(tmp_path / "photos", per_class=10, seed=0)
    (tmp_path / "photos" / "down").rename(tmp_path / "down")
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "photos"}"\n[model]\nname = "cnn"\n')
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "photos' has one class folder ('across'): a classifier needs a sub-folder for "
                          "each of two classes or more")
    (tmp_path / "down").rename(tmp_path / "photos" / "down")
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "train.epochs=1", "--out", str(tmp_path / "r"),
                         "--quiet")
    assert code == 0, err
    for command in (["predict", "--output", str(tmp_path / "p.csv")], ["evaluate"]):
        code, err = run_main(capsys, command[0], str(tmp_path / "r"), "--input",
                             str(tmp_path / "photos" / "down" / "down0.jpg"), *command[1:])
        assert_one_line_error(code, err, "down0.jpg' must be an .npz, a .csv (or .csv.gz) or a folder of images: put "
                              "the image in a folder and pass the folder")
    for command in (["predict", str(tmp_path / "r"), "--output", str(tmp_path / "p.csv")],
                    ["evaluate", str(tmp_path / "r")]):
        code, err = run_main(capsys, *command, "--input", str(tmp_path / "nowhere"))
        assert_one_line_error(code, err, "nowhere' does not exist")
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "photos"), "--output",
                         str(tmp_path / "no" / "p.csv"))
    assert_one_line_error(code, err, "--output '", "p.csv': the folder '", "no' does not exist")
    code, err = run_main(capsys, "evaluate", str(tmp_path / "no-run"))
    assert_one_line_error(code, err, "run directory '", "no-run' does not exist")
    (tmp_path / "new.txt").write_text("a\n1\n")
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "new.txt"), "--output",
                         str(tmp_path / "p.csv"))
    assert_one_line_error(code, err, "new.txt' must be an .npz, a .csv (or .csv.gz) or a folder of images")



def test_an_image_folder_with_a_bad_file_stops_or_skips_it_as_data_on_bad_file_says(capsys, tmp_path, caplog):
    """A file in an image folder that Pillow cannot read is a one-line error naming it; data.on_bad_file = "skip"
    leaves it out and says so (a warning listing it); another value, or the key for a file, is an error."""
    _image_folder(tmp_path / "photos", per_class=6, seed=0)
    (tmp_path / "photos" / "down" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "photos"}"\n[model]\nname = "cnn"\n'
                                       "[train]\nepochs = 1\n")
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, "broken.png' cannot be read")
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), 'data.on_bad_file="skip"', "--out",
                         str(tmp_path / "r"), "--quiet")
    assert code == 0, err
    assert "1 file(s) Pillow cannot read left out (data.on_bad_file = 'skip')" in caplog.text
    assert "broken.png" in caplog.text
    split = runs.load_data(runs.load_config(tmp_path / "r" / "config.toml"))
    assert len(split.x_train) + len(split.x_test) == 12  # the 12 images, not the broken file
    # predict reads new images by the run's data.on_bad_file too: the broken one left out, the rest predicted
    caplog.clear()
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "photos"), "--output",
                         str(tmp_path / "p.csv"))
    assert code == 0, err
    with open(tmp_path / "p.csv") as f:
        files = [row["file"] for row in csv.DictReader(f)]
    assert len(files) == 12 and not any("broken" in file for file in files)
    assert "1 file(s) Pillow cannot read left out" in caplog.text
    import finetune  # in Python, arrays read at another scale than the folder's: an image file's uint8 pixels

    model = finetune.load(tmp_path / "r")
    with pytest.raises(ValueError, match=r"^X holds uint8 pixels \(0 to 255\), and the model trained on images read "
                                         r"as pixel / 255, in \[0, 1\]"):
        finetune.predict(model, np.zeros((2, *split.x_train.shape[1:]), dtype=np.uint8))
    (tmp_path / "r" / "config.toml").write_text((tmp_path / "r" / "config.toml").read_text().replace(
        'on_bad_file = "skip"\n', ""))
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "photos"), "--output",
                         str(tmp_path / "p.csv"))
    assert_one_line_error(code, err, "broken.png' cannot be read", "(on_bad_file='skip' leaves such files out; in a "
                          "run's config, data.on_bad_file; for predict and evaluate, --on-bad-file skip)")
    # --on-bad-file decides for predict and evaluate over the run's config; it acts on a folder only
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "photos"), "--output",
                         str(tmp_path / "p.csv"), "--on-bad-file", "skip")
    assert code == 0 and len((tmp_path / "p.csv").read_text().splitlines()) == 13, err
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "photos"),
                         "--on-bad-file", "skip")
    assert code == 0, err
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "photos"),
                         "--on-bad-file", "error")
    assert_one_line_error(code, err, "broken.png' cannot be read")
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "p.csv"), "--output",
                         str(tmp_path / "q.csv"), "--on-bad-file", "skip")
    assert_one_line_error(code, err, "on_bad_file='skip' acts on a folder of images, and the input is")
    (tmp_path / "t.csv").write_text("a,label\n1,0\n2,1\n")
    for overrides, messages in (
            (['data.on_bad_file="ignore"'], ["data.on_bad_file must be 'error' (a file Pillow cannot read stops the "
                                             "run) or 'skip' (left out, listed)", "got 'ignore'"]),
            ([f'data.path="{tmp_path / "t.csv"}"', 'data.on_bad_file="skip"'],
             ["data.on_bad_file = 'skip' in", "reads the images of a folder", "t.csv' is a file"])):
        code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), *overrides, "--out", str(tmp_path / "r2"))
        assert_one_line_error(code, err, *messages)

def test_an_image_folder_is_read_at_the_size_the_model_fixes(capsys, tmp_path):
    """digit_cnn reads 28 x 28 grayscale whatever the files are; data.image_size or image_mode that contradict a
    model's shape, the image settings for a file or for a model of numbers, and a folder for a regression are
    errors naming the setting."""
    _image_folder(tmp_path / "photos", per_class=4, seed=0, size=(40, 30))
    source = f'[data]\npath = "{tmp_path / "photos"}"\n[model]\nname = "digit_cnn"\n'
    (tmp_path / "run.toml").write_text(source)
    cfg = runs.load_config(tmp_path / "run.toml")
    split = runs.load_data(cfg)
    assert split.x_train.shape[1:] == (1, 28, 28) and set(split.y_train) == {"across", "down"}
    cfg = runs.load_config(tmp_path / "run.toml", ['model.name="cnn"', "data.image_size=[20, 24]",
                                                   'data.image_mode="RGB"'])
    assert runs.load_data(cfg).x_train.shape[1:] == (3, 20, 24)
    cfg = runs.load_config(tmp_path / "run.toml", ['model.name="cnn"', "model.height=16", "data.image_size=40"])
    with pytest.raises(ValueError, match=r"data.image_size = 40 in .*, and model 'cnn' reads height 16: leave"):
        runs.load_data(cfg)
    (tmp_path / "t.csv").write_text("a,label\n1,0\n2,1\n")
    for overrides, messages in (
            (["data.image_size=32"], ["data.image_size = 32 in", "model 'digit_cnn' reads height 28, width 28"]),
            (['data.image_mode="RGB"'], ["data.image_mode = 'RGB' in", "model 'digit_cnn' reads L images "
                                         "(in_channels 1)"]),
            (["data.image_size=0"], ["data.image_size must be an integer >= 1 (square images) or [height, width]"]),
            (["data.image_size=[32]"], ["data.image_size must be an integer >= 1 (square images) or [height, width]"]),
            (['model.name="mlp"'], ["is an image folder, and model 'mlp' does not read images (those that do: "
                                    "['cnn', 'digit_cnn'])"]),
            (['train.task="regression"'], ["train.task = 'regression' in", "is an image folder: its sub-folders are "
                                           "classes"]),
            (['data.label="kind"'], ["data.label = 'kind' in", "is an image folder, labelled by its sub-folders"]),
            ([f'data.path="{tmp_path / "t.csv"}"', "data.image_size=32"],
             ["data.image_size = 32 in", "sizes the images of a folder", "t.csv' is a file"]),
            (['model.name="cnn"', "data.image_size=100000"],
             ["data.image_size in", "read(s) images of 100000 x 100000: at most 4096 a side (one RGB image of "
              "100000 x 100000 takes 111.8 GiB decoded)"]),
            (["model.num_classes=1"], ["num_classes=1 (an option of model 'digit_cnn') gives 1 outputs, and the "
                                       "labels have 2 classes: leave num_classes out"]),
            (['data.encoding="latin-1"'], ["data.encoding = 'latin-1' in", "reads a CSV, and", "is an image "
                                           "folder: leave encoding out"]),
            (['data.path="no/such/folder"'], ["data.path 'no/such/folder' in", "does not exist (read from the "
                                              "current directory,"])):
        code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), *overrides, "--out", str(tmp_path / "r"))
        assert_one_line_error(code, err, *messages)



def test_an_image_folder_is_read_at_the_scale_the_model_was_pretrained_on(capsys, tmp_path):
    """digit_cnn's folder is read at MNIST's normalisation, as its weights were trained (data.image_mean / image_std
    say otherwise; "cnn" from scratch reads [0, 1]), written to config.toml, so that predict and evaluate read new
    images alike; a run directory written before the setting reads them in [0, 1], as it trained. Bad values, or
    the setting for a file or a built-in set, are errors naming it."""
    import finetune
    from finetune import datasets

    _image_folder(tmp_path / "photos", per_class=6, seed=0, mode="L")
    files = [f for c in ("across", "down") for f in sorted((tmp_path / "photos" / c).iterdir())]
    raw = np.stack([datasets.read_image(f, (28, 28), "L") for f in files])
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "photos"}"\n[model]\nname = "digit_cnn"\n')
    for overrides, scaled in (([], (raw - 0.1307) / 0.3081), (["data.image_mean=0.5", "data.image_std=[0.25]"],
                                                              (raw - 0.5) / 0.25)):
        cfg = runs.load_config(tmp_path / "run.toml", overrides)
        split = runs.load_data(cfg)
        together = np.concatenate([split.x_train, split.x_test])
        assert together.shape == raw.shape and np.allclose(np.sort(together.ravel()), np.sort(scaled.ravel()), atol=1e-5)
    cfg = runs.load_config(tmp_path / "run.toml", ['model.name="cnn"', "data.image_size=28"])
    assert runs.load_data(cfg).x_train.min() >= 0 and cfg.data["image_mean"] is None  # from scratch: [0, 1]
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "train.epochs=1", "--out", str(tmp_path / "r"),
                         "--quiet")
    assert code == 0, err
    written = tomllib.loads((tmp_path / "r" / "config.toml").read_text())["data"]
    assert (written["image_mean"], written["image_std"]) == (0.1307, 0.3081)
    assert "label" not in written  # a folder has no label column to name
    model = finetune.load(tmp_path / "r")
    for run_dir, images in ((tmp_path / "r", (raw - 0.1307) / 0.3081), (tmp_path / "old", raw)):
        if run_dir.name == "old":  # a run directory from before data.image_mean: it trained on [0, 1]
            shutil.copytree(tmp_path / "r", run_dir)
            text = (run_dir / "config.toml").read_text()
            (run_dir / "config.toml").write_text(text.replace("image_mean = 0.1307\n", "").replace(
                "image_std = 0.3081\n", ""))
            tensors, meta = finetune.checkpoint.load_tensors(run_dir / "model.safetensors")  # nor a scale on record
            meta["trained_for"] = json.dumps({**json.loads(meta["trained_for"]), "image_scale": None})
            finetune.checkpoint.save_tensors(run_dir / "model.safetensors", tensors, meta)
        code, err = run_main(capsys, "predict", str(run_dir), "--input", str(tmp_path / "photos"), "--output",
                             str(tmp_path / "p.csv"))
        assert code == 0, err
        with open(tmp_path / "p.csv") as f:
            probabilities = [float(r["p_across"]) for r in csv.DictReader(f)]
        expected = finetune.predict(model, images.astype(np.float32), output="probabilities")[:, 0]
        np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)
    old_split = runs.load_data(runs.load_run(tmp_path / "old")[0])  # evaluate's test split: in [0, 1] too
    np.savez(tmp_path / "pixels.npz", X=raw.reshape(len(raw), -1))  # rows of pixels in [0, 1]: read as the folder
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "pixels.npz"), "--output",
                         str(tmp_path / "rows.csv"))
    assert code == 0, err
    with open(tmp_path / "rows.csv") as f:
        by_rows = [float(r["p_across"]) for r in csv.DictReader(f)]
    np.testing.assert_allclose(by_rows, finetune.predict(model, ((raw - 0.1307) / 0.3081).astype(np.float32),
                                                         output="probabilities")[:, 0], rtol=1e-4, atol=1e-6)
    np.savez(tmp_path / "rows.npz", X=np.zeros((3, 13), dtype=np.float32))  # not images: one line, no reshape error
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "rows.npz"), "--output",
                         str(tmp_path / "p.csv"))
    assert_one_line_error(code, err, "rows.npz' has rows of 13 values, and model 'digit_cnn' reads images of 1 x 28 "
                          "x 28 = 784 values: pass a folder of images")
    assert old_split.x_test.min() >= 0 and runs.load_data(runs.load_run(tmp_path / "r")[0]).x_test.min() < 0
    (tmp_path / "t.csv").write_text("a,label\n1,0\n2,1\n")
    (tmp_path / "builtin.toml").write_text('[data]\ndataset = "digits"\n[model]\nname = "cnn"\n')
    for config, overrides, messages in (
            ("run.toml", ["data.image_mean=0.5"], ["data.image_mean = 0.5 in", "give both"]),
            ("run.toml", ["data.image_mean=0.5", "data.image_std=0"], ["data.image_std must be a number or a list of "
                                                                        "one per channel", "each > 0", "got 0"]),
            ("run.toml", ["data.image_mean=[0.1, 0.2]", "data.image_std=1"], ["data.image_mean must be a number"]),
            ("run.toml", ["data.image_mean=[0.1, 0.2, 0.3]", "data.image_std=1"],
             ["data.image_mean = [0.1, 0.2, 0.3] and image_std = 1 in", "one per channel of the model's L images (1 channel)"]),
            ("run.toml", [f'data.path="{tmp_path / "t.csv"}"', "data.image_mean=0", "data.image_std=1"],
             ["data.image_mean = 0 in", "scales the images of a folder", "t.csv' is a file: leave image_mean out"]),
            ("builtin.toml", ["data.image_mean=0", "data.image_std=1"], ["data.image_mean = 0 in", "dataset 'digits' "
                                                                          "is a built-in set: leave image_mean out"])):
        code, err = run_main(capsys, "train", str(tmp_path / config), *overrides, "--out", str(tmp_path / "bad"))
        assert_one_line_error(code, err, *messages)


def test_an_image_folder_larger_than_memory_streams_to_the_same_run(capsys, tmp_path, monkeypatch):
    """An image folder whose images would take more than IN_MEMORY_GB decoded, or that train.num_workers are to
    decode, is read a batch at a time (the choice written to config.toml as data.stream): the recipe trains,
    validates and tests on the same images as from memory, to the same weights and metrics; data.stream = false
    decodes it whatever its size. data.stream for a file or a built-in set, or not a bool, is an error naming it."""
    from safetensors.numpy import load_file

    from finetune import datasets

    _image_folder(tmp_path / "photos", per_class=12, seed=0, mode="L")
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "photos"}"\n[model]\nname = "digit_cnn"\n')
    monkeypatch.chdir(tmp_path)  # a relative path is read from here, and written to config.toml whole
    cfg = runs.load_config(tmp_path / "run.toml", ['data.path="photos"', "train.num_workers=1"])
    assert isinstance(runs.load_data(cfg).x_train, datasets.ImageFolder) and cfg.data["stream"] is True  # workers
    monkeypatch.setattr(runs, "IN_MEMORY_GB", 1e-6)  # 24 images of 28 x 28 take 0.07 MB: above it
    for name, overrides in (("streamed", []), ("memory", ["data.stream=false", 'data.path="photos"'])):
        code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), *overrides, "--out", str(tmp_path / name),
                             "--quiet")
        assert code == 0, err
    streamed, memory = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("streamed", "memory"))
    assert "stream = true" in (tmp_path / "streamed" / "config.toml").read_text()
    assert "stream = false" in (tmp_path / "memory" / "config.toml").read_text()
    assert runs.load_config(tmp_path / "memory" / "config.toml").data["path"] == str(tmp_path / "photos")
    assert streamed["recipe"][0]["value"] == "auto" and streamed["test"] == memory["test"]
    assert streamed["validation"] == memory["validation"] and streamed["recipe"] == memory["recipe"]
    weights = [load_file(tmp_path / r / "model.safetensors") for r in ("streamed", "memory")]
    assert weights[0].keys() == weights[1].keys()
    assert all(np.array_equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert runs.evaluate_run(tmp_path / "streamed") == runs.evaluate_run(tmp_path / "memory")
    (tmp_path / "tune.toml").write_text(f'[data]\npath = "{tmp_path / "photos"}"\n[model]\nname = "cnn"\n[train]\n'
                                        'epochs = 1\n[tune]\ntrials = 1\nlr = { low = 0.01, high = 0.1 }\n')
    code, err = run_main(capsys, "tune", str(tmp_path / "tune.toml"), "--out", str(tmp_path / "tuned"))
    assert code == 0 and (tmp_path / "tuned" / "best.toml").is_file(), err  # the trials' CNN sized by an image
    (tmp_path / "t.csv").write_text("a,label\n1,0\n2,1\n")
    (tmp_path / "builtin.toml").write_text('[data]\ndataset = "digits"\n[model]\nname = "cnn"\n')
    for config, overrides, messages in (
            ("run.toml", ["data.stream=1"], ["data.stream must be true (read an image folder a batch at a time) or "
                                             "false (decode it into memory)", "got 1"]),
            ("run.toml", [f'data.path="{tmp_path / "t.csv"}"', "data.stream=true"],
             ["data.stream = True in", "reads the images of a folder", "t.csv' is a file: leave stream out"]),
            ("builtin.toml", ["data.stream=true"], ["data.stream = True in", "dataset 'digits' is a built-in set: "
                                                    "leave stream out"])):
        code, err = run_main(capsys, "train", str(tmp_path / config), *overrides, "--out", str(tmp_path / "r"))
        assert_one_line_error(code, err, *messages)


def _ratings_csv(path: Path, users: int = 60, items: int = 40, per_user: int = 15) -> None:
    """A ratings CSV (user, item, rating, when) with ids as text ("u3", "m7"): biases, 3 factors and noise."""
    rng = np.random.default_rng(0)
    user_bias, item_bias = rng.normal(0, 0.5, users), rng.normal(0, 0.5, items)
    p, q = rng.normal(0, 0.6, (users, 3)), rng.normal(0, 0.6, (items, 3))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user", "item", "rating", "when"])
        for u in range(users):
            for i in rng.choice(items, per_user, replace=False):
                rating = np.clip(3.5 + user_bias[u] + item_bias[i] + p[u] @ q[i] + rng.normal(0, 0.3), 1, 5)
                writer.writerow([f"u{u}", f"m{i}", round(float(rating), 1), "2020"])


def test_a_recommender_trains_evaluates_and_predicts_a_csv_of_ratings(capsys, tmp_path):
    """A run config for "mf" or "ncf" reads a CSV of (user, item, rating) rows, its ids as written (data.user and
    data.item name the columns; the ratings are data.label; the task is regression); the run directory keeps the
    ids (ids.json) and predicts and evaluates new rows of known users and items by them, as finetune.predict does
    on their index pairs; an id training never had, or a setting that does not fit, is one line."""
    import pandas as pd

    import finetune

    _ratings_csv(tmp_path / "ratings.csv")
    frame = pd.read_csv(tmp_path / "ratings.csv").rename(columns={"user": "customer"})
    frame.to_csv(tmp_path / "ratings.csv", index=False)
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "ratings.csv"}"\nlabel = "rating"\n'
                                       'user = "customer"\n[model]\nname = "mf"\n')
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0, err
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["test"]["r2"] > 0.3, metrics["test"]  # the recipe's recommender rules, as on MovieLens
    # the task the file decided is written (compare read the default, classification, for a recipe run)
    assert tomllib.loads((tmp_path / "r" / "config.toml").read_text())["train"] == {"task": "regression"}
    ids = json.loads((tmp_path / "r" / "ids.json").read_text())
    assert ids["user"] == sorted(frame.customer.unique()) and ids["item"] == sorted(frame.item.unique())
    model = finetune.load(tmp_path / "r")
    new = pd.DataFrame({"item": ["m5", "m1", "m5"], "customer": ["u3", "u7", "u10"], "note": ["a", "b", "c"]})
    new.to_csv(tmp_path / "new.csv", index=False)
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "new.csv"), "--output",
                         str(tmp_path / "p.csv"), "--keep", "note")
    assert code == 0, err
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    pairs = np.array([[ids["user"].index(u), ids["item"].index(i)] for u, i in zip(new.customer, new.item)])
    expected = finetune.predict(model, pairs, task="regression")
    assert [r["note"] for r in rows] == ["a", "b", "c"]
    assert [float(r["prediction"]) for r in rows] == pytest.approx(expected.tolist(), abs=1e-4)
    split = runs.load_data(runs.load_config(tmp_path / "r" / "config.toml"))
    test = pd.DataFrame({"customer": np.asarray(ids["user"])[split.x_test[:, 0]],
                         "item": np.asarray(ids["item"])[split.x_test[:, 1]], "rating": split.y_test})
    test.to_csv(tmp_path / "test.csv", index=False)
    assert runs.evaluate_run(tmp_path / "r", tmp_path / "test.csv") == pytest.approx(runs.evaluate_run(tmp_path / "r"))
    pd.DataFrame({"customer": ["u3", "u999"], "item": ["m1", "m999"]}).to_csv(tmp_path / "stranger.csv", index=False)
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "stranger.csv"),
                         "--output", str(tmp_path / "p.csv"))
    assert_one_line_error(code, err, "stranger.csv' column 'customer' holds 1 user(s) training did not have, such as "
                          "['u999']; column 'item' holds 1 item(s) training did not have, such as ['m999']: the "
                          "model has no factors for them")
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "new.csv"))
    assert_one_line_error(code, err, "new.csv' has no label column 'rating' (data.label in the run's config.toml")
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "new.csv"), "--output",
                         str(tmp_path / "p2.csv"), "--keep", "note", "--keep", "item")  # repeated: both kept
    assert code == 0, err
    assert (tmp_path / "p2.csv").read_text().splitlines()[0] == "note,item,prediction"
    assert "confusion_matrix" not in runs.evaluate_run(tmp_path / "r")  # a regression has none
    for overrides, messages in (
            (['data.user="who"'], ["ratings.csv' lacks the column(s) ['who']"]),
            (['data.user="item"'], ["data.user and data.item in", "both name the column 'item'"]),
            (['train.task="classification"'], ["train.task = 'classification' in", "a recommender's CSV of ratings "
                                               "trains task = 'regression'"]),
            (['model.name="mlp"'], ["data.user = 'customer' in", "names a column of ids of a recommender (['mf', "
                                    "'ncf']), and model 'mlp' is not one: leave data.user out"])):
        code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), *overrides, "--out", str(tmp_path / "r2"))
        assert_one_line_error(code, err, *messages)



def _interactions_csv(path: Path, users: int = 80, items: int = 120, per_user: int = 12) -> None:
    """A CSV of (user, item, when) interactions: each user has items of their half of the catalogue (even users the
    first half), the popular ones more often; the first user has one interaction twice."""
    rng = np.random.default_rng(0)
    half = items // 2
    weights = 1 / np.arange(1, half + 1)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user", "item", "when"])
        for u in range(users):
            chosen = rng.choice(half, per_user, replace=False, p=weights / weights.sum()) + half * (u % 2)
            for k, i in enumerate(chosen):
                writer.writerow([f"u{u}", f"m{i}", k])
            if u == 0:
                writer.writerow([f"u{u}", f"m{chosen[0]}", per_user])  # again: kept once, where it first came


def test_a_rankers_holdout_is_each_users_last_by_data_time(capsys, tmp_path):
    """data.time orders a ranker's interactions before each user's last is held out (numbers or ISO 8601 dates;
    ties keep the file's order; a pair that comes again is kept at its earliest time; zones compared in UTC): the
    file shuffled splits as the file sorted by time does. A cell that is not a time, a column mixing numbers and
    dates, the column missing, or time for a run that is not a ranker's, is one line naming it."""
    _interactions_csv(tmp_path / "clicks.csv", users=20, items=40, per_user=6)
    with open(tmp_path / "clicks.csv") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(1)
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    for name, table, column in (("sorted", rows, "when"), ("shuffled", shuffled, "when"),
                                ("dates", shuffled, "date")):
        with open(tmp_path / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["user", "item", column])
            for r in table:  # dates: the days of 2024 by "when", every other one with a time of day
                day = int(r["when"])
                writer.writerow([r["user"], r["item"], r["when"] if column == "when" else
                                 f"2024-01-{day + 1:02d}" + (" 08:00" if day % 2 else "")])
    (tmp_path / "run.toml").write_text('[data]\npath = "PATH"\n[model]\nname = "mf"\n[train]\ntask = "ranking"\n')

    def split(name: str, *overrides: str):
        cfg = runs.load_config(tmp_path / "run.toml", [f'data.path="{tmp_path / name}"', *overrides])
        found = runs.load_data(cfg)
        names = [{i: v for i, v in enumerate(found.ids[k])} for k in ("user", "item")]
        return sorted((names[0][u], names[1][i]) for u, i in found.x_test), len(found.x_train)

    in_order = split("sorted.csv")
    assert split("sorted.csv", 'data.time="when"') == in_order
    assert split("shuffled.csv", 'data.time="when"') == in_order
    assert split("dates.csv", 'data.time="date"') == in_order
    assert split("shuffled.csv") != in_order  # without data.time: the file's order
    # times with zones: compared in UTC (09:00+02:00 is before 08:00 in UTC), with no warning on the way
    (tmp_path / "zones.csv").write_text("user,item,when\nu1,m1,2024-01-01T09:00:00+02:00\nu1,m2,2024-01-01T08:00:00Z\n"
                                        "u1,m3,2024-01-01T07:30:00\nu2,m1,2024-01-02\nu2,m3,2024-01-01\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert split("zones.csv", 'data.time="when"')[0] == [("u1", "m2"), ("u2", "m1")]
    (tmp_path / "mixed.csv").write_text("user,item,when\nu1,m1,2024-01-01\nu1,m2,1700000000\n")  # a year 1700000000?
    (tmp_path / "bad.csv").write_text("user,item,when\nu1,m1,3\nu1,m2,last week\n")
    for overrides, messages in (
            ([f'data.path="{tmp_path / "bad.csv"}"', 'data.time="when"'],
             ["bad.csv' row 3: when 'last week' is neither a number nor an ISO 8601 date"]),
            ([f'data.path="{tmp_path / "sorted.csv"}"', 'data.time="at"'],
             ["data.time = 'at' in override", "sorted.csv' (its columns: ['user', 'item', 'when'])"]),
            ([f'data.path="{tmp_path / "mixed.csv"}"', 'data.time="when"'],
             ["mixed.csv' column when mixes numbers and dates (row 3: '1700000000', row 2: '2024-01-01')"]),
            ([f'data.path="{tmp_path / "sorted.csv"}"', 'data.time="when"', 'train.task="regression"'],
             ["data.time = 'when' in", "orders a ranker's interactions", "leave time out"]),
            ([f'data.path="{tmp_path / "sorted.csv"}"', 'data.time="when"', 'model.name="mlp"'],
             ["data.time = 'when' in", "names a ranker's column of times", "leave data.time out"]),
            ([f'data.path="{tmp_path / "sorted.csv"}"', "data.time=5"], ["data.time must be a non-empty string"])):
        code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), *overrides, "--out", str(tmp_path / "r"))
        assert_one_line_error(code, err, *messages)


def test_a_ranker_learns_from_a_csv_of_interactions_and_ranks_each_users_last(capsys, tmp_path):
    """train.task = "ranking" reads a recommender's CSV of (user, item) interactions (no label; a repeated pair kept
    once) and holds out each user's last interaction in the file as the test split (the NCF paper's protocol); the
    test metrics are HR@10 and NDCG@10 of the held-out item among 99 items the user never had (fewer where fewer
    are left), as finetune.recommend computes them, above popularity's; evaluate --input ranks new interactions and
    predict writes a score per pair, recommend each user's best items they did not have; a label, a
    test_fraction or a built-in set for a ranker is one line."""
    import finetune
    from finetune import recommend

    _interactions_csv(tmp_path / "clicks.csv")
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "clicks.csv"}"\n[model]\nname = "mf"\n'
                                       '[train]\ntask = "ranking"\n')
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0, err
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    cfg, model = runs.load_run(tmp_path / "r")
    split = runs.load_data(cfg)
    assert split.task == "ranking" and split.y_train is None and len(split.x_test) == 80
    assert len(split.x_train) + len(split.x_test) == 80 * 12  # u0's repeat kept once
    ids = json.loads((tmp_path / "r" / "ids.json").read_text())
    items = model.options["num_items"]
    assert items == len(ids["item"])  # the items the file has (of its 120)
    with open(tmp_path / "clicks.csv") as f:
        twelfth = [r["item"] for r in csv.DictReader(f) if r["user"] == "u0"][11]
    assert split.x_test[0].tolist() == [ids["user"].index("u0"), ids["item"].index(twelfth)]  # not its repeat
    expected = recommend.ranking_metrics(model, split.x_train, split.x_test, items, negatives=99, seed=0)
    assert metrics["test"] == {**expected, "negatives": 99, "short_users": 0, "interactions": 80}
    popular = recommend.ranking_metrics(recommend.popularity(split.x_train, items), split.x_train, split.x_test, items,
                                        negatives=99, seed=0)
    assert metrics["test"]["hr@10"] > popular["hr@10"], (metrics["test"], popular)
    assert runs.evaluate_run(tmp_path / "r") == metrics["test"]
    seen = np.concatenate([split.x_train, split.x_test])
    had = {(ids["user"][u], ids["item"][i]) for u, i in seen}
    new = [(u, next(i for i in ids["item"] if (u, i) not in had)) for u in ("u1", "u2")]  # items new to them
    (tmp_path / "later.csv").write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in new))
    later = runs.evaluate_run(tmp_path / "r", tmp_path / "later.csv")
    pairs = np.array([[ids["user"].index(u), ids["item"].index(i)] for u, i in new])
    assert later == {**recommend.ranking_metrics(model, seen, pairs, items, negatives=99, seed=0), "negatives": 99,
                     "short_users": 0, "interactions": 2, "unseen_skipped": 0}
    # a user and an item training never saw have no factors: their rows are left out and counted, not an error
    (tmp_path / "newcomers.csv").write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in new)
                                            + f"someone new,{new[0][1]}\nu1,an item never seen\n")
    assert runs.evaluate_run(tmp_path / "r", tmp_path / "newcomers.csv") == {**later, "unseen_skipped": 2}
    (tmp_path / "strangers.csv").write_text("user,item\nsomeone new,an item never seen\n")
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "strangers.csv"))
    assert_one_line_error(code, err, "strangers.csv': none of its 1 interaction(s) has a user and an item training had")
    (tmp_path / "again.csv").write_text(f"user,item\n{new[0][0]},{new[0][1]}\nu0,{twelfth}\n")  # u0 had it
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "again.csv"))
    assert_one_line_error(code, err, f"again.csv' has 1 interaction(s) the training file has too, such as ('u0', "
                          f"'{twelfth}'): a ranker is tested on items new to the user")
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "later.csv"), "--output",
                         str(tmp_path / "p.csv"), "--keep", "user", "item")
    assert code == 0, err
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["user", "item", "score"]
    assert [float(r["score"]) for r in rows] == pytest.approx(finetune.predict(model, pairs, task="regression"),
                                                              abs=1e-4)
    code, err = run_main(capsys, "recommend", str(tmp_path / "r"), "--output", str(tmp_path / "top.csv"), "--users",
                         "u0", "u1", "--k", "5")
    assert code == 0, err
    with open(tmp_path / "top.csv") as f:
        top = list(csv.DictReader(f))
    assert [(r["user"], r["rank"]) for r in top] == [(u, str(k)) for u in ("u0", "u1") for k in range(1, 6)]
    assert not any((r["user"], r["item"]) in had for r in top)  # what they had is not recommended again
    every = finetune.predict(model, np.stack([np.full(items, ids["user"].index("u0")), np.arange(items)], 1),
                             task="regression")
    unseen = [i for i in np.argsort(-every, kind="stable") if ("u0", ids["item"][i]) not in had][:5]
    assert [r["item"] for r in top[:5]] == [ids["item"][i] for i in unseen]
    assert [float(r["score"]) for r in top[:5]] == pytest.approx(every[unseen], abs=1e-4)
    for args, message in ((["--users", "u999"], "--users 'u999' is not a user of the run's training file (80 users"),
                          (["--k", "0"], "--k must be an integer >= 1, got 0")):
        code, err = run_main(capsys, "recommend", str(tmp_path / "r"), "--output", str(tmp_path / "top.csv"), *args)
        assert_one_line_error(code, err, message)
    (tmp_path / "small.toml").write_text(f'[data]\npath = "{tmp_path / "small.csv"}"\n[model]\nname = "mf"\n'
                                         '[train]\ntask = "ranking"\nepochs = 1\n')
    _interactions_csv(tmp_path / "small.csv", users=10, items=30)  # each user has 12 of 30: 18 left to rank among
    code, err = run_main(capsys, "train", str(tmp_path / "small.toml"), "--out", str(tmp_path / "s"), "--quiet")
    assert code == 0, err
    small = json.loads((tmp_path / "s" / "metrics.json").read_text())["test"]  # each user has 12 items of 30 or fewer:
    items_small = len(json.loads((tmp_path / "s" / "ids.json").read_text())["item"])  # ranked among all they lack
    assert small["negatives"] == items_small - 1 and small["short_users"] == 10 and small["interactions"] == 10
    with open(tmp_path / "clicks.csv", "a") as f:  # the training file changed: its test split would be other rows
        f.write("u5,m3,99\n")
    for command in (["evaluate", str(tmp_path / "r")], ["recommend", str(tmp_path / "r"), "--output",
                                                         str(tmp_path / "top.csv")]):
        code, err = run_main(capsys, *command)
        assert_one_line_error(code, err, "clicks.csv' has changed since", "trained on it: its test split (and what "
                              "each user had) would be read from other rows; restore the file, or train again")
    (tmp_path / "clicks.csv").rename(tmp_path / "moved.csv")  # gone: said so, not "changed"
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"))
    assert_one_line_error(code, err, "clicks.csv', the data", "trained on, does not exist (moved or deleted)")
    (tmp_path / "moved.csv").rename(tmp_path / "clicks.csv")
    (tmp_path / "blank.csv").write_text("user,item\nu1,m1\n,m2\n")
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), f'data.path="{tmp_path / "blank.csv"}"',
                         "--out", str(tmp_path / "b"))
    assert_one_line_error(code, err, "blank.csv' row 3: user is blank")
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), 'train.task="regression"', "--out",
                         str(tmp_path / "b"))
    assert_one_line_error(code, err, "clicks.csv' has no rating column 'label' (data.label; its columns: ['user', "
                          "'item', 'when']): a CSV of interactions without ratings trains train.task = 'ranking'")
    code, err = run_main(capsys, "recommend", str(tmp_path / "s"), "--output", str(tmp_path))
    assert_one_line_error(code, err, "is a folder: name the CSV file to write")
    (tmp_path / "builtin.toml").write_text('[data]\ndataset = "movielens"\n[train]\ntask = "ranking"\n[model]\n'
                                           'name = "mf"\n')
    for config, overrides, messages in (
            ("run.toml", ['data.label="when"'], ["data.label = 'when' in", "and train.task = 'ranking': a ranker "
                                                  "learns from which items each user had, not from a label"]),
            ("run.toml", ["data.test_fraction=0.1"], ["data.test_fraction = 0.1 in", "each user's last interaction "
                                                      "is held out as the test split; leave test_fraction out"]),
            ("run.toml", ['model.name="mlp"'], ["train.task = 'ranking' in", "learns from a CSV of (user, item) "
                                                "interactions", "ranking models: ['mf', 'ncf']"]),
            ("builtin.toml", [], ["train.task='ranking' does not fit dataset 'movielens'", "ranking learns from a CSV "
                                  "of (user, item) interactions"])):
        code, err = run_main(capsys, "train", str(tmp_path / config), *overrides, "--out", str(tmp_path / "r2"))
        assert_one_line_error(code, err, *messages)


def test_a_built_in_text_sets_run_reads_new_texts_from_a_csv_of_one_column(tmp_path):
    """A run of the built-in Rotten Tomatoes has no CSV column to go by: predict reads a CSV's one column (a label
    column beside it is left out); with more, one line says to give one."""
    cfg = runs.load_config(EXAMPLES / "rotten-tomatoes.toml")
    (tmp_path / "new.csv").write_text("review\ngreat fun\n\"awful, just awful\"\n")
    assert runs.read_inputs(cfg, tmp_path / "new.csv").tolist() == ["great fun", "awful, just awful"]
    (tmp_path / "labelled.csv").write_text("label,review\n1,great fun\n")
    assert runs.read_inputs(cfg, tmp_path / "labelled.csv").tolist() == ["great fun"]
    (tmp_path / "two.csv").write_text("id,review\n1,great fun\n")
    with pytest.raises(ValueError, match=r"two.csv' has 2 columns besides the label 'label' \(\['id', 'review'\]\): "
                                         r"the run trained on the built-in 'rotten-tomatoes', so new texts come as a "
                                         r"CSV of one column"):
        runs.read_inputs(cfg, tmp_path / "two.csv")


def test_a_label_column_coded_from_one_reads_its_codes_as_class_names(capsys, tmp_path):
    """Many files write their classes 1..K. Python's finetune.train asks for ids 0..K-1 (np.unique first); a file
    has no such step, so the CLI reads the codes as class names: predict writes them back, evaluate reads them
    again. Other gaps ({0, 3, 7}) are an error naming the file's column and what to write instead."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    label = (x[:, 0] + x[:, 1] > 0).astype(int) + 1
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "label": label}).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "t.csv"}"\n[model]\nname = "mlp"\n'
                                       '[train]\nepochs = 3\n')
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0, err
    own = runs.evaluate_run(tmp_path / "r")
    assert own["classes"] == ["1", "2"] and own["accuracy"] > 0.8
    pd.DataFrame({"a": x[:20, 0], "b": x[:20, 1], "label": label[:20]}).to_csv(tmp_path / "new.csv", index=False)
    assert runs.evaluate_run(tmp_path / "r", tmp_path / "new.csv")["accuracy"] > 0.8  # the codes read again
    code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "new.csv"),
                         "--output", str(tmp_path / "p.csv"))
    assert code == 0, err
    written = pd.read_csv(tmp_path / "p.csv")
    assert list(written.columns) == ["prediction", "p_1", "p_2"] and set(written["prediction"]) <= {1, 2}
    assert (written["prediction"] == label[:20]).mean() > 0.8
    pd.DataFrame({"a": x[:20, 0], "b": x[:20, 1], "label": 1.5}).to_csv(tmp_path / "half.csv", index=False)
    code, err = run_main(capsys, "evaluate", str(tmp_path / "r"), "--input", str(tmp_path / "half.csv"))
    assert_one_line_error(code, err, "half.csv' column 'label' must hold integer class ids")
    gaps = np.array([0, 3, 7])[np.arange(200) % 3]
    pd.DataFrame({"a": x[:, 0], "label": gaps}).to_csv(tmp_path / "gaps.csv", index=False)
    code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), f'data.path="{tmp_path / "gaps.csv"}"',
                         "--out", str(tmp_path / "g"), "--quiet")
    assert_one_line_error(code, err, "the labels in '", "gaps.csv' label column 'label' are not the class ids 0..K-1",
                          "write them in the file as 0..K-1, or as words", "train.task='regression'")
    assert "np.unique" not in err


def test_warnings_about_a_csvs_word_columns_name_them_by_the_header(capsys, caplog, tmp_path):
    """The CLI reads a CSV with words into an array without names: its warnings said "X column 1". They name the
    header's column: an id-like column in training, a word training never had at predict."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    colour = rng.choice(["red", "green", "blue"], size=200)
    frame = pd.DataFrame({"a": x[:, 0], "customer": [f"C{i:04d}" for i in range(200)], "colour": colour,
                          "b": x[:, 1], "label": (x[:, 0] + x[:, 1] > 0).astype(int)})
    frame.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "t.csv"}"\n[model]\nname = "mlp"\n'
                                       '[train]\nepochs = 2\n')
    with caplog.at_level("WARNING", logger="finetune"):
        code, err = run_main(capsys, "train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"), "--quiet")
    assert code == 0, err
    assert "X column 'customer': no value of it is held by 2 or more training rows" in caplog.text, caplog.text
    frame.iloc[:3].assign(colour="purple").to_csv(tmp_path / "new.csv", index=False)
    caplog.clear()
    with caplog.at_level("WARNING", logger="finetune"):
        code, err = run_main(capsys, "predict", str(tmp_path / "r"), "--input", str(tmp_path / "new.csv"),
                             "--output", str(tmp_path / "p.csv"))
    assert code == 0, err
    assert "X column 'colour': 3 of 3 rows hold a value training did not have as a level (e.g. 'purple'" in \
        caplog.text, caplog.text
    assert data.shown_column(2) == "2"  # outside the CLI's runs, positions again


def test_new_rows_of_a_built_in_table_are_read_as_the_run_trained_on_them(capsys, tmp_path, wine_run):
    """scikit-learn's wine and diabetes train standardised by their training split. Rows given to predict or
    evaluate --input as scikit-learn ships them are read through the same statistics (wine's raw rows all
    predicted one class, 0.33 accuracy on rows it trained on); a regression's predictions come back in the
    target's units, evaluate's metrics stay in the run's (the target's std, as metrics.json's test)."""
    sklearn = pytest.importorskip("sklearn.datasets")
    from finetune import datasets

    assert all(datasets.load(n).x_scale is not None for n in datasets.STANDARDISED)  # the sets read through it
    assert datasets.load("digits").x_scale is None  # pixels in [0, 1], as images are given
    x, y = sklearn.load_wine(return_X_y=True)
    np.savez(tmp_path / "wine.npz", X=x, y=y)
    split = datasets.load("wine", seed=0)
    assert runs.evaluate_run(wine_run, tmp_path / "wine.npz")["accuracy"] > 0.9
    same = runs.evaluate_run(wine_run)  # the test split, already standardised: as before
    np.savez(tmp_path / "test.npz", X=split.x_test * split.x_scale[1] + split.x_scale[0], y=split.y_test)
    assert runs.evaluate_run(wine_run, tmp_path / "test.npz")["accuracy"] == pytest.approx(same["accuracy"])
    code, err = run_main(capsys, "train", str(EXAMPLES / "diabetes.toml"), "train.epochs=5", "--out",
                         str(tmp_path / "d"), "--quiet")
    assert code == 0, err
    x, y = sklearn.load_diabetes(return_X_y=True)
    np.savez(tmp_path / "diabetes.npz", X=x, y=y)
    test = json.loads((tmp_path / "d" / "metrics.json").read_text())["test"]
    diabetes = datasets.load("diabetes", seed=0)
    raw_test = diabetes.x_test * diabetes.x_scale[1] + diabetes.x_scale[0]
    np.savez(tmp_path / "raw_test.npz", X=raw_test, y=diabetes.y_test * diabetes.y_scale[1] + diabetes.y_scale[0])
    again = runs.evaluate_run(tmp_path / "d", tmp_path / "raw_test.npz")
    assert again["r2"] == pytest.approx(test["r2"], abs=1e-4) and again["rmse"] == pytest.approx(test["rmse"], abs=1e-4)
    runs.predict_file(tmp_path / "d", tmp_path / "raw_test.npz", tmp_path / "p.csv")
    predicted = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1)
    assert 100 < predicted.mean() < 200  # disease progression's units (25 to 346), not its std's
    r2 = 1 - ((predicted - (diabetes.y_test * diabetes.y_scale[1] + diabetes.y_scale[0])) ** 2).sum() / \
        ((diabetes.y_test - diabetes.y_test.mean()) ** 2).sum() / diabetes.y_scale[1] ** 2
    assert r2 == pytest.approx(test["r2"], abs=1e-3)


@pytest.mark.parametrize("flag, value, said", [("--seeds", "0", "seeds must be an int of at least 1, got 0"),
                                               ("--fraction", "1.5", "fraction must be in (0, 1], got 1.5")])
def test_demo_refuses_no_seeds_and_a_fraction_past_one(capsys, flag, value, said):
    code, err = run_main(capsys, "demo", flag, value)  # --seeds 0 was an IndexError's traceback
    assert_one_line_error(code, err, said)
