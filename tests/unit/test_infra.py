"""The schedule definitions in infra/: they parse, they are what their tools expect, they all run
the one command infra/README.md documents at the same time of day, and none holds a secret.

The cron line and the systemd unit are also run for real: the cron line's ``flock`` with the
real binary (fast), and both of them end to end through the real ``tunepipe retrain`` (slow).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.retrain.cron import next_fire_times, parse_cron
from tests.support.configs import REPO

INFRA = REPO / "infra"
README = INFRA / "README.md"
CRONTAB = INFRA / "cron" / "tunepipe-retrain.crontab"
SERVICE = INFRA / "systemd" / "tunepipe-retrain.service"
TIMER = INFRA / "systemd" / "tunepipe-retrain.timer"
CRONJOB = INFRA / "k8s" / "retrain-cronjob.yaml"
RAYJOB = INFRA / "kuberay" / "rayjob.yaml"
RAYCRONJOB = INFRA / "kuberay" / "raycronjob.yaml"
CLUSTER = INFRA / "ray" / "cluster.yaml"

#: Where the checkout and the state live in the cron and systemd files (replaced to run them).
PROJECT_DIR = "/opt/tunepipe"
STATE_DIR = "/var/lib/tunepipe"
#: The schedule every definition uses.
DAILY = "0 3 * * *"
#: Environment variable names that hold credentials.
SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|SECRET|CREDENTIALS?|API_KEY|ACCESS_KEY)$")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def documented_command() -> str:
    """The first ``tunepipe retrain ...`` line inside a fenced block of infra/README.md."""
    for line in _fenced_lines(README.read_text()):
        if line.startswith("tunepipe retrain "):
            return line.split("#")[0].strip()
    raise AssertionError("infra/README.md documents no `tunepipe retrain` command")


def _fenced_lines(text: str) -> Iterator[str]:
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            yield line.strip()


def _cron_entries() -> tuple[dict[str, str], list[str]]:
    """The crontab's variable assignments and its job lines."""
    env: dict[str, str] = {}
    jobs: list[str] = []
    for line in CRONTAB.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line):
            name, value = line.split("=", 1)
            env[name] = value
        else:
            jobs.append(line)
    return env, jobs


def _cron_job() -> tuple[dict[str, str], str, str]:
    env, jobs = _cron_entries()
    assert len(jobs) == 1, jobs
    fields = jobs[0].split(maxsplit=5)
    return env, " ".join(fields[:5]), fields[5]


def _cron_process(tmp_path: Path, state: Path) -> tuple[list[str], dict[str, str]]:
    """The cron line as cron runs it: its SHELL, cron's bare PATH, the crontab's variables."""
    crontab_env, _, command = _cron_job()
    assert PROJECT_DIR in command
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "LOGNAME": "tunepipe"}
    env |= crontab_env | {"TUNEPIPE_HOME": str(state)}
    return [env.get("SHELL", "/bin/sh"), "-c", command.replace(PROJECT_DIR, str(REPO))], env


def _service_process(tmp_path: Path) -> tuple[list[str], Path, dict[str, str]]:
    """The unit's ExecStart, working directory and Environment=, moved onto this machine."""
    service = _unit(SERVICE)["Service"]
    state = tmp_path / "state"
    env = {"PATH": "/usr/bin:/bin"}
    for assignment in shlex.split(service["Environment"]):
        name, value = assignment.split("=", 1)
        env[name] = value.replace(STATE_DIR, str(state))
    argv = [part.replace(PROJECT_DIR, str(REPO)) for part in shlex.split(service["ExecStart"])]
    return argv, Path(service["WorkingDirectory"].replace(PROJECT_DIR, str(REPO))), env


def _schedule_commands() -> dict[str, str]:
    """The command line each schedule runs, by file name."""
    container = _yaml(CRONJOB)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    return {
        CRONTAB.name: _cron_job()[2],
        SERVICE.name: _unit(SERVICE)["Service"]["ExecStart"],
        CRONJOB.name: shlex.join([*container["command"], *container["args"]]),
        RAYJOB.name: _yaml(RAYJOB)["spec"]["entrypoint"],
        RAYCRONJOB.name: _yaml(RAYCRONJOB)["spec"]["jobTemplate"]["entrypoint"],
    }


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = pod_template["spec"]["containers"]
    return containers


# --- the documented command ------------------------------------------------------------------


