"""Object-store URIs as pyarrow reads them: endpoints folded in, credentials kept out.

Both the sweep's storage (``storage.path``) and streamed data (``data.path``) may be a URI that
pyarrow's filesystems open, such as ``s3://bucket/prefix``. An S3-compatible store (MinIO, Ceph,
moto) is named by an ``endpoint`` key beside the path; it is folded into the URI's query
(``endpoint_override``, ``scheme``, ``region``), so one string reaches every process that reads.
Credentials never travel in a URI: it is recorded with the sweep (Tune's state, MLflow params),
so each process takes them from its environment instead.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pipelines.errors import ConfigError

#: S3-compatible stores take any region; without one pyarrow asks AWS where the bucket lives.
DEFAULT_REGION = "us-east-1"
#: Query keys of a pyarrow URI that are secrets.
_SECRET_KEYS = {"access_key", "secret_key", "session_token"}


def is_uri(path: str) -> bool:
    """Whether ``path`` is a URI (``scheme://...``) rather than a local path."""
    return "://" in path


def with_endpoint(uri: str, endpoint: str | None, region: str | None) -> str:
    """Return ``uri`` with an S3-compatible ``endpoint`` (``http://host:port``) and region in it.

    Settings already in the URI's query win over the keys.
    """
    if not is_uri(uri) or not (endpoint or region):
        return uri
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query))
    if endpoint is not None:
        where = urlsplit(endpoint)
        query.setdefault("endpoint_override", where.netloc)
        query.setdefault("scheme", where.scheme)
        query.setdefault("region", region or DEFAULT_REGION)
    elif region is not None:
        query.setdefault("region", region)
    return urlunsplit(parts._replace(query=urlencode(query)))


def carries_credentials(uri: str) -> bool:
    """Whether ``uri`` holds a user, a password or a secret key in its query."""
    parts = urlsplit(uri)
    secrets = any(key in _SECRET_KEYS for key, _ in parse_qsl(parts.query))
    return bool(parts.username or parts.password or secrets)


def refuse_credentials(uri: str, key: str) -> None:
    """Refuse a URI that carries credentials (see :func:`carries_credentials`).

    Raises:
        ConfigError: Naming ``key``, without the URI in the message.

    """
    if carries_credentials(uri):
        raise ConfigError(
            f"{key} carries credentials; they would be recorded with the sweep",
            key=key,
            fix="remove them and set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment "
            "of the driver and of every Ray node",
        )


def redact(uri: str) -> str:
    """Return ``uri`` without any user or password part, for messages."""
    parts = urlsplit(uri)
    if not (parts.username or parts.password):
        return uri
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))
