"""Searched hyperparameters as numeric axes, read back from MLflow's param strings.

MLflow stores params as strings and the history does not say how a parameter was sampled, so an
axis decides here whether a parameter is numeric or categorical and whether it reads better on
a log scale. The parallel-coordinates plot draws these axes; the importance weighs them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.tracking.history import SweepHistory, TrialHistory

#: Parallel coordinates: a numeric axis with this many values or fewer labels each of them;
#: labels closer than this (in axis heights) are thinned out.
_MAX_TAKEN_TICKS = 8
_MIN_TICK_GAP = 0.045

#: A positive numeric axis spanning at least this ratio may be shown (and weighed) on a log
#: scale; see log_helps.
_LOG_RATIO = 10.0


def best_value(history: SweepHistory, trial: TrialHistory) -> float:
    """Return the trial's best value of the sweep metric, NaN when it has none."""
    value = history.best(trial)
    return math.nan if value is None else value


def parse_number(raw: str) -> float | None:
    """Parse an MLflow param string as a finite number; None for anything else."""
    try:
        value = float(raw.strip())
    except ValueError:  # "adam", "True", "[64, 64]", "None"...
        return None
    return value if math.isfinite(value) else None


def log_helps(values: Sequence[float]) -> bool:
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
class Axis:
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
    def numeric(cls, name: str, values: Sequence[float]) -> Axis:
        """Return the axis of a numeric parameter that took ``values``."""
        finite = [v for v in values if math.isfinite(v)] or [0.0]
        distinct = sorted(set(finite))
        taken = tuple(distinct) if len(distinct) <= _MAX_TAKEN_TICKS else ()
        return cls(name, min(finite), max(finite), log_helps(finite), taken=taken)

    def number(self, raw: str | None) -> float:
        """Return the row value: the float itself or the category's index; NaN when missing."""
        if raw is None:
            return math.nan
        if self.categories is None:
            parsed = parse_number(raw)
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
            return [(0.5, fmt(self.low))]
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
            ticks.append((self.position(value), fmt(value)))
        return ticks

    def title(self) -> str:
        """Return the axis label, marking a log scale."""
        return f"{self.name}\n(log)" if self.log else self.name

    def _scaled(self, value: float) -> float:
        return math.log10(value) if self.log else value


def hyperparameter_axes(history: SweepHistory, trials: Sequence[TrialHistory]) -> list[Axis]:
    """Return the searched hyperparameters that take more than one value across ``trials``.

    A parameter is numeric when every recorded value parses as a finite number ("0.001", "64",
    "1e-4"); otherwise, booleans ("True") and names ("adam") included, it is categorical.
    """
    axes = []
    for name in history.searched:
        raws = [t.params[name] for t in trials if name in t.params]
        numbers = [parse_number(raw) for raw in raws]
        if raws and all(n is not None for n in numbers):
            values = [n for n in numbers if n is not None]
            if len(set(values)) > 1:
                axes.append(Axis.numeric(name, values))
        elif len(set(raws)) > 1:
            categories = tuple(sorted(set(raws)))
            axes.append(Axis(name, 0.0, len(categories) - 1.0, categories=categories))
    return axes


def fmt(value: float) -> str:
    """Return a short label for an axis value."""
    return f"{value:.3g}"
