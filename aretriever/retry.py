"""Whether to retry a failed archive request, and after how long.

One pure function, :func:`decide`, answers that from the attempt number, the HTTP status or the
exception, and the server's ``Retry-After``; it is tested by a table. :func:`retrying` lets tenacity
execute those decisions.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt
from tenacity.retry import retry_base
from tenacity.wait import wait_base

from aretriever.errors import FetchError, PermanentFetchError, TransientFetchError

#: Exceptions from below the HTTP layer that are worth another try.
TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    TimeoutError,
    asyncio.TimeoutError,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    ConnectionError,
    TransientFetchError,
)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """``retry`` and the ``delay_s`` to wait first; ``reason`` names the cause for logs."""

    retry: bool
    delay_s: float
    reason: str


def is_transient_status(status: int) -> bool:
    """429 and every 5xx are worth retrying; other 4xx are not."""
    return status == 429 or status >= 500


def is_transient(exc: BaseException) -> bool:
    """Classify an exception by its type (never by its message)."""
    if isinstance(exc, FetchError) and exc.status is not None:
        return is_transient_status(exc.status)
    if isinstance(exc, PermanentFetchError):
        return False
    return isinstance(exc, TRANSIENT_EXCEPTIONS)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_s(attempt: int, base_s: float, max_s: float, jitter: float) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random (``jitter`` in [0, 1))."""
    ceiling = min(max_s, base_s * 2.0 ** (attempt - 1))
    return ceiling / 2 + ceiling / 2 * jitter


def _reason(status: int | None, exc: BaseException | None) -> str:
    if status is not None:
        return f"http_{status}"
    if exc is None:
        return "unknown"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    return type(exc).__name__


def decide(
    *,
    attempt: int,
    max_attempts: int,
    status: int | None = None,
    exc: BaseException | None = None,
    retry_after_s: float | None = None,
    base_s: float = 1.0,
    max_s: float = 60.0,
    jitter: float = 0.5,
    max_retry_after_s: float | None = None,
) -> RetryDecision:
    """Decide whether attempt number ``attempt`` (1-based), which failed, gets another try.

    A ``retry_after_s`` over ``max_retry_after_s`` is not waited for: the failure stands (it is
    still transient, so a later run tries the source again), and a lane never sleeps unbounded.
    """
    reason = _reason(status, exc)
    transient = is_transient_status(status) if status is not None else exc is not None and is_transient(exc)
    if not transient or attempt >= max_attempts:
        return RetryDecision(False, 0.0, reason)
    if retry_after_s is not None and max_retry_after_s is not None and retry_after_s > max_retry_after_s:
        return RetryDecision(False, 0.0, "retry_after_over_cap")
    delay = backoff_s(attempt, base_s, max_s, jitter)
    if retry_after_s is not None:
        # The server knows best when it will be ready; the jitter spreads the herd a little.
        delay = retry_after_s * (1.0 + 0.1 * jitter)
    return RetryDecision(True, delay, reason)


def decide_for_exception(
    exc: BaseException,
    attempt: int,
    max_attempts: int,
    *,
    base_s: float,
    max_s: float,
    jitter: float,
    max_retry_after_s: float | None = None,
) -> RetryDecision:
    """:func:`decide` for an exception raised by the port (status and Retry-After read off it)."""
    status = exc.status if isinstance(exc, FetchError) else None
    retry_after = exc.retry_after_s if isinstance(exc, FetchError) else None
    return decide(
        attempt=attempt,
        max_attempts=max_attempts,
        status=status,
        exc=exc,
        retry_after_s=retry_after,
        base_s=base_s,
        max_s=max_s,
        jitter=jitter,
        max_retry_after_s=max_retry_after_s,
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The lane's retry parameters (from its config)."""

    max_attempts: int
    base_s: float
    max_s: float
    max_retry_after_s: float | None = None

    def decision(self, state: RetryCallState, rng: random.Random) -> RetryDecision:
        """The decision for tenacity's current state."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is None:
            return RetryDecision(False, 0.0, "ok")
        return decide_for_exception(
            exc,
            state.attempt_number,
            self.max_attempts,
            base_s=self.base_s,
            max_s=self.max_s,
            jitter=rng.random(),
            max_retry_after_s=self.max_retry_after_s,
        )


class _RetryIf(retry_base):
    def __init__(self, policy: RetryPolicy, decisions: dict[int, RetryDecision], rng: random.Random) -> None:
        self._policy, self._decisions, self._rng = policy, decisions, rng

    def __call__(self, retry_state: RetryCallState) -> bool:
        decision = self._policy.decision(retry_state, self._rng)
        self._decisions[retry_state.attempt_number] = decision
        return decision.retry


class _WaitDecided(wait_base):
    def __init__(self, decisions: dict[int, RetryDecision]) -> None:
        self._decisions = decisions

    def __call__(self, retry_state: RetryCallState) -> float:
        return self._decisions[retry_state.attempt_number].delay_s


def retrying(
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]],
    rng: random.Random,
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """A tenacity controller carrying out :func:`decide`'s decisions; re-raises the last error."""
    decisions: dict[int, RetryDecision] = {}
    return AsyncRetrying(
        sleep=sleep,
        stop=stop_after_attempt(policy.max_attempts),
        retry=_RetryIf(policy, decisions, rng),
        wait=_WaitDecided(decisions),
        before_sleep=before_sleep,
        reraise=True,
    )
