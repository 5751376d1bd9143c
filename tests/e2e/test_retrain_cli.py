"""``tunepipe retrain`` as a scheduler runs it: exit codes, one at a time, safe to kill and rerun.

Every retrain here is a real process (real Ray, MLflow on SQLite in tmp_path); kills are real
SIGKILLs, at a chosen stage or while trials run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.support.configs import CONFIGS, REPO

TUNEPIPE = [sys.executable, "-m", "pipelines.cli"]
CONFIG = CONFIGS / "digits_retrain.yaml"
NAME = "digits_retrain"
SMALL = ["--set", "retrain.num_samples=2", "--set", "trainable.params.epochs=2"]


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "TUNEPIPE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    return env


def _retrain(home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TUNEPIPE, "retrain", str(CONFIG), *SMALL, *extra],
        cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _client(home: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


def _versions(home: Path) -> list[str]:
    found = _client(home).search_model_versions(f"name = '{NAME}'")
    return sorted(str(v.version) for v in found)


def _champion(home: Path) -> str:
    return str(_client(home).get_model_version_by_alias(NAME, "champion").version)


def _retrain_runs(home: Path) -> list[object]:
    client = _client(home)
    experiment = client.get_experiment_by_name(NAME)
    return list(
        client.search_runs(
            [experiment.experiment_id],
            filter_string="tags.`tunepipe.retrain` = 'true'",
            order_by=["attributes.start_time DESC"],
        )
    )


def _running(home: Path) -> list[str]:
    """The experiment's runs still RUNNING, as ``kind:run_id``."""
    client = _client(home)
    experiment = client.get_experiment_by_name(NAME)
    found = client.search_runs(
        [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    return [f"{run.data.tags.get('tunepipe.kind')}:{run.info.run_id}" for run in found]


def test_a_retrain_while_another_holds_the_lock_exits_75_and_records_nothing(
    isolated_home: Path,
) -> None:
    from pipelines.retrain.lock import experiment_lock

    with experiment_lock(NAME):  # the running retrain
        done = _retrain(isolated_home)
    assert done.returncode == 75, done.stderr[-2000:]
    assert "another retrain of 'digits_retrain' is running" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (isolated_home / "mlflow.db").exists()  # it stopped before MLflow and Ray


def test_bad_input_exits_2_before_the_lock(isolated_home: Path) -> None:
    done = _retrain(isolated_home, "--set", "retrain.margin=-1")
    assert done.returncode == 2
    assert "retrain.margin" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_two_retrains_started_at_once_exactly_one_runs(isolated_home: Path) -> None:
    command = [*TUNEPIPE, "retrain", str(CONFIG), *SMALL]
    env = _env(isolated_home)
    pipe = subprocess.PIPE
    both = [
        subprocess.Popen(command, cwd=REPO, env=env, stdout=pipe, stderr=pipe, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=600) for process in both]
    codes = sorted(process.returncode for process in both)
    assert codes == [0, 75], outputs
    assert len(_retrain_runs(isolated_home)) == 1
    assert _versions(isolated_home) == ["1"]


@pytest.mark.slow
def test_killed_retrains_leave_no_duplicate_versions_and_an_evaluated_champion(
    isolated_home: Path,
) -> None:
    first = _retrain(isolated_home)
    assert first.returncode == 0 and "promoted" in first.stdout, first.stderr[-3000:]
    assert re.search(r"tunepipe ui .*digits_retrain\.yaml.*/#/experiments/\d+/runs/[0-9a-f]{32}",
                     first.stdout.replace("\n", " "))  # fmt: skip
    assert _champion(isolated_home) == "1"

    # 1. SIGKILL right after the challenger was registered, before it was judged.
    killer = (
        "import os, signal, sys\n"
        "from pipelines.config import load_config\n"
        "from pipelines.retrain.run import run_retrain\n"
        "config = load_config(sys.argv[1], {'retrain.num_samples': 2, "
        "'trainable.params.epochs': 2})\n"
        "def stage(name):\n"
        "    if name == 'registered':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "run_retrain(config, force=True, progress=False, on_stage=stage)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", killer, str(CONFIG)],
        cwd=REPO, env=_env(isolated_home), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert _versions(isolated_home) == ["1", "2"]
    assert _champion(isolated_home) == "1"  # never moved to the unjudged version
    assert _retrain_runs(isolated_home)[0].data.tags["tunepipe.retrain_stage"] == "registered"

    resumed = _retrain(isolated_home)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed an interrupted retrain" in resumed.stdout
    assert _versions(isolated_home) == ["1", "2"]  # judged, not registered again
    latest = _retrain_runs(isolated_home)[0]
    assert latest.data.tags["tunepipe.retrain_stage"] == "decided"
    decision = latest.data.tags["tunepipe.retrain_decision"]
    assert _champion(isolated_home) == ("2" if decision == "promoted" else "1")
    champion_now = _champion(isolated_home)

    # 2. SIGKILL (the whole process group: driver and its Ray) while trials run.
    tuning = subprocess.Popen(
        [*TUNEPIPE, "retrain", str(CONFIG), *SMALL, "--force"],
        cwd=REPO, env=_env(isolated_home), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    runs_before = len(_retrain_runs(isolated_home))
    deadline = time.monotonic() + 300
    while len(_retrain_runs(isolated_home)) == runs_before:
        assert time.monotonic() < deadline and tuning.poll() is None, "no re-tune started"
        time.sleep(0.5)
    os.killpg(tuning.pid, signal.SIGKILL)
    tuning.wait(timeout=60)
    assert _versions(isolated_home) == ["1", "2"]
    assert _champion(isolated_home) == champion_now
    assert _running(isolated_home)  # a SIGKILLed driver cannot close its runs itself

    rerun = _retrain(isolated_home)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    abandoned = next(
        run for run in _retrain_runs(isolated_home)
        if run.data.tags.get("tunepipe.retrain_stage") == "abandoned"
    )  # fmt: skip
    assert abandoned.info.status == "KILLED"
    assert abandoned.data.tags["tunepipe.end_reason"] == "interrupted"
    # Nothing left RUNNING: the rerun closed the dead re-tune's run and its trials.
    assert _running(isolated_home) == []
    # The data did not change since the last judged retrain: nothing to do, nothing registered.
    assert "skipped" in rerun.stdout
    assert _versions(isolated_home) == ["1", "2"]
    assert _champion(isolated_home) == champion_now


def test_schedule_with_a_bad_cron_exits_2_before_it_waits(isolated_home: Path) -> None:
    done = subprocess.run(
        [*TUNEPIPE, "schedule", str(CONFIG), "--cron", "61 3 * * *"],
        cwd=REPO, env=_env(isolated_home), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--cron" in done.stderr and "Traceback" not in done.stderr
