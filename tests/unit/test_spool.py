"""The spool of a driver's MLflow writes: durable, in order, idempotent, replayed after a crash.

Real MLflow throughout: a SQLite store, and for the outage a real ``mlflow server`` that is not
there yet (connections refused) and is started later on the same port.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from pipelines.paths import tunepipe_home
from pipelines.tracking import schema
from pipelines.tracking.spool import Spool, replay_stopped_spools, run_key, spool_folder
from pipelines.views.ui import start_mlflow_server, stop_mlflow_server, wait_until_up
from tests.support.chaos import free_port

EXPERIMENT = "spooled"


@pytest.fixture(autouse=True)
def _fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    # A refused connection fails at once instead of after MLflow's own retries.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def _sweep_writes(spool: Spool, folder: Path) -> str:
    """Spool what a small sweep writes: a parent, a trial under it, and their records."""
    parent = run_key()
    spool.append(
        {
            "op": "create_run",
            "key": parent,
            "experiment": EXPERIMENT,
            "name": "sweep",
            "tags": {schema.KIND: schema.KIND_SWEEP, schema.WRITE_KEY: parent},
        }
    )
    spool.append({"op": "log_batch", "run": parent, "params": {"config.lr": "0.1"}})
    trial = f"trial:{parent}/t1"
    spool.append(
        {
            "op": "create_run",
            "key": trial,
            "experiment": EXPERIMENT,
            "name": "trial-000",
            "tags": {schema.KIND: schema.KIND_TRIAL, schema.TRIAL_ID: "t1"},
            "ref_tags": {schema.PARENT: parent},
        }
    )
    for epoch in (1, 2, 3):
        metrics = [["epoch", epoch, 1000 + epoch, epoch], ["val_loss", 1.0 / epoch, 1000, epoch]]
        spool.append({"op": "log_batch", "run": trial, "metrics": metrics})
    spool.append({"op": "status", "run": trial, "status": "FINISHED"})
    config = folder / "config"
    config.mkdir(exist_ok=True)
    (config / "config.yaml").write_text("lr: 0.1\n")
    staged = spool.stage(config)
    spool.append({"op": "artifacts", "run": parent, "folder": staged, "path": "sweep"})
    spool.append({"op": "log_batch", "run": parent, "ref_tags": {schema.BEST_CHILD_RUN_ID: trial}})
    spool.append({"op": "status", "run": parent, "status": "FINISHED"})
    return parent


def _ledger(uri: str) -> dict[str, Any]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    trials = [r for r in runs if r.data.tags.get(schema.KIND) == schema.KIND_TRIAL]
    parents = [r for r in runs if r.data.tags.get(schema.KIND) == schema.KIND_SWEEP]
    steps = [m.step for t in trials for m in client.get_metric_history(t.info.run_id, "epoch")]
    return {
        "parents": len(parents),
        "trials": len(trials),
        "steps": sorted(steps),
        "running": sum(r.info.status == "RUNNING" for r in runs),
        "nested": [t.data.tags.get(schema.PARENT) for t in trials]
        == [p.info.run_id for p in parents],
        "best_child": [p.data.tags.get(schema.BEST_CHILD_RUN_ID) for p in parents]
        == [t.info.run_id for t in trials],
        "artifacts": [a.path for p in parents for a in client.list_artifacts(p.info.run_id)],
    }


WHOLE = {
    "parents": 1,
    "trials": 1,
    "steps": [1, 2, 3],
    "running": 0,
    "nested": True,
    "best_child": True,
    "artifacts": ["sweep"],
}


@pytest.mark.parametrize("store", ["sqlite", "file"])
def test_a_write_replayed_after_a_crash_before_its_record_is_not_doubled(
    store: str, uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow's SQL stores skip a metric point they hold already; its file store (still there
    # behind MLFLOW_ALLOW_FILE_STORE) does not, and there only the spool's own check keeps a
    # replayed batch from doubling the history.
    if store == "file":
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (tmp_path / "mlruns").as_uri()
    spool = Spool(uri)
    _sweep_writes(spool, tmp_path)
    # A crash after MLflow took each write but before the spool recorded it: the next driver
    # applies that write again. Every write of the journal is put to that test in turn.
    for crashed_at in range(1, len(spool._ops)):
        while spool.applied <= crashed_at:
            assert spool._apply_next()
        state_path = spool.path.with_suffix(".state")
        state = json.loads(state_path.read_text())
        state["applied"] = crashed_at  # the record of the last write never made it to disk
        state["refs"].pop(spool._ops[crashed_at].get("key"), None)
        state_path.write_text(json.dumps(state))
        spool._release()
        spool = Spool(uri, spool.path)
    assert spool.replay() == 0
    assert _ledger(uri) == WHOLE
    spool.remove()
    assert list(spool_folder().iterdir()) == []


def test_writes_wait_on_disk_while_mlflow_is_down_and_the_next_command_writes_them(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    spool = Spool(url).start()
    parent = _sweep_writes(spool, tmp_path)
    assert not spool.wait(1.0), "no server listens yet: nothing can have been written"
    assert spool.close(timeout=0.5) == spool.pending > 0
    assert spool.path.is_file(), "what MLflow did not take stays on disk"
    assert replay_stopped_spools(url) == (0, spool.pending), "still down: nothing written"

    store = f"sqlite:///{tmp_path / 'server.db'}"
    server = start_mlflow_server(store, "127.0.0.1", port)
    try:
        wait_until_up(url, server, timeout=120)
        assert replay_stopped_spools(url)[1] == 0
        assert _ledger(url) == WHOLE
        runs = MlflowClient(url).search_runs(
            [MlflowClient(url).get_experiment_by_name(EXPERIMENT).experiment_id],
            filter_string=f"tags.`{schema.WRITE_KEY}` = '{parent}'",
        )
        assert len(runs) == 1
    finally:
        stop_mlflow_server(server)
    assert not list(spool_folder().glob("*.jsonl")), "a written spool is removed"


def test_a_live_drivers_spool_is_left_to_it(uri: str, tmp_path: Path) -> None:
    live = Spool(uri)
    _sweep_writes(live, tmp_path)
    assert replay_stopped_spools(uri) == (0, 0), "its driver holds the lock: not ours to write"
    assert live.pending > 0
    with pytest.raises(BlockingIOError):
        Spool(uri, live.path)
    live.replay()
    live.remove()


def test_a_last_write_cut_short_by_a_crash_is_skipped_and_the_rest_written(
    uri: str, tmp_path: Path
) -> None:
    spool = Spool(uri)
    _sweep_writes(spool, tmp_path)
    spool._release()
    with spool.path.open("a") as journal:  # the driver died halfway through a line
        journal.write('{"op": "log_batch", "run": "key:')
    written, left = replay_stopped_spools(uri)
    assert (written, left) == (len(spool._ops), 0)
    assert _ledger(uri) == WHOLE


def test_a_write_mlflow_refuses_for_good_is_dropped_and_the_rest_go_on(uri: str) -> None:
    spool = Spool(uri)
    run = run_key()
    spool.append({"op": "create_run", "key": run, "experiment": EXPERIMENT, "tags": {}})
    spool.append({"op": "log_batch", "run": run, "params": {"lr": "0.1"}})
    spool.append({"op": "log_batch", "run": run, "params": {"lr": "0.2"}})  # params are final
    spool.append({"op": "status", "run": run, "status": "FINISHED"})
    assert spool.replay() == 0
    assert spool.dropped == 1
    found = MlflowClient(uri).get_run(spool.resolve(run) or "")
    assert found.data.params == {"lr": "0.1"}
    assert found.info.status == "FINISHED"
    spool.remove()


def test_the_spool_is_private_to_its_user(uri: str) -> None:
    spool = Spool(uri)
    assert spool_folder().parent == tunepipe_home()
    assert os.stat(spool_folder()).st_mode & 0o777 == 0o700
    assert os.stat(spool.path).st_mode & 0o777 == 0o600
    spool.remove()
