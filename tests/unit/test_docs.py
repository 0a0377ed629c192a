"""The README stays true: its settings table names every setting, and nothing else."""

import re
from pathlib import Path

from miaofa.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_settings_table_matches_the_settings_class() -> None:
    section = README.read_text().split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented = set()
    for row in section.splitlines():
        if row.startswith(("| `", "| **`")):
            documented |= {name.lower() for name in re.findall(r"`([A-Z0-9_]+)`", row.split("|")[1])}
    groups = {section.name: type(section) for section in Settings().gateway_settings()}
    expected = {name for name in Settings.model_fields if name not in groups}
    expected |= {f"{group}__{field}" for group, model in groups.items() for field in model.model_fields}
    assert documented == expected


def test_quickstart_has_exactly_two_commands() -> None:
    quickstart = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = quickstart.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/miaofa up",
        "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest",
    ]
    # CI runs the same install and test command, with the house checks (ruff, mypy, the import
    # contracts of pyproject's [tool.importlinter]) between them.
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    install, test = commands[1].split("&& ", 1)[1].split(" && ")
    checks = [".venv/bin/ruff check .", ".venv/bin/ruff format --check .", ".venv/bin/mypy", ".venv/bin/lint-imports"]
    assert ci[-6:] == [f"python3 -m venv .venv && {install}", *checks, test]
