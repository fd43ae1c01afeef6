"""The GPU work of the page, wrapped for ZeroGPU (`spaces.GPU`; a no-op anywhere else).

Both kinds of work are generators of plain, picklable items so that they can run in ZeroGPU's worker process:
  one-shot: ("preview", step, steps, image) ... ("done", image)
  stream:   the semantic_draw.StreamEvent items of `StreamSession.run` (small dataclasses: kind, frame count,
            frames/s, PIL image, message).
A running stream reads live edits from its `edits` queue: ("scene", Scene), ("seed", int) or ("stop", None).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time

from semantic_draw.sharing import Slots

log = logging.getLogger("semantic_draw.app")

try:  # Hugging Face ZeroGPU; off Spaces `spaces.GPU` returns the function unchanged
    import spaces
    GPU = spaces.GPU
except Exception:  # pragma: no cover - the package is optional
    def GPU(fn=None, **_):
        return fn if fn is not None else (lambda f: f)

ON_ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")
PREVIEW_EVERY_S = 0.25  # at most this often an intermediate preview goes to the page


def edit_queue():
    """A queue that reaches the stream worker: in-process here, a manager proxy across ZeroGPU's process."""
    if ON_ZERO_GPU:  # pragma: no cover - only on Spaces
        import multiprocessing
        global _MANAGER
        try:
            _MANAGER
        except NameError:
            _MANAGER = multiprocessing.Manager()
        return _MANAGER.Queue()
    return queue.Queue()


def stream_slots(max_streams: int):
    """The slots the page's and the API's streams share: a stream computes frames only while it holds one and a
    settled stream gives its slot to whoever waits (semantic_draw.sharing.Slots). None on ZeroGPU, whose GPU
    processes cannot share them: there Gradio's concurrency limit bounds the streams."""
    return None if ON_ZERO_GPU else Slots(max_streams)


def make_workers(model, *, generate_duration: int = 120, stream_duration: int = 300, slots=None):
    """The two GPU functions, bound to the shared, read-only model (a closure: ZeroGPU must not pickle it)."""

    @GPU(duration=generate_duration)
    def generate(scene, seed: int, method: str, regions: str = "latent"):
        items: queue.Queue = queue.Queue()
        last = [0.0]

        def callback(info):
            now = time.monotonic()
            if now - last[0] >= PREVIEW_EVERY_S or info.step + 1 == info.steps:
                last[0] = now
                items.put(("preview", info.step, info.steps, info.preview()))

        def run():
            try:
                items.put(("done", model.generate(scene, seed=int(seed), method=method, regions=regions,
                                                  callback=callback)))
            except BaseException as e:  # handed to the caller's thread
                items.put(("error", e))

        worker = threading.Thread(target=run, name="semantic-draw-generate", daemon=True)
        worker.start()
        while True:
            item = items.get()
            if item[0] == "error":
                raise item[1]
            yield item
            if item[0] == "done":
                return

    @GPU(duration=stream_duration)
    def stream(scene, seed: int, edits, time_limit: float | None, every_frame: bool = False,
               frames: int | None = None, regions: str = "latent"):
        """The events of one stream run (StreamSession.run), until stopped, out of time or `frames` frames. Unless
        `every_frame`, a settled stream computes nothing until the next edit: a stream nobody edits costs no GPU
        time."""
        with model.stream(scene, seed=int(seed), regions=regions) as session:
            yield from session.run(edits, time_limit=time_limit, frames=frames, every_frame=every_frame, slots=slots)

    return generate, stream
