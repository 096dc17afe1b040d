"""Data-parallel scaling: the same fine-tune on 1 and on 2 processes (torchrun, Gloo, loopback).

    python benchmarks/distributed.py [--repeats 3] [--examples 3072]

A compute-bound CNN (finetune's native "cnn", 1x28x28, 415 KiB of parameters) trains one epoch on random
images with a global batch of 64 (32 per rank with 2 processes), one thread per process. Two processes run
twice: with bucket_mb=25 every gradient lands in one bucket, whose all-reduce can only start when backward
ends; with bucket_mb=0.1 the classifier's gradients go on the wire while backward still works through the
convolutions. Runs alternate; the table shows median samples/s, scaling efficiency (2-process throughput /
(2 x 1-process)), the loop's time in the all-reduce (what backward did not hide) and the share of buckets
started during backward.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def worker(out: str, examples: int, bucket_mb: float) -> None:
    import torch

    import finetune

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.manual_seed(0)
    x, y = torch.randn(examples, 1, 28, 28), torch.randint(0, 10, (examples,))
    settings = dict(epochs=1, batch_size=64 // world, progress=False, bucket_mb=bucket_mb)
    finetune.train("cnn", (x[:256], y[:256]), **settings)  # warm-up
    start = time.perf_counter()
    result = finetune.train("cnn", (x, y), **settings)
    seconds = time.perf_counter() - start
    if int(os.environ.get("RANK", "0")) == 0:
        with open(out, "w") as f:
            json.dump({"samples_per_s": examples / seconds, "seconds": seconds,
                       "communication_seconds": result.communication_seconds, "world": result.world_size,
                       "overlap": result.allreduce_overlap}, f)


def launch(nproc: int, examples: int, bucket_mb: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-backend=c10d", __file__, "--worker", out,
               "--examples", str(examples), "--bucket-mb", str(bucket_mb)]
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        with open(out) as f:
            return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--examples", type=int, default=3072)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--bucket-mb", type=float, default=25.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.examples, args.bucket_mb)
        return
    setups = [(1, 25.0), (2, 25.0), (2, 0.1)]
    runs: dict[tuple[int, float], list[dict]] = {setup: [] for setup in setups}
    for _ in range(args.repeats):
        for nproc, bucket_mb in setups:
            runs[nproc, bucket_mb].append(launch(nproc, args.examples, bucket_mb))
    one = statistics.median(r["samples_per_s"] for r in runs[1, 25.0])
    print(f"cnn 1x28x28, global batch 64, {args.examples} examples, 1 thread per process, "
          f"median of {args.repeats}, {os.cpu_count()} cores\n")
    print("| processes | bucket_mb | samples/s | scaling efficiency | all-reduce share of time "
          "| all-reduces overlapping backward |\n|---|---|---|---|---|---|")
    print(f"| 1 | - | {one:,.0f} | - | - | - |")
    for nproc, bucket_mb in setups[1:]:
        results = runs[nproc, bucket_mb]
        speed = statistics.median(r["samples_per_s"] for r in results)
        share = statistics.median(r["communication_seconds"] / r["seconds"] for r in results)
        overlap = statistics.median(r["overlap"] for r in results)
        print(f"| {nproc} | {bucket_mb:g} | {speed:,.0f} | {speed / (nproc * one):.2f} | {share:.1%} | {overlap:.0%} |")


if __name__ == "__main__":
    main()
