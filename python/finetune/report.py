"""A run's report as one self-contained HTML file: inline SVG charts, no script, no server, no network."""

from __future__ import annotations

import html as _html
import json
import math
from typing import Any

_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def plotted_metric(history: list[dict[str, float]]) -> str | None:
    """The validation metric drawn beside the loss in report.html, plots.png and Result.plot: val_accuracy
    (classification) or val_r2 (regression and recommendation); None when the run had no validation data."""
    return next((k for k in ("val_accuracy", "val_r2") if any(k in h for h in history)), None)


def series(history: list[dict[str, float]], key: str) -> list[float]:
    """One column of a run's history, NaN where an epoch has none -- a gap in the chart: the recipe's phases log
    different columns (its refit runs without validation data, phase pairs has none either)."""
    return [float(h[key]) if h.get(key) is not None else math.nan for h in history]


def draw_curves(loss_axes: Any, metric_axes: Any, history: list[dict[str, float]]) -> str | None:
    """The loss curves (train, validation) on ``loss_axes`` and the validation metric on ``metric_axes``, by epoch
    (matplotlib): what plots.png and Result.plot share. Returns the metric drawn (plotted_metric), None without."""
    epochs = [h["epoch"] + 1 for h in history]
    loss_axes.plot(epochs, series(history, "train_loss"), label="train")
    if any("val_loss" in h for h in history):  # the recipe's refit has none: a gap
        loss_axes.plot(epochs, series(history, "val_loss"), label="validation")
    loss_axes.legend()
    metric = plotted_metric(history)
    if metric:
        metric_axes.plot(epochs, series(history, metric))
    return metric


