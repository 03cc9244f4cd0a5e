"""Pool trips in batches: the jobs that wait while the pool is busy travel to it together.

A trip to a process pool costs a future, a pickled job and result and a pipe round trip; one trip
per source caps a run at about 100 sources/s however many workers there are. So the runner keeps
only a few batches in flight and, when a slot frees, sends every job that waited meanwhile (up to
``max_batch`` jobs or ``max_batch_bytes`` of bodies). A shallow queue still sends each job alone
and at once; only a deep one, which would have waited anyway, shares trips.

Only ``Executor.submit`` is used, so any executor runs the batches (a process pool, a thread pool
in tests, a dask ``Client.get_executor()``; give ``workers`` the size of a remote one).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import traceback
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from functools import partial

import anyio

from aretriever.engine.pool import CpuJob, CpuResult, default_executor, run_job

MAX_BATCH = 16
# Bounds the bodies pickled per trip (about 20 ZTF answers): memory stays flat however deep the queue.
MAX_BATCH_BYTES = 8 * 2**20


@dataclass(frozen=True, slots=True)
class JobFailed:
    """One job's exception on its way back from the pool, with the traceback of where it was raised."""

    error: Exception
    traceback: str


class PoolTraceback(Exception):
    """The traceback of a job's exception in the worker, chained as its cause (pickling drops it)."""

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'


def run_batch(jobs: Sequence[CpuJob]) -> list[CpuResult | JobFailed]:
    """Run ``jobs`` in a worker; each one's exception is returned in its place, for its caller alone."""
    return [_run_one(job) for job in jobs]


def _run_one(job: CpuJob) -> CpuResult | JobFailed:
    try:
        return run_job(job)
    except Exception as exc:
        return JobFailed(_portable(exc), traceback.format_exc())


def _portable(exc: Exception) -> Exception:
    # An exception that cannot make the trip back would fail its whole batch (or, failing to
    # unpickle, break the pool): send its type and message instead.
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _body_bytes(job: CpuJob) -> int:
    fetched = job.fetched
    return len(fetched.body) if fetched is not None and fetched.body is not None else 0


@dataclass(slots=True, eq=False)
class _Waiting:
    """A job and the future its caller awaits; a cancelled caller leaves the future cancelled."""

    job: CpuJob
    future: asyncio.Future[CpuResult]
    nbytes: int


class CpuRunner:
    """Runs :mod:`aretriever.engine.pool` jobs on an executor, in batches, without blocking the loop.

    Without an executor given, a process pool is started at the first job, so a run that only
    skips (a resume) never pays for starting one.

    Parameters
    ----------
    executor
        Where batches run; None starts a forkserver process pool of ``workers`` processes.
    workers
        The pool's size (None: one per core); ``2 * workers`` batches are kept in flight, so each
        worker has the next one at hand while its last results travel back.
    max_batch, max_batch_bytes
        The most jobs, and fetched-body bytes, one trip carries; a single larger job goes alone.
    """

    def __init__(
        self,
        executor: Executor | None = None,
        workers: int | None = None,
        *,
        max_batch: int = MAX_BATCH,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self._executor = executor
        self._owned: Executor | None = None
        self._workers = workers
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self.max_in_flight = 2 * (workers or os.cpu_count() or 1)
        self._waiting: deque[_Waiting] = deque()
        self._in_flight = 0

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = self._owned = default_executor(self._workers)
        return self._executor

    async def run(self, job: CpuJob) -> CpuResult:
        """The result of ``job``, or its exception; the loop serves other sources meanwhile."""
        waiting = _Waiting(job, asyncio.get_running_loop().create_future(), _body_bytes(job))
        self._waiting.append(waiting)
        self._dispatch()
        return await waiting.future

    async def aclose(self) -> None:
        """Shut down the pool this runner started (an executor given to it is the caller's)."""
        if self._owned is not None:
            owned, self._owned = self._owned, None
            # shutdown() joins the worker processes; in a thread, so the loop stays responsive meanwhile.
            await anyio.to_thread.run_sync(owned.shutdown)

    def _dispatch(self) -> None:
        while self._in_flight < self.max_in_flight:
            batch = self._take()
            if not batch:
                return
            self._send(batch)

    def _take(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        nbytes = 0
        while self._waiting and len(batch) < self.max_batch:
            head = self._waiting[0]
            if batch and nbytes + head.nbytes > self.max_batch_bytes:
                break
            self._waiting.popleft()
            # A caller cancelled before its job was sent: the job is dropped here.
            if not head.future.done():
                batch.append(head)
                nbytes += head.nbytes
        return batch

    def _send(self, batch: list[_Waiting]) -> None:
        try:
            sent = self.executor.submit(run_batch, [w.job for w in batch])
        except Exception as exc:  # a broken or shut-down pool: these jobs fail with its error
            _fail(batch, exc)
            return
        self._in_flight += 1
        asyncio.wrap_future(sent).add_done_callback(partial(self._settle, batch))
        for w in batch:
            w.future.add_done_callback(partial(_abandon, batch, sent))

    def _settle(self, batch: list[_Waiting], done: asyncio.Future[list[CpuResult | JobFailed]]) -> None:
        self._in_flight -= 1
        if done.cancelled():  # every caller of the batch was cancelled before it started
            pass
        elif (exc := done.exception()) is not None:  # e.g. BrokenProcessPool: the whole batch fails
            _fail(batch, exc)
        else:
            for w, outcome in zip(batch, done.result(), strict=True):
                _deliver(w, outcome)
        self._dispatch()


def _deliver(w: _Waiting, outcome: CpuResult | JobFailed) -> None:
    if w.future.done():  # its caller was cancelled: the result is dropped, nobody waits for it
        return
    if not isinstance(outcome, JobFailed):
        w.future.set_result(outcome)
        return
    error = outcome.error
    if error.__traceback__ is None:  # it crossed a process boundary, which drops tracebacks
        error.__cause__ = PoolTraceback(outcome.traceback)
    w.future.set_exception(error)


def _fail(batch: list[_Waiting], exc: BaseException) -> None:
    for w in batch:
        if not w.future.done():
            w.future.set_exception(exc)


def _abandon(batch: list[_Waiting], sent: Future[list[CpuResult | JobFailed]], _: object) -> None:
    # Nobody waits for any job of a batch that has not started: the pool need not run it.
    if all(w.future.cancelled() for w in batch):
        sent.cancel()
