"""Frames of several sessions in one network call: the model lock, with calls that wait at the same time joined.

``SharedCalls`` takes the place of ``denoiser.Serialized`` when a model is made with ``share_calls=True``. Every
caller (a stream frame, a one-shot step) puts its views in a common list of pending calls and waits for the model's
``FairLock`` in line as before. Whoever gets the lock serves its own call together with every pending call that can
join it (same view shape and dtype, same prompt-row kinds, same schedule: ``Views.share_key``), up to ``max_items``
views, as ONE network call, and hands each caller its rows of the output; a caller served that way leaves the line
without ever holding the lock. Nobody waits for others to come: a call is joined only with calls already waiting.

It pays where a network call costs about the same for few views as for more, as an eager network on a GPU does at
small batches (the SD1.5 UNet on an H100: 28-40 ms for 1 to 5 views, 53 ms for 16); it changes nothing for a single
user. A compiled network (fixed batch shapes, ``buckets``) and the attention layout (a context built per caller's
prompts) are served one call at a time, as are calls of ``max_items`` views or more. A joined call that fails (out of
memory, say) is retried one caller at a time, so that each caller gets its own result or its own error. Joined
results equal a caller's own call up to the floating-point differences of another batch size.
"""
from __future__ import annotations

import threading

import torch

from .denoiser import Denoiser, Views, Wrapper
from .sharing import FairLock

MAX_SHARED_ITEMS = 16   # views in one shared call: past this an eager UNet's cost grows with the batch (H100 figures)


class _Call:
    """One caller's views, and its result or error once served."""

    def __init__(self, views: Views, key: tuple):
        self.views, self.key = views, key
        self.done = threading.Event()
        self.out: torch.Tensor | None = None
        self.error: BaseException | None = None

    def result(self) -> torch.Tensor:
        if self.error is not None:
            raise self.error
        return self.out


class CallPool:
    """The pending calls of one model (every session's SharedCalls wrapper reads the same pool), and what the pool has
    done: ``calls`` network calls it made, ``joined`` of them served more than one caller, ``callers`` served."""

    def __init__(self, max_items: int = MAX_SHARED_ITEMS):
        self.max_items = max_items
        self._pending: list[_Call] = []
        self._mutex = threading.Lock()
        self.calls = self.joined = self.callers = 0

    def add(self, call: _Call) -> None:
        with self._mutex:
            self._pending.append(call)

    def take(self, call: _Call) -> list[_Call]:
        """``call`` and the pending calls that join it (first come first), all taken off the list."""
        with self._mutex:
            batch, items = [call], len(call.views)
            for other in self._pending:
                if other is not call and other.key == call.key and items + len(other.views) <= self.max_items:
                    batch.append(other)
                    items += len(other.views)
            self._pending = [c for c in self._pending if c not in batch]
        return batch

    def pending(self) -> int:
        """Calls waiting to be served now (tests)."""
        with self._mutex:
            return len(self._pending)


class SharedCalls(Wrapper):
    """One network call at a time across every thread and session of a model, and calls that wait at the same time
    served together (see the module's docstring)."""

    def __init__(self, inner: Denoiser, lock: FairLock, pool: CallPool):
        super().__init__(inner)
        self.lock, self.pool = lock, pool

    def predict(self, views: Views) -> torch.Tensor:
        key = None if self.inner.buckets or len(views) >= self.pool.max_items else views.share_key()
        if key is None or self.lock.held_here():
            with self.lock, torch.inference_mode():
                return self.inner.predict(views)
        call = _Call(views, key)
        self.pool.add(call)
        if self.lock.acquire(until=call.done.is_set):
            try:
                if not call.done.is_set():
                    batch = self.pool.take(call)
                    try:
                        self._serve(batch)
                    except BaseException as err:   # (an interrupt) nobody is left waiting for ever
                        for c in batch:
                            if not c.done.is_set():
                                c.error = err
                                c.done.set()
                        raise
            finally:
                self.lock.release()
        return call.result()

    def _serve(self, batch: list[_Call]) -> None:
        """Under the lock: the calls of ``batch`` as one network call (or each alone if that fails)."""
        pool = self.pool
        with torch.inference_mode():
            if len(batch) > 1:
                try:
                    out = self.inner.predict(Views.join([c.views for c in batch]))
                except Exception:          # out of memory for the joined batch, or one caller's bad input
                    out = None
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                if out is not None:
                    pool.calls, pool.joined, pool.callers = pool.calls + 1, pool.joined + 1, pool.callers + len(batch)
                    at = 0
                    for c in batch:
                        c.out, at = out[at:at + len(c.views)], at + len(c.views)
                        c.done.set()
                    return
            for c in batch:
                try:
                    c.out = self.inner.predict(c.views)
                except Exception as err:   # handed to that caller's thread
                    c.error = err
                pool.calls, pool.callers = pool.calls + 1, pool.callers + 1
                c.done.set()
