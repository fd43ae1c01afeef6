"""Sharing one GPU fairly: a first-come-first-served model lock, and stream slots that idle streams give back.

``FairLock`` serializes the network calls, encodes and decodes of every caller: the thread that has waited longest
goes next, so sessions take frames in turn and a long one-shot, which asks for the lock once per step, lets the
running streams in between its steps. ``Slots`` bounds how many streams compute at once; a stream holds a slot only
while it computes frames (a settled stream gives it back until its next edit) and a waiting one knows its place.
"""
from __future__ import annotations

import threading
import time
from collections import deque


class FairLock:
    """A re-entrant lock granted in the order it was asked for (threading.RLock makes no such promise)."""

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque = deque()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, blocking: bool = True, timeout: float = -1, until=None) -> bool:
        """Wait for the lock (in line). ``until``: a check made whenever the waiter wakes; once it is true the
        waiter leaves the line without the lock (False), as a caller whose work another holder did (SharedCalls)."""
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            if not blocking and (self._owner is not None or self._queue):
                return False
            ticket = object()
            self._queue.append(ticket)
            deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
            while True:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or (until is not None and until()):
                    self._queue.remove(ticket)
                    self._cond.notify_all()
                    return False
                if self._owner is None and self._queue[0] is ticket:
                    break
                self._cond.wait(left)
            self._queue.popleft()
            self._owner, self._depth = me, 1
            return True

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a FairLock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

    def held_here(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._owner == threading.get_ident()

    def waiting(self) -> int:
        """Threads waiting for the lock now."""
        with self._cond:
            return len(self._queue)

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()


class Slots:
    """At most ``count`` holders at once, served first come, first served. A would-be holder ``join``s the queue,
    then ``take``s (waiting a little at a time, so that it can say its ``position`` meanwhile) or ``leave``s."""

    def __init__(self, count: int):
        if count < 1:
            raise ValueError("Slots needs a count of at least 1")
        self.count = count
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque = deque()
        self._held = 0

    def join(self) -> object:
        with self._cond:
            ticket = object()
            self._queue.append(ticket)
            return ticket

    def take(self, ticket: object, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (None: as long as it takes) for the slot; True once it is held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._held >= self.count or self._queue[0] is not ticket:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            self._queue.popleft()
            self._held += 1
            self._cond.notify_all()
            return True

    def position(self, ticket: object) -> int:
        """1 for the next in line."""
        with self._cond:
            return list(self._queue).index(ticket) + 1 if ticket in self._queue else 0

    def leave(self, ticket: object) -> None:
        with self._cond:
            if ticket in self._queue:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def acquire(self, timeout: float | None = None) -> bool:
        ticket = self.join()
        if self.take(ticket, timeout):
            return True
        self.leave(ticket)
        return False

    def release(self) -> None:
        with self._cond:
            self._held = max(0, self._held - 1)
            self._cond.notify_all()

    @property
    def held(self) -> int:
        return self._held

    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)
