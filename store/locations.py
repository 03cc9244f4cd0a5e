"""Where the store is: DATA_ROOT and the database URL, resolved from the config and environment.

This is the one place ``$RETRIEVER_DATA`` and ``$ARETRIEVER_DB_URL`` are read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from aretriever.settings import StoreConfig
from aretriever.store.db import DB_URL_ENV, SQLITE_FILENAME, normalize_url
from aretriever.store.paths import DATA_ROOT_ENV, DEFAULT_DATA_ROOT


def data_root_of(store: StoreConfig, environ: Mapping[str, str] | None = None) -> Path:
    """DATA_ROOT, absolute: ``store.data_root``, else ``$RETRIEVER_DATA``, else ``./data``."""
    env = os.environ if environ is None else environ
    return Path(store.data_root or env.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).expanduser().absolute()


def db_url_of(store: StoreConfig, environ: Mapping[str, str] | None = None) -> str:
    """The async database URL: ``store.db_url``, else ``$ARETRIEVER_DB_URL``, else SQLite in DATA_ROOT.

    ``postgres(ql)://`` becomes ``postgresql+asyncpg://`` and ``sqlite://`` ``sqlite+aiosqlite://``.
    """
    return normalize_url(_given_db_url(store, environ))


def _given_db_url(store: StoreConfig, environ: Mapping[str, str] | None) -> str:
    env = os.environ if environ is None else environ
    url = store.db_url or env.get(DB_URL_ENV)
    return url or f"sqlite+aiosqlite:///{data_root_of(store, env) / SQLITE_FILENAME}"


def resolve_store(store: StoreConfig, environ: Mapping[str, str] | None = None) -> StoreConfig:
    """The store section with DATA_ROOT and the database URL filled in (idempotent).

    These three functions are the one place the environment names the store: :func:`load_config`
    returns configs resolved so, and code given a hand-made ``Config`` reads them through
    :func:`data_root_of` and :func:`db_url_of`.
    """
    # the URL as given (``config show`` prints what was written); db_url_of adds the driver
    resolved = {"data_root": data_root_of(store, environ), "db_url": _given_db_url(store, environ)}
    return store.model_copy(update=resolved)
