"""Scheduled retraining for real: warm starts, champion/challenger on a holdout, extensions.

One scenario runs once per module (real Ray, real MLflow on SQLite, real digits) and the tests
read what it recorded:

1. a plain sweep on the first version of the data (400 rows);
2. retrain 1: warm-started from that sweep, no champion yet -> promoted;
3. retrain 2 on unchanged data -> skipped, nothing tuned;
4. retrain 3, forced, with a crippled search space (learning rates that cannot learn in one
   epoch) -> kept, and the run says why;
5. retrain 4 on better data (all 1,797 rows) -> promoted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_digits

from pipelines import run_sweep
from pipelines.retrain.run import RetrainOutcome, run_retrain
from pipelines.sweep.finish import SweepSummary
from pipelines.sweep.plan import plan_sweep
from pipelines.sweep.warm_start import WarmStart, earlier_trials
from tests.support.configs import shrunk
from tests.support.steps import counting_steps

# About 3.5 minutes on 2 cores: it runs with `make test-slow` (CI runs both).
pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]

NAME = "digits_retrain"


def _write_digits(path: Path, rows: int) -> Path:
    digits = load_digits()
    np.savez(path, x=digits.data[:rows].astype(np.float32), y=digits.target[:rows])
    return path


def _settings(home: Path, data: Path, **extra: Any) -> dict[str, Any]:
    return {
        "data.dataset": "npz",
        "data.path": str(data),
        "trainable.params.epochs": 4,
        "search.num_samples": 3,
        "retrain.num_samples": 3,
        "retrain.top_k": 2,
        "tracking.uri": f"sqlite:///{home / 'mlflow.db'}",
        "storage.path": str(home / "ray_results"),
        **extra,
    }


@dataclass
class Scenario:
    """What the module's retrain story recorded."""

    client: MlflowClient
    sweep: SweepSummary
    first: RetrainOutcome
    skipped: RetrainOutcome
    crippled: RetrainOutcome
    better: RetrainOutcome
    stages: list[str]
    warm_trials: int
    v1: dict[str, Any]
    first_steps: dict[str, int]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    home = tmp_path_factory.mktemp("retrain-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNEPIPE_HOME", str(home))
        small = _write_digits(home / "digits-v1.npz", 400)
        full = _write_digits(home / "digits-v2.npz", 1797)
        crippled_space = home / "crippled.yaml"
        crippled_space.write_text(
            yaml.safe_dump(
                {
                    "parameters": {
                        "lr": {"type": "loguniform", "low": 1e-6, "high": 2e-6},
                        "optimizer": {"type": "categorical", "values": ["sgd"]},
                        "batch_size": {"type": "categorical", "values": [64]},
                    }
                }
            )
        )
        v1 = _settings(home, small)
        sweep = run_sweep(shrunk("digits_retrain.yaml", **v1), progress=False)
        config = shrunk("digits_retrain.yaml", **v1)
        warm_trials = len(
            earlier_trials(
                config.tracking.uri,
                sweep.mlflow_experiment_id,
                plan_sweep(config).space,
                config.metric,
                config.mode,
            )
        )
        stages: list[str] = []
        with counting_steps() as first_steps:
            first = run_retrain(config, progress=False, on_stage=stages.append)
        skipped = run_retrain(shrunk("digits_retrain.yaml", **v1), progress=False)
        crippled = run_retrain(
            shrunk(
                "digits_retrain.yaml",
                **_settings(
                    home,
                    small,
                    **{
                        "trainable.search_space": str(crippled_space),
                        "trainable.params.epochs": 1,
                    },
                ),
            ),
            force=True,
            progress=False,
        )
        better = run_retrain(
            shrunk("digits_retrain.yaml", **_settings(home, full)), progress=False
        )
        yield Scenario(
            MlflowClient(config.tracking.uri),
            sweep,
            first,
            skipped,
            crippled,
            better,
            stages,
            warm_trials,
            v1,
            dict(first_steps),
        )


def _champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(NAME, "champion").version)


