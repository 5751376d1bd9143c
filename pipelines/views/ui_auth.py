"""``tunepipe ui --auth``: MLflow's basic-auth app, with credentials the user chose.

MLflow ships no default admin password; the one this sets up comes from the same variables an
MLflow client reads (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``) or from a file
of the user's, and reaches the server through its environment, never its command line or a
file left behind. Anonymous requests get 401; the admin user can read and write.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import ConfigError
from pipelines.paths import ensure_home, private_file
from pipelines.secrets import PASSWORD_VARIABLE, USERNAME_VARIABLE

MIN_PASSWORD_LENGTH = 12  # MLflow's own rule for its users' passwords
_FIX = (
    f"export {USERNAME_VARIABLE} and {PASSWORD_VARIABLE} (at least {MIN_PASSWORD_LENGTH} "
    "characters), or pass --auth-file FILE holding one line user:password"
)


@dataclass(frozen=True)
class UiCredentials:
    """The UI's admin user: the name and password a browser or an MLflow client signs in with."""

    username: str
    password: str = field(repr=False)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_exposure(host: str, auth: bool) -> None:
    """Refuse to serve MLflow beyond this machine without a password."""
    if not auth and not is_loopback(host):
        raise ConfigError(
            f"--host {host} would serve MLflow to the network with no password (anyone could "
            "read and write runs and models)",
            key="--host",
            fix="add --auth, or leave --host at 127.0.0.1 and reach it through an SSH tunnel",
        )


def read_credentials(auth_file: Path | None) -> UiCredentials:
    """Return the admin credentials from ``auth_file`` or from MLflow's client variables.

    Raises:
        ConfigError: When none are given, the file is unreadable or malformed, or the password
            is shorter than MLflow allows.

    """
    if auth_file is not None:
        try:
            line = auth_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read {auth_file}: {exc}", key="--auth-file", fix=_FIX
            ) from None
        username, _, password = line.partition(":")
        where = str(auth_file)
    else:
        username = os.environ.get(USERNAME_VARIABLE, "")
        password = os.environ.get(PASSWORD_VARIABLE, "")
        where = f"{USERNAME_VARIABLE}/{PASSWORD_VARIABLE}"
    if not username or not password:
        raise ConfigError(
            f"--auth needs a user name and a password ({where})", key="--auth", fix=_FIX
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(
            f"the password in {where} is shorter than {MIN_PASSWORD_LENGTH} characters",
            key="--auth",
            fix=_FIX,
        )
    return UiCredentials(username, password)


def auth_server_environment(credentials: UiCredentials) -> dict[str, str]:
    """Return the environment that turns ``mlflow server --app-name basic-auth`` on.

    The auth app keeps its users in a SQLite file in the state folder (0600); the admin user is
    created from these credentials the first time, and afterwards keeps its password (change it
    with MLflow's update-password API).
    """
    home = ensure_home()
    config = home / "mlflow-auth.ini"
    private_file(config).write_text(
        "[mlflow]\n"
        # Users other than the admin see nothing until granted (MLflow's default is READ).
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{home / 'mlflow-auth.db'}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )
    private_file(home / "mlflow-auth.db")
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_USERNAME": credentials.username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": credentials.password,
        # Signs the UI's session cookies; a new one each start signs every browser out.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
    }
