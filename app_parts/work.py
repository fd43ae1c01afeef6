"""The GPU work of the page, wrapped for ZeroGPU (`spaces.GPU`; a no-op anywhere else).

Both kinds of work are generators of plain, picklable items so that they can run in ZeroGPU's worker process:
  one-shot: ("step", step, steps, image or None) ... ("done", image); closing the generator stops the generation
            at its next step
  stream:   the semantic_draw.StreamEvent items of `StreamSession.run` (small dataclasses: kind, frame count,
            frames/s, PIL image, message) as LiveEvents: with the seconds the newest frame took to compute
            (`StreamSession.stats()["seconds_last_frame"]`).
A running stream reads live edits from its `edits` queue: ("scene", Scene), ("seed", int) or ("stop", None).
Both take the name of the model to run as `model=` (app_parts.models.Models: every model stays resident, loaded
once; None: the first).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, fields

from semantic_draw import StreamEvent
from semantic_draw.sharing import Slots

from .models import Models

log = logging.getLogger("semantic_draw.app")

try:  # Hugging Face ZeroGPU; off Spaces `spaces.GPU` returns the function unchanged
    import spaces
    GPU = spaces.GPU
except Exception:  # pragma: no cover - the package is optional
    def GPU(fn=None, **_):
        return fn if fn is not None else (lambda f: f)

def spaces_module():
    """Hugging Face's spaces package where it is installed, else None."""
    try:
        import spaces as module
    except Exception:  # pragma: no cover - the package is optional
        return None
    return module


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


@dataclass
class LiveEvent(StreamEvent):
    """A StreamEvent with the seconds its run's newest frame took to compute (the page's latency readout)."""
    seconds: float = 0.0

    @classmethod
    def of(cls, event: StreamEvent, seconds: float) -> "LiveEvent":
        return cls(**{f.name: getattr(event, f.name) for f in fields(event)}, seconds=seconds)


class Stopped(Exception):
    """Raised inside a one-shot generation whose caller went away (Stop, a closed tab): it ends at the next step."""


def make_workers(models, *, generate_duration: int = 120, stream_duration: int = 300, slots=None):
    """The two GPU functions, bound to the shared, read-only models (a closure: ZeroGPU must not pickle them).
    `models`: app_parts.models.Models (name -> SemanticDraw), or one SemanticDraw."""
    models = models if isinstance(models, Models) else Models(models)

    @GPU(duration=generate_duration)
    def generate(scene, seed: int, method: str, regions: str = "latent", model: str | None = None):
        chosen = models[model]
        items: queue.Queue = queue.Queue()
        last, stop = [0.0], threading.Event()

        def callback(info):
            if stop.is_set():
                raise Stopped()
            now = time.monotonic()
            show = now - last[0] >= PREVIEW_EVERY_S or info.step + 1 == info.steps
            if show:
                last[0] = now
            items.put(("step", info.step, info.steps, info.preview() if show else None))

        def run():
            try:
                items.put(("done", chosen.generate(scene, seed=int(seed), method=method, regions=regions,
                                                   callback=callback)))
            except Stopped:
                pass
            except BaseException as e:  # handed to the caller's thread
                items.put(("error", e))

        worker = threading.Thread(target=run, name="semantic-draw-generate", daemon=True)
        worker.start()
        try:
            while True:
                item = items.get()
                if item[0] == "error":
                    raise item[1]
                yield item
                if item[0] == "done":
                    return
        finally:
            stop.set()   # the caller closed the generator (Stop): the worker ends at its next step

    @GPU(duration=stream_duration)
    def stream(scene, seed: int, edits, time_limit: float | None, every_frame: bool = False,
               frames: int | None = None, regions: str = "latent", model: str | None = None):
        """The LiveEvents of one stream run (StreamSession.run), until stopped, out of time or `frames` frames.
        Unless `every_frame`, a settled stream computes nothing until the next edit: a stream nobody edits costs no
        GPU time."""
        with models[model].stream(scene, seed=int(seed), regions=regions) as session:
            for event in session.run(edits, time_limit=time_limit, frames=frames, every_frame=every_frame,
                                     slots=slots):
                yield LiveEvent.of(event, session.stats()["seconds_last_frame"])

    return generate, stream
