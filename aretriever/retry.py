"""Whether to retry a failed call, and after how long: the one retry rule of aretriever.

*Transient* means one thing everywhere: the same call, made again unchanged, may succeed, because
what failed is the connection, the server's load or a lock, not what was asked. Each domain only
classifies its errors into transient or not:

- HTTP (this module, :func:`is_transient`): timeouts, dropped or cut connections, 429, every 5xx,
  bodies cut short or garbled (:class:`~aretriever.errors.TransientFetchError`);
- the database (:func:`aretriever.store.transient.is_transient`): lost connections, lock and
  serialization conflicts, pool timeouts, by SQLSTATE or SQLite result code.

One pure function, :func:`decide`, then answers "again? after how long?" for both, from the
attempt number, the attempt or time budget left, the classification and the server's
``Retry-After``; it is tested by a table. The delay doubles from ``base_s`` up to ``max_s`` with
"equal jitter" (``jitter=1`` gives the full delay, no randomness). :func:`retrying` lets tenacity
execute those decisions for the HTTP port; :func:`call_retrying` is the small loop the store uses.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt
from tenacity.retry import retry_base
from tenacity.wait import wait_base

from aretriever.errors import FetchError, PermanentFetchError, TransientFetchError

T = TypeVar("T")

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
    # delta-seconds; a sign or a decimal point fails isdigit() and then the date parse: ignored.
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    # HTTP dates are always GMT; "-0000" parses as naive, which must not be read as local time.
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # A date already past (clock skew between us and the archive) means "now", never a negative sleep.
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


def _http_transient(status: int | None, exc: BaseException | None) -> bool:
    # A status is the server's own answer, so it outranks whatever exception carried it.
    if status is not None:
        return is_transient_status(status)
    return exc is not None and is_transient(exc)


def _gives_up(attempt: int, max_attempts: int | None, remaining_s: float | None) -> bool:
    out_of_attempts = max_attempts is not None and attempt >= max_attempts
    return out_of_attempts or (remaining_s is not None and remaining_s <= 0)


def decide(
    *,
    attempt: int,
    max_attempts: int | None = None,
    status: int | None = None,
    exc: BaseException | None = None,
    retry_after_s: float | None = None,
    base_s: float = 1.0,
    max_s: float = 60.0,
    jitter: float = 0.5,
    max_retry_after_s: float | None = None,
    transient: bool | None = None,
    remaining_s: float | None = None,
) -> RetryDecision:
    """Decide whether attempt number ``attempt`` (1-based), which failed, gets another try.

    ``transient`` is the caller's classification (the database's); without it the HTTP one is
    used on ``status`` or ``exc``. The budget is ``max_attempts`` attempts and/or ``remaining_s``
    seconds (the delay never outlasts it). A ``retry_after_s`` over ``max_retry_after_s`` is not
    waited for: the failure stands (it is still transient, so a later run tries the source
    again), and a lane never sleeps unbounded.
    """
    reason = _reason(status, exc)
    if transient is None:
        transient = _http_transient(status, exc)
    # Budget and classification first: a permanent error reports its own reason, not the Retry-After cap.
    if not transient or _gives_up(attempt, max_attempts, remaining_s):
        return RetryDecision(False, 0.0, reason)
    if retry_after_s is not None and max_retry_after_s is not None and retry_after_s > max_retry_after_s:
        return RetryDecision(False, 0.0, "retry_after_over_cap")
    delay = backoff_s(attempt, base_s, max_s, jitter)
    if retry_after_s is not None:
        # The server knows best when it will be ready; the jitter spreads the herd a little.
        delay = retry_after_s * (1.0 + 0.1 * jitter)
    # Never sleep past the deadline: the last try then runs at the deadline instead of after it.
    return RetryDecision(True, delay if remaining_s is None else min(delay, remaining_s), reason)


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

    def decision(self, state: RetryCallState, rng: random.Random, spent: int = 0) -> RetryDecision:
        """The decision for tenacity's current state, ``spent`` attempts having been made before it."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is None:
            return RetryDecision(False, 0.0, "ok")
        return decide_for_exception(
            exc,
            # tenacity counts from 1 per controller; adding ``spent`` keeps a re-asked request on one budget.
            spent + state.attempt_number,
            self.max_attempts,
            base_s=self.base_s,
            max_s=self.max_s,
            jitter=rng.random(),
            max_retry_after_s=self.max_retry_after_s,
        )


class _RetryIf(retry_base):
    def __init__(
        self, policy: RetryPolicy, decisions: dict[int, RetryDecision], rng: random.Random, spent: int
    ) -> None:
        self._policy, self._decisions, self._rng, self._spent = policy, decisions, rng, spent

    def __call__(self, retry_state: RetryCallState) -> bool:
        # tenacity asks "retry?" and "how long?" separately; deciding once and remembering it keeps one
        # jitter draw per attempt, so the delay logged by before_sleep is the delay actually slept.
        decision = self._policy.decision(retry_state, self._rng, self._spent)
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
    spent: int = 0,
) -> AsyncRetrying:
    """A tenacity controller carrying out :func:`decide`'s decisions; re-raises the last error.

    ``spent`` attempts were already made for the same request (a body that parsed as malformed
    is asked for again on the same budget), so at most ``max_attempts - spent`` more are made.
    """
    decisions: dict[int, RetryDecision] = {}
    return AsyncRetrying(
        sleep=sleep,
        # At least one attempt even with the budget spent: tenacity needs an outcome to re-raise.
        stop=stop_after_attempt(max(1, policy.max_attempts - spent)),
        retry=_RetryIf(policy, decisions, rng, spent),
        wait=_WaitDecided(decisions),
        before_sleep=before_sleep,
        reraise=True,
    )


async def call_retrying(
    call: Callable[[], Awaitable[T]],
    *,
    transient: Callable[[BaseException], bool],
    what: str,
    for_s: float,
    base_s: float,
    max_s: float,
    log: logging.Logger,
) -> T:
    """``await call()``, again while :func:`decide` says so, for up to ``for_s`` seconds.

    ``transient`` is the domain's classification (e.g. the database's); the delay doubles from
    ``base_s`` up to ``max_s`` without jitter (a few processes at most wait on one database).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + for_s
    attempt = 0
    while True:
        try:
            return await call()
        # Exception, not BaseException: cancellation and KeyboardInterrupt must pass through untouched.
        except Exception as exc:
            attempt += 1
            remaining = deadline - loop.time()
            d = decide(
                attempt=attempt,
                transient=transient(exc),
                remaining_s=remaining,
                base_s=base_s,
                max_s=max_s,
                jitter=1.0,
            )
            if not d.retry:
                raise
            log.warning("%s failed (%r); retry %d in %.2f s", what, exc, attempt, d.delay_s)
            await asyncio.sleep(d.delay_s)
