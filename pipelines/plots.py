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

import itertools
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
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

from pipelines.sweep_history import SweepHistory, TrialHistory

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

#: Parallel coordinates: a numeric axis with this many values or fewer labels each of them;
#: labels closer than this (in axis heights) are thinned out.
_MAX_TAKEN_TICKS = 8
_MIN_TICK_GAP = 0.045

#: A positive numeric axis spanning at least this ratio may be shown (and weighed) on a log
#: scale; see _log_helps.
_LOG_RATIO = 10.0

#: PED-ANOVA compares the top trials against all trials; Optuna's docs advise at least five in
#: the top set, which a fixed 10 % quantile gives only from 50 trials on.
_PED_ANOVA_MIN_TOP = 5


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
    axes = _axes(history, ranked)
    rows = [[axis.number(t.params.get(axis.name)) for axis in axes] for t in ranked]
    values = [_best(history, t) for t in ranked]
    return [axis.name for axis in axes], rows, values


def importance_data(history: SweepHistory) -> dict[str, float]:
    """Return how much each searched hyperparameter mattered for the sweep metric.

    Uses Optuna's importance evaluators on an in-memory study holding one trial per ranked trial
    (its best value). PED-ANOVA is tried first, with its top quantile widened so that at least
    five trials (at most half of them) form the "good" set: with Optuna's fixed 10 % a sweep of
    fewer than 20 trials has a single good trial and the importance reflects where that one
    trial happens to sit, not what mattered. fANOVA (seeded) is used instead when PED-ANOVA
    raises or there are fewer than 3 trials; it cannot weigh hyperparameters missing from some
    trials (conditional search spaces), so those are left out then.

    Args:
        history: The sweep.

    Returns:
        Hyperparameter to importance, most important first (ties by name), summing to 1. Only
        searched hyperparameters that vary across the ranked trials are included; empty with
        fewer than 2 ranked trials or no varying hyperparameter. Deterministic for a history.

    """
    return _importance(history)[0]


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
    axes = _axes(history, history.ranked())
    # The metric is the last axis: the colour alone is hard to read off for close values.
    metric_axis = _Axis.numeric(f"best {history.metric}", values)
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
    importance, method = _importance(history)
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
    if _log_helps(every):
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
# Hyperparameters


def _number(raw: str) -> float | None:
    """Parse an MLflow param string as a finite number; None for anything else."""
    try:
        value = float(raw.strip())
    except ValueError:  # "adam", "True", "[64, 64]", "None"...
        return None
    return value if math.isfinite(value) else None


def _log_helps(values: Sequence[float]) -> bool:
    """Return whether positive values read better on a log scale (lr, weight decay).

    The history does not say how a parameter was sampled, so the scale is chosen on which one
    spreads the observed values more evenly, among values spanning a decade or more: log-uniform
    samples crowd the low end of a linear axis, while uniform ones that merely start near 0
    (dropout 0.01-0.5) crowd the top of a log axis.
    """
    distinct = sorted(set(values))
    if len(distinct) < 2 or distinct[0] <= 0 or distinct[-1] / distinct[0] < _LOG_RATIO:
        return False
    return _unevenness([math.log10(v) for v in distinct]) < _unevenness(distinct)


def _unevenness(ordered: Sequence[float]) -> float:
    """Sum of squared gaps between sorted values, as fractions of their range (1/n if even)."""
    span = ordered[-1] - ordered[0]
    return sum(((b - a) / span) ** 2 for a, b in itertools.pairwise(ordered))


@dataclass(frozen=True)
class _Axis:
    """One hyperparameter as numbers: how to read its MLflow strings and where to draw them."""

    name: str
    low: float
    high: float
    log: bool = False
    #: Sorted distinct values of a categorical parameter; None for a numeric one.
    categories: tuple[str, ...] | None = None
    #: The values a numeric parameter took, when few: labelled instead of evenly spaced ticks.
    taken: tuple[float, ...] = ()

    @classmethod
    def numeric(cls, name: str, values: Sequence[float]) -> _Axis:
        finite = [v for v in values if math.isfinite(v)] or [0.0]
        distinct = sorted(set(finite))
        taken = tuple(distinct) if len(distinct) <= _MAX_TAKEN_TICKS else ()
        return cls(name, min(finite), max(finite), _log_helps(finite), taken=taken)

    def number(self, raw: str | None) -> float:
        """Return the row value: the float itself or the category's index; NaN when missing."""
        if raw is None:
            return math.nan
        if self.categories is None:
            parsed = _number(raw)
            return math.nan if parsed is None else parsed
        return float(self.categories.index(raw))

    def position(self, value: float) -> float:
        """Return where ``value`` (a row value) sits on the axis, 0 (low) to 1 (high)."""
        if not math.isfinite(value):
            return math.nan  # breaks the polyline: the trial lacks this parameter
        if self.categories is not None:
            return value / max(len(self.categories) - 1, 1)
        low, high, value = self._scaled(self.low), self._scaled(self.high), self._scaled(value)
        return 0.5 if high == low else (value - low) / (high - low)

    def ticks(self) -> list[tuple[float, str]]:
        """Return tick positions and labels, in real values or category names."""
        if self.categories is not None:
            return [(self.position(float(i)), c) for i, c in enumerate(self.categories)]
        if self.high == self.low:
            return [(0.5, _fmt(self.low))]
        if self.taken:
            values = list(self.taken)
        else:
            low, high = self._scaled(self.low), self._scaled(self.high)
            steps = [low + (high - low) * i / 4 for i in range(5)]
            values = [10**s if self.log else s for s in steps]
        ticks: list[tuple[float, str]] = []
        for value in values:
            # Labels closer than a line of text would overprint; the ends are always shown.
            if ticks and self.position(value) - ticks[-1][0] < _MIN_TICK_GAP:
                if value != values[-1]:
                    continue
                ticks.pop()
            ticks.append((self.position(value), _fmt(value)))
        return ticks

    def title(self) -> str:
        return f"{self.name}\n(log)" if self.log else self.name

    def _scaled(self, value: float) -> float:
        return math.log10(value) if self.log else value


