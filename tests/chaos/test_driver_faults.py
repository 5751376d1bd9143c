"""The sweep's driver dies or is stopped; the sweep is resumed into the same MLflow runs.

Real processes, real signals: ``tunepipe sweep`` runs in a session of its own; SIGKILL to its
process group takes its local Ray with it, as a machine that goes away would; SIGTERM goes to
the driver alone, as systemd or Kubernetes send it. Each test ends by reconciling Tune's state,
MLflow's runs and histories, the checkpoints in the storage and the registry
(tests/support/reconcile.py): lost 0, duplicated 0, left RUNNING 0.
"""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support.chaos import (
    CHAOS_CONFIG,
    EPOCHS,
    S3_CREDENTIALS,
    TRIALS,
    driver_env,
    epochs_recorded,
    make_bucket,
    start_driver,
    wait_until,
)
from tests.support.reconcile import reconcile, tunepipe

pytestmark = pytest.mark.slow  # each test is a few sweeps of real processes: 1.5-2 min


def test_a_sigkilled_driver_on_object_storage_resumes_into_the_same_runs(
    tmp_path: Path, s3_endpoint: str
) -> None:
    make_bucket(s3_endpoint, "chaos-resume")
    home = tmp_path / "home"
    env = driver_env(home, **S3_CREDENTIALS)
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    storage = [
        "--set", "storage.path=s3://chaos-resume/sweeps",
        "--set", f"storage.endpoint={s3_endpoint}",
    ]  # fmt: skip
    # A random point of the sweep, after at least one epoch (before it nothing is at stake).
    # CHAOS_SEED replays a printed seed.
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1_000_000))
    kill_after = random.Random(seed).randint(1, EPOCHS - 1)
    print(f"chaos seed {seed}: SIGKILL after {kill_after} epoch(s) of some trial")

    driver = start_driver(str(CHAOS_CONFIG), *storage, env=env, cwd=tmp_path, log=tmp_path / "1")
    wait_until(
        lambda: max(epochs_recorded(tracking, "chaos"), default=0) >= kill_after,
        timeout=240,
        what=f"a trial to record {kill_after} epoch(s)",
        proc=driver,
    )
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    client = MlflowClient(tracking)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("chaos").experiment_id],
        filter_string="tags.`tunepipe.kind` = 'sweep'",
    )
    assert parent.info.status == "RUNNING", "the fault left nothing to recover"
    assert parent.data.tags["tunepipe.tune_experiment"].startswith("s3://chaos-resume/sweeps/")

    resumed = tunepipe("sweep", str(CHAOS_CONFIG), *storage, "--resume", env=env, cwd=tmp_path)
    (tmp_path / "2").write_text(resumed.stdout + resumed.stderr)  # kept for a failure's story
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Registered model: models:/chaos/1" in resumed.stdout
    assert "s3://chaos-resume/sweeps/" in resumed.stdout  # the best checkpoint, on the store
    ledger = reconcile(tracking, "chaos", EPOCHS)
    print("after SIGKILL + resume:", ledger.summary())
    ledger.assert_whole(TRIALS)
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["tunepipe.resumes"] == "1"
    assert "tunepipe.end_reason" not in parent.data.tags

    # Resuming a finished sweep says so and changes nothing.
    again = tunepipe("sweep", str(CHAOS_CONFIG), *storage, "--resume", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "has already finished" in again.stdout
    assert reconcile(tracking, "chaos", EPOCHS) == ledger


def test_sigterm_stops_the_sweep_at_checkpoints_and_resume_finishes_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = driver_env(home)
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    driver = start_driver(str(CHAOS_CONFIG), env=env, cwd=tmp_path, log=tmp_path / "1")
    wait_until(
        lambda: max(epochs_recorded(tracking, "chaos"), default=0) >= 2,
        timeout=240,
        what="a trial to record 2 epochs",
        proc=driver,
    )
    driver.send_signal(signal.SIGTERM)  # the driver alone: its Ray stays up to stop the trials
    assert driver.wait(timeout=120) == 143, (tmp_path / "1").read_text()[-3000:]
    assert "--resume" in (tmp_path / "1").read_text()

    stopped = reconcile(tracking, "chaos", EPOCHS)
    assert stopped.left_running == 0, stopped.summary()
    assert stopped.tune_unfinished >= 1, "the stop came after the sweep had finished"
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("chaos").experiment_id
    (parent,) = client.search_runs([exp], filter_string="tags.`tunepipe.kind` = 'sweep'")
    assert parent.info.status == "KILLED"
    assert parent.data.tags["tunepipe.end_reason"] == "interrupted"
    assert "SIGTERM" in parent.data.tags["tunepipe.end_detail"]
    killed = client.search_runs([exp], filter_string="attributes.status = 'KILLED'")
    assert any(r.data.tags.get("tunepipe.kind") == "trial" for r in killed)

    resumed = tunepipe("sweep", str(CHAOS_CONFIG), "--resume", parent.info.run_id, env=env,
                       cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    ledger = reconcile(tracking, "chaos", EPOCHS)
    print("after SIGTERM + resume:", ledger.summary())
    ledger.assert_whole(TRIALS)
