"""A champion that cannot be scored is replaced only when it never can; an outage keeps it.

The judging step runs as a retrain runs it once its re-tune has registered the challenger, on
real parts without Ray: MLflow on SQLite in tmp_path (copied from one empty store per module,
since creating MLflow's tables takes seconds), real checkpoints of the digits MLP (built, not
trained: only their shapes matter here) and real holdout rows.
"""

from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_diabetes, load_digits
from sklearn.linear_model import LinearRegression

from pipelines.data import Prepared, prepare_arrays
from pipelines.retrain.compat import inputs_of
from pipelines.retrain.judge import RetrainFailed, judge
from pipelines.retrain.rules import retrain_config
from pipelines.sweep.plan import SweepPlan, plan_sweep
from pipelines.tracking import champion, schema
from pipelines.tracking.client import experiment_id
from pipelines.tracking.saved_models import save_model
from tests.support.configs import REPO, shrunk
from trainables.adapter import CHECKPOINT_META
from trainables.function_trainable import MODEL_FOLDER

NAME = "digits_retrain"
MLP = {"lr": 0.01, "optimizer": "adam", "momentum": 0.0, "batch_size": 64, "dropout": 0.1}
MLP |= {"hidden_units": 32, "hidden_layers": 1, "weight_decay": 1e-5}


def _digits(folder: Path, name: str, features: int = 64, classes: int = 10) -> Path:
    digits = load_digits()
    keep = digits.target < classes
    path = folder / name
    np.savez(path, x=digits.data[keep][:, :features].astype(np.float32), y=digits.target[keep])
    return path


def _setup(uri: str, config: str, **settings: Any) -> tuple[SweepPlan, Prepared]:
    config_ = shrunk(config, **{"tracking.uri": uri, "name": NAME, **settings})
    plan = plan_sweep(retrain_config(config_))
    return plan, prepare_arrays(plan.config.data)[0]


def _mlp(uri: str, data: Path) -> tuple[SweepPlan, Prepared]:
    return _setup(uri, "digits_retrain.yaml", **{"data.dataset": "npz", "data.path": str(data)})


def _retrain_run(
    uri: str, plan: SweepPlan, prepared: Prepared, *, inputs: bool = True, exp: str | None = None
) -> str:
    """A retrain's run that registered a model: its best checkpoint and, as recorded, inputs."""
    client = MlflowClient(uri)
    tags = {
        schema.KIND: schema.KIND_SWEEP,
        schema.RETRAIN: "true",
        schema.RETRAIN_STAGE: "registered",
        schema.FRAMEWORK: plan.info.framework,
    }
    run_id = client.create_run(exp or experiment_id(uri, NAME), tags=tags).info.run_id
    if exp is None:  # an artifact store that is up
        with tempfile.TemporaryDirectory() as folder:
            _checkpoint(plan, prepared, Path(folder))
            client.log_artifacts(run_id, folder, artifact_path=schema.BEST_CHECKPOINT)
    if inputs:
        champion.record_inputs(uri, run_id, inputs_of(plan, prepared.spec()).to_json())
    client.set_terminated(run_id, "FINISHED")
    return str(run_id)


def _checkpoint(plan: SweepPlan, prepared: Prepared, folder: Path) -> None:
    fixed = {k: v for k, v in plan.param_space.items() if isinstance(v, int | float | str)}
    hparams = plan.resolve({**fixed, **MLP})
    trainable = plan.info.instantiate()
    trainable.setup(hparams, prepared.spec(), "cpu")
    trainable.save(folder)
    (folder / CHECKPOINT_META).write_text(json.dumps({"epoch": 1, "hparams": hparams}))


def _register(uri: str, run_id: str, alias: str = schema.CHALLENGER) -> str:
    client = MlflowClient(uri)
    if not client.search_registered_models(f"name = '{NAME}'"):
        client.create_registered_model(NAME)
    source = f"runs:/{run_id}/{schema.BEST_CHECKPOINT}"
    version = str(client.create_model_version(NAME, source, run_id=run_id).version)
    client.set_registered_model_alias(NAME, alias, version)
    return version


def _challenge(uri: str, plan: SweepPlan, prepared: Prepared) -> tuple[str, Any]:
    """Register today's challenger and judge it, as the retrain does after its re-tune."""
    run_id = _retrain_run(uri, plan, prepared)
    version = _register(uri, run_id)
    exp = experiment_id(uri, NAME)
    return run_id, judge(plan, prepared, run_id, version, experiment_id=exp)


