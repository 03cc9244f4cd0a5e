"""The bulk skip check: what each source of a batch needs, from a few queries and file stats.

A source is skipped without any request when its raw row is stored and its file is on disk with
the recorded size (and, with ``verify``, opens); a row whose file is gone or changed is fetched
again; a file without a row is re-linked; raw data without the project's lightcurves, or not yet
analysed for the project and config hash, is reduced (and analysed) again from disk. Without
version control (one folder, ``cfg_hash`` '') so are products made with another products hash
than this run's: each product row records its own, so a run stopped half-way is finished by the
next one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

import anyio

from aretriever.adapters.base import Target
from aretriever.errors import StorageFault
from aretriever.store import paths, queries
from aretriever.store.hdf5 import verify_h5
from aretriever.store.models import RawStatus
from aretriever.store.queries import Sessions
from aretriever.store.queries import StoredRaw as StoredRaw  # its home before store/queries

log = logging.getLogger("aretriever.engine.skipcheck")


class Action(StrEnum):
    """What the engine must do for one source in one lane."""

    SKIP = "skip"
    FETCH = "fetch"
    REFETCH = "refetch"
    RELINK = "relink"
    REDUCE = "reduce"


@dataclass(frozen=True, slots=True)
class Products:
    """Where a project's reduced products go, and whether to make them."""

    project: str
    cfg_hash: str  # '' without version control
    folder: str  # relative to DATA_ROOT
    reduce: bool = True
    analyze: bool = False  # a source is done once analysed (a ``properties`` row)
    # per observatory, the products hash (config_output.products_hash) recorded on the product rows
    made_with: Mapping[str, str] = field(default_factory=dict)

    def stamp(self, observatory: str) -> str | None:
        """The products hash this run records on the rows it writes for ``observatory``."""
        return self.made_with.get(observatory)

    def required_stamp(self, observatory: str) -> str | None:
        """The hash stored products must carry to be reused; None: any (the folder is the version)."""
        return None if self.cfg_hash or not self.reduce else self.stamp(observatory)


@dataclass(frozen=True, slots=True)
class Freshness:
    """When stored data is too old, and when a failed source may be tried again (long runs)."""

    refetch_before: datetime | None = None  # raw data fetched before this is fetched again
    failed_retry_before: datetime | None = None  # a failure after this waits (back-off)

    @classmethod
    def of(
        cls, refresh_after_days: float | None, retry_failed_after_s: float | None, now: datetime
    ) -> Freshness:
        """The limits as of ``now`` (the engine's clock: tests move it instead of waiting)."""
        return cls(
            None if refresh_after_days is None else now - timedelta(days=refresh_after_days),
            None if retry_failed_after_s is None else now - timedelta(seconds=retry_failed_after_s),
        )


@dataclass(frozen=True, slots=True)
class FileState:
    """What the disk says: size in bytes (None: missing) and, when verified, whether it opens."""

    size: int | None
    readable: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    """The action for one target, where its raw file is (or will be), and why."""

    target: Target
    action: Action
    raw_relpath: str
    reason: str = ""
    failed_stages: frozenset[str] = frozenset()


def _raw_ok(row: StoredRaw, raw_file: FileState) -> str | None:
    """Why stored raw data cannot be trusted, or None."""
    # The archive had nothing: there is no file to check, and the row itself is the answer.
    if row.status == RawStatus.NO_DATA:
        return None
    if raw_file.size is None:
        return "raw file missing"
    # A stat is cheap and catches a file truncated or replaced since its row was written; opening it
    # (``verify``) is the expensive check.
    if row.nbytes is not None and raw_file.size != row.nbytes:
        return f"raw file is {raw_file.size} bytes, the row says {row.nbytes}"
    if not raw_file.readable:
        return "raw file unreadable"
    return None


