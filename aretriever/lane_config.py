"""The base of every config model, and the options every observatory lane shares.

:class:`Part` and :class:`LaneConfig` live here, below both :mod:`aretriever.settings` and the
adapters: an adapter's config model (``adapters/ztf_config.py``...) subclasses :class:`LaneConfig`,
and :mod:`aretriever.settings` builds its observatory sections from those models, so neither may
import the other's module for them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["OPERATIONAL", "Credentials", "LaneConfig", "Part"]


class Part(BaseModel):
    """Base of every config part: strict keys, validated assignment."""

    # Assignments are validated too: the seed's style (``proj.ztf.rate_per_s = 2``) must not slip
    # a bad value past the checks a file gets.
    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        populate_by_name=True,
        validate_default=True,
    )


# Fields marked ``operational`` change how fast or where things run, not what is produced; they are
# left out of the config hash so that, e.g., raising a rate limit does not start a new product folder.
OPERATIONAL: dict[str, Any] = {"operational": True}


class Credentials(Part):
    """Archive credentials; never hashed, logged or written to disk."""

    username: str = Field("", description="archive user name")
    password: SecretStr = Field(SecretStr(""), description="archive password (never logged or written)")


class LaneConfig(Part):
    """How aretriever talks to one archive: rate, concurrency, timeouts, retries."""

    # The one-line description of ``observatories.<name>`` (its comment in ``config show``); a
    # ClassVar, not a field, so it is neither validated nor hashed. Empty: the docstring's first line.
    section_description: ClassVar[str] = ""

    base_url: str = Field(
        "", description="archive base URL (tests point it at the fake archive)", json_schema_extra=OPERATIONAL
    )
    rate_per_s: float = Field(
        5.0, gt=0, description="requests per second, at most, to this archive", json_schema_extra=OPERATIONAL
    )
    max_concurrency: int = Field(
        8, ge=1, description="sources fetched at the same time", json_schema_extra=OPERATIONAL
    )
    timeout_s: float = Field(
        60.0, gt=0, description="timeout of one request, seconds", json_schema_extra=OPERATIONAL
    )
    max_attempts: int = Field(
        5,
        ge=1,
        description="attempts per request before the source is recorded as failed",
        json_schema_extra=OPERATIONAL,
    )
    backoff_base_s: float = Field(
        1.0,
        gt=0,
        description="first retry delay; doubles each attempt, with jitter",
        json_schema_extra=OPERATIONAL,
    )
    backoff_max_s: float = Field(
        60.0, gt=0, description="longest delay between two attempts", json_schema_extra=OPERATIONAL
    )
    max_retry_after_s: float = Field(
        300.0,
        gt=0,
        description="a Retry-After longer than this is not waited for: the source fails (transient)",
        json_schema_extra=OPERATIONAL,
    )
    max_body_bytes: int = Field(
        256 * 1024 * 1024,
        gt=0,
        description="largest answer read (memory or streamed file); a larger one fails the source",
        json_schema_extra=OPERATIONAL,
    )
    hedge_after_p95: float = Field(
        2.0,
        ge=0,
        description=(
            "once no new source waits for the lane, send a request again when its answer is later than"
            " this many times the lane's p95 answer time; the first answer wins (0: never)"
        ),
        json_schema_extra=OPERATIONAL,
    )
    hedge_min_answers: int = Field(
        20,
        ge=1,
        description="answers the lane must have seen before its p95 is trusted for hedging",
        json_schema_extra=OPERATIONAL,
    )
    credentials: Credentials | None = Field(
        None, description="only for non-public data; from config or environment"
    )

    @property
    def num_threads_download(self) -> int:
        """The seed's name for the lane's concurrency (0, "no threads", means one at a time)."""
        return self.max_concurrency

    @num_threads_download.setter
    def num_threads_download(self, value: int) -> None:
        self.max_concurrency = max(1, int(value))
