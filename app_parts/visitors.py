"""Who a request comes from, and how much GPU work each visitor has running: the per-user bound (`--max-per-user`).

A visitor is their login name when the server asks for one (`--auth`), else their network address: the socket's
peer, or behind `--forwarded-hops` trusted proxies (a Hugging Face Space has one) the address the nearest of them
saw, read from the right of X-Forwarded-For (what a client writes there itself stays on the left, unread). Tabs and
API clients of one visitor share one bound; work counts from the moment its handler starts (a stream run, settled or
not, until it ends; a one-shot until its image is made). Over the bound, a new stream or generation is refused at once
with a message saying why, and the visitor's running work goes on.

This is a bound on one address, not an identity: visitors behind one address (a school's network) share it, and
someone with many addresses can still take more; the global bounds (`--max-streams`, `--max-generations`,
`--max-queue`) stay in force for everyone.
"""
from __future__ import annotations

import threading
from collections import Counter

from semantic_draw import ResourceError


class VisitorLimits:
    def __init__(self, max_per_user: int = 0, forwarded_hops: int = 0):
        self.max_per_user = max(0, int(max_per_user))      # 0: no per-user bound
        self.forwarded_hops = max(0, int(forwarded_hops))
        self._running: Counter = Counter()
        self._mutex = threading.Lock()

    def key(self, request) -> str:
        """The visitor of a gradio Request: "user:<login>" or "address:<ip>"."""
        name = getattr(request, "username", None)
        if name:
            return f"user:{name}"
        address = None
        if self.forwarded_hops:
            headers = getattr(request, "headers", None) or {}
            forwarded = [part.strip() for part in str(headers.get("x-forwarded-for", "")).split(",") if part.strip()]
            if forwarded:
                address = forwarded[-min(self.forwarded_hops, len(forwarded))]
        if address is None:
            client = getattr(request, "client", None)
            address = getattr(client, "host", None) or "unknown"
        return f"address:{address}"

    def running(self, request) -> int:
        with self._mutex:
            return self._running[self.key(request)]

    def hold(self, request, what: str = "request") -> "_Held":
        """One more piece of work for the visitor of ``request``, counted from now until the end of the ``with``
        block the result is used in; a ResourceError now when they already have ``max_per_user`` running. No request
        (a call from Python) or no bound: nothing is counted."""
        key = None if not self.max_per_user or request is None else self.key(request)
        if key is not None:
            with self._mutex:
                if self._running[key] >= self.max_per_user:
                    raise ResourceError(f"You already have {self._running[key]} streams or generations running on "
                                        f"this server, the most one user may have at once; this {what} was not "
                                        "started. Stop one (or let it finish) and try again.")
                self._running[key] += 1
        return _Held(self, key)

    def _done(self, key: str) -> None:
        with self._mutex:
            self._running[key] -= 1
            if self._running[key] <= 0:
                del self._running[key]


class _Held:
    """A counted piece of work: uncounted when its ``with`` block ends."""

    def __init__(self, limits: VisitorLimits, key: str | None):
        self.limits, self.key = limits, key

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.key is not None:
            self.limits._done(self.key)
            self.key = None
