"""Where the time goes: spans of work added up per key, with CUDA events on a GPU (no sync inside a frame) and the
wall clock elsewhere. Used by the ``Timed`` denoiser wrapper and the benchmarks (``bench/``)."""
from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch


class Clock:
    """Seconds per key ("model", "decode", ...) since the last ``take``."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._totals: dict[str, float] = {}
        self._events: list[tuple[str, object, object]] = []

    @contextlib.contextmanager
    def span(self, key: str):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._events.append((key, start, end))
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self._totals[key] = self._totals.get(key, 0.0) + time.perf_counter() - t0

    def wrap(self, fn: Callable, key: str) -> Callable:
        """``fn`` with every call timed under ``key`` (the original stays at ``.inner``)."""
        def timed(*args, **kwargs):
            with self.span(key):
                return fn(*args, **kwargs)
        timed.inner = fn
        return timed

    def take(self, *keys: str) -> dict[str, float]:
        """Seconds per key since the last take (synchronizes the device once on CUDA); ``keys`` are reported even
        when nothing was timed under them."""
        if self._events:
            torch.cuda.synchronize(self.device)
            for key, start, end in self._events:
                self._totals[key] = self._totals.get(key, 0.0) + start.elapsed_time(end) / 1000
            self._events.clear()
        out = {key: 0.0 for key in keys}
        out.update(self._totals)
        self._totals = {}
        return out
