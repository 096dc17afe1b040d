"""The `finetune` command: `finetune demo`, `finetune example` (the C++ program)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def bin_path(program: str) -> Path:
    """Path of a C++ program installed with the package (finetune/bin/)."""
    return Path(__file__).resolve().parent / "bin" / program


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finetune", description="Fine-tune models with a C++ LibTorch loop.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="fine-tune a pretrained digit classifier on a 20%% stratified sample")
    demo.add_argument("--fraction", type=float, default=0.2, help="sampled fraction of the training set")
    demo.add_argument("--epochs", type=int, default=20)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    for name, help_text in (("example", "the article's C++ example (finetune_example)"),
                            ("bench", "the C++ benchmark binary (finetune_bench)")):
        sub = commands.add_parser(name, help=help_text, add_help=False)
        sub.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        run_demo(fraction=args.fraction, epochs=args.epochs, seed=args.seed, progress=not args.quiet)
        return 0
    program = bin_path(f"finetune_{args.command}")
    if not program.exists():
        print(f"finetune: {program} is not installed", file=sys.stderr)
        return 1
    return subprocess.call([str(program), *args.args], env=os.environ.copy())


if __name__ == "__main__":
    sys.exit(main())
