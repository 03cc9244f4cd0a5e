"""The two writer tasks: the only code that writes data files and database rows.

:class:`FileWriter` runs HDF5 writes one at a time in one dedicated thread. :class:`RowWriter`
applies row operations in submission order, batched into few transactions.

Files before rows: a caller first ``await file_writer.write(...)`` and only then submits the row
that points to that file, so a committed row never names a missing or half-written file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aretriever.errors import StoreError

from . import hdf5
from .bulk import BulkWriter
from .models import utcnow
from .ops import Delete, Op, Replace, Step, Upsert, model_table, op_rows, plan
from .transient import is_transient, retry_transient

__all__ = ["Delete", "FileWriter", "Op", "Replace", "RowWriter", "Upsert"]

log = logging.getLogger("aretriever.store")
T = TypeVar("T")
_STOP: Any = object()


def _finish(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
        future.exception()  # marked retrieved: the writer logs failures itself


class _QueueTask(Generic[T]):
    """One named task serving a bounded queue; whatever is queued fails if the task stops."""

    def __init__(self, name: str, queue_size: int) -> None:
        self.name = name
        self._queue_size = queue_size
        self._queue: asyncio.Queue[T] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def task(self) -> asyncio.Task[None]:
        """The serving task (for supervision: a dead writer should stop the run)."""
        if self._task is None:
            raise StoreError(f"store: {self.name} is not started (use `async with`)")
        return self._task

    def _check_open(self) -> None:
        if self._closed or self.task.done():
            raise StoreError(f"store: {self.name} is closed or has stopped")

    async def __aenter__(self) -> _QueueTask[T]:
        self._queue = asyncio.Queue(self._queue_size)
        self._closed = False
        self._task = asyncio.create_task(self._serve(), name=self.name)
        self._task.add_done_callback(self._on_task_done)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        task = self.task
        try:
            if not task.done():
                await self._queue.put(_STOP)  # drains: the task stops once it reaches this
            await asyncio.wait([task])
        finally:
            self._closed = True
            task.cancel()
        if not task.cancelled() and task.exception() is not None:
            raise StoreError(f"store: {self.name} died") from task.exception()

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        self._closed = True
        if task.cancelled():
            reason = "was cancelled"
        elif task.exception() is not None:
            reason = f"died: {task.exception()!r}"
        else:
            reason = "was stopped"
        error = StoreError(f"store: {self.name} {reason}")
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not _STOP:
                self._fail_item(item, error)

    async def _serve(self) -> None:
        raise NotImplementedError

    def _fail_item(self, item: T, exc: StoreError) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------- files


@dataclass(slots=True)
class _Job:
    call: Callable[[], Any]
    future: asyncio.Future[Any]
    is_write: bool = False


class FileWriter(_QueueTask[_Job]):
    """Runs HDF5 writes (and other file operations) one at a time, in one dedicated thread.

    Use as ``async with FileWriter() as files: nbytes = await files.write_image(path, image)``
    with an image built elsewhere (the engine builds them in its process pool, so this thread,
    which shares the event loop's GIL, only writes bytes), or ``await files.write(path, tables)``
    to build here. Leaving the block finishes every queued job first. If the task dies, queued
    and later writes raise :class:`StoreError`.

    Parameters
    ----------
    queue_size
        Jobs waiting at most; ``write`` waits for space beyond that.
    fsync
        Flush each written file, then its folder, to the disk before reporting it written.
    compression
        How :meth:`write` compresses tables (``store.compression``); builders of images read it
        here so that every file of a run is compressed alike.
    """

    def __init__(
        self,
        *,
        queue_size: int = 64,
        fsync: bool = True,
        compression: hdf5.Compression = hdf5.DEFAULT_COMPRESSION,
        name: str = "file-writer",
    ):
        super().__init__(name, queue_size)
        self._fsync = fsync
        self.compression = compression
        self._executor: ThreadPoolExecutor | None = None
        self.pending = 0
        self.written = 0
        self.bytes_written = 0

    async def __aenter__(self) -> FileWriter:
        # One thread: h5py serialises HDF5 calls behind one lock anyway, and a single thread keeps writes in
        # submission order and never has two handles open on one file.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await super().__aexit__(*exc_info)
        finally:
            if self._executor is not None:
                # The serving task has drained the queue already; waiting would only block the event loop.
                self._executor.shutdown(wait=False, cancel_futures=True)

    async def write(self, path: Path, tables: hdf5.Tables) -> int:
        """Write ``tables`` to ``path`` atomically (see :func:`hdf5.write_h5`); return its size.

        Raises
        ------
        WriteError
            If the file could not be written (nothing is left under ``path``).
        StoreError
            If the writer is closed or has stopped.
        """
        call = functools.partial(hdf5.write_h5, path, tables, fsync=self._fsync, compression=self.compression)
        nbytes: int = await self._submit(call, is_write=True)
        return nbytes

    async def write_image(self, path: Path, image: bytes) -> int:
        """Write a built file image to ``path`` atomically (see :func:`hdf5.write_image`); return its size.

        Raises
        ------
        WriteError
            If the file could not be written (nothing is left under ``path``).
        StoreError
            If the writer is closed or has stopped.
        """
        call = functools.partial(hdf5.write_image, path, image, fsync=self._fsync)
        nbytes: int = await self._submit(call, is_write=True)
        return nbytes

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run another file operation (``hdf5.delete_key``, ``hdf5.verify_h5``...) in the thread."""
        result: T = await self._submit(functools.partial(fn, *args), is_write=False)
        return result

    async def _submit(self, call: Callable[[], Any], *, is_write: bool) -> Any:
        self._check_open()
        job = _Job(call, asyncio.get_running_loop().create_future(), is_write)
        # Counted before the put, which may wait for space: ``pending`` includes callers held back.
        self.pending += 1
        try:
            await self._queue.put(job)
        except BaseException:
            self.pending -= 1
            raise
        return await job.future

    async def _serve(self) -> None:
        while (job := await self._queue.get()) is not _STOP:
            try:
                await self._run_job(job)
            except BaseException:
                _fail(job.future, StoreError(f"store: {self.name} was cancelled during a job"))
                raise
            finally:
                self.pending -= 1

    async def _run_job(self, job: _Job) -> None:
        if job.future.done():  # the caller gave up before the job started: skip it
            return
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._executor, job.call)
        except Exception as exc:
            _fail(job.future, exc)
            return
        if job.is_write:
            self.written += 1
            self.bytes_written += int(result)
        _finish(job.future, result)

    def _fail_item(self, item: _Job, exc: StoreError) -> None:
        self.pending -= 1
        _fail(item.future, exc)


