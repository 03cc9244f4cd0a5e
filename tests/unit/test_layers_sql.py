"""SQL lives in store/: no module of aretriever/ or adapters/ imports SQLAlchemy at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STORE = ROOT / "store"

#: modules allowed to import SQLAlchemy, each with its reason
ALLOWED: dict[str, str] = {}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node outside ``if TYPE_CHECKING:`` blocks."""
    found: list[ast.AST] = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def sqlalchemy_imports(source: str) -> list[int]:
    """Lines importing ``sqlalchemy`` (or a submodule) at run time."""
    lines = []
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            continue
        if any(m.split(".")[0] == "sqlalchemy" for m in modules):
            lines.append(node.lineno)
    return sorted(lines)


def _modules() -> list[Path]:
    files = [*(ROOT / "aretriever").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")]
    return sorted(p for p in files if STORE not in p.parents)


def test_the_check_sees_runtime_imports_and_skips_type_checking_blocks() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import sqlalchemy as sa\n"
        "if TYPE_CHECKING:\n"
        "    from sqlalchemy.ext.asyncio import AsyncSession\n"
        "def f():\n"
        "    from sqlalchemy.orm import selectinload\n"
    )
    assert sqlalchemy_imports(source) == [2, 6]


def test_there_are_modules_to_check() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in _modules()}
    assert "aretriever/engine/skipcheck.py" in names and "adapters/ztf.py" in names
    assert not any(n.startswith("store/") for n in names)
    assert set(ALLOWED) <= names  # an allowance for a module that is gone is stale


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_sqlalchemy_outside_store(path: Path) -> None:
    relpath = path.relative_to(ROOT).as_posix()
    lines = sqlalchemy_imports(path.read_text(encoding="utf-8"))
    if relpath in ALLOWED:
        return
    assert not lines, (
        f"{relpath} imports sqlalchemy at line(s) {lines}: move the query to store/ (store.queries,"
        " store.workqueue) or import types under TYPE_CHECKING"
    )
