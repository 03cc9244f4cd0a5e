"""What a resolved configuration gives out: its hash, the code version, and its dumps.

:func:`config_hash` names a versioned product folder, :func:`public_dict` and :func:`to_yaml` show
or write the config; none of them ever carries a credential. Third-party observatory sections (the
extra keys of ``observatories``) are hashed and written like the built-ins' typed ones.
Loading lives in :mod:`aretriever.config`, which re-exports these names.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from aretriever.redact import redact
from aretriever.settings import Config, Credentials, ObservatoriesBase, adapter_config_model, submodel

__all__ = ["code_version", "config_hash", "products_hash", "public_dict", "to_yaml"]

Tree = dict[str, Any]


def _is_secret(info: FieldInfo) -> bool:
    return info.annotation is SecretStr or submodel(info.annotation) is Credentials


def _is_operational(info: FieldInfo) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and extra.get("operational") is True


def _fields(model: BaseModel) -> Iterator[tuple[str, FieldInfo, Any]]:
    """Each field of ``model`` with its value; then its extras (third-party observatory sections)."""
    for name, info in type(model).model_fields.items():
        yield name, info, getattr(model, name)
    for name, value in (model.model_extra or {}).items():
        yield name, FieldInfo(annotation=type(value)), value


def _dump(model: BaseModel, *, operational: bool) -> Tree:
    # Field by field rather than model_dump: secrets and operational fields are dropped by their
    # marks, and a section's extras (third-party observatories) are reached like fields.
    out: Tree = {}
    for name, info, value in _fields(model):
        if _is_secret(info) or (not operational and _is_operational(info)):
            continue
        if isinstance(value, BaseModel):
            out[name] = _dump(value, operational=operational)
        else:  # a password inside a value (store.db_url) is masked: dumps are shown and written
            out[name] = redact(value) if isinstance(value, str) else to_jsonable_python(value)
    return out


def public_dict(cfg: Config) -> Tree:
    """The resolved config as JSON-able data, without credentials (they are never written)."""
    return _dump(cfg, operational=True)


@functools.cache
def code_version() -> str:
    """The git commit of the package source if it is a git checkout, else the package version."""
    return _git_commit(Path(__file__).resolve().parent) or _dist_version()


_current_code_version = code_version  # config_hash's parameter shadows the function's name


def _git_commit(src: Path) -> str | None:
    def git(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(src), *argv], capture_output=True, text=True, timeout=10, check=False
        )

    try:
        # A site-packages copy inside some unrelated work tree must not report that tree's commit.
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return None
        head = git("rev-parse", "HEAD")
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() if head.returncode == 0 and head.stdout.strip() else None


def _dist_version() -> str:
    import aretriever

    version = getattr(aretriever, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version("aretriever")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def config_hash(cfg: Config, code_version: str | None = None) -> str:
    """Hex sha256 of the parameters that shape the products, plus the code version.

    Fields marked ``operational`` (rates, paths, timeouts) and credentials are left out, so they
    can change without starting a new versioned product folder.
    """
    payload = {
        "config": _dump(cfg, operational=False),
        "code_version": _current_code_version() if code_version is None else code_version,
    }
    return _sha256(payload)


def _sha256(payload: Tree) -> str:
    # Sorted keys and fixed separators: the same config hashes the same in any process, whatever
    # the order its layers were merged in.
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def products_hash(cfg: Config, observatory: str) -> str:
    """Hex sha256 of what shapes one observatory's products made from stored raw data.

    That is the observatory's section and the analysis, without operational fields, credentials
    or the code version. An unversioned project re-analyses a source whose products were made
    with another value: the catalog and project sections choose which sources, not what their
    products are, and a new commit (a typo fixed) must not re-analyse a million sources.
    """
    payload = {
        "observatory": _dump(cfg.observatories, operational=False).get(observatory),
        "analysis": _dump(cfg.analysis, operational=False),
    }
    return _sha256(payload)


def _scalar(value: Any) -> str:
    # Flow-style YAML keeps a value on its key's line; a string with a newline would break that,
    # so it is written as JSON (which YAML reads back).
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1 << 20)
    text = text.removesuffix("\n").removesuffix("\n...")
    return json.dumps(value, ensure_ascii=False) if "\n" in text else text


def _described(model: type[BaseModel], data: Tree) -> Iterator[tuple[str, FieldInfo]]:
    """The fields of ``model``, then its extras: third-party sections (``observatories``) or the
    parameters a custom analysis class declares (the analysis parts)."""
    yield from model.model_fields.items()
    for name in [n for n in data if n not in model.model_fields]:
        if not issubclass(model, ObservatoriesBase):
            yield name, FieldInfo(annotation=Any, description="declared by the custom class")
            continue
        section = adapter_config_model(name)
        yield name, FieldInfo(annotation=section, description=section.section_description or name)


def _yaml_lines(model: type[BaseModel], data: Tree, at: tuple[str, ...]) -> Iterator[str]:
    pad = "  " * len(at)
    for name, info in _described(model, data):
        note = " ".join((info.description or "").split())  # a comment must stay on its line
        sub = submodel(info.annotation)
        if name not in data:
            if _is_secret(info):
                env = f"$ARETRIEVER_{at[-1].upper()}_USERNAME/_PASSWORD" if at else "$ARETRIEVER_*"
                yield f"{pad}# {name}: never written; give them in a private file or {env}"
        elif sub is not None and isinstance(data[name], dict) and data[name]:
            # A section whose description only repeats its name says more with its docstring.
            doc = (sub.__doc__ or "").strip().splitlines()
            yield f"{pad}# {doc[0] if note == name and doc else note}"
            yield f"{pad}{name}:"
            yield from _yaml_lines(sub, data[name], (*at, name))
        else:
            yield f"{pad}{name}: {_scalar(data[name])}" + (f"  # {note}" if note else "")


def to_yaml(cfg: Config, *, comments: bool = True) -> str:
    """The resolved config as YAML that :func:`load_config` reads back (credentials left out).

    Parameters
    ----------
    cfg
        The config to write.
    comments
        Put each field's description beside it (scalars) or above it (sections).
    """
    data = public_dict(cfg)
    if not comments:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    lines = ["# aretriever configuration, resolved (defaults < file < arguments < --set)"]
    for line in _yaml_lines(Config, data, ()):
        lines += [""] if line.startswith("# ") else []
        lines.append(line)
    return "\n".join(lines) + "\n"


