"""The `finetune` command (also `python -m finetune`).

    finetune train CONFIG [section.key=value ...] [--out RUN_DIR]   fine-tune as a config file says
    finetune evaluate RUN_DIR [--input X.npz|X.csv]                  test metrics of a finished run (or on new rows)
    finetune predict RUN_DIR --input X.npz|X.csv --output preds.csv  predictions for new data
    finetune recommend RUN_DIR --output recs.csv [--users ID ...]    each user's top items (a recommender's run)
    finetune find-lr CONFIG [overrides]                              a learning-rate range test
    finetune tune CONFIG [overrides]                                 search the config's [tune] space (Optuna)
    finetune compare RUN_DIR ...                                     runs side by side
    finetune datasets                                                the built-in data sets
    finetune demo                                                    fine-tune a pretrained CNN on digits
    finetune example [--threads N ...] / bench [--threads N ...]     the C++ example / benchmark programs

A mistake in the input exits with status 2 and one line saying what is wrong; --verbose shows the traceback.
`example` and `bench` pass every argument after them to the C++ program (finetune_example, finetune_bench).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from . import registry

USER_ERRORS = (ValueError, TypeError, OSError, ImportError, KeyError)

# The C++ programs `finetune example` and `finetune bench` run, with the options they take (passed through).
PROGRAMS = {
    "example": ("finetune_example", "[--data DIR] [--fraction F] [--recipe auto|none] [--epochs N] "
                "[--pretrain-epochs N] [--fine-tune-optimizer sgd|adamw] [--limit N] [--seed N] [--threads N]",
                "the article's example in C++: a CNN pretrained on classes 0-4 of an IDX image set (Fashion-MNIST "
                "by default, from the Debian package dataset-fashion-mnist; --data DIR for another folder of "
                "MNIST-format IDX files) is fine-tuned on a stratified sample of all ten classes, by the recipe (--recipe "
                "none: the article's plain SGD for --epochs)"),
    "bench": ("finetune_bench", "[--threads N] [--steps N]",
              "training throughput of the built-in native models in the C++ loop, no Python involved"),
}


def program_dirs() -> list[Path]:
    """Where the C++ programs are looked for, in order: finetune/bin/ beside the package (a wheel install) or
    in a site-packages directory (an editable install puts the built files there), then the CMake build trees
    of a source checkout (build/editable from the README's editable install, build/cmake, any build/*)."""
    package = Path(__file__).resolve().parent
    dirs = [package / "bin"]
    finetune_package = sys.modules.get("finetune")
    for entry in [*getattr(finetune_package, "__path__", []), *(Path(p) / "finetune" for p in sys.path if p)]:
        dirs.append(Path(entry) / "bin")
    checkout = package.parents[1]
    if (checkout / "CMakeLists.txt").is_file() and (checkout / "build").is_dir():
        trees = sorted(p for p in (checkout / "build").iterdir() if p.is_dir())
        dirs += sorted(trees, key=lambda p: (p.name != "editable", p.name != "cmake", p.name))
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def bin_path(program: str) -> Path | None:
    """Path of a C++ program built with the package (see program_dirs), or None where none is built."""
    for folder in program_dirs():
        candidate = folder / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _run_program(command: str, args: list[str]) -> int:
    """`finetune example|bench ARGS`: runs the C++ program with ARGS passed through unchanged."""
    program, usage, description = PROGRAMS[command]
    if "-h" in args or "--help" in args:
        print(f"usage: finetune {command} {usage}\n\n{description}.\nThe options are passed to the C++ program "
              f"{program} unchanged.")
        return 0
    path = bin_path(program)
    if path is None:
        print(f"finetune: error: the C++ program {program} is not built here (looked in finetune/bin and the "
              f"build/ trees); a regular install (pip install .) builds it, or: cmake -S . -B build/cmake -G Ninja "
              f"&& ninja -C build/cmake", file=sys.stderr)
        return 2
    if command == "example" and "--data" not in args:
        from .datasets import FASHION_MNIST

        if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
            print(f"finetune: error: finetune example reads Fashion-MNIST from {FASHION_MNIST}, which is not "
                  f"there: apt-get install dataset-fashion-mnist, or pass --data DIR (a folder of MNIST-format IDX "
                  f"files)", file=sys.stderr)
            return 2
    sys.stdout.flush()
    try:
        code = subprocess.call([str(path), *args])
    except OSError as error:
        print(f"finetune: error: cannot run {path}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("finetune: interrupted", file=sys.stderr)
        return 130
    return 128 - code if code < 0 else code  # killed by a signal: 128 + its number, as a shell reports it


CONFIG_HELP = f"""\
a run config has the tables (see examples/*.toml):
  [data]   dataset = a built-in set (finetune datasets), or path = a .csv/.npz file with label = its target
           column, or a folder of images with a sub-folder per class; val_fraction (the training rows held
           out for validation: the recipe's 0.2, none before SetFit-style pairs; 0.2 for settings as given; the
           recipe refits on them), test_fraction (0.2 of a file's rows held out for its test split; 0: none), seed (0);
           encoding, encoding_errors, missing_labels ("error", or "drop": rows without a label left out) for a
           CSV; text (a text model's column); user, item (a recommender's id
           columns), time (a ranker's column of times: each user's last by it is held out); image_size, image_mode, image_mean, image_std, stream, on_bad_file (a folder's images:
           their size, L or RGB, their normalisation (default: the model's pretraining's), read a batch at a
           time, a file that cannot be read skipped)
  [model]  name = one of {', '.join(registry.names())}, and that model's options (sizes are read off the data)
  [train]  any TrainConfig field: epochs, batch_size, optimizer, lr, schedule, freeze, ...
  [tune]   the search space of finetune tune
overrides are section.key=value with a TOML value: train.lr=3e-4 model.hidden=[256,128] data.dataset='"wine"'
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune", description="Fine-tune models with a C++ LibTorch loop.",
                                     epilog="Run 'finetune COMMAND --help' for a command's options.")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks and debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="fine-tune as a config file says, writing a run directory",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=CONFIG_HELP)
    train.add_argument("config", help="a TOML (or YAML) run config, e.g. examples/digits.toml")
    train.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.lr=3e-4 model.hidden=[256]")
    train.add_argument("--out", default=None, help="run directory (default runs/<config name>)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in the run directory from its checkpoints (the same config)")
    train.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                       help="TensorBoard event files in RUN_DIR/tensorboard, written as each epoch ends: by default "
                            "when tensorboardX is installed; --tensorboard requires it, --no-tensorboard skips them")

    evaluate = commands.add_parser("evaluate", help="test metrics of a finished run, or of its model on new labelled rows (JSON)")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--input", help="new labelled data instead of the run's test split: .npz (arrays X and y), "
                          ".csv (the training file's feature columns and its label column) or a folder of images "
                          "(a sub-folder per class)")
    evaluate.add_argument("--on-bad-file", choices=["error", "skip"], default=None,
                          help="an image of the --input folder Pillow cannot read: stop (error) or leave it out "
                               "(skip); default: as the run's data.on_bad_file")

    predict = commands.add_parser("predict", help="predictions of a finished run for new data, as CSV")
    predict.add_argument("run_dir")
    predict.add_argument("--input", required=True,
                         help='.npz (array X), .csv (feature columns: numbers, and words where an "mlp" '
                              'trained on them; a text model: its column of texts; a recommender: its user and '
                              'item columns) or a folder of images (each row named by its file)')
    predict.add_argument("--output", required=True, help="CSV file to write")
    predict.add_argument("--keep", nargs="+", action="extend", default=[], metavar="COLUMN",
                         help="columns of the input CSV copied to the output before the predictions, as written (an "
                              "id to join them back on); a column the model was not trained on is not read")
    predict.add_argument("--on-bad-file", choices=["error", "skip"], default=None,
                         help="an image of the --input folder Pillow cannot read: stop (error) or leave it out, "
                              "listed (skip); default: as the run's data.on_bad_file")

    recommend = commands.add_parser("recommend", help="each user's best items by a recommender run (one trained on a "
                                    "CSV of ratings or interactions), as CSV: user, rank, item, score")
    recommend.add_argument("run_dir")
    recommend.add_argument("--output", required=True, help="CSV file to write")
    recommend.add_argument("--users", nargs="+", action="extend", default=[], metavar="ID",
                           help="users' ids as the training file writes them (default: every user)")
    recommend.add_argument("--k", type=int, default=10, help="items per user (default 10), best first; those the "
                           "user had in the training file are left out")

    find_lr = commands.add_parser("find-lr", help="learning-rate range test for a config")
    find_lr.add_argument("config")
    find_lr.add_argument("overrides", nargs="*")
    find_lr.add_argument("--steps", type=int, default=100)

    tune = commands.add_parser("tune", help="search a config's [tune] space with Optuna; writes the best config")
    tune.add_argument("config")
    tune.add_argument("overrides", nargs="*")
    tune.add_argument("--out", default=None, help="directory for best.toml and trials.csv (default runs/<name>-tune; "
                      "runs/<name> for a config named *-tune)")

    compare = commands.add_parser("compare", help="runs side by side: differing settings and final metrics")
    compare.add_argument("run_dirs", nargs="+")

    commands.add_parser("datasets", help="list the built-in data sets")

    demo = commands.add_parser("demo", help="fine-tune a pretrained digit CNN on a 20%% stratified sample")
    demo.add_argument("--fraction", type=float, default=0.2, help="sampled fraction of the training set")
    demo.add_argument("--seeds", type=int, default=5, help="seeds (each its own split, pretraining and sample)")
    for name, (program, usage, description) in PROGRAMS.items():
        # Only reached through _split_program_args, which hands everything after the command to the program.
        sub = commands.add_parser(name, help=f"{description.split(':')[0]} ({program}; options passed through)",
                                  add_help=False, usage=f"finetune {name} {usage}")
        sub.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _split_program_args(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """(argv for the parser, the arguments for a C++ program or None): `finetune [--verbose] example|bench ARGS`
    gives every one of ARGS to the program, options first included (argparse's REMAINDER would reject them)."""
    i = 0
    while i < len(argv) and argv[i] == "--verbose":
        i += 1
    if i < len(argv) and argv[i] in PROGRAMS:
        return argv[:i + 1], argv[i + 1:]
    return argv, None


def _train(args) -> int:
    from . import runs

    cfg = runs.load_config(args.config, args.overrides)
    out = args.out or os.path.join("runs", Path(args.config).stem)
    metrics = runs.run(cfg, out, quiet=args.quiet, tensorboard=args.tensorboard, resume=args.resume)
    from . import distributed

    if distributed.process_rank() == 0:  # under torchrun, rank 0 wrote the run directory
        test = ", ".join(f"{k} {v:.4f}" for k, v in metrics["test"].items() if isinstance(v, float))
        test = f"test {test}" if test else "no test split (data.test_fraction = 0: every row trained)"
        decided = {d["what"]: d["value"] for d in metrics.get("recipe", [])}
        kept = ("popularity (it ranked the validation slice better than the trained factors)"
                if decided.get("popularity") is True else f"phase {decided['kept']}" if "kept" in decided else None)
        print(f"run written to {out}: {test}" + (f" (the recipe kept {kept})" if kept else ""))
    return 0


def _evaluate(args) -> int:
    from . import runs

    print(json.dumps(runs.evaluate_run(args.run_dir, args.input, args.on_bad_file), indent=1))
    return 0


def _predict(args) -> int:
    from . import runs

    rows = runs.predict_file(args.run_dir, args.input, args.output, args.keep, args.on_bad_file)
    print(f"{rows} predictions written to {args.output}")
    return 0


def _recommend(args) -> int:
    from . import runs

    rows = runs.recommend_file(args.run_dir, args.output, args.users, args.k)
    print(f"{rows} recommendations written to {args.output}")
    return 0


def _find_lr(args) -> int:
    from . import runs

    if args.steps < 2:  # said by the flag's name, not the function's argument (num_steps)
        raise ValueError(f"--steps must be at least 2 (a curve needs two rates), got {args.steps}")
    curve = runs.find_lr(runs.load_config(args.config, args.overrides), args.steps)
    print(f"suggested lr {curve.suggestion:.3g}: the lowest loss's rate / {curve.divisor:g}, the recipe's rule "
          f"(steepest descent at {curve.steepest:.3g}; {len(curve.lrs)} steps"
          f"{', stopped when the loss blew up' if curve.diverged else ''})")
    return 0


def _tune(args) -> int:
    from . import runs

    cfg = runs.load_config(args.config, args.overrides)
    metric = cfg.tune.get("metric", "val_loss")
    stem = Path(args.config).stem  # examples/wine-tune.toml -> runs/wine-tune, wine.toml -> runs/wine-tune
    out = Path(args.out or os.path.join("runs", stem if stem.endswith("-tune") else stem + "-tune"))

    def show(record):
        print(f"trial {record['number']:3d} {record['state']:8s} {metric} {record['value']:.4f} "
              f"after {record['epochs']} epoch(s)  {json.dumps(record['params'])}", flush=True)

    result = runs.tune_run(cfg, out, on_trial=show)
    print(f"best {metric} {result.best_value:.4f} with {json.dumps(result.best_params)}; "
          f"ready-to-run config: {out / runs.BEST_FILE}")
    return 0


def _compare(args) -> int:
    from . import runs

    rows = runs.compare(args.run_dirs)
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
    return 0


def _datasets(args) -> int:
    from . import datasets

    for name in datasets.names():
        print(name)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv, program_args = _split_program_args(list(sys.argv[1:] if argv is None else argv))
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # section.key=value after an option (argparse takes positionals only before them)
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if args.command in PROGRAMS:
        return _run_program(args.command, program_args if program_args is not None else args.args)
    handlers = {"train": _train, "evaluate": _evaluate, "predict": _predict, "recommend": _recommend,
                "find-lr": _find_lr, "tune": _tune, "compare": _compare, "datasets": _datasets}
    try:
        if args.command == "demo":
            from .demo import run_demo

            run_demo(fraction=args.fraction, seeds=args.seeds)
            return 0
        return handlers[args.command](args)
    except BrokenPipeError:  # the reader stopped reading (`finetune evaluate RUN | head`): done, as cat is
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit must not fail too
        return 0
    except USER_ERRORS as error:
        if args.verbose:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"finetune: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = ""
        if args.command == "train" and not args.resume:  # its checkpoints are written as it goes
            out = args.out or os.path.join("runs", Path(args.config).stem)
            resume = f"; the same command with --resume continues it from its checkpoints in {out}"
        print(f"finetune: interrupted{resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
