"""The HTTP port of one observatory lane: rate limit, retries and timeouts around aiohttp.

Adapters build :class:`~aretriever.adapters.base.Request` objects and hand them to
:meth:`Lane.send`; everything about politeness and failure lives here, configured by the lane's
:class:`~aretriever.settings.LaneConfig`, so adapters stay free of IO policy.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import aiohttp
import anyio
from aiolimiter import AsyncLimiter
from tenacity import RetryCallState

from aretriever.adapters.base import Request, Response
from aretriever.errors import (
    BodyTooLarge,
    FetchError,
    PermanentFetchError,
    RetryAfterTooLong,
    TransientFetchError,
)
from aretriever.hedge import HedgePolicy, Hedger
from aretriever.retry import RetryPolicy, parse_retry_after, retrying
from aretriever.settings import LaneConfig

log = logging.getLogger("aretriever.http")


RequestKey = tuple[str, str, tuple[tuple[str, str], ...]]


@dataclass(slots=True)
class Attempts:
    """Attempts made per request (method, URL, query) for one source, over all its fetches.

    A body that arrives whole but parses as malformed is asked for again by the pipeline; those
    re-asks spend the same budget as the lane's own retries, so one source never costs more than
    ``max_attempts`` requests per distinct request.
    """

    max_attempts: int
    spent: Counter[RequestKey] = field(default_factory=Counter)

    @staticmethod
    def key(request: Request) -> RequestKey:
        # Headers and form data are left out: the same URL and query is the same question to the archive.
        return (request.method, request.url, request.params)

    def most(self) -> int:
        """The attempts made for the request asked most often."""
        return max(self.spent.values(), default=0)

    def exhausted(self) -> bool:
        """True once some request has had all its attempts: asking again would exceed the budget."""
        return self.most() >= self.max_attempts


@dataclass(slots=True)
class LaneStats:
    """What a lane did; read by the run summary and the metrics endpoint."""

    requests: int = 0  # hedges included: each one cost the archive a request
    retries: int = 0
    bytes_in: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    hedged: int = 0  # requests sent a second time because their answer was late (aretriever.hedge)


def make_limiter(rate_per_s: float) -> AsyncLimiter:
    """A leaky bucket of one second's worth of requests (at least one) at ``rate_per_s``."""
    # aiolimiter refuses to acquire more than its capacity, so a rate under 1/s still needs room for
    # one request: capacity 1 refilled over 1/rate seconds.
    capacity = max(1.0, rate_per_s)
    return AsyncLimiter(capacity, capacity / rate_per_s)


def hedgeable(request: Request) -> bool:
    """Whether ``request`` may be sent twice at once: a read whose answer is kept in memory.

    A streamed download is never hedged: both answers would be written to the one scratch path.
    """
    return request.stream_to is None and request.method.upper() in ("GET", "HEAD")


def error_for_status(
    status: int,
    reason: str,
    request: Request,
    retry_after_s: float | None,
    max_retry_after_s: float | None = None,
) -> FetchError:
    """The typed error for an HTTP error status (a Retry-After over the cap says so)."""
    cls = TransientFetchError if status == 429 or status >= 500 else PermanentFetchError
    message = f"answered {status} ({request.display_url()}): {reason}"
    url = request.display_url()
    cap = max_retry_after_s
    if cls is TransientFetchError and retry_after_s is not None and cap is not None and retry_after_s > cap:
        return RetryAfterTooLong(
            f"{message}; the server asked to wait {retry_after_s:.0f} s, over the"
            f" {cap:g} s cap (max_retry_after_s): not waiting",
            url=url,
            status=status,
            retry_after_s=retry_after_s,
            reason=f"retry_after {retry_after_s:.0f} s over the {cap:g} s cap",
        )
    return cls(message, url=url, status=status, retry_after_s=retry_after_s)