def decide(
    row: StoredRaw | None,
    raw_file: FileState,
    lightcurves: FileState | None,
    *,
    needs_reduction: bool,
    needs_analysis: bool = False,
    analysed: int | None = None,
    stale: bool = False,
    backing_off: bool = False,
    config_changed: bool = False,
) -> tuple[Action, str]:
    """The action for one source (pure).

    ``lightcurves`` is the reduced file's state (None: no rows); ``analysed`` is the number of
    lightcurves its ``properties`` row counts (None: not analysed for this project and hash).
    ``stale``: the raw data is older than the refresh age. ``backing_off``: the source failed
    recently, and anything but a skip or re-link waits for the back-off to pass. ``config_changed``:
    the stored products were made with another products hash (unversioned projects).
    """
    action, reason = _decide(
        row, raw_file, lightcurves, needs_reduction, needs_analysis, analysed, stale, config_changed
    )
    # Skip and re-link make no request, so a recent failure has no reason to hold them back.
    if backing_off and action not in (Action.SKIP, Action.RELINK):
        return Action.SKIP, f"failed recently: {action.value} waits for the back-off"
    return action, reason


def _decide(
    row: StoredRaw | None,
    raw_file: FileState,
    lightcurves: FileState | None,
    needs_reduction: bool,
    needs_analysis: bool,
    analysed: int | None,
    stale: bool,
    config_changed: bool,
) -> tuple[Action, str]:
    if row is None:
        # Files before rows makes this the state a crash leaves behind; re-linking saves a request.
        if raw_file.size is not None and raw_file.readable:
            return Action.RELINK, "file on disk without a row"
        return Action.FETCH, "new"
    problem = _raw_ok(row, raw_file)
    if problem:
        return Action.REFETCH, problem
    # After the file checks, so a broken file is reported as broken rather than as old.
    if stale:
        return Action.REFETCH, "raw data older than the refresh age"
    # An EMPTY or NO_DATA row has nothing to reduce.
    if not needs_reduction or row.status != RawStatus.OK:
        return Action.SKIP, "stored"
    # Before the "done" answers below: those products exist, but were made with other settings.
    if config_changed:
        return Action.REDUCE, "config changed since its products were made"
    return _decide_products(lightcurves, needs_analysis, analysed)


def _decide_products(
    lightcurves: FileState | None, needs_analysis: bool, analysed: int | None
) -> tuple[Action, str]:
    """Stored raw data to reduce: whether the project's products are there."""
    if needs_analysis and analysed is None:
        return Action.REDUCE, "not analysed for this project"
    # Analysed and found no lightcurves: reducing again would only find none again.
    if needs_analysis and analysed == 0 and lightcurves is None:
        return Action.SKIP, "analysed: no lightcurves"
    if lightcurves is None:
        return Action.REDUCE, "no lightcurves for this project"
    if lightcurves.size is None or not lightcurves.readable:
        return Action.REDUCE, "reduced file missing or unreadable"
    return Action.SKIP, "stored"


def _before(when: datetime | None, limit: datetime | None) -> bool:
    return when is not None and limit is not None and when < limit


def _stat_size(path: Path) -> int | None:
    """A file's size, None if it does not exist; any other failure is the storage's, not the file's.

    Raises
    ------
    StorageFault
        Permission denied, an I/O error, a folder that is a file...: re-fetching cannot help.
    """
    try:
        return os.stat(path).st_size
    # Only "not found" means missing. Permission or I/O errors (an unmounted or stale NFS DATA_ROOT)
    # would otherwise look like every file gone and start a mass re-fetch.
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageFault(
            f"store: cannot stat {path}: {exc.strerror or exc} (errno {exc.errno}); is DATA_ROOT mounted"
            " and readable? Stopping: nothing is fetched again until the storage answers"
        ) from exc


def _file_state(path: Path, verify: bool) -> FileState:
    size = _stat_size(path)
    if size is None:
        return FileState(None)
    return FileState(size, verify_h5(path) if verify else True)


