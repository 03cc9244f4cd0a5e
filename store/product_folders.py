"""Which project owns a product folder, so products never land on raw data or another project.

A project's folder is its name upper-cased (the seed's layout), so ``ztf`` would put reduced
files among the raw ``DATA_ROOT/ZTF`` files, and ``wd`` and ``WD`` would share one folder. Two
guards keep folders apart:

- :func:`check_project_folder` (pure): a project folder may not be an observatory's raw folder.
- :func:`claim` writes ``<folder>/project.json`` naming the project the first time a run writes
  there, with an exclusive link, so two processes racing for one folder cannot both win; a later
  project whose name maps to the same folder is refused (:func:`owner` reads the claim first,
  before anything runs).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from aretriever.errors import ConfigError, StorageFault
from aretriever.store import paths

MARKER: Final = "project.json"


def check_project_folder(project: str, folder: str, observatories: Iterable[str]) -> None:
    """Refuse a product folder that is an observatory's raw folder (compared without case).

    Raises
    ------
    ConfigError
        Naming the project, the folder and the observatory whose raw data it would mix with.
    """
    for obs in observatories:
        raw = paths.safe_name(obs.upper())
        if folder.lower() == raw.lower():
            raise ConfigError(
                f"project: name {project!r} would put its products in DATA_ROOT/{folder}, the raw data"
                f" folder of observatory {obs!r}; choose another project name"
            )


def owner(root: Path, folder: str) -> str | None:
    """The project that claimed ``DATA_ROOT/<folder>``, or None (unclaimed, or no folder yet)."""
    marker = paths.resolve(root, folder) / MARKER
    try:
        text = marker.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        name = json.loads(text)["project"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"project: {marker} is not a project claim ({exc}); move it away") from exc
    if not isinstance(name, str):
        raise ConfigError(f"project: {marker} names no project; move it away")
    return name


def check_owner(root: Path, folder: str, project: str) -> None:
    """Refuse ``project`` if another project has claimed ``folder``.

    Raises
    ------
    ConfigError
        Naming both projects and the folder they would share.
    """
    claimed = owner(root, folder)
    if claimed is not None and claimed != project:
        raise ConfigError(
            f"project: {project!r} would share DATA_ROOT/{folder} with project {claimed!r} (project"
            " folders are upper-cased names); choose another project name"
        )


def claim(root: Path, folder: str, project: str) -> None:
    """Mark ``DATA_ROOT/<folder>`` as ``project``'s, or refuse if another project has it.

    The claim is written to a private temporary file and linked into place: ``link`` fails if the
    marker exists, so of two processes claiming one folder at once exactly one wins.
    """
    path = paths.resolve(root, folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission: not a project problem, a storage one
        raise StorageFault(f"store: cannot make the product folder {path}: {exc.strerror or exc}") from exc
    if owner(root, folder) is None:
        tmp = path / f".{MARKER}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(json.dumps({"project": project}) + "\n", encoding="utf-8")
        try:
            os.link(tmp, path / MARKER)
        except FileExistsError:
            pass  # another process claimed it first: checked below
        finally:
            tmp.unlink()
    check_owner(root, folder, project)
