"""DESIGN §7: `domain` imports nothing outside the standard library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import consentgate.domain

DOMAIN_DIR = Path(consentgate.domain.__file__).resolve().parent
MODULES = sorted(DOMAIN_DIR.rglob("*.py"))


def _module_name(path: Path) -> str:
    rel = path.relative_to(DOMAIN_DIR.parent.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join([*base, *([node.module] if node.module else [])])


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, _resolve(node, module, is_package)))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def is_allowed(name: str) -> bool:
    top = name.split(".")[0]
    if name == "consentgate.domain" or name.startswith("consentgate.domain."):
        return True
    return top in sys.stdlib_module_names and top != "consentgate"


def test_domain_has_modules() -> None:
    names = {p.name for p in MODULES}
    assert {"__init__.py", "decide.py", "events.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(DOMAIN_DIR)))
def test_module_imports_only_stdlib_and_domain(path: Path) -> None:
    bad = [f"line {line}: {name}" for line, name in imported_modules(path) if not is_allowed(name)]
    assert not bad, f"{path.name} imports outside the standard library: {bad}"


def test_the_checker_catches_outside_imports() -> None:
    assert is_allowed("datetime")
    assert is_allowed("collections.abc")
    assert is_allowed("__future__")
    assert is_allowed("consentgate.domain.events")
    assert not is_allowed("consentgate.ledger")
    assert not is_allowed("consentgate.errors")
    assert not is_allowed("consentgate")
    assert not is_allowed("sqlalchemy")
    assert not is_allowed("orjson")
    assert not is_allowed("")
