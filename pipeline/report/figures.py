"""The report's PNGs, drawn with matplotlib's Agg renderer: no display, no pyplot state, no TensorFlow.

Each function draws one figure from plain numbers and returns its file name, or None when there is
nothing to draw (the page then says so instead of showing an empty plot). Every text in a figure is
drawn as plain text: labels come from manifests and decision.json, where a `$\\x$` would otherwise be
parsed as mathtext (and raise), and a user's matplotlibrc with `text.usetex` would call LaTeX.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib import rc_context
from matplotlib.figure import Figure

DPI = 100
# Text objects read these when they are made, and tick labels are made while a figure is saved: so the
# whole drawing runs inside rc_context, not only the Text calls this module makes.
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}
TRAINING_PNG, ACCURACY_PNG, PER_CLASS_PNG = "training.png", "accuracy.png", "per_class.png"


def _save(fig: Figure, out_dir: Path, name: str) -> str:
    fig.savefig(Path(out_dir) / name, dpi=DPI, format="png")  # Figure() alone renders with Agg
    return name


@rc_context(PLAIN_TEXT)
def training(metrics: Sequence[dict[str, Any]], out_dir: Path) -> str | None:
    """Loss, learning rate and throughput against step, from training's metrics.jsonl lines."""
    panels = [("loss", "loss"), ("lr", "learning rate"), ("train_throughput", "images/s")]
    series = {key: [(m["step"], m[key]) for m in metrics
                    if isinstance(m.get("step"), int | float) and isinstance(m.get(key), int | float)]
              for key, _ in panels}
    shown = [(key, label) for key, label in panels if series[key]]
    if not shown:
        return None
    fig = Figure(figsize=(8, 2.2 * len(shown)), layout="constrained")
    axes = fig.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (key, label) in zip(axes, shown, strict=True):
        steps, values = zip(*series[key], strict=True)
        ax.plot(steps, values, marker="." if len(steps) < 50 else None)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    fig.suptitle("Training")
    return _save(fig, out_dir, TRAINING_PNG)


@rc_context(PLAIN_TEXT)
def accuracy(rows: Sequence[tuple[str, float | None, float | None]], floor: float | None, out_dir: Path) -> str | None:
    """Top-1 and top-5 (percent) of each (label, top1, top5), with the gate's floor as a line."""
    rows = [r for r in rows if isinstance(r[1], int | float)]
    if not rows:
        return None
    fig = Figure(figsize=(8, 1.2 + 0.45 * len(rows)), layout="constrained")
    ax = fig.subplots()
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], [r[1] for r in rows], height=0.4, label="top-1")
    ax.barh([y - 0.2 for y in ys], [r[2] if isinstance(r[2], int | float) else 0 for r in rows], height=0.4,
            label="top-5")
    if isinstance(floor, int | float):
        ax.axvline(floor, color="red", linestyle="--", label=f"gate floor {floor:.2f} %")
    ax.set_yticks(list(ys), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%)")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out_dir, ACCURACY_PNG)


@rc_context(PLAIN_TEXT)
def per_class(accuracies: Sequence[float], out_dir: Path) -> str | None:
    """A histogram of the per-class top-1 accuracies (percent) of the classes in the validation data."""
    if not accuracies:
        return None
    fig = Figure(figsize=(8, 3), layout="constrained")
    ax = fig.subplots()
    ax.hist(accuracies, bins=list(range(0, 105, 5)), edgecolor="white")
    ax.set_xlabel("top-1 accuracy of the class (%)")
    ax.set_ylabel("classes")
    ax.set_title(f"Per-class top-1 accuracy ({len(accuracies)} classes)")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, out_dir, PER_CLASS_PNG)
