"""Fair turns at a model's slots, between the users of one host (`host.py`).

At most `slots` calls hold a slot at once (the engine's parallel sequences). The others wait, at most
`queue_max` of them (then `Busy`: the caller answers 503 with Retry-After), and a freed slot goes to the
waiting call whose user holds the fewest slots, the earliest first among equals: one user's eight long streams
do not make another user's first call wait behind all of them. A call whose caller goes away while it waits
leaves the queue.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


class Busy(Exception):
    pass


@dataclass(order=True)
class _Ticket:
    seq: int
    user: str = field(compare=False)


class FairGate:
    POLL_SECONDS = 0.1  # how often a waiting call checks that its caller is still there

    def __init__(self, slots: int, queue_max: int):
        self.slots = slots
        self.queue_max = queue_max
        self.lock = threading.Condition()
        self.running: dict[str, int] = {}
        self.waiting: list[_Ticket] = []
        self.numbers = itertools.count()

    def enter(self, user: str, gone: Callable[[], bool]) -> bool:
        """Wait for a slot; True once holding it, False when `gone()` said the caller left. Raises Busy when
        the queue is full."""
        with self.lock:
            if self._holding() < self.slots and not self.waiting:
                self._take(user)
                return True
            if len(self.waiting) >= self.queue_max:
                raise Busy(f"{len(self.waiting)} calls are waiting for this model, as many as it may queue")
            ticket = _Ticket(next(self.numbers), user)
            self.waiting.append(ticket)
            while True:
                if self._holding() < self.slots and self._next() is ticket:
                    self.waiting.remove(ticket)
                    self._take(user)
                    self.lock.notify_all()  # another slot may be free for the next in line
                    return True
                self.lock.wait(self.POLL_SECONDS)
                if gone():
                    self.waiting.remove(ticket)
                    self.lock.notify_all()
                    return False

    def leave(self, user: str) -> None:
        with self.lock:
            self.running[user] -= 1
            if not self.running[user]:
                del self.running[user]
            self.lock.notify_all()

    def _holding(self) -> int:
        return sum(self.running.values())

    def _take(self, user: str) -> None:
        self.running[user] = self.running.get(user, 0) + 1

    def _next(self) -> _Ticket | None:
        """The waiting call whose user holds the fewest slots; the earliest among equals."""
        return min(self.waiting, key=lambda t: (self.running.get(t.user, 0), t.seq), default=None)