def test_readme_documents_one_retrain_command() -> None:
    command = documented_command()
    assert re.fullmatch(r"tunepipe retrain pipelines/configs/\w+\.yaml", command), command
    config = command.split()[-1]
    for line in _fenced_lines(README.read_text()):
        for found in re.findall(r"tunepipe retrain (\S+)", line):
            assert found == config, f"README names another config: {line}"


@pytest.mark.parametrize(
    "name", [CRONTAB, SERVICE, CRONJOB, RAYJOB, RAYCRONJOB], ids=lambda path: path.name
)
def test_every_schedule_runs_the_documented_command(name: Path) -> None:
    command = _schedule_commands()[name.name]
    documented = documented_command()
    assert documented in command, f"{name.name} runs {command!r}, README says {documented!r}"
    assert command.count("tunepipe retrain") == 1


def test_every_schedule_fires_daily_at_three() -> None:
    cron_expressions = {
        CRONTAB.name: _cron_job()[1],
        CRONJOB.name: _yaml(CRONJOB)["spec"]["schedule"],
        RAYCRONJOB.name: _yaml(RAYCRONJOB)["spec"]["schedule"],
    }
    assert set(cron_expressions.values()) == {DAILY}, cron_expressions
    for fire in next_fire_times(DAILY, datetime(2025, 1, 1, tzinfo=UTC), 3, timezone="UTC"):
        assert (fire.hour, fire.minute) == (3, 0)
    assert _unit(TIMER)["Timer"]["OnCalendar"] == "*-*-* 03:00:00"


# --- every file parses and has the shape its tool expects ------------------------------------


def test_every_yaml_file_parses() -> None:
    files = sorted(INFRA.rglob("*.yaml"))
    assert {CRONJOB, RAYJOB, RAYCRONJOB, CLUSTER} <= set(files)
    for path in files:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert documents, path
        assert all(isinstance(doc, dict) for doc in documents), path


def test_cronjob_is_a_batch_v1_cronjob_that_never_overlaps() -> None:
    cronjob = _yaml(CRONJOB)
    assert (cronjob["apiVersion"], cronjob["kind"]) == ("batch/v1", "CronJob")
    spec = cronjob["spec"]
    parse_cron(spec["schedule"], spec.get("timeZone"))
    assert spec["concurrencyPolicy"] == "Forbid"
    assert isinstance(spec["startingDeadlineSeconds"], int) and spec["startingDeadlineSeconds"] > 0
    job = spec["jobTemplate"]["spec"]
    assert isinstance(job["backoffLimit"], int)
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = _containers(job["template"])[0]
    assert container["image"]
    assert container["command"] == ["ray", "job", "submit"]
    args = container["args"]
    address = args[args.index("--address") + 1]
    assert re.fullmatch(r"http://[\w.-]+:8265", address), address
    assert args[args.index("--working-dir") + 1] == "."
    assert args[args.index("--") + 1 :] == documented_command().split()


def test_rayjob_creates_a_gpu_cluster_and_deletes_it_afterwards() -> None:
    rayjob = _yaml(RAYJOB)
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    spec = rayjob["spec"]
    assert spec["entrypoint"].endswith(documented_command())
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int)
    cluster = spec["rayClusterSpec"]
    # The cluster's Ray must be the Ray this project is developed and tested with.
    assert cluster["rayVersion"] == metadata.version("ray")
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert _containers(head["template"])[0]["image"]
    [workers] = cluster["workerGroupSpecs"]
    assert isinstance(workers["rayStartParams"], dict)
    counts = [workers[key] for key in ("minReplicas", "replicas", "maxReplicas")]
    assert all(isinstance(count, int) for count in counts)
    assert counts == sorted(counts) and counts[-1] >= 1
    worker = _containers(workers["template"])[0]
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    images = {c["image"] for pod in (head, workers) for c in _containers(pod["template"])}
    assert len(images) == 1, "head and workers must run the same image"


def test_raycronjob_schedules_exactly_the_rayjob() -> None:
    raycronjob = _yaml(RAYCRONJOB)
    assert (raycronjob["apiVersion"], raycronjob["kind"]) == ("ray.io/v1", "RayCronJob")
    spec = raycronjob["spec"]
    parse_cron(spec["schedule"], "UTC")
    assert spec["suspend"] is False
    # KubeRay 1.6: jobTemplate is a RayJob spec; ours is rayjob.yaml's, so the two cannot drift.
    assert spec["jobTemplate"] == _yaml(RAYJOB)["spec"]


