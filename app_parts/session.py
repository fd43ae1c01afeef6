"""Per-browser-session state and the translation of failures into messages for the page."""
from __future__ import annotations

import functools
import inspect
import logging
import threading
import traceback

import gradio as gr
import torch

from semantic_draw import SemanticDrawError

log = logging.getLogger("semantic_draw.app")


class SessionState:
    """Everything one visitor owns: their running stream (if any), the canvas it last saw, their result history.

    Created per session by gr.State(SessionState); the model itself is shared and never stored here."""

    def __init__(self):
        self.run = 0              # id of the current stream run; bumping it ends the old one
        self.streaming = False
        self.edits = None         # queue to the running stream worker
        # The running stream's view of the page, kept up to date by the live edits. The canvas and the brush fields
        # arrive by separate events (the editor's value is large and uploads slowly, so a canvas event may land
        # after a newer field event): each event updates only its own part, and every scene sent to the stream is
        # built from the newest of both, under `lock`.
        self.lock = threading.Lock()
        self.canvas = None        # Canvas of the newest editor value
        self.fields = None        # (brushes, background prompt, negative prompt) of the newest palette fields
        self.notes: list[str] = []   # what the newest scene left out, shown under the stream
        self.painted = None       # Canvas of the newest editor value with the masks (streaming or not); see note_canvas
        self.history: list[tuple] = []   # (image, caption), newest first
        self.stream_model = None  # name of the model the running stream draws with
        self.edited_at = None     # when the newest edit went to the running stream (until a frame shows it)
        self.stopped_by = ""      # why the newest stream run ended early ("Stop", "model")
        self.removed = None       # (index, Brush, mask or None, (height, width)) of the newest removed brush (undo)
        self.stop_generation = threading.Event()   # set by "Stop generating"; a new Generate makes a fresh one
        self.error = ""           # the message of a failed Generate or stream, for `report_error`

    def __deepcopy__(self, memo):
        # gr.State deep-copies its initial value for every visitor: a fresh state each (a lock cannot be copied)
        return SessionState()

    def start_stream(self) -> int:
        self.stop_stream()
        with self.lock:
            self.run += 1
            self.streaming = True
            self.canvas = self.fields = None
            self.notes = []
            self.edited_at = None
            self.stopped_by = ""
        return self.run

    def stop_stream(self, why: str = "") -> None:
        if self.streaming and why:
            self.stopped_by = why
        self.streaming = False
        if self.edits is not None:
            try:
                self.edits.put(("stop", None))
            except Exception:  # a closed manager queue at shutdown
                pass
        self.edits = None

    def note_canvas(self, canvas) -> None:
        """Remember the painting. An editor value that lost every mask together with a change of background or size
        is a photo upload (the editor drops its layers then), not the user's erasing: it is not remembered, so that
        the masks can be put back on the photo."""
        before = self.painted
        same_ground = before is not None and (before.height, before.width) == (canvas.height, canvas.width) and (
            (before.background is None) == (canvas.background is None))
        if before is None or same_ground or any(m.any() for m in canvas.masks):
            self.painted = canvas

    def add_result(self, image, caption: str, limit: int) -> list[tuple]:
        self.history.insert(0, (image, caption))
        del self.history[limit:]
        return list(self.history)


def close_session(state) -> None:
    """gr.State delete callback: the tab closed or the session expired; stop its GPU work."""
    if isinstance(state, SessionState):
        state.stop_stream()


def describe(error: BaseException) -> str:
    """A message for the page; details of unexpected errors go to the server log only."""
    if isinstance(error, torch.OutOfMemoryError):
        return ("The GPU ran out of memory. Try a smaller canvas, fewer brushes, or the one-shot mode "
                "instead of the stream; the app is still running.")
    if isinstance(error, SemanticDrawError):   # written for the user (ResourceError: with its own advice)
        return str(error)
    log.error("unexpected error\n%s", "".join(traceback.format_exception(error)))
    first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return (f"Something went wrong on the server ({type(error).__name__}{': ' + first if first else ''}). "
            "The app is still running; please try again.")


def quiet(fn):
    """For page-only handlers (no GPU): a failure is one warning toast with a readable message and the page keeps what
    it showed. (A raised gr.Error would also mark every output of the event with a red "Error" badge that hides it.)"""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as e:
            gr.Warning(str(e.message))
        except Exception as e:
            gr.Warning(describe(e))
        return gr.skip()
    return call


def held(fn):
    """For the page's Generate and stream generators (`fn(self, data, request)`): a failure ends the run, its message
    waits in the visitor's SessionState and `report_error`, chained after the event with no outputs, shows it as one
    error toast; the output, the status and the history keep what they showed."""
    @functools.wraps(fn)
    def gen(self, data, *args, **kwargs):    # after `data`: what Gradio adds (the gr.Request)
        try:
            yield from fn(self, data, *args, **kwargs)
        except Exception as e:
            data[self.ui.state].error = str(e.message) if isinstance(e, gr.Error) else describe(e)
            yield {self.ui.status: "Nothing more was made: see the message."}
    return gen


def report_error(st: SessionState) -> None:
    """Chained after Generate and the stream: the failure they left (if any) as one error toast."""
    if isinstance(st, SessionState) and st.error:
        message, st.error = st.error, ""
        raise gr.Error(message, print_exception=False)


def friendly(fn):
    """Turn every exception of a handler (function or generator) into a gr.Error with a readable message."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as e:
                raise gr.Error(describe(e), print_exception=False) from None
        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:
            raise gr.Error(describe(e), print_exception=False) from None
    return call
