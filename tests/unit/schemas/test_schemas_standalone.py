"""`schemas/` is what other Python services vendor: it imports nothing of the service.

Layers point one way: the contract is below the shared kernel (`provisioning.errors` builds on
`schemas.errors`, never the reverse). Checked twice: statically (every import statement and
every `importlib.import_module`/`__import__` of a literal name in every module of the package)
and by running a vendored copy of the directory alone, with the service's packages made
unimportable.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from provisioning import errors as service_errors
from schemas import codec
from schemas import errors as contract_errors

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = ROOT / "schemas"
SERVICE_PACKAGES = frozenset(
    {"provisioning", "consumer", "producers", "sagas", "projection", "api", "bench", "tests"}
)
MODULES = sorted(SCHEMAS.rglob("*.py"))


def _imported_names(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, dotted module name) of every import the module can make, relative ones resolved
    against its package (one reaching above the top level keeps the names it asks for)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = list(path.relative_to(root).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.ImportFrom):  # from . import x, from ..x import y
            base = package[: max(len(package) - node.level + 1, 0)]
            targets = [node.module] if node.module else [a.name for a in node.names]
            found += [(node.lineno, ".".join([*base, t])) for t in targets]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id == "__import__"))):
            found.append((node.lineno, node.args[0].value))
    return found


def test_the_forbidden_list_covers_every_other_package_of_the_distribution() -> None:
    # A package added to the distribution later is a service package too, until said otherwise.
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in patterns}

    assert packages - {"schemas"} <= SERVICE_PACKAGES


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SCHEMAS)) for p in MODULES])
def test_no_module_of_schemas_imports_the_service(path: Path) -> None:
    offending = [f"line {line}: {name}" for line, name in _imported_names(path)
                 if name.split(".")[0] in SERVICE_PACKAGES]

    assert not offending, f"{path.relative_to(ROOT)} imports the service: {offending}"


def test_the_static_check_sees_every_way_of_importing(tmp_path: Path) -> None:
    # The check itself, on a module that does everything it must catch.
    module = tmp_path / "schemas" / "sneaky.py"
    module.parent.mkdir()
    module.write_text(textwrap.dedent("""
        import provisioning.errors
        from consumer import worker
        from .. import sagas
        def later():
            import importlib
            from producers.subscriber import EventSubscriber
            importlib.import_module("projection.fold")
            __import__("api")
    """))
    names = {name.split(".")[0] for _, name in _imported_names(module, root=tmp_path)}

    assert names >= {"provisioning", "consumer", "sagas", "producers", "projection", "api"}


VENDORED_USE = """
import importlib.abc, pathlib, pkgutil, sys

FORBIDDEN = set(sys.argv[1].split(","))

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"schemas imported the service: {name}")
        return None

sys.meta_path.insert(0, Refuse())
import schemas
assert pathlib.Path(schemas.__file__).parent == pathlib.Path.cwd() / "schemas", schemas.__file__
for module in pkgutil.walk_packages(schemas.__path__, "schemas."):
    if module.name != "schemas.__main__":
        importlib.import_module(module.name)
from schemas import codec, errors
from schemas.examples import EXAMPLES
for name in sorted(codec.record_names()):
    assert codec.decode(codec.encode(name, EXAMPLES[name])).record_name == name
try:
    codec.decode(bytes([0xC3, 0x01]))
except errors.CodecError as exc:
    print("refused:", type(exc).__name__)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
print("service modules loaded:", loaded)
sys.exit(1 if loaded else 0)
"""


def test_a_vendored_copy_of_schemas_works_without_the_service(tmp_path: Path) -> None:
    shutil.copytree(SCHEMAS, tmp_path / "schemas",
                    ignore=shutil.ignore_patterns("__pycache__"))

    result = subprocess.run(
        [sys.executable, "-c", VENDORED_USE, ",".join(sorted(SERVICE_PACKAGES))],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "refused: TruncatedRecord" in result.stdout
    assert "service modules loaded: []" in result.stdout


def test_the_service_catches_the_contracts_codec_errors_by_its_own_name() -> None:
    # Every `except CodecError` of the service (worker, projector, subscriber, DLQ admin) relies
    # on this: the class it names is the one the codec raises subclasses of.
    assert service_errors.CodecError is contract_errors.CodecError
    with pytest.raises(service_errors.CodecError):
        codec.decode(b"\xc3\x01" + bytes(8))
    assert not issubclass(contract_errors.SchemaError, service_errors.ProvisioningError)
