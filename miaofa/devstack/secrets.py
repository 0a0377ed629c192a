"""Dev secrets generated once into the data dir, for settings left unset.

`data/dev-secrets.json` (mode 0600, in a 0700 data dir) holds what `miaofa up` made up: the admin
and support tokens, the vault key, the simulator's signing secret and control token, and the
embedded PostgreSQL's password. A file from an older version gains the missing values on the next
start; values already there never change.
"""

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from pydantic import SecretStr

from miaofa.crypto.vault import new_vault_key
from miaofa.gateways.config import GatewaySettings
from miaofa.settings import Settings

SECRETS_FILE = "dev-secrets.json"
POSTGRES_PASSWORD = "postgres_password"  # not a setting: it goes into the DATABASE_URL


def _generators() -> dict[str, Callable[[], str]]:
    return {
        "admin_token": lambda: "adm_" + secrets.token_urlsafe(24),
        "support_token": lambda: "sup_" + secrets.token_urlsafe(24),
        "vault_key": new_vault_key,
        "sim_secret": lambda: "simsec_" + secrets.token_urlsafe(24),
        "sim_control_token": lambda: "simctl_" + secrets.token_urlsafe(24),
        POSTGRES_PASSWORD: lambda: secrets.token_urlsafe(24),
    }


def make_private_dir(path: Path) -> None:
    """Create `path` (and parents) and make it the owner's alone (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write_private(path: Path, values: dict[str, str]) -> None:
    """Write atomically with mode 0600 from the start: the secrets are never readable by others."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(values, out)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_or_create(data_dir: Path) -> dict[str, str]:
    path = data_dir / SECRETS_FILE
    values: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = {name: make() for name, make in _generators().items() if not values.get(name)}
    if missing or not path.exists():
        make_private_dir(data_dir)
        values.update(missing)
        _write_private(path, values)
    elif path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)  # from an older version, written with the umask's mode
    return values


def embedded_database_url(port: int, password: str | None = None) -> str:
    user = f"postgres:{quote(password, safe='')}" if password else "postgres"
    return f"postgresql://{user}@127.0.0.1:{port}/miaofa"


def with_dev_defaults(settings: Settings, create: bool = False) -> Settings:
    """Fill unset secrets and the database URL from what `miaofa up` keeps in the data dir."""
    path = settings.data_dir / SECRETS_FILE
    if not create and not path.exists():
        return settings
    stored = load_or_create(settings.data_dir)
    updates = {
        name: value for name, value in stored.items() if name in Settings.model_fields and not getattr(settings, name)
    }
    if not settings.database_url:
        updates["database_url"] = embedded_database_url(settings.pg_port, stored.get(POSTGRES_PASSWORD))
    return settings.model_copy(update=updates)


def postgres_password(settings: Settings) -> str:
    """The embedded PostgreSQL's password (created with the other dev secrets)."""
    return load_or_create(settings.data_dir)[POSTGRES_PASSWORD]


def child_env(settings: Settings) -> dict[str, str]:
    """The environment for processes `miaofa up` starts: every setting spelled out."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if isinstance(getattr(settings, name), GatewaySettings):
            continue
        env[f"MIAOFA_{name.upper()}"] = str(value)
    for section in settings.gateway_settings():  # nested: MIAOFA_ALIPAY__APP_ID, secrets unmasked
        for field in type(section).model_fields:
            value = getattr(section, field)
            text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            if text:
                env[section.env_name(field)] = text
    return env
