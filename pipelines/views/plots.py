"""PNG plots of a sweep, drawn from its MLflow history (:class:`SweepHistory`).

The plots answer the questions people ask of a finished sweep: how the trials learned (and which
were cut short), which hyperparameter values the good trials share, which hyperparameters
mattered, what learning-rate schedule the best trials ran, and whether the best trial overfits.
They are drawn from MLflow rather than from Ray Tune's result files, so a sweep that ran on
another machine, or one whose trials PBT restored, plots the same.

Each plot has a ``*_data`` function returning exactly the numbers it draws, so the numbers can be
tested, printed (``tunepipe report``) or plotted elsewhere without matplotlib.

Figures are built as :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas and
never registered with pyplot: no GUI backend is needed (sweeps run headless on cluster nodes), no
global figure list can leak, and drawing from a worker thread cannot collide with pyplot's state.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib.colors as mcolors
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from pipelines.tracking.history import SweepHistory
from pipelines.views.axes import Axis, best_value, hyperparameter_axes, log_helps
from pipelines.views.importance import importance_with_method

logger = logging.getLogger(__name__)

Series = list[tuple[int, float]]

#: Figure size in inches and resolution: 800 x 500 pixel PNGs.
FIGSIZE = (8.0, 5.0)
DPI = 100

#: How the learning-curve plot marks trials that did not end normally.
_MUTED = "0.65"
_CUT_MARKER = "x"

#: More trials than this and the learning-curve legend names only the best one.
_MAX_LEGEND_TRIALS = 10

#: Diverged curves are cut off when showing them would stretch the y axis more than this.
_MAX_STRETCH = 3.0

# --------------------------------------------------------------------------------------------
# Data


def learning_curve_data(history: SweepHistory) -> dict[str, Series]:
    """Return the sweep metric per epoch of every trial that recorded it.

    Args:
        history: The sweep.

    Returns:
        Trial name to its ``[(epoch, value), ...]`` exactly as MLflow recorded it, in trial
        order. Diverged and failed trials are included. A name shared by several trials gets
        its run id appended so no trial is lost.

    """
    labels = _labels(history)
    return {
        labels[t.run_id]: list(t.metrics[history.metric])
        for t in history.trials
        if t.metrics.get(history.metric)
    }


def parallel_coordinates_data(
    history: SweepHistory,
) -> tuple[list[str], list[list[float]], list[float]]:
    """Return the searched hyperparameters of each ranked trial as numbers, with its best value.

    Args:
        history: The sweep.

    Returns:
        ``(axes, rows, values)``: ``axes`` are the searched hyperparameters that take more than
        one value across the ranked trials; ``rows`` holds one row per ranked trial (best first)
        with one number per axis: numeric parameters as floats (not log-scaled; the plot draws an
        axis on a log scale when its values span a decade or more and spread more evenly
        there, as log-uniform samples of a learning rate do), categorical ones as the index
        of the value among the parameter's sorted distinct values, NaN where a trial lacks the
        parameter (conditional search spaces). ``values`` are the trials' best metric values.

    """
    ranked = history.ranked()
    axes = hyperparameter_axes(history, ranked)
    rows = [[axis.number(t.params.get(axis.name)) for axis in axes] for t in ranked]
    values = [best_value(history, t) for t in ranked]
    return [axis.name for axis in axes], rows, values


def lr_data(history: SweepHistory, top: int = 5) -> dict[str, Series]:
    """Return the ``lr`` history of the ``top`` best trials.

    Args:
        history: The sweep.
        top: How many of the best-ranked trials to take; those among them that never reported
            ``lr`` are left out (not replaced by lower-ranked ones).

    Returns:
        Trial name to its ``[(epoch, lr), ...]``, best trial first.

    """
    labels = _labels(history)
    return {
        labels[t.run_id]: list(t.metrics["lr"])
        for t in history.ranked()[: max(top, 0)]
        if t.metrics.get("lr")
    }


def train_val_gap_data(history: SweepHistory) -> dict[str, Series]:
    """Return the training and validation loss per epoch of the best trial.

    Args:
        history: The sweep.

    Returns:
        ``{"train_loss": [...], "val_loss": [...]}`` for the best ranked trial; a loss it never
        reported is left out, and the dict is empty when no trial is ranked.

    """
    ranked = history.ranked()
    if not ranked:
        return {}
    return {
        name: list(ranked[0].metrics[name])
        for name in ("train_loss", "val_loss")
        if ranked[0].metrics.get(name)
    }


# --------------------------------------------------------------------------------------------
# Files


def write_plots(history: SweepHistory, folder: Path) -> dict[str, Path]:
    """Write the sweep's plots as PNG files into ``folder`` (created if missing).

    Writes ``learning_curves.png``, ``parallel_coordinates.png``, ``importance.png``,
    ``lr_schedule.png`` and ``train_val_gap.png``; a plot without data (no ``lr`` metric, no
    varying hyperparameter, no ranked trial...) is skipped. Files from an earlier call that
    are skipped now are left as they were.

    Args:
        history: The sweep.
        folder: Where to write the files.

    Returns:
        Plot name (the file name without ``.png``) to the file written, for the plots drawn.

    """
    folder.mkdir(parents=True, exist_ok=True)
    builders = {
        "learning_curves": _learning_curves_figure,
        "parallel_coordinates": _parallel_coordinates_figure,
        "importance": _importance_figure,
        "lr_schedule": _lr_figure,
        "train_val_gap": _gap_figure,
    }
    written: dict[str, Path] = {}
    for name, build in builders.items():
        figure = build(history)
        if figure is None:
            logger.debug("no data for the %s plot of sweep %s", name, history.name)
            continue
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=DPI, format="png")
        # Breaks the figure's reference cycles now rather than at the next garbage collection.
        figure.clear()
        written[name] = path
    return written


# --------------------------------------------------------------------------------------------
# Figures


def _new_figure() -> Figure:
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _title(what: str, history: SweepHistory) -> str:
    better = "higher" if history.mode == "max" else "lower"
    return f"{what}\nsweep {history.name}, metric {history.metric} ({better} is better)"


def _learning_curves_figure(history: SweepHistory) -> Figure | None:
    curves = learning_curve_data(history)
    if not curves:
        return None
    labels = _labels(history)
    by_label = {labels[t.run_id]: t for t in history.trials}
    rank = {labels[t.run_id]: i for i, t in enumerate(history.ranked())}
    # Best trial drawn last so it lies on top; unranked (diverged, failed) ones first.
    order = sorted(curves, key=lambda label: -rank.get(label, len(rank)))
    name_trials = len(rank) <= _MAX_LEGEND_TRIALS
    palette = _palette(len(rank))
    healthy: list[float] = []
    broken: list[float] = []
    legend: list[tuple[int, Line2D, str]] = []

    figure = _new_figure()
    ax = figure.add_subplot()
    for label in order:
        trial = by_label[label]
        epochs = [e for e, _ in curves[label]]
        values = [v for _, v in curves[label]]
        finite = [v for v in values if math.isfinite(v)]
        lone = "o" if len(values) == 1 else None  # a one-point line would draw nothing
        if label not in rank:
            broken.extend(finite)
            ax.plot(epochs, values, color=_MUTED, linewidth=1.0, linestyle="--", marker=lone)
            continue
        healthy.extend(finite)
        best = rank[label] == 0
        color = palette(rank[label] % palette.N)
        (line,) = ax.plot(
            epochs,
            values,
            color=color,
            linewidth=2.4 if best else 1.3,
            marker=lone,
            zorder=3 if best else 2,
        )
        if name_trials or best:
            legend.append((rank[label], line, f"{_short(label)}" + (" (best)" if best else "")))
        if trial.end_reason == "stopped_early":
            ax.plot(
                epochs[-1:], values[-1:], _CUT_MARKER, color=color, markersize=9, mew=2, zorder=4
            )

    legend.sort(key=lambda entry: entry[0])  # rank order, whatever the drawing order
    handles: list[Artist] = [line for _, line, _ in legend]
    texts = [text for _, _, text in legend]
    if any(by_label[label].end_reason == "stopped_early" for label in rank):
        handles.append(Line2D([], [], color="0.2", marker=_CUT_MARKER, linestyle="none", mew=2))
        texts.append("stopped early (last epoch)")
    if broken:
        clipped = _clip_to(ax, healthy, broken)
        handles.append(Line2D([], [], color=_MUTED, linestyle="--"))
        texts.append("diverged / failed" + (" (off scale)" if clipped else ""))
    figure.legend(handles, texts, loc="outside right center", fontsize="small")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel(history.metric)
    ax.grid(alpha=0.3)
    figure.suptitle(_title(f"Validation {history.metric} per epoch, all trials", history))
    return figure


def _clip_to(ax: Axes, healthy: list[float], broken: list[float]) -> bool:
    """Keep the y axis on the healthy curves; return whether a broken one leaves the view.

    A diverged trial's loss can reach 1e6 and would flatten every other curve into a line. A
    collapse to chance accuracy only stretches the view a little and is left in sight.
    """
    if not healthy or not broken:
        return False
    low, high = min(healthy), max(healthy)
    span = high - low or abs(high) or 1.0
    if max(high, *broken) - min(low, *broken) <= _MAX_STRETCH * span:
        return False
    ax.set_ylim(low - 0.05 * span, high + 0.05 * span)
    return True


def _parallel_coordinates_figure(history: SweepHistory) -> Figure | None:
    names, rows, values = parallel_coordinates_data(history)
    if not names or not rows:
        return None
    axes = hyperparameter_axes(history, history.ranked())
    # The metric is the last axis: the colour alone is hard to read off for close values.
    metric_axis = Axis.numeric(f"best {history.metric}", values)
    columns = [*axes, metric_axis]
    table = [[*row, value] for row, value in zip(rows, values, strict=True)]

    finite = [v for v in values if math.isfinite(v)] or [0.0]
    norm = mcolors.Normalize(vmin=min(finite), vmax=max(finite))
    # The best trials are always the bright ones, whichever way the metric improves.
    cmap = colormaps["viridis" if history.mode == "max" else "viridis_r"]

    figure = _new_figure()
    ax = figure.add_subplot()
    xs = list(range(len(columns)))
    # Worst first so the best polylines are drawn on top.
    for row in reversed(table):
        ys = [axis.position(v) for axis, v in zip(columns, row, strict=True)]
        ax.plot(xs, ys, color=cmap(norm(row[-1])), linewidth=1.6, alpha=0.85)
    for x, axis in zip(xs, columns, strict=True):
        ax.axvline(x, color="0.3", linewidth=0.8, zorder=0)
        for position, text in axis.ticks():
            ax.text(
                x - 0.03,
                position,
                text,
                ha="right",
                va="center",
                fontsize="x-small",
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.7, "lw": 0},
                zorder=5,
            )
    ax.set_xticks(xs, [axis.title() for axis in columns], fontsize="small")
    ax.set_yticks([])
    ax.set_xlim(-0.35, len(columns) - 1 + 0.15)
    ax.set_ylim(-0.05, 1.05)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    colorbar = figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax)
    colorbar.set_label(f"best {history.metric}")
    figure.suptitle(
        _title(f"Searched hyperparameters of {len(rows)} ranked trials, by best value", history)
    )
    return figure


def _importance_figure(history: SweepHistory) -> Figure | None:
    importance, method = importance_with_method(history)
    if not importance:
        return None
    names = list(importance)[::-1]  # barh draws bottom-up; most important on top
    shares = [importance[n] for n in names]
    figure = _new_figure()
    ax = figure.add_subplot()
    bars = ax.barh(names, shares, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in shares], padding=3, fontsize="small")
    ax.set_xlim(0, max(max(shares) * 1.15, 0.05))
    ax.set_xlabel("importance (share of the total, sums to 1)")
    ax.set_ylabel("hyperparameter")
    ax.grid(axis="x", alpha=0.3)
    n = len(history.ranked())
    figure.suptitle(_title(f"Hyperparameter importance ({method}, {n} ranked trials)", history))
    return figure


def _lr_figure(history: SweepHistory, top: int = 5) -> Figure | None:
    curves = lr_data(history, top)
    if not curves:
        return None
    labels = _labels(history)
    ranked = history.ranked()
    rank = {labels[t.run_id]: i for i, t in enumerate(ranked)}
    palette = _palette(len(ranked))
    figure = _new_figure()
    ax = figure.add_subplot()
    every: list[float] = []
    for label, series in curves.items():
        epochs = [e for e, _ in series]
        lrs = [v for _, v in series]
        every.extend(v for v in lrs if math.isfinite(v))
        ax.plot(
            epochs,
            lrs,
            color=palette(rank[label] % palette.N),  # the trial's colour in the learning curves
            marker="o" if len(lrs) == 1 else None,
            linewidth=2.0 if rank[label] == 0 else 1.3,
            label=f"#{rank[label] + 1} {_short(label)}",
        )
    if log_helps(every):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel("learning rate (lr)")
    ax.grid(alpha=0.3)
    figure.legend(loc="outside right center", fontsize="small")
    shown = min(top, len(ranked))
    what = f"Learning rate per epoch of the top {shown} trials"
    if len(curves) < shown:
        what += f" ({len(curves)} reported lr)"
    figure.suptitle(_title(what, history))
    return figure


def _gap_figure(history: SweepHistory) -> Figure | None:
    losses = train_val_gap_data(history)
    if not losses:
        return None
    best = history.ranked()[0]
    figure = _new_figure()
    ax = figure.add_subplot()
    for name, color in (("train_loss", "tab:blue"), ("val_loss", "tab:orange")):
        if name in losses:
            epochs = [e for e, _ in losses[name]]
            values = [v for _, v in losses[name]]
            ax.plot(
                epochs, values, color=color, marker="o" if len(values) == 1 else None, label=name
            )
    if len(losses) == 2:
        # Shade only where both were recorded: validation may run every few epochs.
        train, val = dict(losses["train_loss"]), dict(losses["val_loss"])
        common = sorted(set(train) & set(val))
        if common:
            ax.fill_between(
                common,
                [train[e] for e in common],
                [val[e] for e in common],
                color="tab:red",
                alpha=0.15,
                label="gap (val_loss - train_loss)",
            )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.suptitle(
        _title(f"Train vs validation loss of the best trial, {_short(best.name, 40)}", history)
    )
    return figure


# --------------------------------------------------------------------------------------------
# Small helpers


def _labels(history: SweepHistory) -> dict[str, str]:
    """Run id to a unique display name: the trial name, plus the run id when names repeat."""
    counts: dict[str, int] = {}
    for trial in history.trials:
        counts[trial.name] = counts.get(trial.name, 0) + 1
    return {
        t.run_id: t.name if counts[t.name] == 1 else f"{t.name} ({t.run_id[:8]})"
        for t in history.trials
    }


def _palette(trials: int) -> mcolors.Colormap:
    """Return the qualitative colours by rank, shared so a trial keeps its colour across plots."""
    return colormaps["tab10" if trials <= 10 else "tab20"]


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
