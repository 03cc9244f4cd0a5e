"""Hedged requests: at the end of a lane's work, ask again for an answer that is late.

When no new source waits for a lane (its work stream is drained), the rate limiter has tokens to
spare and the run only waits for the answers still out. One of them taking far longer than the
lane usually does (the archive's slow tail) would hold up the whole run, so a request outstanding
longer than ``hedge_after_p95`` times the lane's observed p95 answer time is sent a second time:
the first complete answer wins and the other request is cancelled.

A hedge is not a retry: it does not spend the source's attempt budget, and a hedge that fails
never fails a request whose original then succeeds (nor the reverse). Only when both fail does
the original's error go on to the retry rule, exactly as without a hedge. The lane gives hedges a
token from its own rate limiter, so the rate limit holds.

The rule (:func:`hedge_delay_s`) is pure; :class:`Hedger` keeps the answer times and the drain
signal, and races the two requests.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

T = TypeVar("T")
Call = Callable[[], Awaitable[T]]

#: Answer times kept for the p95: recent enough to follow the archive's mood, enough for a stable p95.
WINDOW = 200


@dataclass(frozen=True, slots=True)
class HedgePolicy:
    """When to hedge: ``after_p95`` times the p95 answer time (0: never), once ``min_answers`` are seen."""

    after_p95: float = 2.0
    min_answers: int = 20


def p95(samples: Sequence[float]) -> float:
    """The 95th percentile of ``samples`` (nearest rank: a value that was observed)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def hedge_delay_s(samples: Sequence[float], policy: HedgePolicy) -> float | None:
    """How long a request may be out before it is hedged; None: do not hedge."""
    if policy.after_p95 <= 0 or len(samples) < max(1, policy.min_answers):
        return None
    return policy.after_p95 * p95(samples)


@dataclass(slots=True)
class _Race(Generic[T]):
    """The state of one original request and its hedge, on one event loop."""

    group: TaskGroup
    running: int = 0
    answer: tuple[T] | None = None  # a 1-tuple, so that any T (None too) can win
    errors: dict[str, Exception] = field(default_factory=dict)

    @property
    def over(self) -> bool:
        return self.answer is not None or self.group.cancel_scope.cancel_called

    async def run(self, role: str, call: Call[T]) -> None:
        self.running += 1
        try:
            result = await call()
        except Exception as exc:
            self.errors[role] = exc
            self.running -= 1
            if self.running == 0:  # nothing left that could still answer (a hedge not sent is not waited for)
                self.group.cancel_scope.cancel()
            return
        self.answer = (result,)
        self.group.cancel_scope.cancel()  # the first complete answer wins: the other is cancelled

    def outcome(self) -> T:
        if self.answer is not None:
            return self.answer[0]
        # the original's error, so that the retry rule sees what it would have seen without a hedge
        raise self.errors.get("original") or self.errors["hedge"]


class Hedger:
    """A lane's answer times, whether its work is drained, and the race of a request and its hedge.

    Parameters
    ----------
    policy
        When to hedge.
    sleep, clock
        The wait before a hedge and the clock answers are timed with; tests inject both.
    """

    def __init__(
        self,
        policy: HedgePolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.answers: deque[float] = deque(maxlen=WINDOW)
        self._sleep = sleep
        self._clock = clock
        # Not drained until a run says so: while sources may still come, hedges would take their tokens.
        self._drained = anyio.Event()

    @property
    def enabled(self) -> bool:
        return self.policy.after_p95 > 0

    def observe(self, seconds: float) -> None:
        """Record one complete answer's time."""
        self.answers.append(seconds)

    def expect_work(self) -> None:
        """A run starts: new sources may come, so no hedging until its work is drained."""
        if self._drained.is_set():
            self._drained = anyio.Event()

    def work_drained(self) -> None:
        """No new source waits for the lane: requests still out may be hedged."""
        self._drained.set()

    @property
    def drained(self) -> bool:
        return self._drained.is_set()

    async def race(self, original: Call[T], hedge: Call[T]) -> T:
        """``original()``, and ``hedge()`` too if it is late once the work is drained; first answer wins.

        ``hedge`` takes its own rate-limiter token (and counts itself once it has one).
        """
        if not self.enabled:
            return await self._timed(original)
        async with anyio.create_task_group() as group:
            race: _Race[T] = _Race(group)
            group.start_soon(race.run, "original", lambda: self._timed(original))
            group.start_soon(self._hedge_when_late, race, hedge, self._clock())
        return race.outcome()

    async def _timed(self, call: Call[T]) -> T:
        # Only originals are timed: a hedge's time includes its wait for a token.
        start = self._clock()
        result = await call()
        self.observe(self._clock() - start)
        return result

    async def _hedge_when_late(self, race: _Race[T], hedge: Call[T], sent_at: float) -> None:
        await self._drained.wait()
        delay = hedge_delay_s(self.answers, self.policy)
        if delay is None:
            return
        await self._sleep(max(0.0, sent_at + delay - self._clock()))
        if not race.over:
            await race.run("hedge", hedge)
