"""The CPU runner sends jobs in batches once a queue forms, and each caller still gets its own outcome.

The executor here holds every submitted batch until the test releases it, so "the pool is busy"
is a state the test sets, not a race it hopes to win.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pandas as pd
import pytest

from aretriever.adapters.base import Fetched, Target
from aretriever.engine.cpu import CpuRunner, JobFailed, PoolTraceback, run_batch
from aretriever.engine.pool import CpuJob, CpuResult
from aretriever.errors import MalformedResponse


class Unpicklable(Exception):
    """An exception whose constructor needs more than its message: it does not survive pickling."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class CountingAdapter:
    """Parses a body into as many rows as it has bytes; a target named ``bad…`` fails as its name says."""

    name = "count"

    def parse(self, fetched: Fetched) -> pd.DataFrame:
        if fetched.target.name == "bad":
            raise MalformedResponse(f"cut short: {fetched.target.name}")
        if fetched.target.name == "bad-unpicklable":
            raise Unpicklable("no way back", 7)
        return pd.DataFrame({"x": range(len(fetched.body or b""))})

    def reduce(self, raw: pd.DataFrame, target: Target) -> list[Any]:
        return []


def job(name: str, nbytes: int = 1) -> CpuJob:
    target = Target(name, 10.0, 20.0)
    return CpuJob(CountingAdapter(), target, Fetched(target, b"x" * nbytes), reduce=False)  # type: ignore[arg-type]


class HeldExecutor(Executor):
    """Keeps each submitted call until ``release``; ``submitted`` hands the test each new call."""

    def __init__(self, *, pickles: bool = False, refuse: BaseException | None = None) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]] = []
        self.submitted: asyncio.Queue[list[CpuJob]] = asyncio.Queue()
        self.pickles = pickles  # round-trip arguments and results, as a process pool does
        self.refuse = refuse

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self.refuse is not None:
            raise self.refuse
        future: Future[Any] = Future()
        self.calls.append((fn, args, future))
        self.submitted.put_nowait(list(args[0]))
        return future

    def release(self, i: int) -> None:
        fn, args, future = self.calls[i]
        if not future.set_running_or_notify_cancel():
            return
        if self.pickles:
            args = pickle.loads(pickle.dumps(args))
        result = fn(*args)
        future.set_result(pickle.loads(pickle.dumps(result)) if self.pickles else result)

    def breaks(self, i: int, exc: BaseException) -> None:
        self.calls[i][2].set_exception(exc)


def names(jobs: Sequence[CpuJob]) -> list[str]:
    return [j.target.name for j in jobs]


async def start(runner: CpuRunner, *jobs: CpuJob) -> list[asyncio.Task[CpuResult]]:
    tasks = [asyncio.create_task(runner.run(j)) for j in jobs]
    for _ in range(3):  # let every task reach the runner, in order
        await asyncio.sleep(0)
    return tasks


async def busy(runner: CpuRunner, ex: HeldExecutor) -> list[asyncio.Task[CpuResult]]:
    """Fill every slot with a lone job, so that the next jobs wait."""
    tasks = await start(runner, *(job(f"busy{i}") for i in range(runner.max_in_flight)))
    for _ in tasks:
        assert len(await ex.submitted.get()) == 1
    return tasks


async def test_a_lone_job_is_sent_at_once_and_alone() -> None:
    ex = HeldExecutor()
    runner = CpuRunner(ex, workers=2)
    (task,) = await start(runner, job("a", 5))
    assert names(await ex.submitted.get()) == ["a"]
    ex.release(0)
    assert (await task).num_raw_rows == 5


async def test_jobs_that_wait_for_a_slot_share_one_trip_and_each_gets_its_own_result() -> None:
    ex = HeldExecutor()
    runner = CpuRunner(ex, workers=1)
    first = await busy(runner, ex)
    waiting = await start(runner, *(job(f"w{i}", i + 1) for i in range(10)))
    ex.release(0)
    assert names(await ex.submitted.get()) == [f"w{i}" for i in range(10)]
    ex.release(len(ex.calls) - 1)
    assert [(await t).num_raw_rows for t in waiting] == list(range(1, 11))
    assert len(ex.calls) < len(first) + len(waiting)
    ex.release(1)
    await asyncio.gather(*first)


