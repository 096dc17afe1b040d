"""Benchmark figures saved as JSON (per seed, with the command and the CPU) and read back for quality.py's plot.

A script calls `panel(title, method, values)` for each row of each table column, then `save(path, seconds)`;
`python benchmarks/quality.py --sections --load docs/quality/*.json --plot docs/quality.png` draws them all.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch

# Every table's figures: {panel title: {method: values over seeds}}, one panel per table column.
PANELS: dict[str, dict[str, list[float]]] = {}


def panel(title: str, method: str, values: list[float]) -> None:
    PANELS.setdefault(title, {})[method] = [float(v) for v in values]


def cpu_name() -> str:
    """The CPU's model name and its widest vector units (README figures name the CPU they came from; a virtual
    machine's name may be only "Intel(R) Xeon(R) Processor", and bf16 runs ~8x faster with AMX than without)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    units = [unit for flag, unit in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("amx_tile", "AMX")) if flag in flags]
    return f"{name} ({', '.join(units[-2:] if 'avx512f' in flags else units)})" if units else name


def save(path: str, seconds: float) -> None:
    """Every table's figures so far, with what produced them, for a later `quality.py --load`."""
    record = {"command": "python " + " ".join(sys.argv), "cpu": cpu_name(), "threads": torch.get_num_threads(),
              "seconds": round(seconds, 1), "panels": PANELS}
    Path(path).write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nFigures of {len(PANELS)} tables written to {path}")


def load(path: str) -> None:
    """Adds a saved run's tables to PANELS: a table in two files joins their rows (a row run apart, as the text
    section's old defaults; a baseline both ran, TF-IDF, the same figures); a row saved twice with other figures
    is an error (two runs of the same section)."""
    record = json.loads(Path(path).read_text())
    for title, methods in record["panels"].items():
        earlier = PANELS.get(title, {})
        twice = sorted(m for m in set(methods) & set(earlier) if methods[m] != earlier[m])
        if twice:
            raise SystemExit(f"error: --load {path}: the table {title!r} has the row(s) {twice} of an earlier file")
        PANELS.setdefault(title, {}).update(methods)
    print(f"{path}: {len(record['panels'])} tables from `{record['command']}` ({record['cpu']}, "
          f"{record['threads']} threads, {record['seconds']:.0f} s)")