def check_observatory_folder(data_root: Path, observatory: str, stored_files: int) -> None:
    """Refuse a DATA_ROOT that lacks the observatory folder while the database lists files in it.

    One missing file is fetched again; a whole missing folder means DATA_ROOT is not the one the
    database describes (unmounted, or another disk), and fetching everything again would be wrong.

    Raises
    ------
    StorageFault
        Naming the folder and how many files the database expects there.
    """
    folder = data_root / paths.safe_name(observatory.upper())
    if stored_files and _stat_size(folder) is None:
        raise StorageFault(
            f"store: {folder} does not exist, but the database lists {stored_files} {observatory} files"
            " in it: is DATA_ROOT mounted? (If the folder was deleted on purpose, create it empty to"
            " fetch everything again.)"
        )


async def check_batch(
    sessions: Sessions,
    observatory: str,
    targets: Sequence[Target],
    products: Products,
    data_root: Path,
    *,
    verify: bool = False,
    freshness: Freshness = Freshness(),
) -> list[Decision]:
    """Decide, for a batch of targets, what each needs: three queries and a stat per file."""
    names = [t.name for t in targets]
    # All queries in one short session, released before the disk work, which holds no connection.
    async with sessions() as session:
        raw = await queries.stored_raw(session, observatory, names)
        version = (products.project, products.cfg_hash)
        lcs = (
            await queries.stored_lightcurves(session, observatory, names, *version) if products.reduce else {}
        )
        analysed = await queries.analysed(session, observatory, names, *version) if products.analyze else {}
        failures, failed_at = await queries.open_failures(session, observatory, names)
        required = products.required_stamp(observatory)
        stamps = (
            await queries.made_with(session, observatory, names, *version, analysed=products.analyze)
            if required
            else {}
        )

    def on_disk() -> list[Decision]:
        # NO_DATA rows have no file, so they must not make an empty folder look like a missing mount.
        stored = sum(1 for row in raw.values() if row.filename and row.status != RawStatus.NO_DATA)
        check_observatory_folder(data_root, observatory, stored)
        return [
            _decide_one(t, raw.get(t.name), lcs.get(t.name), failures.get(t.name, frozenset()))
            for t in targets
        ]

    def _decide_one(
        target: Target,
        row: StoredRaw | None,
        lc: tuple[str | None, int | None] | None,
        failed: frozenset[str],
    ) -> Decision:
        # The stored filename wins over the computed one: the naming scheme may have changed since.
        relpath = (row.filename if row and row.filename else None) or paths.raw_relpath(
            observatory, target.name, target.ra_deg
        )
        raw_file = _file_state(paths.resolve(data_root, relpath), verify)
        lc_file = (
            None if lc is None or lc[0] is None else _file_state(paths.resolve(data_root, lc[0]), verify)
        )
        refetch_before, retry_before = freshness.refetch_before, freshness.failed_retry_before
        last_failure = failed_at.get(target.name)
        action, reason = decide(
            row,
            raw_file,
            lc_file,
            needs_reduction=products.reduce,
            needs_analysis=products.reduce and products.analyze,
            analysed=analysed.get(target.name),
            stale=_before(row.fetched_at if row else None, refetch_before),
            backing_off=last_failure is not None and retry_before is not None and last_failure > retry_before,
            config_changed=bool(stamps.get(target.name, frozenset()) - {required}),
        )
        return Decision(target, action, relpath, reason, failed)

    # Thousands of stats (and with ``verify`` HDF5 opens) per batch would stall the loop's requests.
    return await anyio.to_thread.run_sync(on_disk)


async def report_changed_config(sessions: Sessions, products: Products, observatories: Sequence[str]) -> int:
    """Log, once at the start, how many sources an unversioned project re-analyses; return the count.

    The skip check decides source by source; this only tells the operator why a run that would
    have skipped everything is reducing again.
    """
    total = 0
    for observatory in observatories:
        current = products.required_stamp(observatory)
        if current is None:
            continue
        found = await queries.outdated(
            sessions, observatory, products.project, products.cfg_hash, current, analysed=products.analyze
        )
        if found.sources:
            old = ", ".join(h[:12] if h else "not recorded" for h in found.hashes)
            log.warning(
                "project %s: config changed since its %s products were made (hash %s -> %s); re-analysing %d"
                " sources from their raw files (no archive request)",
                products.project,
                observatory,
                old,
                current[:12],
                found.sources,
            )
        total += found.sources
    return total