async def test_max_batch_caps_the_jobs_per_trip() -> None:
    ex = HeldExecutor()
    runner = CpuRunner(ex, workers=1, max_batch=3)
    await busy(runner, ex)
    await start(runner, *(job(f"w{i}") for i in range(5)))
    ex.release(0)
    assert names(await ex.submitted.get()) == ["w0", "w1", "w2"]
    ex.release(1)
    assert names(await ex.submitted.get()) == ["w3", "w4"]


async def test_body_bytes_cap_a_batch_but_a_large_job_still_goes_alone() -> None:
    ex = HeldExecutor()
    runner = CpuRunner(ex, workers=1, max_batch_bytes=250)
    await busy(runner, ex)
    await start(runner, job("big", 1000), job("a", 100), job("b", 100), job("c", 100))
    ex.release(0)
    assert names(await ex.submitted.get()) == ["big"]
    ex.release(1)
    assert names(await ex.submitted.get()) == ["a", "b"]


async def test_an_exception_reaches_only_its_own_job() -> None:
    ex = HeldExecutor(pickles=True)
    runner = CpuRunner(ex, workers=1)
    await busy(runner, ex)
    good1, bad, good2 = await start(runner, job("g1", 2), job("bad"), job("g2", 3))
    ex.release(0)
    assert names(await ex.submitted.get()) == ["g1", "bad", "g2"]
    ex.release(2)
    assert (await good1).num_raw_rows == 2 and (await good2).num_raw_rows == 3
    with pytest.raises(MalformedResponse, match="cut short: bad") as info:
        await bad
    # pickling drops the worker's traceback; it comes back as the cause
    assert isinstance(info.value.__cause__, PoolTraceback)
    assert "parse" in str(info.value.__cause__)


def test_an_exception_that_cannot_travel_back_is_sent_as_its_name_and_message() -> None:
    (outcome,) = pickle.loads(pickle.dumps(run_batch([job("bad-unpicklable")])))
    assert isinstance(outcome, JobFailed)
    assert type(outcome.error) is RuntimeError
    assert str(outcome.error) == "Unpicklable: no way back"


async def test_a_broken_pool_fails_the_jobs_of_that_batch_only() -> None:
    ex = HeldExecutor()
    runner = CpuRunner(ex, workers=1)
    first = await busy(runner, ex)
    waiting = await start(runner, job("a"), job("b"))
    ex.breaks(0, BrokenProcessPool("a worker died"))
    assert names(await ex.submitted.get()) == ["a", "b"]
    with pytest.raises(BrokenProcessPool):
        await first[0]
    ex.release(1)
    ex.release(2)
    assert [(await t).num_raw_rows for t in [first[1], *waiting]] == [1, 1, 1]


async def test_a_pool_that_refuses_work_fails_the_job_with_its_error() -> None:
    runner = CpuRunner(HeldExecutor(refuse=RuntimeError("cannot schedule new futures after shutdown")))
    with pytest.raises(RuntimeError, match="after shutdown"):
        await runner.run(job("a"))


async def test_a_cancelled_caller_s_job_is_not_sent() -> None:
    ex = HeldExecutor()
    runner = CpuRunner(ex, workers=1)
    await busy(runner, ex)
    gone, kept = await start(runner, job("gone"), job("kept"))
    gone.cancel()
    ex.release(0)
    assert names(await ex.submitted.get()) == ["kept"]
    ex.release(2)
    assert (await kept).num_raw_rows == 1
    assert gone.cancelled()


async def test_the_outcomes_of_cancelled_callers_are_dropped_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ex = HeldExecutor()
    runner = CpuRunner(ex, workers=1)
    first = await busy(runner, ex)
    # the caller still waiting comes first, so a mishandled drop shows as a logged error, not a hang
    kept, gone, bad = await start(runner, job("kept"), job("gone"), job("bad"))
    ex.release(0)
    assert names(await ex.submitted.get()) == ["kept", "gone", "bad"]
    gone.cancel()
    bad.cancel()
    with caplog.at_level(logging.DEBUG):
        ex.release(2)
        assert (await kept).num_raw_rows == 1
        await asyncio.gather(*first[:1])
    assert gone.cancelled() and bad.cancelled()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_batch_nobody_waits_for_is_withdrawn_and_frees_its_slot() -> None:
    ex = HeldExecutor()
    runner = CpuRunner(ex, workers=1)
    first = await busy(runner, ex)
    first[1].cancel()
    (later,) = await start(runner, job("later"))
    assert ex.calls[1][2].cancelled()
    assert names(await ex.submitted.get()) == ["later"]
    ex.release(2)
    assert (await later).num_raw_rows == 1
