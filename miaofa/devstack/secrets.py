"""Dev secrets generated once into the data dir, for settings left unset."""

import json
import os
import secrets
from pathlib import Path

from miaofa.settings import Settings
from miaofa.vault import new_vault_key

SECRETS_FILE = "dev-secrets.json"


def load_or_create(data_dir: Path) -> dict[str, str]:
    path = data_dir / SECRETS_FILE
    if path.exists():
        return json.loads(path.read_text())
    data_dir.mkdir(parents=True, exist_ok=True)
    values = {"admin_token": "adm_" + secrets.token_urlsafe(24),
              "support_token": "sup_" + secrets.token_urlsafe(24),
              "vault_key": new_vault_key()}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(values, out)
    return values


def embedded_database_url(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/miaofa"


def with_dev_defaults(settings: Settings, create: bool = False) -> Settings:
    """Fill unset secrets and the database URL from what `miaofa up` keeps in the data dir."""
    path = settings.data_dir / SECRETS_FILE
    if not create and not path.exists():
        return settings
    stored = load_or_create(settings.data_dir)
    updates = {name: value for name, value in stored.items() if not getattr(settings, name)}
    if not settings.database_url:
        updates["database_url"] = embedded_database_url(settings.pg_port)
    return settings.model_copy(update=updates)


def child_env(settings: Settings) -> dict[str, str]:
    """The environment for processes `miaofa up` starts: every setting spelled out."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        env[f"MIAOFA_{name.upper()}"] = str(value)
    return env
