"""The progress display: one line per epoch on stderr, and within each epoch tqdm's bar where someone watches (a
terminal or a notebook, tqdm installed) -- redirected to a file or a CI log, a bar is kilobytes of carriage returns,
so there a long epoch prints a plain line every STEP_LINE_SECONDS instead."""

from __future__ import annotations

import sys
import time
from typing import Any

# Unwatched, an epoch longer than this prints where it is this often (one epoch of SetFit's pairs on MiniLM runs
# minutes on a CPU, and a log that stays silent that long reads as a hang).
STEP_LINE_SECONDS = 30.0


class Progress:
    """Receives ``("step", info)`` and ``("epoch", record)`` from the C++ loop (GIL taken only then)."""

    def __init__(self, epochs: int, enabled: bool = True, phase: str = ""):
        self.epochs = epochs
        self.prefix = f"{phase}: " if phase else ""  # the recipe's phase: its epochs count from 1 again
        self.enabled = enabled
        self._bar = None
        self._last_line = time.monotonic()
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        self._tqdm = tqdm if _watched() else None

    def __call__(self, kind: str, info: dict[str, Any]) -> bool:
        if not self.enabled:
            return False
        if kind == "step":
            self._step(info)
        else:
            self._epoch(info)
        return False

    def _step(self, info: dict[str, Any]) -> None:
        if self._tqdm is None:
            if time.monotonic() - self._last_line >= STEP_LINE_SECONDS:
                self._last_line = time.monotonic()
                done, total = info["epoch_step"], info["steps_per_epoch"]
                left = info["epoch_seconds"] / max(done, 1) * (total - done)
                print(f"{self.prefix}epoch {info['epoch'] + 1}/{self.epochs}  step {done}/{total}  loss "
                      f"{info['loss']:.4f}  about {left:.0f} s left in the epoch", file=sys.stderr, flush=True)
            return
        if self._bar is None:
            self._bar = self._tqdm(total=info["steps_per_epoch"], desc=f"{self.prefix}epoch {info['epoch'] + 1}/{self.epochs}",
                                   unit="step", leave=False, file=sys.stderr, dynamic_ncols=True,
                                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {postfix}")
        self._bar.n = info["epoch_step"]
        rate = info["samples"] / max(info["epoch_seconds"], 1e-9)
        self._bar.set_postfix(loss=f"{info['loss']:.4f}", samples_per_s=f"{rate:,.0f}", refresh=False)
        self._bar.refresh()

    def _epoch(self, record: dict[str, Any]) -> None:
        self._last_line = time.monotonic()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        parts = [f"{self.prefix}epoch {record['epoch'] + 1}/{self.epochs}", f"train_loss {record['train_loss']:.4f}"]
        parts += [f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_")]
        parts.append(f"{record['samples_per_s']:,.0f} samples/s")
        print("  ".join(parts), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _watched() -> bool:
    """stderr is a terminal, or a Jupyter kernel draws tqdm.auto's bar as a widget."""
    try:
        terminal = bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # no stderr (pythonw), one without isatty, or a closed one
        terminal = False
    return terminal or "ipykernel" in sys.modules
