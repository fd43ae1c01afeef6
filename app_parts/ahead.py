"""Reading a stream's events ahead, in a thread of their own, while the page's loop hands the last one to Gradio.

The page's stream loop used to pull one event, write its frame and let Gradio post-process and send it, and only then
pull the next: the GPU waited for all of that host work on every frame, and Gradio for every frame's GPU work. With
`ReadAhead` the events come from a producer thread that asks for the next frame as soon as it has handed over the
last one, so a frame's GPU work overlaps the previous frame's trip to the page.

What the consumer has not taken yet waits in a short list:
- `supersedes(new, old)` says which pending events a new one makes pointless (the page: a newer frame replaces an
  older frame nobody has seen yet, and a newer status replaces an older status); they are dropped, never shown;
- beyond `depth` pending events the producer waits for the consumer (the API, which wants every frame, drops
  nothing and stays at most `depth` events ahead), so a slow consumer cannot make it run away with memory.

The producer runs in a copy of the caller's context (contextvars): ZeroGPU's `spaces.GPU` wrapper reads the Gradio
request from one when its generator starts. An exception from the events reaches the consumer after the events
before it, as it would have without the thread. `close()` stops the producer at its next event and closes the events
in the producer's thread (a generator cannot be closed from another thread while it runs).
"""
from __future__ import annotations

import contextvars
import threading
from collections import deque
from typing import Callable, Iterator

_END = object()


class ReadAhead:
    """Iterate `events` (an iterator of objects with a `kind`) from a daemon thread; see the module's docstring."""

    def __init__(self, events: Iterator, *, supersedes: Callable[[object, object], bool] | None = None,
                 depth: int = 2, name: str = "semantic-draw-read-ahead"):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._events, self._supersedes, self._depth = events, supersedes, depth
        self._pending: deque = deque()
        self._cond = threading.Condition()
        self._stop = False
        self.dropped = 0     # events superseded before the consumer took them
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._produce,), name=name, daemon=True)
        self._thread.start()

    # -- producer ------------------------------------------------------------------------------------------------
    def _produce(self) -> None:
        try:
            for event in self._events:
                if not self._offer(event):
                    break
            else:
                self._offer(_END, last=True)
        except BaseException as e:  # handed to the consumer, after what came before it
            self._offer(e, last=True)
        finally:
            close = getattr(self._events, "close", None)
            if close is not None:
                close()

    def _offer(self, event, last: bool = False) -> bool:
        """Queue an event (after dropping what it supersedes, and waiting for room); False once stopped."""
        with self._cond:
            if not last and self._supersedes is not None:
                kept = [old for old in self._pending if not self._supersedes(event, old)]
                self.dropped += len(self._pending) - len(kept)
                self._pending = deque(kept)
            while not last and len(self._pending) >= self._depth and not self._stop:
                self._cond.wait()
            if self._stop:
                return False
            self._pending.append(event)
            self._cond.notify_all()
            return True

    # -- consumer ------------------------------------------------------------------------------------------------
    def __iter__(self):
        return self

    def __next__(self):
        with self._cond:
            while not self._pending:
                if self._stop:
                    raise StopIteration
                self._cond.wait()
            item = self._pending.popleft()
            ended = item is _END or isinstance(item, BaseException)
            self._stop = self._stop or ended
            self._cond.notify_all()
        if item is _END:
            raise StopIteration
        if ended:
            raise item
        return item

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the producer (it ends at its next event, or at once when it waits for room) and wait up to
        `timeout` seconds for it to close the events; pending events are dropped. A producer still inside the
        events after that (a network compiling its first shapes) ends on its own once they yield."""
        with self._cond:
            self._stop = True
            self._pending.clear()
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        """Whether the producer thread is still alive (it ends once the events end or after close)."""
        return self._thread.is_alive()
