"""The GPU work of the page, wrapped for ZeroGPU (`spaces.GPU`; a no-op anywhere else).

Both kinds of work are generators of plain, picklable items so that they can run in ZeroGPU's worker process:
  one-shot: ("preview", step, steps, image) ... ("done", image)
  stream:   ("frame", image) when the picture changed, ("same", None) when a computed frame equals the last one,
            ("tick", None) while the settled stream waits for an edit, ("warning", text) when a live edit was refused, ("timeout", seconds) at the end.
A running stream reads live edits from its `edits` queue: ("scene", Scene), ("seed", int) or ("stop", None).
"""
from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time

from semantic_draw import SemanticDrawError

log = logging.getLogger("semantic_draw.app")

try:  # Hugging Face ZeroGPU; off Spaces `spaces.GPU` returns the function unchanged
    import spaces
    GPU = spaces.GPU
except Exception:  # pragma: no cover - the package is optional
    def GPU(fn=None, **_):
        return fn if fn is not None else (lambda f: f)

ON_ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")
PREVIEW_EVERY_S = 0.25  # at most this often an intermediate preview goes to the page
IDLE_WAIT_S = 0.25      # a settled stream checks this often for edits and stop requests
SETTLED_AFTER = 2       # identical frames in a row after which a stream counts as settled


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


def make_workers(model, *, generate_duration: int = 120, stream_duration: int = 300):
    """The two GPU functions, bound to the shared, read-only model (a closure: ZeroGPU must not pickle it)."""

    @GPU(duration=generate_duration)
    def generate(scene, seed: int, method: str):
        items: queue.Queue = queue.Queue()
        last = [0.0]

        def callback(info):
            now = time.monotonic()
            if now - last[0] >= PREVIEW_EVERY_S or info.step + 1 == info.steps:
                last[0] = now
                items.put(("preview", info.step, info.steps, info.preview()))

        def run():
            try:
                items.put(("done", model.generate(scene, seed=int(seed), method=method, callback=callback)))
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
    def stream(scene, seed: int, edits, time_limit: float | None, every_frame: bool = False):
        """Frames until stopped or out of time. Unless `every_frame`, a frame equal to the previous one is not sent
        (("same", None) instead) and, once the picture has settled, no more are computed until the next edit:
        a stream nobody edits costs no GPU time."""
        session = model.stream(scene, seed=int(seed))
        start = time.monotonic()
        last, same, idle = None, 0, False
        try:
            while True:
                todo = []
                try:
                    todo.append(edits.get(timeout=IDLE_WAIT_S) if idle else edits.get_nowait())
                    while True:
                        todo.append(edits.get_nowait())
                except queue.Empty:
                    pass
                if any(kind == "stop" for kind, _ in todo):
                    return
                if time_limit and time.monotonic() - start >= time_limit:
                    yield ("timeout", time_limit)
                    return
                scenes = [payload for kind, payload in todo if kind == "scene"]
                seeds = [payload for kind, payload in todo if kind == "seed"]
                if scenes:  # only the newest edit matters
                    try:
                        session.update(scenes[-1])
                    except SemanticDrawError as e:
                        yield ("warning", str(e))
                if seeds:
                    session.set_seed(int(seeds[-1]))
                if todo:
                    idle, same = False, 0
                if idle:
                    yield ("tick", None)
                    continue
                frame = session.next_frame()
                if every_frame:
                    yield ("frame", frame)
                    continue
                digest = hashlib.blake2b(frame.tobytes(), digest_size=16).digest()
                same = same + 1 if digest == last else 0
                last = digest
                idle = same >= SETTLED_AFTER
                yield ("frame", frame) if same == 0 else ("same", None)
        finally:
            session.close()

    return generate, stream
