"""Which process owns a scratch folder or temporary file under DATA_ROOT, and whether it still runs.

Several processes (CLIs, daemons, notebooks, on one machine or several sharing DATA_ROOT over
NFS) may write under one DATA_ROOT at once, so nothing may delete what another live process is
writing. Every process has an **owner token** ``<host tag>.<pid>.<random>`` (the host tag is the
first 8 hex digits of sha1(hostname)). It names:

- the process's scratch folders, ``DATA_ROOT/.scratch/<lane>/<token>`` (streamed downloads);
- its temporary files, ``.<name>.<token>.<random>.tmp`` beside their target (see
  :func:`aretriever.store.hdf5.temp_path`);
- its owner lock, ``DATA_ROOT/.scratch/owners/<token>.lock``: an ``flock`` held while an engine of
  the process has DATA_ROOT open, released by the kernel when the process dies (even by SIGKILL).

An owner is **dead** when its lock file exists and can be locked, or, with no lock file (a
process that wrote a temporary file without opening an engine), when its pid does not exist on
this machine. Entries of another host are never judged: their pids mean nothing here. A reused
pid can only make a dead owner look alive (its leftovers wait for a later sweep), never the
reverse while its lock is held.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

log = logging.getLogger("aretriever.store")

SCRATCH: Final = ".scratch"
OWNERS: Final = "owners"  # DATA_ROOT/.scratch/owners/<token>.lock
HOST_TAG: Final = hashlib.sha1(socket.gethostname().encode("utf-8", "surrogatepass")).hexdigest()[:8]
TOKEN: Final = re.compile(r"(?P<host>[0-9a-f]{8})\.(?P<pid>[0-9]+)\.(?P<rand>[0-9a-f]{8})")
TEMPORARY: Final = re.compile(r"\..+\.(?P<token>[0-9a-f]{8}\.[0-9]+\.[0-9a-f]{8})\.[0-9a-f]{8}\.tmp")

_token: tuple[int, str] | None = None  # (pid, token): a forked child makes its own
_held: dict[tuple[int, Path], tuple[int, int]] = {}  # (pid, root) -> (lock fd, holders)
_mutex = threading.Lock()


def owner_token() -> str:
    """This process's owner token (``<host tag>.<pid>.<random>``)."""
    global _token
    pid = os.getpid()
    if _token is None or _token[0] != pid:
        _token = (pid, f"{HOST_TAG}.{pid}.{secrets.token_hex(4)}")
    return _token[1]


def lock_path(root: Path, token: str) -> Path:
    """The owner lock file of ``token`` under ``root``."""
    return Path(root) / SCRATCH / OWNERS / f"{token}.lock"


@contextlib.contextmanager
def holding(root: Path) -> Iterator[str]:
    """Hold this process's owner lock on ``root`` (re-entrant across engines of one process).

    On the last release the process's scratch folders under ``root`` are removed with the lock.
    Yields the owner token.
    """
    root = Path(root).absolute()
    key = (os.getpid(), root)
    with _mutex:
        fd, holders = _held.get(key) or (_take_lock(root), 0)
        _held[key] = (fd, holders + 1)
    try:
        yield owner_token()
    finally:
        with _mutex:
            fd, holders = _held.pop(key)
            if holders > 1:
                _held[key] = (fd, holders - 1)
            else:
                _drop_lock(root, fd)


def _take_lock(root: Path) -> int:
    """Create and lock the owner lock file; it appears under its final name already locked."""
    final = lock_path(root, owner_token())
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(staging, final)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            staging.unlink()
        raise
    return fd


