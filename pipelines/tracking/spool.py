"""A durable spool of a driver's MLflow writes: nothing recorded is lost while MLflow is down.

Every write of a sweep's driver (runs, params, tags, metrics, statuses, artifacts, the model's
registration) is appended to a journal on the local disk (fsynced JSON lines) and applied to
MLflow, in order, by one background thread. When MLflow is unreachable the thread waits and
tries again; the sweep never waits for it. At the end of the sweep the driver waits a grace
period (``TUNEPIPE_MLFLOW_GRACE_S``) for the rest; what is still unwritten stays on disk and
is written by the next ``tunepipe`` command (:func:`replay_stopped_spools`): the driver holds an
exclusive lock on its journal for its whole life, so a journal whose lock is free belongs to a
driver that stopped, even one that was SIGKILLed.

Every write is idempotent, so applying a write twice (a reply lost after the server committed,
or a replay after a crash between the write and the record of it) changes nothing:

- runs are created find-or-create: a sweep's run by the client-made key in its
  ``tunepipe.write_key`` tag, a trial's run by its parent and trial id;
- params and tags are set again with the same values (which MLflow accepts);
- a metric batch that may have been applied already is compared with the run's histories and
  only its missing points are written;
- statuses and artifacts are overwritten with the same content;
- a model version is registered only if the run has none yet under that name.

Runs are named in the journal by references: ``id:<run id>`` for a run that exists, ``key:<k>``
for one this journal creates (its id is known only once MLflow has taken it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipelines.paths import private_dir, private_file, tunepipe_home
from pipelines.tracking import schema
from pipelines.tracking.client import client_for, get_or_create_experiment

logger = logging.getLogger(__name__)

#: Seconds a driver waits at the end for MLflow to take what is spooled (env overrides).
DEFAULT_GRACE_S = 30.0
#: Longest pause between two tries while MLflow is down.
MAX_BACKOFF_S = 10.0
#: MLflow takes at most this many metrics, params or tags in one batch.
BATCH_LIMITS = {"metrics": 1000, "params": 100, "tags": 100}
#: HTTP statuses that say the write itself is wrong (retrying cannot help). 401 and 403 are not
#: among them: wrong credentials are fixed by the user, and the writes wait until then.
PERMANENT_STATUSES = frozenset({400, 404, 409, 413, 422})


def spool_folder() -> Path:
    """Return the folder of the journals (``<TUNEPIPE_HOME>/spool``)."""
    return tunepipe_home() / "spool"


def grace_seconds() -> float:
    """Return how long a driver waits at its end for MLflow (``TUNEPIPE_MLFLOW_GRACE_S``)."""
    try:
        return max(0.0, float(os.environ.get("TUNEPIPE_MLFLOW_GRACE_S", DEFAULT_GRACE_S)))
    except ValueError:
        return DEFAULT_GRACE_S


def run_key() -> str:
    """Return a new client-made key for a run this driver creates."""
    return f"key:{uuid.uuid4().hex}"


def experiment_ref(name: str) -> str:
    """Return the reference under which a spool keeps the id of experiment ``name``."""
    return f"experiment:{name}"


class PermanentWriteError(Exception):
    """A spooled write MLflow refuses for good (it is dropped with a warning)."""


class Spool:
    """One driver's journal of MLflow writes, and the thread that applies it.

    Args:
        tracking_uri: The MLflow store the writes go to.
        path: The journal file; a new one in :func:`spool_folder` by default.

    Raises:
        BlockingIOError: If another live process holds the journal (replays skip it).

    """

    def __init__(self, tracking_uri: str, path: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        if path is None:
            folder = private_dir(spool_folder())
            path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.jsonl"
        self.path = path
        self.files = path.with_suffix(".files")
        self._state_path = path.with_suffix(".state")
        self._lock = _lock(path.with_suffix(".lock"))
        self._ops: list[dict[str, Any]] = []
        state = self._read_state()
        self.applied: int = state.get("applied", 0)
        self.refs: dict[str, str] = state.get("refs", {})
        self.dropped: int = state.get("dropped", 0)
        if path.exists():
            self._ops = _read_journal(path)
        else:
            private_file(path)
            # The URI is credential-free (pipelines.secrets): the journal holds no secret.
            self._write({"op": "header", "tracking_uri": tracking_uri})
        # A journal another process wrote (a driver that stopped): any of its writes may have
        # reached MLflow without being recorded, so each is checked before it is applied.
        self._replaying = bool(self._ops)
        self._uncertain: set[int] = set()
        self._client: MlflowClient | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._down_since: float | None = None

    # -- writing to the journal ---------------------------------------------------------------

    def append(self, op: dict[str, Any]) -> int:
        """Append one write to the journal (durably) and wake the writer; return its number."""
        with self._cond:
            if self._closing:
                raise RuntimeError(f"the spool {self.path} is closed: nothing more goes in")
            self._write(op)
            self._cond.notify_all()
            return len(self._ops) - 1

    def stage(self, folder: Path) -> str:
        """Copy ``folder`` into the spool (it may be temporary) and return the copy's path."""
        target = private_dir(self.files) / uuid.uuid4().hex
        shutil.copytree(folder, target)
        return str(target)

    def _write(self, op: dict[str, Any]) -> None:
        line = json.dumps(op, default=str, allow_nan=True) + "\n"
        with self.path.open("a", encoding="utf-8") as journal:
            journal.write(line)
            journal.flush()
            os.fsync(journal.fileno())
        self._ops.append(op)

    # -- applying -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Writes in the journal that MLflow has not taken yet."""
        return len(self._ops) - self.applied

    def start(self) -> Spool:
        """Start the background writer (idempotent); return self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tunepipe-mlflow", daemon=True)
            self._thread.start()
        return self

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until MLflow has every write; return whether it has."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self.pending and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return not self.pending

    def close(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` (default: the grace period), stop, and return what is left.

        A fully written journal is removed; one with writes left stays for the next command.
        Closing again changes nothing.
        """
        if self._closing:
            return self.pending
        self.start()
        self.wait(grace_seconds() if timeout is None else timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        left = self.pending
        if left == 0:
            self.remove()
        else:
            logger.warning(
                "MLflow at %s is unreachable: %d writes wait in the spool %s; the next "
                "tunepipe command (or `tunepipe sync`) writes them",
                self.tracking_uri,
                left,
                self.path,
            )
        if self._thread is None or not self._thread.is_alive():
            self._release()
        return left

    def replay(self) -> int:
        """Apply the whole journal now, in this thread; return the writes left (MLflow down)."""
        while self.pending:
            if not self._apply_next():
                break
        return self.pending

    def remove(self) -> None:
        """Delete the journal and its files (everything in it was written)."""
        shutil.rmtree(self.files, ignore_errors=True)
        for path in (self.path, self._state_path):
            path.unlink(missing_ok=True)
        self._release()
        self.path.with_suffix(".lock").unlink(missing_ok=True)

    def resolve(self, ref: str) -> str | None:
        """Return what a reference names: a run id, or a model version (None: not yet known)."""
        if ref.startswith("id:"):  # a run that existed before this spool
            return ref[3:]
        return self.refs.get(ref)

    def _run(self) -> None:
        backoff = 1.0
        try:
            while True:
                with self._cond:
                    while not self.pending and not self._closing:
                        self._cond.wait(1.0)
                    if self._closing:
                        return
                if self._apply_next():
                    backoff = 1.0
                    continue
                with self._cond:
                    self._cond.wait(backoff)
                    if self._closing:
                        return
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            if self._closing:
                self._release()

    def _apply_next(self) -> bool:
        """Apply the next write; return False if MLflow could not take it (try again later)."""
        index = self.applied
        op = self._ops[index]
        try:
            result = self._apply(op, retried=self._replaying or index in self._uncertain)
        except PermanentWriteError as exc:
            logger.warning("MLflow refused a spooled write for good (dropped): %s", exc)
            self.dropped += 1
            result = None
        except Exception as exc:  # MLflow down or failing: keep the write, try again later
            self._uncertain.add(index)
            if self._down_since is None:
                self._down_since = time.monotonic()
                logger.warning(
                    "MLflow at %s is unreachable (%s); writes wait in the spool %s and are "
                    "written when it is back",
                    self.tracking_uri,
                    _first_line(exc),
                    self.path,
                )
            return False
        if self._down_since is not None:
            logger.warning(
                "MLflow is back after %.0f s: writing the spooled writes",
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        with self._cond:
            if result is not None and "key" in op:
                self.refs[op["key"]] = result
            self.applied = index + 1
            self._uncertain.discard(index)
            self._save_state()
            self._cond.notify_all()
        return True

    @property
    def client(self) -> MlflowClient:
        """The MLflow client the writer uses (made on first use)."""
        if self._client is None:
            self._client = client_for(self.tracking_uri)
        return self._client

    def _apply(self, op: Mapping[str, Any], retried: bool) -> str | None:
        kind = op["op"]
        if kind == "header":
            return None
        if kind == "create_run":
            return self._create_run(op, retried)
        run_id = self._run_id(op["run"])
        client = self.client
        try:
            if kind == "log_batch":
                self._log_batch(run_id, op, retried)
            elif kind == "status":
                if op["status"] == "RUNNING":
                    client.update_run(run_id, status="RUNNING")
                else:
                    client.set_terminated(run_id, status=op["status"], end_time=op.get("time"))
            elif kind == "delete_tag":
                _delete_tag(client, run_id, op["tag"])
            elif kind == "artifacts":
                client.log_artifacts(run_id, op["folder"], artifact_path=op.get("path"))
            elif kind == "dict":
                client.log_dict(run_id, op["content"], op["file"])
            elif kind == "register":
                return self._register(run_id, op)
            else:
                raise PermanentWriteError(f"unknown spooled write {kind!r}")
        except MlflowException as exc:
            _raise_if_permanent(exc)
            raise
        return None

    def _run_id(self, ref: str) -> str:
        run_id = self.resolve(ref)
        if run_id is None:
            raise PermanentWriteError(f"run {ref} was never created (its creation was refused)")
        return run_id

    def _create_run(self, op: Mapping[str, Any], retried: bool) -> str:
        """Find the run, else create it.

        Looking costs a query per run, so it is done only where the run can exist: the write
        was tried before, or the run belongs to a run that existed before this spool (a
        resumed or extended sweep's trials).
        """
        client = self.client
        try:
            experiment = self.refs.get(experiment_ref(op["experiment"]))
            if experiment is None:
                experiment = get_or_create_experiment(client, op["experiment"], self.tracking_uri)
                # Kept with the run ids: links can name the experiment once MLflow is gone.
                self.refs[experiment_ref(op["experiment"])] = experiment
            tags = {**op.get("tags", {}), **self._ref_tags(op, required=True)}
            existing = op.get("ref_tags", {}).values()
            if retried or any(ref.startswith("id:") for ref in existing):
                found = client.search_runs([experiment], filter_string=self._find_filter(op, tags))
                if found:
                    return str(found[0].info.run_id)
            run = client.create_run(
                experiment, start_time=op.get("time"), tags=tags, run_name=op.get("name")
            )
        except MlflowException as exc:
            _raise_if_permanent(exc)
            raise
        return str(run.info.run_id)

    @staticmethod
    def _find_filter(op: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """Return the search that finds the run: a trial by parent and trial id, a sweep by key."""
        if schema.TRIAL_ID in tags and schema.PARENT in tags:
            return schema.trial_of(tags[schema.PARENT], tags[schema.TRIAL_ID])
        return f"tags.`{schema.WRITE_KEY}` = '{op['key']}'"

    def _ref_tags(self, op: Mapping[str, Any], required: bool = False) -> dict[str, str]:
        """Resolve tags whose values are references; an unknown one is left out unless needed."""
        tags = {}
        for tag, ref in op.get("ref_tags", {}).items():
            value = self._run_id(ref) if required else self.resolve(ref)
            if value is not None:
                tags[tag] = value
        return tags

    def _log_batch(self, run_id: str, op: Mapping[str, Any], retried: bool) -> None:
        metrics = [Metric(k, v, t, s) for k, v, t, s in op.get("metrics", [])]
        if retried and metrics:
            metrics = self._unwritten(run_id, metrics)
        params = [Param(k, v) for k, v in op.get("params", {}).items()]
        tags = [RunTag(k, v) for k, v in {**op.get("tags", {}), **self._ref_tags(op)}.items()]
        client = self.client
        for start in range(0, len(metrics), BATCH_LIMITS["metrics"]):
            client.log_batch(run_id, metrics=metrics[start : start + BATCH_LIMITS["metrics"]])
        for start in range(0, len(params), BATCH_LIMITS["params"]):
            client.log_batch(run_id, params=params[start : start + BATCH_LIMITS["params"]])
        for start in range(0, len(tags), BATCH_LIMITS["tags"]):
            client.log_batch(run_id, tags=tags[start : start + BATCH_LIMITS["tags"]])

    def _unwritten(self, run_id: str, metrics: list[Metric]) -> list[Metric]:
        """Drop the points MLflow already holds (a batch retried after a lost reply)."""
        held: set[tuple[str, int, int]] = set()
        for key in {m.key for m in metrics}:
            for point in self.client.get_metric_history(run_id, key):
                held.add((key, int(point.step), int(point.timestamp)))
        return [m for m in metrics if (m.key, m.step, m.timestamp) not in held]

    def _register(self, run_id: str, op: Mapping[str, Any]) -> str:
        """Find or register the model at the run's artifact path; tag it and set its alias."""
        import mlflow

        from pipelines.secrets import with_credentials

        client, name = self.client, op["name"]
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if found:
            version = str(max(int(v.version) for v in found))
        else:
            mlflow.set_tracking_uri(with_credentials(self.tracking_uri))
            registered = mlflow.register_model(f"runs:/{run_id}/{op['path']}", name)
            version = str(registered.version)
        for key, value in op.get("tags", {}).items():
            client.set_model_version_tag(name, version, key, value)
        if op.get("alias"):
            client.set_registered_model_alias(name, op["alias"], version)
        return version

    # -- the record of what was applied -------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self._state_path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _save_state(self) -> None:
        state = {"applied": self.applied, "refs": self.refs, "dropped": self.dropped}
        staged = self._state_path.with_suffix(".state.tmp")
        with private_file(staged).open("w") as out:
            json.dump(state, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(staged, self._state_path)

    def _release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                os.close(self._lock)
            self._lock = None


def _lock(path: Path) -> int | None:
    """Take the journal's lock without waiting (BlockingIOError: a live driver holds it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _read_journal(path: Path) -> list[dict[str, Any]]:
    """Read a journal; a last line cut short by a crash mid-write is dropped (never applied)."""
    ops = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            op = json.loads(line)
        except ValueError:
            logger.warning("spool %s: a write cut short by a crash is skipped", path)
            continue
        if isinstance(op, dict) and "op" in op:
            ops.append(op)
    return ops


def _delete_tag(client: MlflowClient, run_id: str, tag: str) -> None:
    try:
        client.delete_tag(run_id, tag)
    except MlflowException as exc:
        if exc.get_http_status_code() not in PERMANENT_STATUSES:
            raise  # MLflow down: try again
        # The run has no such tag: what the write wanted.


def _raise_if_permanent(exc: MlflowException) -> None:
    if exc.get_http_status_code() in PERMANENT_STATUSES:
        raise PermanentWriteError(_first_line(exc)) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _journal_uri(path: Path) -> str | None:
    try:
        with path.open(encoding="utf-8") as journal:
            header = json.loads(journal.readline())
    except (OSError, ValueError):
        return None
    return header.get("tracking_uri") if isinstance(header, dict) else None


def stopped_spools(tracking_uri: str) -> Iterator[Spool]:
    """Yield the journals for ``tracking_uri`` left by drivers that stopped (locked for us)."""
    folder = spool_folder()
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.jsonl")):
        if _journal_uri(path) != tracking_uri:
            continue
        try:
            spool = Spool(tracking_uri, path)
        except BlockingIOError:
            continue  # its driver is alive and writes it itself
        yield spool


def replay_stopped_spools(tracking_uri: str) -> tuple[int, int]:
    """Write the spooled writes of drivers that stopped before MLflow took them.

    Returns:
        (writes written, writes still waiting because MLflow is unreachable).

    """
    written = left = 0
    for spool in stopped_spools(tracking_uri):
        before = spool.pending
        remaining = spool.replay()
        written += before - remaining
        left += remaining
        if remaining:
            spool._release()
        else:
            spool.remove()
    if written:
        logger.warning("wrote %d MLflow writes a stopped driver had spooled", written)
    return written, left


def sync_stopped_drivers(tracking_uri: str) -> None:
    """Best effort :func:`replay_stopped_spools`, before a command reads MLflow.

    With MLflow down the spools wait for the next command, and the command's own reads say so.
    """
    try:
        replay_stopped_spools(tracking_uri)
    except Exception as exc:  # MLflow down: the spool waits for the next command
        logger.warning("could not write the spooled MLflow writes of a stopped driver: %s", exc)
