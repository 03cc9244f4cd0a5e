"""The hedge rule (pure, by table) and the race of a request and its hedge, ordered by events."""

from __future__ import annotations

import anyio
import pytest

from aretriever.hedge import HedgePolicy, Hedger, hedge_delay_s, p95


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([1.0], 1.0),
        ([float(i) for i in range(1, 21)], 19.0),  # nearest rank: ceil(0.95 * 20) = 19th
        ([0.4] * 95 + [4.0] * 5, 0.4),  # exactly 5 % slow: the p95 is still a fast answer
        ([0.4] * 94 + [4.0] * 6, 4.0),
    ],
)
def test_p95_is_the_nearest_rank(samples: list[float], expected: float) -> None:
    assert p95(samples) == expected


@pytest.mark.parametrize(
    ("after_p95", "min_answers", "n", "expected"),
    [
        (2.0, 20, 20, 2.0),
        (2.0, 20, 19, None),  # too few answers to trust a p95
        (0.0, 1, 100, None),  # 0 disables
        (3.0, 1, 1, 3.0),
    ],
)
def test_hedge_delay(after_p95: float, min_answers: int, n: int, expected: float | None) -> None:
    assert hedge_delay_s([1.0] * n, HedgePolicy(after_p95, min_answers)) == expected


async def no_wait(_: float) -> None:
    await anyio.lowlevel.checkpoint()


def hedger(after_p95: float = 2.0) -> Hedger:
    h = Hedger(HedgePolicy(after_p95, min_answers=1), sleep=no_wait, clock=lambda: 0.0)
    h.observe(0.01)
    return h


class Calls:
    """An original that answers (or fails) only when told, and a hedge that answers at once."""

    def __init__(self, *, hedge_fails: bool = False, original_fails: bool = False) -> None:
        self.go = anyio.Event()
        self.hedges = 0
        self.original_cancelled = False
        self._hedge_fails = hedge_fails
        self._original_fails = original_fails

    async def original(self) -> str:
        try:
            await self.go.wait()
        except anyio.get_cancelled_exc_class():
            self.original_cancelled = True
            raise
        if self._original_fails:
            raise ValueError("original failed")
        return "original"

    async def hedge(self) -> str:
        self.hedges += 1
        if self._hedge_fails:
            raise RuntimeError("hedge failed")
        return "hedge"


async def test_a_late_request_is_hedged_once_drained_and_the_hedge_wins() -> None:
    h, calls = hedger(), Calls()
    h.work_drained()
    assert await h.race(calls.original, calls.hedge) == "hedge"
    assert calls.hedges == 1
    assert calls.original_cancelled  # the loser does not keep a socket busy


async def test_no_hedge_while_work_may_still_come() -> None:
    h, calls = hedger(), Calls()
    async with anyio.create_task_group() as tg:
        tg.start_soon(h.race, calls.original, calls.hedge)
        await anyio.wait_all_tasks_blocked()  # the hedge's watcher had every chance to fire
        assert calls.hedges == 0
        calls.go.set()
    assert calls.hedges == 0 and not calls.original_cancelled


async def test_a_new_run_expects_work_again() -> None:
    h, calls = hedger(), Calls()
    h.work_drained()
    h.expect_work()
    assert not h.drained
    calls.go.set()
    assert await h.race(calls.original, calls.hedge) == "original"
    assert calls.hedges == 0


async def test_disabled_never_hedges() -> None:
    h, calls = hedger(after_p95=0.0), Calls()
    h.work_drained()
    calls.go.set()
    assert await h.race(calls.original, calls.hedge) == "original"
    assert calls.hedges == 0


async def test_a_failing_hedge_does_not_fail_the_original() -> None:
    h, calls = hedger(), Calls(hedge_fails=True)
    h.work_drained()
    async with anyio.create_task_group() as tg:

        async def race() -> None:
            assert await h.race(calls.original, calls.hedge) == "original"

        tg.start_soon(race)
        await anyio.wait_all_tasks_blocked()
        assert calls.hedges == 1  # sent and failed; the original is still out
        calls.go.set()
    assert not calls.original_cancelled


async def test_when_both_fail_the_original_error_goes_to_the_retry_rule() -> None:
    h, calls = hedger(), Calls(hedge_fails=True, original_fails=True)
    h.work_drained()
    async with anyio.create_task_group() as tg:

        async def race() -> None:
            with pytest.raises(ValueError, match="original failed"):
                await h.race(calls.original, calls.hedge)

        tg.start_soon(race)
        await anyio.wait_all_tasks_blocked()
        calls.go.set()
    assert calls.hedges == 1


async def test_an_original_that_fails_before_its_hedge_is_due_fails_at_once() -> None:
    never = anyio.Event()

    async def not_yet(_: float) -> None:
        await never.wait()

    h = Hedger(HedgePolicy(2.0, 1), sleep=not_yet, clock=lambda: 0.0)
    h.observe(0.01)
    h.work_drained()
    calls = Calls(original_fails=True)
    calls.go.set()
    with pytest.raises(ValueError, match="original failed"):
        await h.race(calls.original, calls.hedge)
    assert calls.hedges == 0


async def test_only_the_originals_answer_times_are_kept() -> None:
    ticks = iter([10.0, 10.0, 10.5])  # race start (hedge clock), original start, original end
    h = Hedger(HedgePolicy(2.0, 20), sleep=no_wait, clock=lambda: next(ticks))
    calls = Calls()
    calls.go.set()
    await h.race(calls.original, calls.hedge)
    assert list(h.answers) == [0.5]
