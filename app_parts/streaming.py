"""The live stream: Start / Stop, the frames and the status under them, the live edits that reach a running stream,
and the /stream API.

A run: the Start click (`toggle`, no queue) bumps the session's run id and hands it to `stream_ui` (queued, limited
to max_streams at once), which builds the first scene and pulls the events of the GPU worker (semantic_draw's
`StreamSession.run`: frames, settling, time limit) until the run id changes (Stop, a new Start, a closed tab) or the
time limit. Every edit on the page meanwhile goes to the worker's edit queue
as a new scene (`edit_canvas`, `edit_fields`) or seed (`edit_seed`): the stream never restarts for an edit.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

from semantic_draw import OptionError, ResourceError, Scene, SemanticDrawError

from . import canvas as cv
from .config import START, STOP
from .files import api_palette
from .page import Page
from .palette import build_scene
from .session import SessionState, friendly
from .work import edit_queue

TICK_S = 0.5  # while nothing new comes, the status is refreshed at most this often


def frame_file(folder: Path, n: int, image) -> str:
    """A stream frame as a PNG of its own. Gradio caches a file by its content, atomically; handing it the PIL image
    instead would rewrite one cache file for equal frames while a client may be downloading it."""
    path = folder / f"frame-{n % 4}.png"
    image.save(path)
    return str(path)


def status_text(event, frame: int, new: bool, notes: list[str]) -> str:
    """The line under a running stream, from its newest semantic_draw.StreamEvent."""
    if event.kind == "waiting":
        place = "next" if event.position == 1 else f"number {event.position} in line"
        text = f"**Waiting for a free stream slot** (other users are streaming) · you are {place}"
    elif new or event.fps > 0:
        cost = f" · {event.views} views per frame" if event.views else ""
        text = f"**Streaming** · {event.fps:.1f} frames/s{cost} · frame {frame}"
    else:
        text = f"**Streaming** · frames/s: settled, waiting for your next edit · frame {frame}"
    return text + "".join(f"  \n⚠ {x}" for x in notes)


class Streaming:
    def __init__(self, ui: Page, work):
        self.ui, self.work = ui, work   # work: the GPU stream generator of app_parts.work.make_workers

    # ---------------------------------------------------------------- Start / Stop and the frames
    def toggle(self, st: SessionState):
        ui = self.ui
        if st.streaming:
            st.stop_stream()
            return {ui.stream_btn: gr.Button(START), ui.token: None}
        return {ui.stream_btn: gr.Button(STOP), ui.token: st.start_stream()}

    def sync_button(self, st: SessionState):
        return gr.Button(STOP if st.streaming else START)

    def frames(self, st: SessionState, run: int, scene: Scene, seed, edits, count: int | None = None,
               regions: str = "latent"):
        """(frame or None, the newest StreamEvent, frames shown) of one stream run, until stopped or out of time.
        None means "nothing new" (the picture settled, or the stream waits for a slot): those come at most every
        TICK_S. With `count` (the API), every computed frame is sent and the run ends after that many."""
        run_dir = Path(tempfile.mkdtemp(prefix="stream-"))
        work = self.work(scene, int(seed or 0), edits, self.ui.cfg.stream_time_limit or None,
                         every_frame=count is not None, frames=count, regions=regions or "latent")
        shown, last_tick = 0, 0.0
        try:
            for event in work:
                if st.run != run or not st.streaming:
                    break
                if event.kind == "warning":
                    gr.Warning(event.message)
                elif event.kind == "timeout":
                    gr.Info(event.message)
                elif event.kind == "frame":
                    shown += 1
                    yield frame_file(run_dir, shown, event.image), event, shown
                else:  # "same", "idle" or "waiting": nothing new to show, only the status (at most every TICK_S)
                    now = time.monotonic()
                    if now - last_tick >= TICK_S:
                        last_tick = now
                        yield None, event, shown
        finally:
            work.close()
            edits.put(("stop", None))
            shutil.rmtree(run_dir, ignore_errors=True)
            with st.lock:
                if st.run == run:
                    st.streaming = False
                    st.edits = None

    @friendly
    def stream_ui(self, data):
        ui, cfg = self.ui, self.ui.cfg
        st: SessionState = data[ui.state]
        run = data[ui.token]
        if run is None or run != st.run or not st.streaming:
            yield gr.skip()  # the click stopped the stream (a generator that yields nothing clears outputs)
            return
        with st.lock:  # edits made since Start (while this run waited for a free slot) are newer than `data`
            if run != st.run or not st.streaming:
                return
            try:
                st.canvas = st.canvas or ui.read(data)
                st.fields = st.fields or ui.fields(data)
                scene, st.notes = self.live_scene(st)
                scene = scene.validate(max_side=cfg.max_stream_side, multiple=ui.multiple)
            except SemanticDrawError as e:
                st.streaming = False
                if isinstance(e, ResourceError):  # the canvas is over the stream's limit
                    raise ResourceError(f"{e} (The stream takes canvases up to {cfg.max_stream_side} px a side; "
                                        "use Generate for larger ones.)") from None
                raise
            st.edits = edits = edit_queue()
        for frame, event, n in self.frames(st, run, scene, data[ui.seed], edits, regions=data[ui.regions]):
            text = status_text(event, n, frame is not None, st.notes)
            yield {ui.output: frame, ui.status: text} if frame is not None else {ui.status: text}
        yield {ui.status: "Stream stopped.", ui.stream_btn: gr.Button(START)}

    # ---------------------------------------------------------------- live edits
    def live_scene(self, st: SessionState) -> tuple[Scene, list[str]]:
        brushes, bg, neg = st.fields
        return build_scene(brushes, st.canvas, bg, neg, multiple=self.ui.multiple, strict=False)

    def push_edit(self, st: SessionState, canvas: cv.Canvas | None = None, fields: tuple | None = None):
        """Store the newer part of the page and send the scene of the newest of both to the running stream."""
        with st.lock:
            if not st.streaming:
                return
            st.canvas = canvas or st.canvas
            st.fields = fields or st.fields
            if st.edits is None or st.canvas is None or st.fields is None:
                return  # the run has not started yet; it starts from what was stored here
            try:
                scene, st.notes = self.live_scene(st)
            except SemanticDrawError as e:
                st.notes = [str(e)]
                return
            st.edits.put(("scene", scene))

    def edit_canvas(self, data):
        st: SessionState = data[self.ui.state]
        canvas = self.ui.read(data)
        st.note_canvas(canvas)
        if st.streaming:
            self.push_edit(st, canvas=canvas)

    def edit_fields(self, data):
        if data[self.ui.state].streaming:
            self.push_edit(data[self.ui.state], fields=self.ui.fields(data))

    def edit_seed(self, st: SessionState, value):
        if st.streaming and st.edits is not None:
            st.edits.put(("seed", int(value or 0)))

    # ---------------------------------------------------------------- API
    @friendly
    def api_stream(self, palette, seed, frames, regions="latent"):
        """Stream `frames` frames of a palette file (.zip); yields each frame as it comes."""
        cfg = self.ui.cfg
        frames = int(frames or 0)
        if not 1 <= frames <= cfg.max_stream_frames:
            raise OptionError(f"Ask for between 1 and {cfg.max_stream_frames} frames, got {frames}.")
        scene = api_palette(palette, cfg.max_stream_side, self.ui.multiple)
        st = SessionState()
        run = st.start_stream()
        for frame, _, _ in self.frames(st, run, scene, seed, edit_queue(), count=frames, regions=regions):
            yield frame
