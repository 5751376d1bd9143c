"""Data-parallel torch trials for real: Tune trials that each drive a 2-worker Ray Train run.

Local Ray (the session's 2 logical CPUs: the driver takes 0.01 of a CPU, each gloo worker 0.45,
so two trials of two workers run at once), the digits split every trainable test uses, two
epochs. One trial's rank 1 crashes in its first attempt at epoch 2; Train restarts the worker
group from the epoch-1 checkpoint. Everything a trial defines travels by value: Ray's workers
cannot import ``tests``.

The batches come from numpy here, not from the sweep's Ray Data pipeline: every Train worker
streaming through Ray Data starts Ray Data's own processes too, which on 2 busy cores costs more
than this file's time budget. The sweep tests cover that pipeline; the workers only see the
:class:`~trainables.protocol.BatchSource` contract either way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.trainables import BATCH_SIZE, Split, digits_split
from trainables.checkpoint_manifest import damage
from trainables.data_parallel import WORKERS, shard_batches
from trainables.results import EARLY_STOPPED

pytestmark = pytest.mark.usefixtures("ray_local")


def test_shards_are_disjoint_and_equally_long() -> None:
    batches = [{"x": [i], "y": [i]} for i in range(7)]

    shards = [list(shard_batches(batches, rank, 3)) for rank in range(3)]

    assert [len(s) for s in shards] == [2, 2, 2]  # the 7th batch is dropped: no rank waits
    seen = [b["y"][0] for s in shards for b in s]
    assert sorted(seen) == list(range(6))


def test_two_worker_trials_report_once_per_epoch_checkpoint_and_resume(tmp_path: Path) -> None:
    import ray
    from ray import tune

    from trainables import reporting
    from trainables.adapter import TrialSettings
    from trainables.data_parallel import run_data_parallel_trial
    from trainables.registry import get_trainable_info
    from trainables.torch_data_parallel import torch_trainer
    from trainables.torch_trainable import TorchTrainable

    log = tmp_path / "faults.log"

    class CrashOnce(TorchTrainable):
        """Rank 1 of trial 1 dies at its first epoch 2; every restore is logged."""

        def train_epoch(self, batches: Any) -> dict[str, float]:
            import torch.distributed as dist

            crashing = reporting.trial_index() == 1 and dist.get_rank() == 1
            if crashing and self.current_epoch == 2 and not log.exists():
                log.write_text("crashed at epoch 2\n")
                raise RuntimeError("injected worker failure")
            self.current_epoch += 1
            return super().train_epoch(batches)

        def load(self, directory: Path) -> None:
            import torch.distributed as dist

            super().load(directory)
            epoch = json.loads((Path(directory) / "tunepipe.json").read_text())["epoch"]
            self.current_epoch = epoch + 1
            with log.open("a") as out:
                out.write(f"rank {dist.get_rank()} loaded epoch {epoch}\n")

        current_epoch = 1

    info = dataclasses.replace(get_trainable_info("torch"), implementation=CrashOnce)
    settings = TrialSettings(
        info=info, metric="val_accuracy", mode="max", checkpoint_every=1, resolve=dict
    )

    def driver(config: dict[str, Any], data: Any) -> None:
        # Spot-node preemption polling costs an actor process per run; none here.
        os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
        reporting.remove_leftovers()
        run_data_parallel_trial(
            settings,
            dict(config),
            data,
            workers=2,
            cpu_per_worker=0.45,
            max_failures=1,
            trainer=torch_trainer,
        )

    data = _array_source(digits_split())
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(driver, data=data), {"cpu": 0.01}),
        param_space={
            "model": "mlp",
            "epochs": 2,
            "batch_size": BATCH_SIZE,
            "lr": tune.grid_search([0.01, 0.003]),
        },
        tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", max_concurrent_trials=2),
        run_config=tune.RunConfig(
            name="dp",
            storage_path=str(tmp_path / "tune"),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    results = tuner.fit()

    assert results.num_errors == 0
    assert len(results) == 2
    for index in range(len(results)):
        result = results[index]
        history = result.metrics_dataframe
        assert history is not None
        # One report per epoch, not one per worker, and both workers trained every epoch.
        assert list(history["epoch"]) == [1, 2]
        assert list(history["training_iteration"]) == [1, 2]
        assert set(history[WORKERS]) == {2}
        # A real Tune checkpoint, in the trial's own folder, whole, of the last epoch.
        checkpoint = result.checkpoint
        assert checkpoint is not None
        assert Path(checkpoint.path).parent == Path(result.path)
        with checkpoint.as_directory() as directory:
            assert damage(Path(directory)) is None
            assert json.loads((Path(directory) / "tunepipe.json").read_text())["epoch"] == 2
    best = results.get_best_result()
    assert best.metrics is not None
    assert best.metrics["val_accuracy"] > 0.7

    # Rank 1 crashed once; Train restarted both workers from the epoch-1 checkpoint.
    lines = log.read_text().splitlines()
    assert lines[0] == "crashed at epoch 2"
    assert sorted(lines[1:]) == ["rank 0 loaded epoch 1", "rank 1 loaded epoch 1"]

    assert _placement_groups_removed(ray)
    # Rank 0, killed mid-epoch when rank 1 crashed, left its folders; its successor removed them.
    trial_ids = [result.metrics["trial_id"] for result in results]
    assert not [f for t in trial_ids for f in Path(tempfile.gettempdir()).glob(f"tunepipe-{t}-*")]


def _placement_groups_removed(ray: Any, wait_s: float = 10.0) -> bool:
    """Whether every placement group is REMOVED (Train removes its own as a run ends)."""
    deadline = time.monotonic() + wait_s
    while True:
        states = {pg["state"] for pg in ray.util.placement_group_table().values()}
        if states <= {"REMOVED"} or time.monotonic() > deadline:
            return states <= {"REMOVED"}
        time.sleep(0.5)


def _array_source(split: Split) -> Any:
    """Return a BatchSource over ``split`` whose class travels by value (defined locally)."""
    import numpy as np

    class ArraySource:
        def __init__(self, split: Split) -> None:
            self.spec = split.spec
            self.train = split.x_train, split.y_train
            self.val = split.x_val, split.y_val

        def for_trial(self, hparams: Any, **where: Any) -> ArraySource:
            return self

        def train_batches(self, epoch: int, batch_size: int) -> Any:
            x, y = self.train
            order = np.random.default_rng(epoch).permutation(len(x))  # same on every rank
            for start in range(0, len(x), batch_size):
                rows = order[start : start + batch_size]
                yield {"x": x[rows], "y": y[rows]}

        def val_batches(self) -> Any:
            x, y = self.val
            return [{"x": x[i : i + 256], "y": y[i : i + 256]} for i in range(0, len(x), 256)]

        def arrays(self) -> Any:
            return (*self.train, *self.val)

    return ArraySource(split)


@pytest.mark.slow
def test_a_sweep_of_two_worker_trials_is_tracked_once_per_trial(tmp_path: Path) -> None:
    """``resources.workers: 2`` through ``run_sweep`` under ASHA: Ray Data batches, MLflow."""
    import ray
    from mlflow.tracking import MlflowClient

    from pipelines import run_sweep
    from tests.support.reconcile import reconcile

    asha = {"name": "asha", "options": {"grace_period": 1, "reduction_factor": 2}}
    config = _two_worker_sweep(tmp_path, **{"search.num_samples": 4, "scheduler": asha})
    summary = run_sweep(config, progress=False)

    # One child run per trial (not per worker), every epoch once, a checkpoint per trial from
    # rank 0 that Tune kept, one model registered, nothing left RUNNING.
    reconcile(summary.mlflow_tracking_uri, config.experiment_name, epochs=2).assert_whole(4)
    client = MlflowClient(summary.mlflow_tracking_uri)
    children = {
        run.data.tags["tunepipe.trial_id"]: run
        for run in client.search_runs(
            [summary.mlflow_experiment_id], "tags.`tunepipe.kind` = 'trial'"
        )
    }
    for result in summary.results:
        epochs = list(result.metrics_dataframe["epoch"])
        assert epochs in ([1], [1, 2])
        assert set(result.metrics_dataframe[WORKERS]) == {2}
        child = children[result.metrics["trial_id"]]
        history = client.get_metric_history(child.info.run_id, WORKERS)
        assert [p.step for p in history] == epochs
        expected = "completed" if epochs == [1, 2] else "stopped_early"
        assert child.data.tags["tunepipe.end_reason"] == expected
    assert summary.metric == "val_loss" and summary.best_metric < 0.5  # it learned
    assert summary.model_version == "1"
    # Trials ASHA stopped aborted their Train runs, and the sweep removed the groups of the runs
    # that died with their trial's actor: no worker group holds resources.
    assert _placement_groups_removed(ray, wait_s=10)


@pytest.mark.slow  # two Keras trials of two TensorFlow workers each: about 1.5 min
def test_a_sweep_of_two_worker_keras_trials_trains_in_lock_step(tmp_path: Path) -> None:
    """``resources.workers: 2`` for Keras: MultiWorkerMirroredStrategy in a TensorflowTrainer."""
    from pipelines import run_sweep
    from tests.support.reconcile import reconcile

    # Early stopping that always ends at epoch 2 and restores epoch 1's weights: the workers
    # save and load the mirrored model in the strategy's scope (what a retry's restore does).
    stop_at_2 = {
        "trainable.params.early_stopping_patience": 1,
        "trainable.params.early_stopping_min_delta": 100.0,
        "trainable.params.early_stopping_restore_best": True,
    }
    config = _two_worker_sweep(
        tmp_path, **{"search.num_samples": 2, "trainable.framework": "tensorflow", **stop_at_2}
    )
    summary = run_sweep(config, progress=False)

    # The workers' weights agreed after every epoch (a trial fails otherwise), each trial is
    # one child run with every epoch once and a kept checkpoint, the best model registered.
    reconcile(summary.mlflow_tracking_uri, config.experiment_name, epochs=2).assert_whole(2)
    for result in summary.results:
        assert result.error is None
        history = result.metrics_dataframe
        assert list(history["epoch"]) == [1, 2]
        assert set(history[WORKERS]) == {2}
        assert result.metrics[EARLY_STOPPED] == 1
        # The last report describes the restored epoch-1 weights, evaluated again.
        assert result.metrics["val_loss"] == pytest.approx(history["val_loss"].iloc[0], rel=1e-5)
    assert summary.metric == "val_loss" and summary.best_metric < 0.8  # it learned
    assert summary.model_version == "1"


def _two_worker_sweep(tmp_path: Path, **overrides: Any) -> Any:
    """The digits MLP sweep shrunk to two epochs of trials of two workers, under ``tmp_path``."""
    from tests.support.configs import shrunk

    return shrunk(
        "digits_mlp_random.yaml",
        **{
            "trainable.params.epochs": 2,
            "resources": {"cpu": 0.45, "workers": 2},
            "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "storage.path": str(tmp_path / "ray_results"),
            "data.cache": False,
            **overrides,
        },
    )


@pytest.mark.slow  # PBT over two trials of two workers, each pause a new Train run: ~3 min
def test_pbt_exploits_and_explores_data_parallel_trials(tmp_path: Path) -> None:
    """PBT acts per trial: a trial restarts from another's rank-0 checkpoint with a new lr."""
    import ray
    from mlflow.tracking import MlflowClient

    from pipelines import run_sweep

    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  lr: {type: loguniform, low: 1.0e-3, high: 3.0e-2}\n")
    # Two trials at once on 2 CPUs: a quantile of 0.5 makes one exploit the other each epoch.
    # Synchronous, because asynchronous PBT compares only running trials: in CI one trial once
    # finished its three epochs before the other's first report, and nothing was perturbed.
    pbt = {"name": "pbt", "options": {"perturbation_interval": 1, "quantile_fraction": 0.5,
                                      "mutate": ["lr"], "synch": True}}  # fmt: skip
    config = _two_worker_sweep(
        tmp_path,
        **{
            "search.num_samples": 2,
            "scheduler": pbt,
            "trainable.search_space": str(space),
            "trainable.params.optimizer": "sgd",
            "trainable.params.batch_size": 64,
            # One perturbation, after epoch 1: each synchronous round pauses both trials,
            # and each resume is a new Train run (~30 s on 2 CPUs).
            "trainable.params.epochs": 2,
        },
    )
    summary = run_sweep(config, progress=False)

    results = list(summary.results)
    assert len(results) == 2 and not [r for r in results if r.error is not None]
    assert max(int(r.metrics["epoch"]) for r in results) == 2
    assert {r.metrics[WORKERS] for r in results} == {2}
    client = MlflowClient(summary.mlflow_tracking_uri)
    children = client.search_runs([summary.mlflow_experiment_id], "tags.`tunepipe.kind` = 'trial'")
    assert len(children) == 2  # one child run per trial, exploits included
    lrs = [{m.value for m in client.get_metric_history(c.info.run_id, "lr")} for c in children]
    assert any(len(values) > 1 for values in lrs), "PBT never perturbed a learning rate"
    # Every exploit stopped a Train run: none holds its workers' resources now.
    assert _placement_groups_removed(ray, wait_s=10)