def _trials(client: MlflowClient, run_id: str) -> list[Any]:
    children = client.search_runs(
        [client.get_run(run_id).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'",
    )
    return sorted(children, key=lambda run: run.data.tags["mlflow.runName"])


def test_first_retrain_without_a_champion_promotes_its_challenger(scenario: Scenario) -> None:
    first = scenario.first
    assert first.decision == "promoted" and first.champion_score is None
    assert first.challenger_version is not None
    assert first.challenger_score is not None and first.challenger_score > 0.5
    assert scenario.stages == ["tuning", "registered", "evaluated", "decided"]
    # Planned once and the data prepared once, though it checks, tunes and judges.
    assert scenario.first_steps == {"plans": 1, "preparations": 1}
    run = scenario.client.get_run(first.run_id)
    assert run.data.tags["tunepipe.retrain_decision"] == "promoted"
    assert run.data.tags["tunepipe.retrain_reason"] == first.reason
    assert run.data.metrics["holdout_val_accuracy"] == pytest.approx(first.challenger_score)
    # What its model was trained for: a later retrain that cannot score it says what changed.
    inputs = json.loads(run.data.tags["tunepipe.model_inputs"])
    assert inputs["framework"] == "torch" and inputs["input_shape"] == [64]
    assert inputs["num_classes"] == 10 and inputs["task"] == "classification"


def test_unchanged_data_is_skipped_and_recorded(scenario: Scenario) -> None:
    skipped = scenario.skipped
    assert skipped.decision == "skipped" and "data unchanged" in skipped.reason
    assert skipped.challenger_version is None
    run = scenario.client.get_run(skipped.run_id)
    assert run.data.tags["tunepipe.retrain_decision"] == "skipped"
    assert run.info.status == "FINISHED"
    assert not _trials(scenario.client, skipped.run_id)  # nothing was tuned


def test_a_worse_challenger_is_registered_but_the_champion_stays(scenario: Scenario) -> None:
    crippled, first = scenario.crippled, scenario.first
    assert crippled.decision == "kept"
    assert crippled.champion_score is not None and crippled.challenger_score is not None
    assert crippled.challenger_score < crippled.champion_score
    assert crippled.champion_version == first.challenger_version
    run = scenario.client.get_run(crippled.run_id)
    assert "not above the margin" in run.data.tags["tunepipe.retrain_reason"]
    assert run.data.metrics["champion_holdout_val_accuracy"] == pytest.approx(
        crippled.champion_score
    )
    assert run.data.tags["tunepipe.champion_after"] == first.challenger_version
    # It was registered all the same, as the challenger it was.
    version = scenario.client.get_model_version(NAME, str(crippled.challenger_version))
    assert version.tags["retrain_decision"] == "kept"


def test_better_data_promotes_the_new_challenger(scenario: Scenario) -> None:
    better = scenario.better
    assert better.decision == "promoted"
    assert better.champion_score is not None and better.challenger_score is not None
    assert better.challenger_score - better.champion_score > 0.005  # the config's margin
    assert _champion(scenario.client) == better.challenger_version
    # Scored, not replaced for an incompatibility: the data grew, its inputs did not change.
    run = scenario.client.get_run(better.run_id)
    assert "tunepipe.champion_incompatible" not in run.data.tags
    assert run.data.metrics["champion_holdout_val_accuracy"] == pytest.approx(
        better.champion_score
    )
    versions = scenario.client.search_model_versions(f"name = '{NAME}'")
    # The sweep's model, then one per retrain that tuned: the skip registered nothing.
    assert len(versions) == 4


def test_the_retune_first_evaluates_the_earlier_top_k_configs(scenario: Scenario) -> None:
    client = scenario.client
    earlier = _trials(client, scenario.sweep.mlflow_parent_run_id)
    ranked = sorted(
        (t for t in earlier if math.isfinite(t.data.metrics.get("val_accuracy", math.nan))),
        key=lambda t: t.data.metrics["val_accuracy"],
        reverse=True,
    )
    retuned = _trials(client, scenario.first.run_id)
    searched = ("lr", "optimizer", "batch_size", "hidden_units", "hidden_layers", "dropout")
    for earlier_trial, new_trial in zip(ranked[:2], retuned[:2], strict=True):
        for name in searched:
            assert new_trial.data.params[name] == earlier_trial.data.params[name]
    run = client.get_run(scenario.first.run_id)
    assert run.data.tags["tunepipe.warm_start_trials"] == str(scenario.warm_trials) == "3"


def test_the_searcher_starts_with_every_earlier_result_in_its_study(scenario: Scenario) -> None:
    config = shrunk("digits_retrain.yaml")
    experiment = scenario.client.get_experiment_by_name(NAME)
    earlier = earlier_trials(
        scenario.v1["tracking.uri"],  # the scenario's store
        experiment.experiment_id,
        plan_sweep(config).space,
        config.metric,
        config.mode,
    )
    searcher, _ = plan_sweep(config).build_strategies(WarmStart(tuple(earlier), 2, "max"))
    study = searcher._ot_study  # the searcher Tune gets, before its first suggestion
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(completed) == len(earlier) > 3  # every trial of the sweep and the retrains
    assert sorted(t.value for t in completed) == sorted(t.value for t in earlier)
    assert {t.params["lr"] for t in completed} == {t.params["lr"] for t in earlier}
    assert len(study.trials) == len(earlier) + 2  # plus the top two, queued to run first


def test_extend_adds_trials_under_the_same_parent_and_the_best_only_improves(
    scenario: Scenario,
) -> None:
    sweep = scenario.sweep
    client = scenario.client
    before = _trials(client, sweep.mlflow_parent_run_id)
    config = shrunk("digits_retrain.yaml", **{**scenario.v1, "search.num_samples": 2})
    with counting_steps() as steps:
        extended = run_sweep(config, extend=sweep.mlflow_parent_run_id, progress=False)

    assert steps == {"plans": 1, "preparations": 1}  # the earlier sweep's checks add none
    assert extended.mlflow_parent_run_id == sweep.mlflow_parent_run_id
    after = _trials(client, sweep.mlflow_parent_run_id)
    assert len(after) == len(before) + 2
    names = [t.data.tags["mlflow.runName"].split()[0] for t in after]
    assert len(set(names)) == len(names)  # numbering continued, no clashes
    parent = client.get_run(sweep.mlflow_parent_run_id)
    assert parent.data.tags["tunepipe.extensions"] == "1"
    assert parent.data.tags["tunepipe.warm_start_trials"] == str(len(before))
    assert parent.info.status == "FINISHED"
    history = [
        m.value
        for m in sorted(
            client.get_metric_history(sweep.mlflow_parent_run_id, "best_val_accuracy"),
            key=lambda m: m.step,
        )
    ]
    assert len(history) == 2
    assert history[1] >= history[0] == pytest.approx(sweep.best_metric)
    assert extended.best_metric == pytest.approx(history[1])
    earlier_ids = {t.info.run_id for t in before}
    best_new = max(
        t.data.metrics["val_accuracy"] for t in after if t.info.run_id not in earlier_ids
    )
    assert history[1] == pytest.approx(max(history[0], best_new))
