"""What every events sink is: the interface, its spec, the records it gets, and retries.

Each sink gets a batch of records (Song's message as JSON bytes, keyed by analysisId, in order)
and answers how many of them, from the first, are delivered; it retries by its own policy and
hands a record it gives up on to the dead-letter file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import DeliveryFailed


@dataclass(frozen=True)
class SinkSpec:
    """One configured sink: its name, type, where a new cursor starts, and its options."""

    name: str
    type: str
    start: str = "beginning"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Record:
    """One message ready to send: Song's JSON value and its key (the analysisId)."""

    event_id: str
    key: str
    action: str
    body: bytes


class Delivery(Protocol):
    """What a sink may ask of the worker driving it."""

    def stopping(self) -> bool: ...

    def sleep(self, seconds: float) -> bool:
        """Wait; False when the dispatcher is stopping meanwhile."""
        ...

    def failed(self, record: Record, error: str, attempt: int) -> None: ...

    def dead_letter(self, record: Record, error: str, attempts: int) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff; after max_attempts failures a record goes to the dead letters."""

    max_attempts: int = 10  # 0: never give up
    initial: float = 0.5
    maximum: float = 60.0
    multiplier: float = 2.0

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> RetryPolicy:
        return cls(options["max_attempts"], options["backoff_initial"], options["backoff_max"])

    def delay(self, failures: int) -> float:
        return min(self.maximum, self.initial * self.multiplier ** max(failures - 1, 0))

    def gives_up(self, failures: int) -> bool:
        return bool(self.max_attempts) and failures >= self.max_attempts


class Sink:
    """Base of every sink."""

    type = "?"

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec
        self.name = spec.name

    def open(self, state: Mapping[str, Any]) -> None:
        """Prepare to deliver; `state` is what ``state()`` returned before the last save."""

    def state(self) -> dict[str, Any]:
        return {}

    def deliver(self, records: Sequence[Record], ctx: Delivery) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and threads."""


def send_with_retries(
    policy: RetryPolicy, record: Record, ctx: Delivery, send: Callable[[], None]
) -> bool:
    """Send one record until it succeeds or is dead-lettered; False if stopped first."""
    failures = 0
    while not ctx.stopping():
        try:
            send()
            return True
        except DeliveryFailed as exc:
            failures += 1
            ctx.failed(record, str(exc), failures)
            if policy.gives_up(failures):
                ctx.dead_letter(record, str(exc), failures)
                return True
            if not ctx.sleep(policy.delay(failures)):
                return False
    return False
