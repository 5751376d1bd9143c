"""Credentials in URIs stay in this process: what is stored, printed or passed on has none.

A tracking URI may carry a password (``http://user:pw@host``, ``postgresql://user:pw@db/x``),
often from ``$MLFLOW_TRACKING_URI``. Everything downstream of the config (MLflow params, the
sweep's ``config.yaml``, reproducibility records, Tune's pickled state, links, log lines and
child-process command lines) sees the URI without it:

- for an MLflow server (http/https) the user name and password move to MLflow's own
  ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, which its client sends as basic auth;
- for a database store they are held in memory, and :func:`with_credentials` gives them back
  only where a connection is made (the MLflow client, the UI server's environment).
"""

from __future__ import annotations

import os
from urllib.parse import SplitResult, urlsplit, urlunsplit

USERNAME_VARIABLE = "MLFLOW_TRACKING_USERNAME"
PASSWORD_VARIABLE = "MLFLOW_TRACKING_PASSWORD"

# Credential-free URI -> the same URI with its credentials, for this process only.
_held: dict[str, str] = {}


def hold_credentials(uri: str) -> str:
    """Take the credentials out of ``uri`` and return it without them.

    Args:
        uri: A tracking URI, perhaps with ``user:password@`` in it.

    Returns:
        The URI to store, print and pass on: for http(s) without user or password (both moved
        to MLflow's environment variables), for a database without the password.

    """
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    if parts.scheme in ("http", "https"):
        os.environ[USERNAME_VARIABLE] = parts.username or ""
        os.environ[PASSWORD_VARIABLE] = parts.password
        return urlunsplit(parts._replace(netloc=_host(parts)))
    user = f"{parts.username}@" if parts.username else ""
    clean = urlunsplit(parts._replace(netloc=f"{user}{_host(parts)}"))
    _held[clean] = uri
    return clean


def with_credentials(uri: str) -> str:
    """Return ``uri`` with the credentials :func:`hold_credentials` took out of it, if any."""
    return _held.get(uri, uri)


def _host(parts: SplitResult) -> str:
    """Return the ``host[:port]`` of ``parts`` as written (IPv6 brackets kept)."""
    return parts.netloc.rpartition("@")[2]