def _drop_lock(root: Path, fd: int) -> None:
    token = owner_token()
    try:
        for lane in _lanes(root):
            shutil.rmtree(lane / token, ignore_errors=True)
        lock_path(root, token).unlink(missing_ok=True)
    except OSError as exc:  # leftovers are swept by the next start; closing must not fail
        log.warning("store: cannot remove the scratch of %s under %s: %s", token, root, exc)
    finally:
        os.close(fd)


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def owner_alive(root: Path, token: str) -> bool:
    """Whether the owner ``token`` may still be writing under ``root`` (True when in doubt)."""
    match = TOKEN.fullmatch(token)
    if match is None or match["host"] != HOST_TAG:
        return True  # not ours to judge: another machine, or a name we did not make
    try:
        fd = os.open(lock_path(root, token), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return _pid_exists(int(match["pid"]))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True  # its owner holds it
        raise
    finally:
        os.close(fd)  # also releases the lock we may have taken
    return False


def _lanes(root: Path) -> list[Path]:
    base = Path(root) / SCRATCH
    try:
        return [p for p in base.iterdir() if p.is_dir() and p.name != OWNERS]
    except FileNotFoundError:
        return []


def sweep_scratch(root: Path) -> int:
    """Remove the scratch folders of dead owners of this host; return how many were removed.

    Folders of live owners, of other hosts, and names this module did not make are kept.
    """
    removed = 0
    for lane in _lanes(root):
        try:
            entries = list(lane.iterdir())
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir() and TOKEN.fullmatch(entry.name) and not owner_alive(root, entry.name):
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
    return removed


def sweep_temporaries(root: Path, folders: Iterable[Path], stop: threading.Event | None = None) -> int:
    """Remove temporary files of dead owners in ``folders`` and their direct subfolders.

    That is where the engine writes (``<OBS>/RA012/...``, ``<PROJECT>/RA012/...`` and files at a
    project folder's top): one ``scandir`` per folder, names only, no ``stat`` per file. Stops
    early when ``stop`` is set. Returns how many files were removed.
    """
    verdicts: dict[str, bool] = {}
    removed = 0
    for folder in folders:
        for directory in [folder, *_subfolders(folder)]:
            if stop is not None and stop.is_set():
                return removed
            removed += _sweep_folder(root, directory, verdicts)
    return removed


def _subfolders(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as entries:
            return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _sweep_folder(root: Path, directory: Path, verdicts: dict[str, bool]) -> int:
    removed = 0
    try:
        with os.scandir(directory) as entries:
            names = [e.name for e in entries if e.name.startswith(".") and e.name.endswith(".tmp")]
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for name in names:
        match = TEMPORARY.fullmatch(name)
        if match is None:
            continue
        token = match["token"]
        if token not in verdicts:
            verdicts[token] = owner_alive(root, token)
        if not verdicts[token]:
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
                removed += 1
    return removed


def sweep_locks(root: Path) -> int:
    """Remove the lock files of dead owners (after their scratch and temporaries are swept)."""
    removed = 0
    try:
        locks = list((Path(root) / SCRATCH / OWNERS).glob("*.lock"))
    except FileNotFoundError:
        return 0
    for lock in locks:
        token = lock.name.removesuffix(".lock")
        if TOKEN.fullmatch(token) and not owner_alive(root, token):
            lock.unlink(missing_ok=True)
            removed += 1
    return removed


class Sweeper:
    """Sweeps temporary files, then lock files, of dead owners in a background thread.

    Started at once; :meth:`stop` asks it to finish early and waits for it, :meth:`join` waits
    for it to finish. A failed sweep is logged: leftovers wait for the next one.
    """

    def __init__(self, root: Path, folders: Iterable[Path]) -> None:
        self.root = Path(root)
        self.folders = list(folders)
        self.removed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tmp-sweeper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.removed = sweep_temporaries(self.root, self.folders, self._stop)
            if not self._stop.is_set():
                sweep_locks(self.root)
        except Exception:
            log.exception("store: sweeping temporary files under %s failed", self.root)
            return
        if self.removed:
            log.info("store: removed %d temporary files of processes that are gone", self.removed)

    def join(self) -> None:
        self._thread.join()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
