"""Unit tests for pipelines.views.plots: the plotted numbers come straight from the history."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.lines import Line2D

from pipelines.tracking.history import SweepHistory, TrialHistory
from pipelines.views import plots
from pipelines.views.importance import importance_data

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EPOCHS = range(1, 7)

# name, lr, optimizer, batch_size, dropout, end_reason. The metric depends on lr alone (best
# near 1e-3); dropout is noise spread evenly over good and bad trials.
SPECS = [
    ("trial-000", "0.001", "adam", "64", "0.1", "completed"),
    ("trial-001", "0.003", "sgd", "32", "0.5", "completed"),
    ("trial-002", "0.0003", "adam", "128", "0.3", "completed"),
    ("trial-003", "0.0001", "sgd", "64", "0.4", "stopped_early"),
    ("trial-004", "0.01", "adam", "32", "0.2", "completed"),
    ("trial-005", "0.03", "sgd", "128", "0.45", "diverged"),
    ("trial-006", "3e-05", "adam", "128", "0.35", "completed"),
]


def _peak(lr: float) -> float:
    return 0.95 - 0.08 * abs(math.log10(lr) + 3) ** 1.5


def _trial(name: str, lr: str, opt: str, bs: str, drop: str, end: str) -> TrialHistory:
    peak = _peak(float(lr))
    epochs = list(EPOCHS)[:1] if end == "stopped_early" else list(EPOCHS)
    acc = [peak - (peak - 0.1) * math.exp(-e / 1.5) for e in epochs]
    val_loss = [2.3 * (1.05 - a) for a in acc]
    train_loss = [v * 0.8 for v in val_loss]
    if end == "diverged":
        acc = [0.35, 0.12, 0.1]
        val_loss = [2.0, 40.0, 9.0e4]
        train_loss = [1.9, 35.0, 8.0e4]
        epochs = epochs[:3]
    metrics = {
        "val_accuracy": list(zip(epochs, acc, strict=True)),
        "val_loss": list(zip(epochs, val_loss, strict=True)),
        "train_loss": list(zip(epochs, train_loss, strict=True)),
    }
    if name != "trial-002":  # one top trial that never reported lr
        cosine = [0.5 * (1 + math.cos(math.pi * (e - 1) / 6)) for e in epochs]
        metrics["lr"] = [(e, float(lr) * c) for e, c in zip(epochs, cosine, strict=True)]
    params = {
        "lr": lr,
        "optimizer": opt,
        "batch_size": bs,
        "dropout": drop,
        "weight_decay": "0.0001",
    }
    return TrialHistory(f"run{name[-3:]}", name, params, end, metrics)


def _history(metric: str = "val_accuracy", mode: str = "max", specs=SPECS) -> SweepHistory:
    trials = tuple(_trial(*spec) for spec in specs)
    searched = ("lr", "optimizer", "batch_size", "dropout", "weight_decay")
    return SweepHistory("parent", "mnist-sweep", metric, mode, searched, trials)


@pytest.fixture(scope="module")
def history() -> SweepHistory:
    return _history()


@pytest.fixture(scope="module")
def written(history: SweepHistory, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return plots.write_plots(history, tmp_path_factory.mktemp("plots") / "new")


# ------------------------------------------------------------------ data


def test_learning_curves_are_the_metric_histories(history: SweepHistory) -> None:
    curves = plots.learning_curve_data(history)
    assert list(curves) == [t.name for t in history.trials]
    for trial in history.trials:
        assert curves[trial.name] == trial.metrics["val_accuracy"]
    assert len(curves["trial-003"]) == 1  # stopped early after its first epoch
    assert curves["trial-005"] == [(1, 0.35), (2, 0.12), (3, 0.1)]  # diverged, still drawn


def test_ranking_by_mode(history: SweepHistory) -> None:
    ranked = [t.name for t in history.ranked()]
    assert ranked[0] == "trial-000" and "trial-005" not in ranked
    _, _, values = plots.parallel_coordinates_data(history)
    assert values == sorted(values, reverse=True)

    lossy = _history("val_loss", "min")
    _, _, loss_values = plots.parallel_coordinates_data(lossy)
    assert loss_values == sorted(loss_values)
    assert [t.name for t in lossy.ranked()] == ranked  # lower loss goes with higher accuracy

    # Same numbers read the other way round: the lowest accuracy ever reported comes first.
    flipped = _history("val_accuracy", "min")
    lowest = min(
        (t for t in flipped.trials if t.end_reason != "diverged"),
        key=lambda t: min(v for _, v in t.metrics["val_accuracy"]),
    )
    assert flipped.ranked()[0] is lowest and lowest.name != ranked[0]
    assert plots.train_val_gap_data(flipped)["val_loss"] == lowest.metrics["val_loss"]


def test_lr_data_is_top_trials_in_rank_order(history: SweepHistory) -> None:
    ranked = history.ranked()
    top3 = plots.lr_data(history, top=3)
    # trial-002 is third but has no lr: left out, not replaced by the fourth.
    assert list(top3) == [ranked[0].name, ranked[1].name]
    for trial in ranked[:2]:
        assert top3[trial.name] == trial.metrics["lr"]
    assert list(plots.lr_data(history)) == [t.name for t in ranked[:5] if "lr" in t.metrics]
    assert plots.lr_data(history, top=0) == {}


def test_gap_data_is_the_best_trials(history: SweepHistory) -> None:
    best = history.ranked()[0]
    assert plots.train_val_gap_data(history) == {
        "train_loss": best.metrics["train_loss"],
        "val_loss": best.metrics["val_loss"],
    }


def test_parallel_coordinates_rows_match_params(history: SweepHistory) -> None:
    axes, rows, values = plots.parallel_coordinates_data(history)
    # weight_decay is searched but never varied.
    assert axes == ["lr", "optimizer", "batch_size", "dropout"]
    ranked = history.ranked()
    assert len(rows) == len(ranked) == len(values)
    optimizers = sorted({t.params["optimizer"] for t in ranked})
    for trial, row, value in zip(ranked, rows, values, strict=True):
        p = trial.params
        optimizer = float(optimizers.index(p["optimizer"]))
        assert row == [float(p["lr"]), optimizer, float(p["batch_size"]), float(p["dropout"])]
        assert value == history.best(trial)


def test_params_are_parsed_as_numbers_or_categories() -> None:
    specs = [
        ("a", "1e-4", "True", "64"),
        ("b", "0.01", "False", "64"),
        ("c", "0.001", "True", "auto"),
    ]
    trials = tuple(
        TrialHistory(n, n, {"lr": lr, "bn": bn, "bs": bs}, "completed", {"m": [(1, i / 10)]})
        for i, (n, lr, bn, bs) in enumerate(specs)
    )
    history = SweepHistory("p", "s", "m", "max", ("lr", "bn", "bs", "absent"), trials)
    axes, rows, _ = plots.parallel_coordinates_data(history)
    assert axes == ["lr", "bn", "bs"]
    # Best first: c, b, a. "True"/"False" and "64"/"auto" are categories (sorted).
    assert rows == [[0.001, 1.0, 1.0], [0.01, 0.0, 0.0], [1e-4, 1.0, 0.0]]


def test_missing_conditional_param_is_nan() -> None:
    trials = (
        TrialHistory("1", "t1", {"opt": "sgd", "momentum": "0.9"}, "completed", {"m": [(1, 0.5)]}),
        TrialHistory("2", "t2", {"opt": "adam"}, "completed", {"m": [(1, 0.7)]}),
        TrialHistory("3", "t3", {"opt": "sgd", "momentum": "0.5"}, "completed", {"m": [(1, 0.6)]}),
    )
    history = SweepHistory("p", "s", "m", "max", ("opt", "momentum"), trials)
    axes, rows, _ = plots.parallel_coordinates_data(history)
    assert axes == ["opt", "momentum"]
    assert rows[0][0] == 0.0 and math.isnan(rows[0][1])
    importance = importance_data(history)
    assert set(importance) <= {"opt", "momentum"} and importance


# ------------------------------------------------------------------ importance


def test_importance_ranks_lr_first(history: SweepHistory) -> None:
    importance = importance_data(history)
    assert set(importance) == {"lr", "optimizer", "batch_size", "dropout"}
    assert sum(importance.values()) == pytest.approx(1.0)
    assert next(iter(importance)) == "lr"
    assert importance["lr"] > 5 * max(importance["dropout"], importance["batch_size"])
    assert list(importance.values()) == sorted(importance.values(), reverse=True)
    assert importance_data(history) == importance  # deterministic
    assert next(iter(importance_data(_history("val_loss", "min")))) == "lr"


def test_importance_small_sweeps() -> None:
    assert importance_data(_history(specs=SPECS[:1])) == {}
    assert importance_data(_history(specs=[])) == {}
    # Two trials: fANOVA, still one value per varying parameter, summing to 1.
    two = importance_data(_history(specs=SPECS[:2]))
    assert set(two) == {"lr", "optimizer", "batch_size", "dropout"}
    assert sum(two.values()) == pytest.approx(1.0)
    # One varying parameter holds all the importance.
    same = [(n, lr, "adam", "64", "0.1", end) for n, lr, _, _, _, end in SPECS]
    assert importance_data(_history(specs=same)) == {"lr": 1.0}


# ------------------------------------------------------------------ files


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (500, 800)
    assert float(np.std(image)) > 0.01  # something is drawn


def test_write_plots_writes_every_png(written: dict[str, Path]) -> None:
    names = ["learning_curves", "parallel_coordinates", "importance", "lr_schedule"]
    assert list(written) == [*names, "train_val_gap"]
    for name, path in written.items():
        assert path.name == f"{name}.png" and path.is_file()
        _check_png(path)


def test_write_plots_skips_plots_without_data(tmp_path: Path) -> None:
    # No lr metric, no varying hyperparameter.
    trials = tuple(
        TrialHistory(
            f"r{i}",
            f"t{i}",
            {"lr": "0.01"},
            "completed",
            {"val_loss": [(1, 1.0 + i), (2, 0.5 + i)], "train_loss": [(1, 0.9 + i)]},
        )
        for i in range(3)
    )
    history = SweepHistory("p", "flat", "val_loss", "min", ("lr",), trials)
    written = plots.write_plots(history, tmp_path / "out")
    assert list(written) == ["learning_curves", "train_val_gap"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "learning_curves.png",
        "train_val_gap.png",
    ]
    for path in written.values():
        _check_png(path)

    empty = SweepHistory("p", "empty", "val_loss", "min", ("lr",), ())
    assert plots.write_plots(empty, tmp_path / "empty") == {}
    assert list((tmp_path / "empty").iterdir()) == []


def test_learning_curves_mark_early_stops_and_mute_divergence(history: SweepHistory) -> None:
    figure = plots._learning_curves_figure(history)
    assert figure is not None
    (legend,) = figure.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[0] == "trial-000 (best)"
    assert "stopped early (last epoch)" in texts and "diverged / failed" in texts
    (ax,) = figure.axes
    cut = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert len(cut) == 1
    assert list(cut[0].get_xdata()) == [1]  # trial-003's last (only) epoch
    muted = [line for line in ax.get_lines() if line.get_color() == "0.65"]
    assert len(muted) == 1 and list(muted[0].get_ydata()) == [0.35, 0.12, 0.1]
    title = figure.get_suptitle()
    assert title.startswith("Validation val_accuracy per epoch") and "mnist-sweep" in title


def test_exploding_loss_is_kept_off_scale() -> None:
    figure = plots._learning_curves_figure(_history("val_loss", "min"))
    assert figure is not None
    (ax,) = figure.axes
    assert ax.get_ylim()[1] < 100  # the 9e4 of the diverged trial would squash the rest
    texts = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "diverged / failed (off scale)" in texts
    assert isinstance(figure.legends[0].legend_handles[-1], Line2D)


def test_parallel_coordinates_axes_show_real_values(history: SweepHistory) -> None:
    figure = plots._parallel_coordinates_figure(history)
    assert figure is not None
    ax = figure.axes[0]
    titles = [t.get_text() for t in ax.get_xticklabels()]
    # lr was sampled log-uniformly, dropout uniformly: only lr gets a log axis.
    assert titles == ["lr\n(log)", "optimizer", "batch_size", "dropout", "best val_accuracy"]
    labels = {t.get_text() for t in ax.texts}
    assert {"3e-05", "0.001", "0.01", "adam", "sgd", "32", "128", "0.1", "0.5"} <= labels
    assert "mnist-sweep" in figure.get_suptitle()