def test_every_ray_pod_gets_the_same_shared_storage_and_its_credentials() -> None:
    # The head runs the driver, the workers run the trials: all must write one storage (since
    # Ray 2.7 nothing is synced between nodes), and an object-store URI is shared by design.
    for path in (RAYJOB, RAYCRONJOB):
        spec = _yaml(path)["spec"]
        cluster = (spec.get("jobTemplate") or spec)["rayClusterSpec"]
        pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        storages = set()
        for pod in pods:
            for container in _containers(pod["template"]):
                env = {v["name"]: v.get("value") for v in container["env"]}
                storages.add(env["TUNEPIPE_STORAGE"])
                secrets = {s["secretRef"]["name"] for s in container["envFrom"]}
                assert "tunepipe-storage" in secrets, f"{path.name}: no storage credentials"
        (storage,) = storages
        assert storage.startswith("s3://"), storage
    assert "TUNEPIPE_STORAGE=s3://" in CLUSTER.read_text()
    assert "TUNEPIPE_STORAGE" in README.read_text()


def test_cluster_launcher_config_is_valid_for_this_ray() -> None:
    import jsonschema
    import ray.autoscaler

    config = _yaml(CLUSTER)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    assert config["cluster_name"]
    assert config["provider"]["type"]
    node_types = config["available_node_types"]
    assert config["head_node_type"] in node_types
    gpu_types = [t for t in node_types.values() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu_types and all(t["max_workers"] >= 1 for t in gpu_types)
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and '-e ".[torch]"' in setup
    assert f"rayproject/ray:{metadata.version('ray')}-" in config["docker"]["image"]


@pytest.mark.parametrize("commands", ["head_start_ray_commands", "worker_start_ray_commands"])
def test_cluster_nodes_start_ray_with_token_auth_whatever_the_env_file_says(
    commands: str, tmp_path: Path
) -> None:
    # The node's real start command, run by bash with a stand-in `ray` that shows its auth mode.
    start = _yaml(CLUSTER)[commands][-1]
    env_file = tmp_path / "retrain.env"
    start = start.replace("~/.config/tunepipe/retrain.env", str(env_file))
    # Raising the open-files limit needs the node's privileges, which a test runner may lack.
    start = start.replace("ulimit -n 65536", "true")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ray").write_text('#!/bin/sh\necho "ray $1 auth=$RAY_AUTH_MODE"\n')
    (bin_dir / "ray").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}

    env_file.write_text(f"RAY_AUTH_MODE=disabled\nRAY_AUTH_TOKEN={'a' * 64}\n")
    started = subprocess.run(["bash", "-c", start], env=env, capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    assert "auth=token" in started.stdout
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"

    env_file.write_text("MLFLOW_TRACKING_URI=http://mlflow:5000\n")  # no token
    refused = subprocess.run(["bash", "-c", start], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "ray" not in refused.stdout
    assert "RAY_AUTH_TOKEN" in refused.stderr


def test_systemd_units_link_up_and_treat_busy_as_success() -> None:
    service, timer = _unit(SERVICE), _unit(TIMER)
    assert {"Unit", "Service"} <= set(service.sections())
    assert {"Unit", "Timer", "Install"} <= set(timer.sections())
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["WorkingDirectory"] == PROJECT_DIR
    assert service["Service"]["EnvironmentFile"] == "-/etc/tunepipe/retrain.env"
    assert "75" in service["Service"]["SuccessExitStatus"].split()
    assert service["Service"]["NoNewPrivileges"] == "true"
    assert timer["Timer"]["Unit"] == SERVICE.name
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["RandomizedDelaySec"]
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # The units as they would be installed here (ExecStart= must name an existing program).
    for unit in (SERVICE, TIMER):
        (tmp_path / unit.name).write_text(unit.read_text().replace(PROJECT_DIR, str(REPO)))
    checked = subprocess.run(
        [analyze, "verify", str(tmp_path / SERVICE.name), str(tmp_path / TIMER.name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0 and not (checked.stdout + checked.stderr).strip(), checked


def test_crontab_line_is_a_valid_schedule_through_flock() -> None:
    env, schedule = _cron_job()[:2]
    parse_cron(schedule)
    command = _cron_job()[2]
    assert re.search(r"\bflock -n\b", command)
    assert "TUNEPIPE_HOME" in env
    # cron runs it with a bare PATH: the CLI is named by its path in the checkout.
    program = shlex.split(command.split("&&", 1)[1])
    tunepipe = program[program.index("retrain") - 1]
    assert (REPO / tunepipe).is_file(), f"{tunepipe} is not in the checkout"


# --- no secrets ------------------------------------------------------------------------------


def _schedule_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.is_file() and p.name != "README.md")


def test_no_file_holds_a_secret_value() -> None:
    literal = re.compile(
        r"(?i)\b[\w.-]*(token|password|passwd|secret|api[_-]?key)\s*[=:]\s*['\"]?[^\s'\"$#{}]{6,}"
    )
    for path in _schedule_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not literal.search(line), f"{path.name}:{number} looks like a secret: {line}"
            assert "--set" not in line, f"{path.name}:{number}: settings belong in the config"


def test_kubernetes_credentials_come_from_secrets() -> None:
    for path in (CRONJOB, RAYJOB, RAYCRONJOB):
        for node in _walk(_yaml(path)):
            for variable in node.get("env", []) if isinstance(node.get("env"), list) else []:
                if SECRET_NAME.search(variable["name"]):
                    assert "value" not in variable, f"{path.name}: {variable['name']} inline"
                    assert "secretKeyRef" in variable["valueFrom"], variable
    container = _containers(_yaml(CRONJOB)["spec"]["jobTemplate"]["spec"]["template"])[0]
    token = {v["name"]: v for v in container["env"]}["RAY_AUTH_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"]["name"]


def test_systemd_reads_credentials_only_from_the_environment_file() -> None:
    service = _unit(SERVICE)["Service"]
    names = [a.split("=", 1)[0] for a in shlex.split(service["Environment"])]
    assert not [name for name in names if SECRET_NAME.search(name)]
    assert not SECRET_NAME.search(service["ExecStart"].upper())


# --- the cron line and the unit run for real -------------------------------------------------


def test_cron_line_exits_75_at_once_while_the_last_run_holds_the_lock(tmp_path: Path) -> None:
    flock = shutil.which("flock")
    if flock is None:
        pytest.skip("flock (util-linux) is not installed")
    state = tmp_path / "state"
    state.mkdir()
    argv, env = _cron_process(tmp_path, state)
    lock = re.search(r'flock [-\w ]*"\$TUNEPIPE_HOME/([\w.-]+)"', argv[2])
    assert lock, argv[2]
    lock_file = state / lock.group(1)
    # The last run is still going, and holds the lock for far longer than the new run may take:
    # a line that queued behind it would time out here instead of answering 75.
    holder = subprocess.Popen([flock, str(lock_file), "sleep", "3600"], start_new_session=True)
    try:
        _wait_until_locked(flock, lock_file)
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep
        holder.wait()
    assert result.returncode == 75, result
    log = state / "retrain-cron.log"
    assert log.exists() and log.read_text() == "", "the retrain ran although the lock was held"


def _wait_until_locked(flock: str, lock_file: Path) -> None:
    deadline = time.monotonic() + 10
    while subprocess.run([flock, "-n", str(lock_file), "true"]).returncode == 0:
        assert time.monotonic() < deadline, "the holder never took the lock"
        time.sleep(0.05)


def test_systemd_exec_start_is_busy_not_failed_while_a_retrain_holds_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real CLI under the unit's settings exits 75, which SuccessExitStatus= calls success."""
    from pipelines.config import load_config
    from pipelines.retrain.lock import experiment_lock

    argv, workdir, env = _service_process(tmp_path)
    monkeypatch.setenv("TUNEPIPE_HOME", env["TUNEPIPE_HOME"])  # the lock lives in the unit's
    config = workdir / documented_command().split()[-1]
    with experiment_lock(load_config(config).experiment_name):
        result = subprocess.run(
            argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=300
        )
    assert result.returncode == 75, result
    assert "75" in _unit(SERVICE)["Service"]["SuccessExitStatus"].split()


@pytest.mark.slow
def test_cron_line_runs_a_real_retrain(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    argv, env = _cron_process(tmp_path, state)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    log = (state / "retrain-cron.log").read_text()
    assert result.returncode == 0, log[-3000:]
    assert log.strip(), "the retrain's output did not reach the log"


@pytest.mark.slow
def test_systemd_exec_start_runs_a_real_retrain(tmp_path: Path) -> None:
    argv, workdir, env = _service_process(tmp_path)
    assert Path(argv[0]).is_file()
    Path(env["TUNEPIPE_HOME"]).mkdir(parents=True)  # StateDirectory= creates it under systemd
    result = subprocess.run(
        argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
