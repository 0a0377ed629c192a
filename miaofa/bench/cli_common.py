"""What the `miaofa bench` commands share: their options and the two ways to run a scenario.

The command modules (miaofa/bench/cli_shop.py, cli_alone.py) import this one; miaofa/bench/cli.py
assembles them into `bench_app`. Imports nothing heavy until a command runs.
"""

from pathlib import Path
from typing import Annotated, Any

import typer

Start = Annotated[
    bool,
    typer.Option(
        "--start/--no-start",
        help="Start a stack of its own (`miaofa up` in a temp dir, free ports, risk limits "
        "off) and stop it at the end; otherwise use the one the settings name.",
    ),
]
Set = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="NAME=VALUE",
        help="A setting for the started stack, e.g. CALLBACK_GRACE_SECONDS=3 (repeatable; with --start).",
    ),
]
KeepData = Annotated[bool, typer.Option("--keep-data", help="Keep the started stack's data dir and logs.")]
JsonPath = Annotated[
    Path | None,
    typer.Option("--json", help="Where to write the result (default bench-<scenario>-<timestamp>.json in --out-dir)."),
]
OutDir = Annotated[Path, typer.Option("--out-dir", help="Folder for the default JSON file name.")]
Warmup = Annotated[bool, typer.Option("--warmup/--no-warmup", help="One order bought before measuring.")]
At = Annotated[
    str | None,
    typer.Option(
        "--at",
        metavar="REV",
        help="Run the started stack from this git revision (git archive), not the working "
        "tree: e.g. HEAD, to leave uncommitted edits out of a before/after.",
    ),
]
Timeout = Annotated[float, typer.Option("--timeout", help="Seconds to wait for delivery after the load.")]


def _overrides(set_: list[str] | None) -> dict[str, str]:
    from miaofa.bench.base import BenchError, err
    from miaofa.bench.stack import parse_overrides

    try:
        return parse_overrides(set_ or [])
    except BenchError as exc:
        err.print(f"[red]Error:[/] {exc}")
        raise typer.Exit(2) from None


def _go(
    scenario: str,
    params: dict[str, Any],
    body,
    *,
    start: bool,
    set_: list[str] | None,
    keep_data: bool,
    json_path: Path | None,
    out_dir: Path,
    warmup: bool,
    at: str | None,
) -> None:
    from miaofa.bench.runner import Options, run_scenario

    options = Options(
        start=start,
        overrides=_overrides(set_),
        keep_data=keep_data,
        json_path=json_path,
        out_dir=out_dir,
        warmup=warmup,
        at=at,
    )
    raise typer.Exit(run_scenario(scenario, options, params, body))


def _alone(scenario: str, params: dict[str, Any], body, *, json_path: Path | None, out_dir: Path) -> None:
    """A scenario that brings what it measures itself: no shop to reach, no warm-up order."""
    from miaofa.bench.runner import Options, run_scenario

    options = Options(json_path=json_path, out_dir=out_dir, warmup=False)
    raise typer.Exit(run_scenario(scenario, options, params, body, shop=False))