def _axes(history: SweepHistory, trials: Sequence[TrialHistory]) -> list[_Axis]:
    """Return the searched hyperparameters that take more than one value across ``trials``.

    A parameter is numeric when every recorded value parses as a finite number ("0.001", "64",
    "1e-4"); otherwise, booleans ("True") and names ("adam") included, it is categorical.
    """
    axes = []
    for name in history.searched:
        raws = [t.params[name] for t in trials if name in t.params]
        numbers = [_number(raw) for raw in raws]
        if raws and all(n is not None for n in numbers):
            values = [n for n in numbers if n is not None]
            if len(set(values)) > 1:
                axes.append(_Axis.numeric(name, values))
        elif len(set(raws)) > 1:
            categories = tuple(sorted(set(raws)))
            axes.append(_Axis(name, 0.0, len(categories) - 1.0, categories=categories))
    return axes


def _importance(history: SweepHistory) -> tuple[dict[str, float], str]:
    """Return the importance (see :func:`importance_data`) and the method that computed it."""
    trials = [t for t in history.ranked() if math.isfinite(_best(history, t))]
    if len(trials) < 2:
        return {}, ""
    axes = _axes(history, trials)
    if len(axes) < 2:
        # Normalised to sum to 1, a lone parameter is 1.0 whatever an evaluator says.
        return {axis.name: 1.0 for axis in axes}, "only varying hyperparameter"

    import optuna  # slow to import (~1 s); only the importance needs it
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
    )

    verbosity = optuna.logging.get_verbosity()
    # Each study creation logs at INFO and PED-ANOVA warns about small samples on every call;
    # this is a throw-away study, so neither says anything useful to a sweep's user.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = optuna.create_study(
                direction="maximize" if history.mode == "max" else "minimize"
            )
            for trial in trials:
                params: dict[str, float | str] = {}
                distributions: dict[str, BaseDistribution] = {}
                for axis in axes:
                    raw = trial.params.get(axis.name)
                    if raw is None:
                        continue  # conditional parameter, inactive in this trial
                    if axis.categories is None:
                        params[axis.name] = axis.number(raw)
                        distributions[axis.name] = FloatDistribution(
                            axis.low, axis.high, log=axis.log
                        )
                    else:
                        params[axis.name] = raw
                        distributions[axis.name] = CategoricalDistribution(axis.categories)
                study.add_trial(
                    optuna.trial.create_trial(
                        params=params, distributions=distributions, value=_best(history, trial)
                    )
                )
            # Explicit, sorted names: left to itself Optuna orders them through a set, and
            # string hashing differs between processes, so results (fANOVA's forest columns,
            # the order of ties) would change from one run to the next.
            names = sorted(axis.name for axis in axes)
            result: dict[str, float] | None = None
            method = "PED-ANOVA"
            if len(trials) >= 3:
                quantile = min(0.5, max(0.1, _PED_ANOVA_MIN_TOP / len(trials)))
                evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
                try:
                    result = optuna.importance.get_param_importances(
                        study, evaluator=evaluator, params=names
                    )
                except Exception as exc:  # any evaluator failure: fall back to fANOVA below
                    logger.debug("PED-ANOVA failed (%s); using fANOVA", exc)
            if result is None:
                method = "fANOVA"
                complete = [n for n in names if all(n in t.params for t in trials)]
                if not complete:
                    return {}, method
                result = optuna.importance.get_param_importances(
                    study,
                    evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                    params=complete,
                )
    finally:
        optuna.logging.set_verbosity(verbosity)
    ordered = sorted(result.items(), key=lambda item: (-item[1], item[0]))
    return {name: float(value) for name, value in ordered}, method


# --------------------------------------------------------------------------------------------
# Small helpers


def _best(history: SweepHistory, trial: TrialHistory) -> float:
    value = history.best(trial)
    return math.nan if value is None else value


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


def _fmt(value: float) -> str:
    return f"{value:.3g}"
