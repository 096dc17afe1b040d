"""Streamed images: images/s delivered to finetune's loop from a folder of JPEGs, beside a plain DataLoader loop.

    python benchmarks/data.py                      # 20,000 generated 256x256 JPEGs, read at 224x224
    python benchmarks/data.py --images 2000 --workers 0 1 2

Each row runs in its own process (peak resident memory is that process's, its workers' measured apart). Both
sides decode with Pillow, resize to 224x224 and train the same small model (a strided conv and a linear head) for
one epoch in batches of 64; finetune reads through finetune.datasets.ImageFolder (the C++ loop planning the
epoch, DataLoader workers reading ahead), the plain loop through a torch DataLoader over an equivalent Pillow
dataset with the same workers. "waiting" is the share of finetune's epoch spent in fetch (the loop waiting for
data or reading it itself).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

SIZE = 224


def make_folder(root: Path, images: int, side: int = 256, classes: int = 10) -> None:
    """`images` JPEGs (quality 90) of smooth class-tinted noise, spread over `classes` sub-folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (classes, 8, 8, 3)).astype(np.uint8)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        c = i % classes
        tile = Image.fromarray(base[c]).resize((side, side), Image.Resampling.BILINEAR)
        noise = rng.integers(-20, 20, (side, side, 3))
        pixels = np.clip(np.asarray(tile, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"class{c}" / f"{i:06d}.jpg", quality=90)


CHILD = textwrap.dedent("""
    import json, re, resource, sys, time
    import torch, numpy as np
    torch.set_num_threads(1)
    side, root, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 8, stride=8), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(4),
                                   torch.nn.Flatten(), torch.nn.Linear(128, 10))

    if side == "finetune":
        import finetune
        folder = finetune.datasets.ImageFolder(root, size=224)
        start = time.perf_counter()
        result = finetune.train(model(), folder, epochs=1, batch_size=64, lr=0.01, num_workers=workers,
                                progress=False)
        seconds = time.perf_counter() - start
        waiting = result.streaming["wait_seconds"] / result.history[0]["seconds"]
        images = result.train_size
    else:
        from PIL import Image
        import finetune.datasets as d

        class Pillow(torch.utils.data.Dataset):
            def __init__(self, root):
                self.samples = d.ImageFolder(root, size=224).samples  # the same files in the same order
            def __len__(self):
                return len(self.samples)
            def __getitem__(self, i):
                path, label = self.samples[i]
                with Image.open(path) as image:
                    array = np.asarray(image.convert("RGB").resize((224, 224)), dtype=np.float32) / 255.0
                return torch.from_numpy(array.transpose(2, 0, 1).copy()), label

        loader = torch.utils.data.DataLoader(Pillow(root), batch_size=64, shuffle=True, num_workers=workers,
                                             generator=torch.Generator().manual_seed(0))
        net = model()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        start = time.perf_counter()
        images, waited, mark = 0, 0.0, time.perf_counter()
        for x, y in loader:
            waited += time.perf_counter() - mark
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
            images += len(y)
            mark = time.perf_counter()
        seconds = time.perf_counter() - start
        waiting = waited / seconds
    # VmHWM, not ru_maxrss: that would count the parent this process was forked from
    peak_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
    print(json.dumps({"images": images, "seconds": seconds, "waiting": waiting, "rss_mib": peak_kib / 1024,
                      "workers_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
""")


def run(side: str, root: Path, workers: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, side, str(root), str(workers)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folder", type=Path, help="reuse (or make) the images here instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        root = args.folder or Path(temp) / "images"
        if not any(root.glob("class*/*.jpg")):
            start = time.perf_counter()
            make_folder(root, args.images)
            print(f"made {args.images} JPEGs (256x256) in {time.perf_counter() - start:.0f} s", flush=True)
        print("| workers | reader | images/s | waiting for data | peak RSS (main) | peak RSS (a worker) |")
        print("|---|---|---|---|---|---|")
        for workers in args.workers:
            for side in ("plain", "finetune"):  # side by side, one after the other for each worker count
                r = run(side, root, workers)
                name = "finetune `ImageFolder`" if side == "finetune" else "plain `DataLoader` loop"
                print(f"| {workers} | {name} | {r['images'] / r['seconds']:.0f} | {r['waiting']:.0%} | "
                      f"{r['rss_mib']:.0f} MiB | {r['workers_rss_mib']:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