class Lane:
    """An :class:`~aretriever.adapters.base.HttpPort` for one observatory."""

    def __init__(
        self,
        name: str,
        cfg: LaneConfig,
        session: aiohttp.ClientSession,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        limiter: AsyncLimiter | None = None,
        scratch_dir: str | None = None,
        hedger: Hedger | None = None,
    ) -> None:
        self.name = name
        self.scratch_dir = scratch_dir
        self.cfg = cfg
        self.stats = LaneStats()
        self._session = session
        self._sleep = sleep
        # Unseeded in production so lanes do not jitter in step; tests pass a seeded one.
        self._rng = rng or random.Random()
        self._limiter = limiter or make_limiter(cfg.rate_per_s)
        self._policy = RetryPolicy(
            cfg.max_attempts, cfg.backoff_base_s, cfg.backoff_max_s, cfg.max_retry_after_s
        )
        self.hedger = hedger or Hedger(HedgePolicy(cfg.hedge_after_p95, cfg.hedge_min_answers))

    async def sleep(self, seconds: float) -> None:
        """Wait (archive polling); injectable so tests do not really wait."""
        await self._sleep(seconds)

    async def send(self, request: Request, attempts: Attempts | None = None) -> Response:
        """Send ``request`` politely, retrying transient failures; raise a FetchError otherwise.

        With ``attempts``, the attempts already made for this request count against
        ``max_attempts`` and the ones made here are added to it.
        """
        key = Attempts.key(request)
        spent = attempts.spent[key] if attempts is not None else 0
        controller = retrying(
            self._policy, sleep=self._sleep, rng=self._rng, before_sleep=self._on_retry, spent=spent
        )
        async for attempt in controller:
            with attempt:
                # Counted before sending: an attempt that times out or is cancelled still cost the archive.
                if attempts is not None:
                    attempts.spent[key] += 1
                return await self._send_once(request)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def for_source(self) -> SourcePort:
        """A port for one source's fetches, whose requests share one attempt budget."""
        return SourcePort(self, Attempts(self.cfg.max_attempts))

    def _on_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.upcoming_sleep
        log.info(
            "%s: %s [attempt %d/%d, next in %.1f s]",
            self.name,
            exc,
            state.attempt_number,
            self.cfg.max_attempts,
            wait,
        )

    def expect_work(self) -> None:
        """A run starts: sources may still come, so late requests are not hedged yet."""
        self.hedger.expect_work()

    def work_drained(self) -> None:
        """No new source waits for this lane: a late request may be hedged (:mod:`aretriever.hedge`)."""
        self.hedger.work_drained()

    async def _send_once(self, request: Request) -> Response:
        # The limiter spaces request starts only; it is not held while waiting for the answer, since
        # max_concurrency (fetcher tasks, connector limit) already bounds requests in flight.
        async with self._limiter:
            self.stats.requests += 1
        if not hedgeable(request):
            return await self._exchange_mapped(request)
        return await self.hedger.race(lambda: self._exchange_mapped(request), lambda: self._hedge(request))

    async def _hedge(self, request: Request) -> Response:
        # The same limiter as every request: hedges never push the lane over its rate.
        async with self._limiter:
            self.stats.requests += 1
            self.stats.hedged += 1
        log.debug("%s: hedging a late request (%s)", self.name, request.display_url())
        return await self._exchange_mapped(request)

    async def _exchange_mapped(self, request: Request) -> Response:
        try:
            return await self._exchange(request)
        except FetchError as exc:
            self.stats.errors[f"http_{exc.status}" if exc.status else type(exc).__name__] += 1
            raise
        # Foreign exceptions are mapped once, here, so the retry rule and the failures table see one type.
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
            self.stats.errors[type(exc).__name__] += 1
            what = f"timed out after {self.cfg.timeout_s:g} s" if isinstance(exc, TimeoutError) else repr(exc)
            raise TransientFetchError(f"{what} ({request.display_url()})", url=request.display_url()) from exc

    async def _exchange(self, request: Request) -> Response:
        # ``total`` covers connect, headers and the whole body (streamed too) of this one attempt.
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        async with self._session.request(
            request.method,
            request.url,
            params=list(request.params) or None,
            data=dict(request.data) if request.data is not None else None,
            headers=dict(request.headers),
            timeout=timeout,
        ) as resp:
            self.stats.statuses[resp.status] += 1
            # Error bodies are never read: archives answer with HTML pages that would only fill the logs.
            if resp.status >= 400:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"), datetime.now(UTC))
                raise error_for_status(
                    resp.status, resp.reason or "", request, retry_after, self.cfg.max_retry_after_s
                )
            # Refused on the header alone, before a byte of the body is downloaded.
            if resp.content_length is not None and resp.content_length > self.cfg.max_body_bytes:
                raise self._too_large(request, f"Content-Length {resp.content_length}")
            if request.stream_to is None:
                body = await self._read_body(resp, request)
                return Response(resp.status, body, str(resp.url), dict(resp.headers))
            await self._stream_body(resp, request, request.stream_to)
            done = Response(resp.status, b"", str(resp.url), dict(resp.headers))
        if request.check is None:
            return done
        # after the connection went back to the pool: checking a large file takes a while
        checked = await anyio.to_thread.run_sync(request.check, request.stream_to)
        return replace(done, checked=checked)

    def _too_large(self, request: Request, seen: str) -> BodyTooLarge:
        limit = self.cfg.max_body_bytes
        return BodyTooLarge(
            f"{self.name}: answer over the {limit} byte limit (observatories.{self.name}.max_body_bytes):"
            f" {seen} ({request.display_url()})",
            url=request.display_url(),
            reason=f"body over the {self.name} limit of {limit} bytes",
        )

    def _count_chunk(self, size: int, chunk: bytes, request: Request) -> int:
        """The size with ``chunk`` added; raises before a byte past the limit is kept."""
        size += len(chunk)
        self.stats.bytes_in += len(chunk)
        if size > self.cfg.max_body_bytes:
            # Content-Length was absent or wrong (chunked, compressed): stop reading right here
            raise self._too_large(request, f"more than {self.cfg.max_body_bytes} bytes received")
        return size

    async def _read_body(self, resp: aiohttp.ClientResponse, request: Request) -> bytes:
        body = bytearray()
        # In 64 KiB chunks rather than resp.read(), so the size limit holds while reading, not after.
        async for chunk in resp.content.iter_chunked(1 << 16):
            self._count_chunk(len(body), chunk, request)
            body += chunk
        return bytes(body)

    async def _stream_body(self, resp: aiohttp.ClientResponse, request: Request, path: str) -> None:
        # Large files go straight to disk so memory stays flat; the caller verifies and renames.
        size = 0
        try:
            async with await anyio.open_file(path, "wb") as sink:
                async for chunk in resp.content.iter_chunked(1 << 16):
                    size = self._count_chunk(size, chunk, request)
                    await sink.write(chunk)
        except BodyTooLarge:
            await anyio.Path(path).unlink(missing_ok=True)  # the scratch disk is bounded too
            raise
        # A connection dropped mid-body ends the stream without an error; only the length tells. This is
        # why catalog requests ask for Accept-Encoding: identity. The caller removes the partial file.
        if resp.content_length is not None and size != resp.content_length:
            raise TransientFetchError(
                f"body cut short: {size} of {resp.content_length} bytes ({request.display_url()})",
                url=request.display_url(),
            )


class SourcePort:
    """The lane as one source sees it: attempts are counted over every fetch of the source."""

    def __init__(self, lane: Lane, attempts: Attempts) -> None:
        self.lane = lane
        self.attempts = attempts
        self.scratch_dir = lane.scratch_dir

    async def send(self, request: Request) -> Response:
        """:meth:`Lane.send` on this source's budget."""
        return await self.lane.send(request, self.attempts)

    async def sleep(self, seconds: float) -> None:
        """:meth:`Lane.sleep`."""
        await self.lane.sleep(seconds)
