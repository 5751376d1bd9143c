"""How much each searched hyperparameter mattered, from a sweep's MLflow history.

Optuna's importance evaluators run on a throw-away in-memory study rebuilt from the ranked
trials; :mod:`pipelines.views.plots` draws the result and ``tunepipe report`` prints it.
"""

from __future__ import annotations

import logging
import math
import warnings

from pipelines.tracking.history import SweepHistory
from pipelines.views.axes import best_value, hyperparameter_axes

logger = logging.getLogger(__name__)

#: PED-ANOVA compares the top trials against all trials; Optuna's docs advise at least five in
#: the top set, which a fixed 10 % quantile gives only from 50 trials on.
_PED_ANOVA_MIN_TOP = 5


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
    return importance_with_method(history)[0]


def importance_with_method(history: SweepHistory) -> tuple[dict[str, float], str]:
    """Return the importance (see :func:`importance_data`) and the method that computed it."""
    trials = [t for t in history.ranked() if math.isfinite(best_value(history, t))]
    if len(trials) < 2:
        return {}, ""
    axes = hyperparameter_axes(history, trials)
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
                        params=params,
                        distributions=distributions,
                        value=best_value(history, trial),
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
