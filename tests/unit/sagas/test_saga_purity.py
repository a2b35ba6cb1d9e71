"""sagas/ stays pure: no Kafka, SQL, HTTP, clock, randomness or other packages of the service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SAGAS = Path(__file__).resolve().parents[3] / "sagas"
FORBIDDEN = {
    # I/O and the runtime around the sagas
    "confluent_kafka", "sqlalchemy", "psycopg", "httpx", "requests", "fastapi", "socket",
    "subprocess", "os", "threading", "asyncio", "logging",
    # clocks and randomness: time is an input, identifiers come with the command
    "time", "datetime", "random", "secrets", "uuid",
    # the service's other packages depend on sagas, never the other way round
    "consumer", "producers", "provisioning", "schemas",
}
MODULES = sorted(SAGAS.glob("*.py"))


def imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_package_has_the_documented_modules() -> None:
    names = {m.stem for m in MODULES}
    assert {"workflows", "retry", "state", "inputs", "events", "effects", "decide",
            "replay"} <= names


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.name)
def test_no_io_clock_or_randomness(module: Path) -> None:
    tree = ast.parse(module.read_text(), filename=str(module))

    assert imported_roots(tree) & FORBIDDEN == set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"open", "print", "input"}, f"{module.name}: I/O"
