"""Group commit of lifecycle requests: concurrent publish / unpublish / suppress calls share one
``Catalog.change_states`` call, so one Delta commit serves many requests (reference/limits.md B7:
a commit costs ~22 ms, so one commit per request caps an API near 40 changes/s).

No thread of its own: the first request to arrive leads. It waits a moment for company, takes
every request queued by then, runs the batch and hands each request its own outcome; requests
that arrive meanwhile queue for the next leader, who runs as soon as the batch before it is done.
Batches run one at a time, in arrival order, so two changes of one analysis apply in the order
they were received and its history stays one consistent sequence.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from catalog.errors import SonglakeError
from catalog.write.lifecycle import Transition

Outcome = str | SonglakeError


class _Slot:
    __slots__ = ("transition", "outcome", "done")

    def __init__(self, transition: Transition) -> None:
        self.transition = transition
        self.outcome: Outcome | BaseException | None = None
        self.done = threading.Event()


class GroupCommitter:
    """Gathers transitions from concurrent requests into batches for `apply`."""

    def __init__(
        self,
        apply: Callable[[Sequence[Transition]], list[Outcome]],
        *,
        window: float = 0.002,
        max_batch: int = 1000,
    ) -> None:
        self._apply = apply
        self.window = window
        self.max_batch = max_batch
        self._queue: list[_Slot] = []
        self._lock = threading.Lock()
        self._leader_waiting = False
        self._run_lock = threading.Lock()
        self.batches = 0
        self.transitions = 0
        self.largest_batch = 0
        self.busy_seconds = 0.0

    def run(self, transition: Transition) -> str:
        """Apply one transition with whatever else is queued; its message, or its error raised."""
        slot = _Slot(transition)
        with self._lock:
            self._queue.append(slot)
            lead = not self._leader_waiting
            if lead:
                self._leader_waiting = True
        if lead:
            self._lead()
        slot.done.wait()
        if isinstance(slot.outcome, BaseException):
            raise slot.outcome
        assert isinstance(slot.outcome, str)
        return slot.outcome

    def _lead(self) -> None:
        if self.window > 0:
            time.sleep(self.window)
        with self._run_lock:  # the batch before this one finishes first
            while True:
                with self._lock:
                    batch = self._queue[: self.max_batch]
                    self._queue = self._queue[self.max_batch :]
                    more = bool(self._queue)
                    if not more:  # whoever queues from now on leads the next batch
                        self._leader_waiting = False
                self._run(batch)
                if not more:
                    return

    def stats(self) -> dict[str, float]:
        return {
            "batches": self.batches,
            "transitions": self.transitions,
            "largestBatch": self.largest_batch,
            "meanBatch": round(self.transitions / self.batches, 1) if self.batches else 0,
            "busySeconds": round(self.busy_seconds, 3),
        }

    def _run(self, batch: list[_Slot]) -> None:
        self.batches += 1
        self.transitions += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        started = time.perf_counter()
        try:
            outcomes: Sequence[Outcome | BaseException] = self._apply([s.transition for s in batch])
        except BaseException as exc:  # noqa: BLE001 - every waiting request must get an answer
            outcomes = [exc] * len(batch)
        self.busy_seconds += time.perf_counter() - started
        for slot, outcome in zip(batch, outcomes, strict=True):
            slot.outcome = outcome
            slot.done.set()