def _chart(title: str, series: dict[str, list[float]], width: int = 420, height: int = 240, log_y: bool = False) -> str:
    """A line chart of one or more series over epochs, as inline SVG (on a log scale, values <= 0 are left out:
    the recipe's head fit, a solve, has no rate)."""
    def shown(v: float | None) -> bool:
        return v is not None and math.isfinite(v) and (v > 0 or not log_y)

    points = [v for values in series.values() for v in values if shown(v)]
    if not points:
        return ""
    transform = (lambda v: math.log10(max(v, 1e-12))) if log_y else (lambda v: v)
    lo, hi = min(map(transform, points)), max(map(transform, points))
    hi = hi if hi > lo else lo + 1.0
    n = max(len(v) for v in series.values())
    left, right, top, bottom = 56, 12, 28, 32

    def x(i: int) -> float:
        return left + (width - left - right) * (i / max(n - 1, 1))

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - (transform(v) - lo) / (hi - lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{_html.escape(title)}">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
             f'{_html.escape(title)}</text>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#888"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#888"/>']
    for frac in (0.0, 0.5, 1.0):
        value = lo + (hi - lo) * frac
        label = f"{10 ** value:.2g}" if log_y else f"{value:.3g}"
        parts.append(f'<text x="{left - 4}" y="{y(10 ** value if log_y else value) + 4}" text-anchor="end" '
                     f'font-size="10">{label}</text>')
    for i in range(n):
        if n <= 12 or i % max(n // 10, 1) == 0:
            parts.append(f'<text x="{x(i)}" y="{height - bottom + 14}" text-anchor="middle" font-size="10">{i + 1}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 4}" text-anchor="middle" font-size="10">epoch</text>')
    for k, (name, values) in enumerate(series.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        runs: list[list[str]] = [[]]  # a line per stretch of values shown: an epoch without one is a gap
        for i, v in enumerate(values):
            if shown(v):
                runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
            elif runs[-1]:
                runs.append([])
        for coords in filter(None, runs):
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(coords)}"/>')
        parts.append(f'<text x="{width - right - 4}" y="{top + 12 + 13 * k}" text-anchor="end" font-size="11" '
                     f'fill="{colour}">{_html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _class_names(count: int, classes: list[str] | None) -> list[str]:
    """Each class's name in a table: its text label where y held labels (for the ids they stand for), else its id."""
    return [_html.escape(str(classes[i])) if classes and i < len(classes) else str(i) for i in range(count)]


def _confusion(matrix: list[list[int]], classes: list[str] | None = None) -> str:
    peak = max(max(row) for row in matrix) or 1
    names = _class_names(len(matrix), classes)
    head = "".join(f"<th>{name}</th>" for name in names)
    rows = []
    for name, row in zip(names, matrix):
        cells = "".join(f'<td style="background: rgba(31,119,180,{0.08 + 0.85 * v / peak:.2f})">{v}</td>' for v in row)
        rows.append(f"<tr><th>{name}</th>{cells}</tr>")
    return (f'<table class="cm"><caption>confusion matrix (rows: true class, columns: predicted)</caption>'
            f"<tr><th></th>{head}</tr>{''.join(rows)}</table>")


def _per_class(matrix: list[list[int]], per_class: dict[str, list[float]]) -> str:
    """The per-class table: precision and recall as evaluate computed them, support from the confusion matrix."""
    rows, names = [], _class_names(len(matrix), per_class.get("classes"))
    for c, (precision, recall) in enumerate(zip(per_class["per_class_precision"], per_class["per_class_recall"])):
        rows.append(f"<tr><td>{names[c]}</td><td>{precision:.3f}</td><td>{recall:.3f}</td><td>{sum(matrix[c])}</td></tr>")
    return ("<table><caption>per class (test)</caption><tr><th>class</th><th>precision</th><th>recall</th>"
            f"<th>support</th></tr>{''.join(rows)}</table>")


def _table(caption: str, values: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_html.escape(str(k))}</th><td>{_html.escape(_fmt(v))}</td></tr>" for k, v in values.items())
    return f"<table><caption>{_html.escape(caption)}</caption>{rows}</table>"


def _decisions(decisions: list[dict[str, Any]]) -> str:
    """result.recipe as a table: each decision, its value and its reason (the recipe's, or why none ran)."""
    rows = "".join(f"<tr><th>{_html.escape(str(d['what']))}</th><td>{_html.escape(_fmt(d['value']))}</td>"
                   f"<td style='text-align:left'>{_html.escape(str(d['reason']))}</td></tr>" for d in decisions)
    return f"<table><caption>what the recipe decided, and why</caption>{rows}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def html(config: dict[str, Any], history: list[dict[str, float]], metrics: dict[str, Any]) -> str:
    loss = {"train loss": series(history, "train_loss")}
    if any("val_loss" in h for h in history):
        loss["validation loss"] = series(history, "val_loss")
    metric_name = plotted_metric(history)
    charts = [_chart("loss", loss)]
    if metric_name:
        charts.append(_chart(metric_name.replace("_", " "), {metric_name: series(history, metric_name)}))
    charts.append(_chart("learning rate (end of epoch)", {"lr": series(history, "lr")}, log_y=True))
    if any("phase" in h for h in history):  # the recipe's: its phases one after another
        charts.append(_chart("phase (the recipe's, in order run)", {"phase": series(history, "phase")}))
    confusion = metrics.get("test_confusion_matrix")
    sections = [
        "<h2>Curves</h2>" + "".join(charts),
        "<h2>Test metrics</h2>" + _table("held-out test set", metrics["test"]),
        _table("validation (final)", metrics["validation"]),
    ]
    if confusion:
        per_class = metrics.get("test_per_class") or {}
        table = _per_class(confusion, per_class) if "per_class_precision" in per_class else ""
        sections.append("<h2>Errors</h2>" + _confusion(confusion, per_class.get("classes")) + table)
    decisions = metrics.get("recipe") or []
    # A recipe run has a best epoch per phase (its Recipe table's "result" rows), not one for the run
    best = metrics["best_epoch"] if metrics["best_epoch"] is not None else \
        "each phase's: see Recipe" if decisions else "none (nothing monitored)"
    sections.append("<h2>Training</h2>" + _table("run", {
        "data": metrics["data"], "training examples (sampled)": metrics["train_size"],
        "class counts": metrics["class_counts"], "best epoch": best, "steps": metrics["steps"],
        "seconds": metrics["seconds"], "samples/s (median epoch)": metrics["samples_per_s"]}))
    if decisions:
        sections.append("<h2>Recipe</h2>" + _decisions(decisions))
    sections.append(_table("environment", metrics["environment"]))
    for section, values in config.items():
        sections.append(_table(f"config [{section}]", {k: v for k, v in values.items() if v is not None}))
    title = f"finetune run: {config['model'].get('name')} on {metrics['data']}"
    style = ("body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}"
             "svg{margin:6px;border:1px solid #eee}table{border-collapse:collapse;margin:8px 16px 8px 0;"
             "display:inline-table;vertical-align:top;font-size:13px}td,th{border:1px solid #ddd;padding:3px 7px;"
             "text-align:right}caption{font-weight:bold;text-align:left;padding:4px 0}"
             ".cm td{min-width:28px;text-align:center}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{_html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{_html.escape(title)}</h1>{''.join(sections)}</body></html>\n")


def plots_png(path: str, history: list[dict[str, float]], metrics: dict[str, Any]) -> bool:
    """Loss, metric and learning-rate curves, the confusion matrix and per-class precision/recall as one PNG
    (matplotlib, an optional extra). Returns False, writing nothing, when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    confusion = metrics.get("test_confusion_matrix")
    fig, axes = plt.subplots(1, 5 if confusion else 3, figsize=(22 if confusion else 13, 3.8))
    metric = draw_curves(axes[0], axes[1], history)
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].set(title=(metric or "no validation metric").replace("_", " "), xlabel="epoch")
    axes[2].plot([h["epoch"] + 1 for h in history], [v if v > 0 else math.nan for v in series(history, "lr")])
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch", yscale="log")
    if confusion:
        import numpy as np

        matrix = np.asarray(confusion)
        axes[3].imshow(matrix, cmap="Blues")
        axes[3].set(title="confusion matrix (test)", xlabel="predicted", ylabel="true")
        per_class = metrics.get("test_per_class", {})
        classes = np.arange(len(matrix))
        axes[4].bar(classes - 0.2, per_class.get("per_class_precision", []), width=0.4, label="precision")
        axes[4].bar(classes + 0.2, per_class.get("per_class_recall", []), width=0.4, label="recall")
        axes[4].set(title="per class (test)", xlabel="class", ylim=(0, 1.05))
        axes[4].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True
