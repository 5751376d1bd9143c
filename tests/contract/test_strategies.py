"""One contract for every registered searcher and scheduler, run on a cheap real task.

Each strategy: builds from a config, pickles (Tune checkpoints searcher state), runs a small
sweep on scikit-learn digits with a conditional space (momentum only for SGD), samples and logs
only active parameters, and is reproducible with a seed where the library allows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from ray import cloudpickle

from pipelines import run_sweep
from pipelines.sweep import strategies as registry
from pipelines.sweep.plan import plan_sweep
from tests.support.configs import shrunk

CONTINUOUS = """
parameters:
  optimizer: {type: categorical, values: [sgd, adam]}
  momentum:  {type: uniform, low: 0.0, high: 0.9, when: {optimizer: sgd}}
  lr:        {type: loguniform, low: 1.0e-3, high: 3.0e-2}
"""
DISCRETE = """
parameters:
  optimizer: {type: categorical, values: [sgd, adam]}
  momentum:  {type: categorical, values: [0.0, 0.9], when: {optimizer: sgd}}
  lr:        {type: categorical, values: [0.003, 0.01]}
"""
PBT_SPACE = """
parameters:
  lr:       {type: loguniform, low: 1.0e-3, high: 3.0e-2}
  momentum: {type: uniform, low: 0.5, high: 0.95}
