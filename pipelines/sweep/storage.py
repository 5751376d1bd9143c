"""Where a sweep's Tune state lives: a local or shared folder, or an object-store URI.

Ray Tune reads and writes the storage through pyarrow's filesystems, so one string reaches every
process: a local path, or a URI such as ``s3://bucket/prefix?endpoint_override=host:9000&...``.
The config's ``endpoint``/``region`` keys are folded into that URI here, and never credentials:
each process takes those from its environment, so they are not in ``tuner.pkl``, in MLflow or
in Ray's job records.

Since Ray 2.7 nothing is synced between nodes: a multi-node sweep whose storage is a folder only
one node has fails at the first checkpoint of a trial on another node. :func:`preflight` proves
the storage is one place before Tune starts, from every alive node.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipelines.config import StorageConfig
from pipelines.errors import ConfigError
from pipelines.uris import redact, refuse_credentials, with_endpoint

logger = logging.getLogger(__name__)

#: Folder of the preflight's marker files, removed again when the check is done.
PREFLIGHT_FOLDER = ".tunepipe-preflight"


def storage_uri(storage: StorageConfig) -> str:
    """Return the ``storage_path`` Ray Tune gets: the path, with endpoint and region folded in."""
    if storage.is_local:
        return storage.path
    return with_endpoint(storage.path, storage.endpoint, storage.region)


def join(uri: str, *names: str) -> str:
    """Append folder names to a path or URI, keeping a URI's query string at the end."""
    parts = urlsplit(uri) if "://" in uri else None
    if parts is None:
        return "/".join([uri.rstrip("/"), *names])
    path = "/".join([parts.path.rstrip("/"), *names])
    return urlunsplit(parts._replace(path=path))


def filesystem(uri: str) -> tuple[Any, str]:
    """Return pyarrow's ``(filesystem, path)`` for a storage path or URI.

    Raises:
        ConfigError: When pyarrow cannot make a filesystem of it (unknown scheme, bad option).

    """
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        return fs, str(path)
    except (pyarrow.ArrowInvalid, ValueError, OSError) as exc:
        raise ConfigError(
            f"storage.path {redact(uri)!r} is not a path or URI pyarrow can open: {exc}",
            key="storage.path",
            fix="use a local folder, an NFS mount, s3://bucket/prefix or gs://bucket/prefix",
        ) from None


def check_storage(storage: StorageConfig) -> None:
    """Check at plan time that the storage names something pyarrow can open (no I/O yet)."""
    refuse_credentials(storage.path, "storage.path")
    if storage.endpoint is not None and not storage.path.startswith("s3://"):
        raise ConfigError(
            "storage.endpoint is only for s3:// storage",
            key="storage.endpoint",
            fix="remove it, or make storage.path an s3:// URI",
        )
    filesystem(storage_uri(storage))


def preflight(uri: str) -> None:
    """Prove from every alive node that the storage is writable and is one place.

    Each node writes a marker, then each node lists the markers. On one machine every folder is
    shared and the check passes; on a cluster a node-local folder shows up as a node that cannot
    see the others' markers.

    Raises:
        ConfigError: When a node cannot write the storage, or does not see what others wrote.

    """
    import ray
    import ray.util
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    alive = [node for node in ray.nodes() if node.get("Alive")]
    nodes = [node["NodeID"] for node in alive]
    folder = join(uri, PREFLIGHT_FOLDER, uuid.uuid4().hex[:12])
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    here = ray.util.get_node_ip_address()
    on_this_machine = all(node.get("NodeManagerAddress") == here for node in alive)

    def on_each(step: str) -> list[tuple[str, str]]:
        if len(nodes) <= 1 and on_this_machine:
            # One node shares everything with this driver on its machine: writing from here
            # proves as much, without starting a worker process for it.
            return [(node, _probe(folder, node, step)) for node in nodes or ["local"]]
        refs = [
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
            ).remote(folder, node, step)
            for node in nodes
        ]
        return [(node, answer) for node, answer in zip(nodes, ray.get(refs), strict=True)]

    try:
        for node, error in on_each("write"):
            if error:
                raise ConfigError(
                    f"node {node[:12]} cannot write storage.path {redact(uri)!r}: {error}",
                    key="storage.path",
                    fix="check the path exists with write access on every node (for s3:// "
                    "the bucket, the endpoint and the credentials in each node's environment)",
                )
        for node, seen in on_each("read"):
            missing = sorted(set(n[:12] for n in nodes) - set(seen.split(",")))
            if missing:
                raise ConfigError(
                    f"storage.path {redact(uri)!r} is not shared: node {node[:12]} cannot see "
                    f"what node(s) {', '.join(missing)} wrote there, so trials would fail at "
                    "their first checkpoint",
                    key="storage.path",
                    fix="use a folder every node mounts at the same path (NFS) or an object "
                    "store URI such as s3://bucket/prefix",
                )
    finally:
        _remove(folder)
    logger.debug("storage %s: written and read from %d node(s)", redact(uri), len(nodes))


def _probe(folder: str, node: str, step: str) -> str:
    """On one node: write its marker (returns an error or ""), or list the markers seen."""
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(folder)
        if step == "write":
            fs.create_dir(path, recursive=True)
            with fs.open_output_stream(f"{path}/{node[:12]}") as out:
                out.write(b"ok")
            return ""
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
        return ",".join(info.base_name for info in infos)
    except Exception as exc:  # reported to the driver as the reason
        return f"{type(exc).__name__}: {exc}" if step == "write" else ""


def _remove(folder: str) -> None:
    try:
        fs, path = filesystem(folder)
        fs.delete_dir(path)
    except Exception as exc:  # a leftover marker folder is harmless
        logger.debug("could not remove the preflight folder: %s", exc)
