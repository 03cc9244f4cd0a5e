"""The layers import only downwards: a contract per layer, checked on every module's imports.

Every ``import`` counts, also one inside a function or under ``TYPE_CHECKING``: a lazy import is
still a dependency. The layers, lowest first:

- basics: ``errors``, ``redact``, ``numbers``, ``retry``, ``http`` (the port), and the shared
  vocabulary of ``adapters.base`` (Target, Request, Response) that every layer may use;
- ``settings``: the typed config (basics may read it); it asks the adapter registry which
  sections may exist;
- ``store`` (rows, files, paths), ``science`` (pure numbers), ``adapters`` (archives), ``catalogs``;
- ``engine``; then ``service``, ``cli``, ``project``, ``observatories``, ``plotting``, ``export``.

``aretriever.testing`` (the fake archive) builds its answers without the client's parsers, so a
parser bug shows in the tests instead of being replayed back.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# where each installed package's files are (adapters/ and store/ install inside aretriever)
SOURCES = {"aretriever": REPO / "aretriever", "aretriever.adapters": REPO / "adapters", "aretriever.store": REPO / "store"}
APPS = ("engine", "service", "cli", "project", "observatories", "plotting", "export", "daemon", "fetch",
        "populate", "plot", "config", "config_tree", "config_seed", "config_output")  # fmt: skip
BASICS = ("errors", "redact", "numbers", "retry", "http", "lane_config", "declared")
SHARED = "aretriever.adapters.base"  # dataclasses only: the vocabulary between the layers

# layer -> the aretriever packages it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "aretriever.store": ("science", "adapters", "catalogs", *APPS),
    "aretriever.science": ("store", "catalogs", *APPS),
    "aretriever.adapters": ("store", "catalogs", *APPS),
    "aretriever.catalogs": ("store", "science", *APPS),
    "aretriever.engine": ("service", "cli", "project", "observatories", "plotting", "export"),
    **{f"aretriever.{basic}": ("store", "science", "adapters", "catalogs", *APPS) for basic in BASICS},
    # the registry (adapters/__init__) names the sections a config may have; nothing else
    "aretriever.settings": ("store", "science", "catalogs", *APPS),
    "aretriever.settings_runtime": ("store", "science", "adapters", "catalogs", *APPS),
}
# the client's parsers, which the fake archive must not use to build its answers
CLIENT_PARSERS = ("aretriever.adapters.ztf", "aretriever.adapters.tess", "aretriever.adapters.mast",
                  "aretriever.catalogs.formats", "aretriever.catalogs.tap", "aretriever.catalogs.cache")  # fmt: skip


def modules() -> Iterator[tuple[str, Path]]:
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if "migrations" in parts or (package == "aretriever" and parts[0] in ("adapters", "store")):
                continue
            yield ".".join([package, *(p for p in parts if p != "__init__")]), path


def imports(path: Path) -> Iterator[str]:
    """Every absolute module name ``path`` imports (``from a import b`` gives ``a`` and ``a.b``)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for module, path in modules():
        if not _within(module, layer):
            continue
        for name in imports(path):
            hit = next((f for f in forbidden if _within(name, f"aretriever.{f}")), None)
            if hit is not None and not _within(name, layer) and not _within(name, SHARED):
                found.append(f"{module} imports {name} ({path.relative_to(REPO)})")
    return sorted(set(found))


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_downwards(layer: str) -> None:
    assert violations(layer, FORBIDDEN[layer]) == []


def test_science_does_no_file_io() -> None:
    found = [
        f"{module} imports {name}"
        for module, path in modules()
        if _within(module, "aretriever.science")
        for name in imports(path)
        if name.split(".")[0] in ("h5py", "sqlalchemy", "aiohttp", "shutil")
    ]
    assert found == []


def test_the_fake_archive_does_not_use_the_clients_parsers() -> None:
    found = [
        f"{module} imports {name}"
        for module, path in modules()
        if _within(module, "aretriever.testing")
        for name in imports(path)
        if any(_within(name, parser) for parser in CLIENT_PARSERS)
    ]
    assert found == []


def test_the_contracts_see_every_package() -> None:
    names = {module for module, _ in modules()}
    for layer in FORBIDDEN:
        if layer.rsplit(".", 1)[1] not in ("http", "numbers", "redact", "retry", "errors", "settings"):
            assert any(_within(name, layer) for name in names), f"no module found in {layer}"
    assert "aretriever.store.models" in names and "aretriever.adapters.ztf" in names