"""


def _config(tmp_path: Path, method: str, scheduler: str, space_text: str, **extra: Any) -> Any:
    tmp_path.mkdir(parents=True, exist_ok=True)
    space = tmp_path / "space.yaml"
    space.write_text(space_text)
    overrides = {
        "search.method": method,
        "search.num_samples": 1 if method == "grid" else 4,
        "search.seed": 0,
        "search.options": {},
        "scheduler.name": scheduler,
        "scheduler.options": {},
        "trainable.search_space": str(space),
        "trainable.params.epochs": 4,
        "trainable.params.batch_size": 64,
        **extra,
    }
    return shrunk("digits_mlp_random.yaml", **overrides)


def _check_conditional(summary: Any, plan: Any) -> None:
    client = MlflowClient(summary.mlflow_tracking_uri)
    children = client.search_runs(
        [summary.mlflow_experiment_id], filter_string="tags.`tunepipe.kind` = 'trial'"
    )
    assert len(children) == len(list(summary.results))
    for child in children:
        params = child.data.params
        assert ("momentum" in params) == (params["optimizer"] == "sgd"), params
    for result in summary.results:
        hparams = plan.resolve(result.config)
        assert ("momentum" in hparams) == (hparams["optimizer"] == "sgd"), hparams


#: Searchers that model results (everything but independent draws and enumerated points),
#: read from their declared space forms.
MODEL_BASED = sorted(
    name
    for name, searcher in registry.SEARCHERS.items()
    if searcher.space_form not in ("independent", "grid")
)


def _suggestions(method: str, tmp_path: Path, count: int = 4) -> list[dict[str, Any]]:
    plan = plan_sweep(_config(tmp_path, method, "fifo", CONTINUOUS))
    searcher, _ = plan.build_strategies()
    return [plan.resolve(searcher.suggest(f"trial_{i}")) for i in range(count)]


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize(
    "method",
    # Optuna's GP sampler fits a Gaussian process per suggestion (about a minute here): slow suite.
    [
        pytest.param(m, marks=pytest.mark.slow) if m == "gp" else m
        for m in sorted(registry.SEARCHERS)
    ],
)
def test_searcher_contract(method: str, tmp_path: Path) -> None:
    space = DISCRETE if method == "grid" else CONTINUOUS
    config = _config(tmp_path, method, "fifo", space)
    plan = plan_sweep(config)
    cloudpickle.loads(cloudpickle.dumps(plan.build_strategies()[0]))

    summary = run_sweep(config, progress=False)
    if method == "grid":
        points = {tuple(sorted(plan.resolve(r.config).items())) for r in summary.results}
        # sgd x 2 momenta x 2 lrs + adam x 2 lrs: momentum never multiplies the adam points
        assert len(points) == len(list(summary.results)) == 6
    else:
        assert len(list(summary.results)) == 4
    assert summary.end_reasons["completed"] == len(list(summary.results))
    _check_conditional(summary, plan)


@pytest.mark.parametrize("method", MODEL_BASED)
def test_model_based_searchers_are_reproducible_with_a_seed(method: str, tmp_path: Path) -> None:
    first = _suggestions(method, tmp_path / "a")
    second = _suggestions(method, tmp_path / "b")
    assert first == second
    assert len({tuple(sorted(s.items())) for s in first}) == len(first)  # not one point repeated


def test_grid_is_the_same_enumeration_every_time(tmp_path: Path) -> None:
    plans = [plan_sweep(_config(tmp_path, "grid", "fifo", DISCRETE)) for _ in range(2)]
    assert plans[0].num_samples == plans[1].num_samples == 6
    first, second = (p.converted.points_to_evaluate for p in plans)
    assert first == second and len(first) == 6


@pytest.mark.usefixtures("ray_local")
def test_random_search_is_reproducible_with_a_seed(tmp_path: Path) -> None:
    configs = []
    for run in ("a", "b"):
        config = _config(
            tmp_path / run, "random", "fifo", CONTINUOUS, **{"trainable.params.epochs": 1}
        )
        summary = run_sweep(config, progress=False)
        plan = plan_sweep(config)
        configs.append(
            sorted(str(sorted(plan.resolve(r.config).items())) for r in summary.results)
        )
    assert configs[0] == configs[1]


@pytest.mark.usefixtures("ray_local")
@pytest.mark.parametrize("scheduler", sorted(registry.SCHEDULERS))
def test_scheduler_contract(scheduler: str, tmp_path: Path) -> None:
    space = PBT_SPACE if scheduler == "pbt" else CONTINUOUS
    extra: dict[str, Any] = {}
    if scheduler == "pbt":
        # With 2 trials running at once on 2 CPUs, a quantile of 0.5 makes one of them exploit
        # the other at every interval (0.25 of 2 trials rounds down to nobody).
        options = {"perturbation_interval": 1, "quantile_fraction": 0.5}
        extra = {"trainable.params.optimizer": "sgd", "scheduler.options": options}
    config = _config(tmp_path, "random", scheduler, space, **extra)
    plan = plan_sweep(config)
    cloudpickle.loads(cloudpickle.dumps(plan.build_strategies()[1]))

    summary = run_sweep(config, progress=False)
    results = list(summary.results)
    assert len(results) == 4
    assert not [r for r in results if r.error is not None]
    assert summary.best_metric < 2.0  # val_loss: learned (chance level on 10 classes is 2.30)
    if scheduler != "pbt":
        _check_conditional(summary, plan)
    else:
        # Exploit + explore happened and took effect: some trial continued from another's
        # checkpoint with a perturbed lr (constant schedule, so lr changes only through PBT).
        # Read from MLflow: Tune rewrites a trial's result files when PBT exploits, and the
        # rewritten table can be empty.
        client = MlflowClient(summary.mlflow_tracking_uri)
        children = client.search_runs(
            [summary.mlflow_experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{summary.mlflow_parent_run_id}'",
        )
        lrs = [{m.value for m in client.get_metric_history(c.info.run_id, "lr")} for c in children]
        assert any(len(values) > 1 for values in lrs), "PBT never perturbed a learning rate"
    # The last result, not metrics_dataframe: Tune rewrites a trial's result files when PBT
    # exploits, so its table can lose rows (MLflow keeps the full history).
    epochs = [int(r.metrics["epoch"]) for r in results]
    assert max(epochs) == 4  # at least one trial reached the horizon


def test_bohb_like_preset_is_tpe_plus_asha(tmp_path: Path) -> None:
    plan = plan_sweep(shrunk("digits_bohb_like.yaml"))
    assert (plan.searcher.name, plan.scheduler.name) == ("tpe", "asha")
    searcher, scheduler = plan.build_strategies()
    assert type(scheduler).__name__ == "AsyncHyperBandScheduler"
    assert type(searcher).__name__ == "OptunaSearch"


def test_pbt_with_a_model_based_searcher_is_rejected(tmp_path: Path) -> None:
    from pipelines.errors import ConfigError

    with pytest.raises(ConfigError, match=r"search\.method"):
        plan_sweep(_config(tmp_path, "tpe", "pbt", PBT_SPACE))


@pytest.mark.filterwarnings("ignore:QMCSampler is experimental")
def test_a_new_searcher_is_one_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Optuna's quasi-Monte-Carlo sampler, added as one registry entry and nothing else: it
    plans, builds, pickles and proposes only active parameters of a conditional space."""
    import optuna

    def qmc(options: Any, ctx: registry.StrategyContext) -> Any:
        from ray.tune.search.optuna import OptunaSearch

        sampler = optuna.samplers.QMCSampler(seed=ctx.seed, warn_independent_sampling=False)
        return OptunaSearch(
            space=ctx.searcher_space.native, sampler=sampler, metric=ctx.metric, mode=ctx.mode
        )

    entry = registry.Searcher("qmc", registry.NoOptions, qmc, "quasi-random", space_form="optuna")
    monkeypatch.setitem(registry.SEARCHERS, "qmc", entry)
    plan = plan_sweep(_config(tmp_path, "qmc", "asha", CONTINUOUS))
    assert plan.searcher is entry and plan.num_samples == 4
    searcher, _ = plan.build_strategies()
    cloudpickle.loads(cloudpickle.dumps(searcher))
    for i in range(4):
        hparams = plan.resolve(searcher.suggest(f"trial_{i}"))
        assert ("momentum" in hparams) == (hparams["optimizer"] == "sgd"), hparams
