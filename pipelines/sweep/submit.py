"""``tunepipe submit``: run a sweep on a cluster as a Ray job, and return at once.

A sweep driven from a laptop through Ray Client dies with the laptop's connection. A Ray job's
driver runs on the cluster instead: it survives the submitter going away, and ``tunepipe jobs``
follows it from anywhere that reaches the head's job server (``http://HEAD:8265``).

The job's runtime environment carries the code: the config's folder as the working directory
(the config, its search space and the user's module beside it) and tunepipe's own packages as
``py_modules``, so the cluster runs exactly the code that validated the config here. The
cluster's image provides the dependencies (Ray, MLflow, the framework). Credentials never go in
the runtime environment, which the job server stores and shows: the driver reads them from the
head's environment, as every node does.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.config import ExperimentConfig
from pipelines.errors import ConfigError

#: Not worth shipping with the job: local state, environments, caches.
EXCLUDES = [".tunepipe", ".venv", "venv", ".git", "__pycache__", "*.pyc", "mlruns", "ray_results"]
#: How long a submission waits for a head's job agent to come up.
AGENT_WAIT_S = 60.0
#: A job that ended: it will not change again.
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


@dataclass
class SweepJob:
    """A sweep running on a cluster as a Ray job: follow it, read its logs, stop it.

    Attributes:
        job_id: The job's submission id.
        address: The job server it was submitted to.
        experiment: The MLflow experiment the sweep records into.
        tracking_uri: The MLflow store, as the submitter's config names it.

    """

    job_id: str
    address: str
    experiment: str = ""
    tracking_uri: str = ""
    _client: Any = field(default=None, repr=False)

    @property
    def client(self) -> Any:
        """The job server's client (created on first use)."""
        if self._client is None:
            self._client = job_client(self.address)
        return self._client

    def status(self) -> str:
        """Return PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
        return str(self._ask(self.client.get_job_status))

    def logs(self) -> str:
        """Return the driver's output so far."""
        return str(self._ask(self.client.get_job_logs))

    def stop(self) -> bool:
        """Ask the job to stop: its driver gets SIGTERM and stops the trials at a checkpoint.

        Ray kills the driver ``RAY_JOB_STOP_WAIT_TIME_S`` (head's environment, default 3 s)
        after the SIGTERM; give it a minute there for the trials to reach their checkpoints.
        """
        return bool(self._ask(self.client.stop_job))

    def _ask(self, call: Any) -> Any:
        try:
            return call(self.job_id)
        except RuntimeError as exc:  # the job server answers 404 for an unknown job
            if "does not exist" not in str(exc):
                raise
            raise ConfigError(
                f"the job server at {self.address} has no job {self.job_id!r}",
                key="JOB",
                fix="pass the id `tunepipe submit` printed (ray job list shows them all)",
            ) from None

    def wait(self, timeout_s: float = 3600, poll_s: float = 2.0) -> str:
        """Wait until the job ends (or ``timeout_s`` passes); return its status."""
        deadline = time.monotonic() + timeout_s
        status = self.status()
        while status not in TERMINAL and time.monotonic() < deadline:
            time.sleep(poll_s)
            status = self.status()
        return status


def token_header() -> dict[str, str]:
    """Return the ``Authorization`` header for a token-auth cluster, read from the environment now.

    Ray's client reads ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN`` once per process and keeps what it
    saw, so a program that sets them after it first used Ray would be refused; the header is
    built from the environment at each call instead. The token goes only where token auth is
    asked for (``RAY_AUTH_MODE=token``).
    """
    if os.environ.get("RAY_AUTH_MODE") != "token":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if not token and Path(path).is_file():
        token = Path(path).read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def job_client(address: str) -> Any:
    """Return Ray's job client for ``address`` (``http://HEAD:8265``).

    Raises:
        ConfigError: When the job server cannot be reached or refuses us.

    """
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=token_header())
    except Exception as exc:  # connection refused, 401/403, a non-Ray server
        raise ConfigError(
            f"cannot reach Ray's job server at {address}: {str(exc).splitlines()[0]}",
            key="--address",
            fix="pass the head's dashboard address, http://HEAD:8265 (with RAY_AUTH_MODE=token "
            "and the cluster's token in the environment if it uses token auth)",
        ) from None


def submit_sweep(
    config: ExperimentConfig,
    address: str,
    overrides: list[str] | None = None,
    job_id: str | None = None,
) -> SweepJob:
    """Submit the sweep of ``config`` to the cluster at ``address`` as a Ray job; return at once.

    Args:
        config: The experiment config, loaded from its file (its folder is shipped).
        address: The cluster's job server, ``http://HEAD:8265``.
        overrides: ``--set`` options to pass on, as ``key=value`` strings.
        job_id: The submission id (default: ``tunepipe-<name>-<random>``).

    Returns:
        A handle on the running job.

    Raises:
        ConfigError: Without a config file to ship, or when the job server is unreachable.

    """
    if config.source is None:
        raise ConfigError(
            "a submitted sweep needs its config as a file (it is shipped with the job)",
            key="config",
            fix="write the config to a YAML file and submit that",
        )
    source = config.source.resolve()
    client = job_client(address)
    job_id = job_id or f"tunepipe-{config.name}-{uuid.uuid4().hex[:8]}"
    sets = " ".join(f"--set {_quote(item)}" for item in overrides or [])
    entrypoint = f"python -m pipelines.cli sweep {_quote(source.name)} {sets}".strip()
    name = source.name
    request = {
        "entrypoint": entrypoint,
        "submission_id": job_id,
        "runtime_env": {
            "working_dir": str(source.parent),
            "py_modules": [str(path) for path in project_packages()],
            "excludes": EXCLUDES,
        },
        "metadata": {"tunepipe.experiment": config.experiment_name, "tunepipe.config": name},
    }
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            client.submit_job(**request)
            break
        except RuntimeError as exc:
            # A head that has just started answers before its job agent is up.
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)
    return SweepJob(job_id, address, config.experiment_name, config.tracking.uri, client)


def project_packages() -> list[Path]:
    """Return the folders of tunepipe's own packages, as this process imports them."""
    import search_spaces
    import trainables

    pipelines = Path(__file__).resolve().parents[1]  # this package; importing it is a cycle
    lower = [Path(str(pkg.__file__)).resolve().parent for pkg in (trainables, search_spaces)]
    return [pipelines, *lower]


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
