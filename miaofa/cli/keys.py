"""`miaofa keys import`: card keys from a file into the store, encrypted, duplicates skipped."""

import asyncio
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from miaofa.cli.common import _fail, _require, _settings, console, database
from miaofa.crypto.vault import VaultKeyError
from miaofa.errors import MiaofaError
from miaofa.settings import Settings

keys_app = typer.Typer(help="Card-key inventory.", no_args_is_help=True)


@keys_app.command("import")
def keys_import(
    file: Path = typer.Argument(..., help="Text file, one key a line, or CSV with a header."),
    sku: str = typer.Option(..., "--sku", help="The product the keys are for."),
) -> None:
    """Import keys for a product; duplicates anywhere in the store are skipped."""
    settings = _settings()
    _require(settings, "database_url", "vault_key")
    if not file.is_file():
        _fail(f"{file} is not a readable file.")
    content_type = "text/csv" if file.suffix.lower() == ".csv" else "text/plain"
    try:
        result, seconds = asyncio.run(_import(settings, file.read_bytes(), content_type, sku))
    except MiaofaError as exc:
        _fail(exc.detail)
    except VaultKeyError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot reach the database: {exc.strerror or exc}")
    console.print(f"Imported {result.imported} keys, skipped {result.duplicates} duplicates in {seconds:.1f} s.")


async def _import(settings: Settings, data: bytes, content_type: str, sku: str):
    from miaofa import catalog, inventory
    from miaofa.crypto.vault import Vault

    vault = Vault(settings.vault_key)
    keys = inventory.parse_keys(data, content_type)
    started = time.perf_counter()
    async with database(settings) as sessionmaker, sessionmaker.begin() as session:
        product = await catalog.get_product(session, sku)
        with Progress(
            TextColumn("Importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("keys", total=len(set(keys)))
            result = await inventory.import_keys(
                session,
                vault,
                product.id,
                keys,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    return result, time.perf_counter() - started