def _champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(NAME, schema.CHAMPION).version)


@pytest.mark.parametrize(
    ("today", "what", "says"),
    [
        (
            {"features": 32},
            "input_shape",
            "it expects inputs of shape (64,), today's data has (32,)",
        ),
        ({"classes": 3}, "num_classes", "it predicts 10 classes, today's data has 3"),
    ],
)
def test_a_champion_trained_for_other_inputs_is_replaced_and_the_reason_says_which(
    uri: str, tmp_path: Path, today: dict[str, int], what: str, says: str
) -> None:
    old_plan, old = _mlp(uri, _digits(tmp_path, "old.npz"))
    before = _register(uri, _retrain_run(uri, old_plan, old), schema.CHAMPION)
    plan, prepared = _mlp(uri, _digits(tmp_path, "today.npz", **today))

    run_id, outcome = _challenge(uri, plan, prepared)

    assert outcome.decision == "promoted" and outcome.champion_score is None
    assert outcome.reason.startswith(f"the champion (v{before}) cannot score today's data: ")
    assert says in outcome.reason
    assert "size mismatch" in outcome.reason  # what the model said, for whoever looks
    client = MlflowClient(uri)
    assert _champion(client) == outcome.challenger_version != before
    tags = client.get_run(run_id).data.tags
    assert tags[schema.CHAMPION_INCOMPATIBLE] == what
    assert tags[schema.RETRAIN_REASON] == outcome.reason
    assert tags[schema.RETRAIN_STAGE] == schema.STAGE_DECIDED


def test_a_champion_recorded_before_its_inputs_were_is_judged_by_the_frameworks_error(
    uri: str, tmp_path: Path
) -> None:
    old_plan, old = _mlp(uri, _digits(tmp_path, "old.npz"))
    _register(uri, _retrain_run(uri, old_plan, old, inputs=False), schema.CHAMPION)
    plan, prepared = _mlp(uri, _digits(tmp_path, "today.npz", features=32))

    run_id, outcome = _challenge(uri, plan, prepared)

    assert outcome.decision == "promoted"
    assert "does not fit today's data (RuntimeError: Error(s) in loading state_dict" in (
        outcome.reason
    )
    tags = MlflowClient(uri).get_run(run_id).data.tags
    assert tags[schema.CHAMPION_INCOMPATIBLE] == "shape"


def test_a_champion_of_another_framework_is_replaced(uri: str, tmp_path: Path) -> None:
    data = _digits(tmp_path, "digits.npz")
    forest, rows = _setup(
        uri, "digits_random_forest.yaml", **{"data.dataset": "npz", "data.path": str(data)}
    )
    trainable = forest.info.instantiate()
    trainable.setup(
        {"model": "random_forest", "n_estimators": 8, "max_depth": 4, "min_samples_leaf": 1}
        | {"epochs": 1, "batch_size": 512, "seed": 0},
        rows.spec(),
        "cpu",
    )
    trainable.train_epoch([{"x": rows.x_train, "y": rows.y_train}])
    client = MlflowClient(uri)
    forest_run = client.create_run(
        experiment_id(uri, NAME), tags={schema.FRAMEWORK: "sklearn"}
    ).info.run_id
    with tempfile.TemporaryDirectory() as folder:
        trainable.save(Path(folder))
        client.log_artifacts(forest_run, folder, artifact_path=schema.BEST_CHECKPOINT)
    _register(uri, forest_run, schema.CHAMPION)
    plan, prepared = _mlp(uri, data)  # today: the torch MLP on the same data

    run_id, outcome = _challenge(uri, plan, prepared)

    assert outcome.decision == "promoted"
    assert "it was trained with sklearn, and today's trainable is torch" in outcome.reason
    assert client.get_run(run_id).data.tags[schema.CHAMPION_INCOMPATIBLE] == "framework"