# ----------------------------------------------------------------------------------------- rows


def _describe(ops: Sequence[Op], exc: BaseException) -> str:
    # SQLAlchemy's own message repeats the SQL and its parameters: keep the driver's first line
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = text.splitlines()[0] if text else ""
    what = ", ".join(sorted({f"{type(o).__name__} {model_table(o.model).name}" for o in ops}))
    return f"store: {len(ops)} row operation(s) failed ({what}): {type(exc).__name__}: {first}"


@dataclass(slots=True)
class _Item:
    op: Op | None  # None: a flush marker
    future: asyncio.Future[None]
    queued_at: float = 0.0
    settled: bool = False


class RowWriter(_QueueTask[_Item]):
    """Applies row operations in submission order, batched into one transaction per batch.

    The result is always that of applying the ops one by one, in submission order. Within a
    batch, statements of the same shape become one executemany wherever moving them cannot change
    that result (:func:`aretriever.store.ops.plan`). A batch closes at ``batch_rows`` rows,
    ``batch_ms`` after its first op, or at :meth:`flush`.

    Transient database errors (connection lost, locked database...) retry the whole batch with
    exponential backoff for up to ``retry_for_s``; after that, or on an error due to the data,
    ops fail with :class:`StoreError` and the writer goes on. A batch refused for its data is
    retried op by op, so that only the faulty ops fail.

    Files before rows: submit a row that names a file only after ``await FileWriter.write``
    returned for it. Cancelling an op's future does not withdraw the op.

    Parameters
    ----------
    sessions
        Session factory (:func:`aretriever.store.db.session_factory`).
    batch_rows, batch_ms
        Batch size and the longest wait before a partial batch is written.
    retry_for_s, retry_base_s
        How long transient errors are retried, and the first backoff delay (doubling, capped 5 s).
    queue_size
        Ops waiting at most; :meth:`submit` refuses beyond that, :meth:`put` waits.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        batch_rows: int = 500,
        batch_ms: float = 200.0,
        retry_for_s: float = 120.0,
        retry_base_s: float = 0.05,
        queue_size: int = 10_000,
        name: str = "row-writer",
    ) -> None:
        super().__init__(name, queue_size)
        self._sessions = sessions
        self._batch_rows = batch_rows
        self._batch_s = batch_ms / 1000.0
        self._retry_for_s = retry_for_s
        self._retry_base_s = retry_base_s
        self._queued_at: deque[float] = deque()
        self._inflight: list[_Item] = []
        self._bulk = BulkWriter()
        self.committed_rows = 0
        self.batches = 0
        self.failed_ops = 0

    async def __aenter__(self) -> RowWriter:
        await super().__aenter__()
        return self

    @property
    def pending(self) -> int:
        """Ops submitted and not yet committed or failed."""
        return len(self._queued_at)

    @property
    def lag_s(self) -> float:
        """Age of the oldest pending op, seconds (0 when idle)."""
        return time.monotonic() - self._queued_at[0] if self._queued_at else 0.0

    def _item(self, op: Op | None) -> _Item:
        self._check_open()
        return _Item(op, asyncio.get_running_loop().create_future(), time.monotonic())

    # Flush markers are not ops: they count neither in ``pending`` nor in ``lag_s``.
    def _track(self, item: _Item) -> asyncio.Future[None]:
        if item.op is not None:
            self._queued_at.append(item.queued_at)
        return item.future

    def submit(self, op: Op) -> asyncio.Future[None]:
        """Queue ``op`` without waiting; the future resolves once it is committed.

        Raises
        ------
        StoreError
            If the queue is full (use :meth:`put`) or the writer is closed.
        """
        item = self._item(op)
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            raise StoreError(f"store: {self.name} queue is full; use `await put(op)`") from None
        return self._track(item)

    async def put(self, op: Op) -> asyncio.Future[None]:
        """Queue ``op``, waiting for space; return the future that resolves once it is committed."""
        item = self._item(op)
        await self._queue.put(item)
        return self._track(item)

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or has failed)."""
        item = self._item(None)
        await self._queue.put(item)
        await item.future

    async def _serve(self) -> None:
        stopping = False
        try:
            while not stopping:
                stopping = await self._collect()
                ops = [i for i in self._inflight if i.op is not None]
                if ops:
                    await self._process(ops)
                for marker in self._inflight:
                    _finish(marker.future, None)
                self._inflight = []
        except BaseException:
            for item in self._inflight:
                self._fail_item(item, StoreError(f"store: {self.name} stopped during a batch"))
            raise

    async def _collect(self) -> bool:
        """Fill ``self._inflight`` with the next batch; return True once told to stop."""
        first = await self._queue.get()
        if first is _STOP:
            return True
        self._inflight = [first]
        # A flush marker counts as a full batch, so flush() returns now rather than after ``batch_ms``.
        rows = op_rows(first.op) if first.op is not None else self._batch_rows
        # Timed from the first op: a lone op waits at most ``batch_ms``, however slowly others trickle in.
        deadline = asyncio.get_running_loop().time() + self._batch_s
        while rows < self._batch_rows:
            item = await self._next(deadline)
            if item is None or item is _STOP:
                return item is _STOP
            self._inflight.append(item)
            rows += op_rows(item.op) if item.op is not None else self._batch_rows
        return False

    async def _next(self, deadline: float) -> _Item | None:
        # The fast path under load: a backlog fills the batch with no timer set up per item.
        with contextlib.suppress(asyncio.QueueEmpty):
            return self._queue.get_nowait()
        try:
            async with asyncio.timeout_at(deadline):
                return await self._queue.get()
        except TimeoutError:
            return None

    async def _process(self, items: list[_Item]) -> None:
        try:
            await self._commit_retrying([i.op for i in items if i.op is not None])
        except Exception as exc:
            # Op by op only for data errors: a transient one has already had its retries for the whole batch.
            if len(items) > 1 and not is_transient(exc):
                log.warning("store: a batch of %d ops failed (%r); retrying op by op", len(items), exc)
                for item in items:  # find the faulty op(s); the others still commit, in order
                    await self._process([item])
                return
            ops = [i.op for i in items if i.op is not None]
            self._settle(items, StoreError(_describe(ops, exc)), exc)
            return
        self.batches += 1
        self.committed_rows += sum(op_rows(i.op) for i in items if i.op is not None)
        self._settle(items, None, None)

    def _settle(self, items: list[_Item], error: StoreError | None, cause: Exception | None) -> None:
        if error is not None:
            error.__cause__ = cause
            log.warning("%s", error)
            self.failed_ops += len(items)
        for item in items:
            self._untrack(item)
            if error is None:
                _finish(item.future, None)
            else:
                _fail(item.future, error)

    def _untrack(self, item: _Item) -> None:
        if item.op is not None and not item.settled:
            item.settled = True
            self._queued_at.popleft()  # ops settle in submission order: this one is the oldest

    async def _commit_retrying(self, ops: list[Op]) -> None:
        steps = plan(ops)
        await retry_transient(
            functools.partial(self._commit, steps),
            what="batch",
            for_s=self._retry_for_s,
            base_s=self._retry_base_s,
        )

    async def _commit(self, steps: list[Step]) -> None:
        # One timestamp per transaction: rows committed together carry the same updated_at.
        now = utcnow()
        async with self._sessions() as session, session.begin():
            conn = await session.connection()
            await conn.run_sync(self._bulk.run, steps, now)

    def _fail_item(self, item: _Item, exc: StoreError) -> None:
        self._untrack(item)
        _fail(item.future, exc)
