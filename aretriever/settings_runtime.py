"""How and where things run: the engine, the store and the daemon.

Most fields here are ``operational`` (left out of the config hash): they change how fast or where
aretriever works, not what it produces. Apart from :mod:`aretriever.settings`, which re-exports
them, to keep each module short; :class:`aretriever.settings.Config` holds one of each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from aretriever.lane_config import OPERATIONAL, Part

__all__ = ["DaemonConfig", "EngineConfig", "StoreConfig"]


class EngineConfig(Part):
    """The async engine: pool, queues, shutdown."""

    workers: int | None = Field(
        None,
        ge=1,
        description="processes in the reduction pool (None: one per core)",
        json_schema_extra=OPERATIONAL,
    )
    # Bounded queues are the backpressure: a slow stage (the pool, the database) holds up the
    # catalog reader instead of letting fetched bodies pile up in memory.
    queue_size: int = Field(
        256, ge=1, description="capacity of each queue between stages", json_schema_extra=OPERATIONAL
    )
    # One query per batch of rows, not per source: the skip check must not cost a round trip each.
    skip_batch: int = Field(
        200,
        ge=1,
        description="catalog rows looked up at once for the skip check",
        json_schema_extra=OPERATIONAL,
    )
    grace_s: float = Field(
        30.0,
        ge=0,
        description="on SIGINT/SIGTERM, how long in-flight work may finish",
        json_schema_extra=OPERATIONAL,
    )
    reduce: bool = Field(True, description="reduce raw data to lightcurves", json_schema_extra=OPERATIONAL)
    analyze: bool = Field(
        True, description="analyse reduced lightcurves (S/N, detections)", json_schema_extra=OPERATIONAL
    )
    shared_queue: bool = Field(
        False,
        description=(
            "share the catalog with other workers through PostgreSQL (work_items, SKIP LOCKED claims)"
        ),
        json_schema_extra=OPERATIONAL,
    )
    # rate_per_s is the limit of the whole deployment: N workers sharing a catalog take 1/N of it
    # each so that, together, they keep it.
    n_workers: int = Field(
        1,
        ge=1,
        description="workers sharing the archives: each lane takes rate_per_s / n_workers",
        json_schema_extra=OPERATIONAL,
    )
    lease_s: float = Field(
        60.0,
        gt=0,
        description="a claim lapses this long after its worker's last heartbeat",
        json_schema_extra=OPERATIONAL,
    )
    claim_batch: int = Field(50, ge=1, description="sources claimed at a time", json_schema_extra=OPERATIONAL)
    refresh_after_days: float | None = Field(
        None,
        gt=0,
        description="fetch raw data again once it is older than this (None: never; the daemon's refresh)",
        json_schema_extra=OPERATIONAL,
    )
    retry_failed_after_s: float | None = Field(
        None,
        gt=0,
        description="a source that failed waits this long before it is tried again (None: next run)",
        json_schema_extra=OPERATIONAL,
    )
    histogram_save_s: float = Field(
        60.0,
        gt=0,
        description="save the score histograms this often (and at the end)",
        json_schema_extra=OPERATIONAL,
    )
    verify: bool = Field(
        False,
        description="open every stored file in the skip check; re-fetch unreadable ones",
        json_schema_extra=OPERATIONAL,
    )


class StoreConfig(Part):
    """Where rows and files go."""

    data_root: Path | None = Field(
        None, description="DATA_ROOT (None: $RETRIEVER_DATA, else ./data)", json_schema_extra=OPERATIONAL
    )
    db_url: str | None = Field(
        None,
        description="SQLAlchemy async URL (None: $ARETRIEVER_DB_URL, else SQLite in DATA_ROOT)",
        json_schema_extra=OPERATIONAL,
    )
    db_batch_rows: int = Field(
        500, ge=1, description="rows per database transaction, at most", json_schema_extra=OPERATIONAL
    )
    db_batch_ms: float = Field(
        200.0,
        gt=0,
        description="longest wait before a partial batch is written",
        json_schema_extra=OPERATIONAL,
    )
    # Files before rows: a committed row must never point at a file a power cut could still lose.
    fsync: bool = Field(
        True,
        description="flush each file, then its folder, to the disk before its rows are committed",
        json_schema_extra=OPERATIONAL,
    )
    statement_timeout_s: float = Field(
        300.0,
        gt=0,
        description="PostgreSQL cancels any statement running longer (migrations included)",
        json_schema_extra=OPERATIONAL,
    )
    # Operational: filters change the bytes on disk, never what a reader gets back. The names are
    # those of aretriever.store.hdf5.Compression (not imported: settings stay free of h5py).
    # Raw files are written once and kept; reduced files are rebuilt for every project version, so
    # by default only the former pay for compression (docs/design.md, "Compression").
    raw_compression: Literal["gzip", "lzf", "none"] = Field(
        "gzip",
        description="raw HDF5 tables: gzip level 1 (any HDF5 tool reads it), lzf (faster, h5py only) or none",
        json_schema_extra=OPERATIONAL,
    )
    reduced_compression: Literal["gzip", "lzf", "none"] = Field(
        "none",
        description="reduced HDF5 tables (rebuilt per project version): none, gzip or lzf",
        json_schema_extra=OPERATIONAL,
    )


class DaemonConfig(Part):
    """``python -m aretriever.daemon``: the catalogs it keeps fresh, its HTTP endpoint, its logs."""

    catalogs: list[str] = Field(
        default_factory=list,
        description="catalog specs to work through (empty: catalog.default / catalog.path)",
        json_schema_extra=OPERATIONAL,
    )
    interval_s: float = Field(
        300.0, gt=0, description="wait between two passes over the catalogs", json_schema_extra=OPERATIONAL
    )
    host: str = Field(
        "127.0.0.1", description="address of /healthz and /metrics", json_schema_extra=OPERATIONAL
    )
    port: int = Field(
        9108,
        ge=0,
        le=65535,
        description="port of /healthz and /metrics (0: any free port)",
        json_schema_extra=OPERATIONAL,
    )
    # A client that opens a connection and never finishes its request must not hold it for ever.
    http_timeout_s: float = Field(
        30.0,
        gt=0,
        description="/healthz and /metrics close a connection that sends no complete request for this long",
        json_schema_extra=OPERATIONAL,
    )
    log_format: Literal["text", "json"] = Field(
        "json", description="one line per event: JSON objects or plain text", json_schema_extra=OPERATIONAL
    )
    log_file: Path | None = Field(
        None, description="log here, rotating (None: stderr)", json_schema_extra=OPERATIONAL
    )
    log_max_mb: float = Field(
        50.0, gt=0, description="rotate the log file at this size", json_schema_extra=OPERATIONAL
    )
    log_backups: int = Field(5, ge=0, description="rotated log files kept", json_schema_extra=OPERATIONAL)