def test_a_champion_whose_framework_is_not_installed_is_replaced(uri: str, tmp_path: Path) -> None:
    plan, prepared = _setup(
        uri,
        str(REPO / "examples" / "sklearn_function" / "experiment.yaml"),
        **{"trainable.params.epochs": 1},
    )
    client = MlflowClient(uri)
    exp = experiment_id(uri, NAME)

    def logged(folder: Path) -> str:
        run_id = client.create_run(exp, tags={schema.FRAMEWORK: "function"}).info.run_id
        (folder / CHECKPOINT_META).write_text(json.dumps({"epoch": 1, "hparams": {}}))
        client.log_artifacts(run_id, str(folder), artifact_path=schema.BEST_CHECKPOINT)
        return str(run_id)

    # The champion's training function handed over an XGBoost model, saved where xgboost was
    # installed: its MLmodel file names the flavour; this machine has no xgboost.
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / MODEL_FOLDER
        model.mkdir()
        (model / "MLmodel").write_text(
            "flavors:\n"
            "  python_function: {loader_module: mlflow.xgboost, data: model.xgb}\n"
            "  xgboost: {data: model.xgb, model_class: xgboost.sklearn.XGBRegressor}\n"
        )
        (model / "model.xgb").write_text("{}")
        before = _register(uri, logged(Path(folder)), schema.CHAMPION)
    with tempfile.TemporaryDirectory() as folder:
        assert prepared.x_holdout is not None
        fitted = LinearRegression().fit(prepared.x_train, prepared.y_train)
        # Named requirements: MLflow would otherwise load the model in a subprocess to infer them.
        options = {"pip_requirements": ["scikit-learn"]}
        save_model(fitted, "sklearn", Path(folder) / MODEL_FOLDER, options)
        run_id = logged(Path(folder))
    version = _register(uri, run_id)

    outcome = judge(plan, prepared, run_id, version, experiment_id=exp)

    assert outcome.decision == "promoted" and outcome.challenger_score is not None
    assert f"the champion (v{before}) cannot score today's data" in outcome.reason
    assert "its model needs 'xgboost', which is not installed here" in outcome.reason
    assert client.get_run(run_id).data.tags[schema.CHAMPION_INCOMPATIBLE] == "not_installed"
    assert load_diabetes().data.shape[1] == prepared.spec().input_shape[0]  # same inputs


def _dead_port() -> int:
    """A port on 127.0.0.1 where nothing listens: what a stopped server leaves behind."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_champion_whose_artifact_server_is_down_stays_and_the_retrain_fails(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One try per request: MLflow's retries would only make the same refusal slower.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    plan, prepared = _mlp(uri, _digits(tmp_path, "digits.npz"))
    client = MlflowClient(uri)
    # The champion's artifacts live on an MLflow artifact server that has stopped: the
    # tracking store answers, the download is refused (a real connection error).
    served = f"http://127.0.0.1:{_dead_port()}/api/2.0/mlflow-artifacts/artifacts/old"
    old_store = client.create_experiment("old-artifact-store", artifact_location=served)
    before = _register(uri, _retrain_run(uri, plan, prepared, exp=old_store), schema.CHAMPION)

    run_id = _retrain_run(uri, plan, prepared)
    version = _register(uri, run_id)
    with pytest.raises(RetrainFailed) as failed:
        judge(plan, prepared, run_id, version, experiment_id=experiment_id(uri, NAME))

    message = str(failed.value)
    assert message.startswith(f"the champion (v{before}) could not be scored (")
    assert "it stays champion, and the next retrain judges this challenger again" in message
    assert "\n" not in message  # the CLI prints it as one line
    assert _champion(client) == before  # never demoted by an outage
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[schema.RETRAIN_DECISION] == schema.DECISION_FAILED
    assert run.data.tags[schema.RETRAIN_REASON] == message
    assert run.data.tags[schema.RETRAIN_STAGE] == "registered"  # judged again next time
    assert schema.CHAMPION_INCOMPATIBLE not in run.data.tags
    assert client.get_model_version(NAME, version).tags.get("retrain_decision") is None


def test_only_mlflows_not_found_means_there_is_no_champion(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert champion.current_champion(uri, NAME) is None  # no such model
    plan, prepared = _mlp(uri, _digits(tmp_path, "digits.npz"))
    version = _register(uri, _retrain_run(uri, plan, prepared))
    assert champion.current_champion(uri, NAME) is None  # a model, no champion alias
    MlflowClient(uri).set_registered_model_alias(NAME, schema.CHAMPION, version)
    found = champion.current_champion(uri, NAME)
    assert found is not None and found.version == version
    # A tracking server that has stopped: an error, never "no champion" (which would promote).
    with pytest.raises(MlflowException):
        champion.current_champion(f"http://127.0.0.1:{_dead_port()}", NAME)
