"""The live stream: Start / Stop, the frames and the status under them, the live edits that reach a running stream,
the restart when the model changes, and the /stream API.

A run: the Start click (`toggle`, no queue) bumps the session's run id and hands it to `stream_ui` (queued, limited
to max_streams at once), which builds the first scene and pulls the events of the GPU worker (semantic_draw's
`StreamSession.run`: frames, settling, time limit) until the run id changes (Stop, a new Start, a closed tab, another
model) or the time limit. Every edit on the page meanwhile goes to the worker's edit queue as a new scene
(`edit_canvas`, `edit_fields`) or seed (`edit_seed`): the stream never restarts for an edit.

How live it is shows under the output: frames/s, the seconds a frame takes to compute (the library's
`seconds_last_frame`), how long the newest edit took to reach the screen, the views a frame evaluates; before the first
frames "warming up" ("preparing the fast path" while a compiled network compiles a new shape), and "waiting for a
free stream slot" with the place in line while other users hold the GPU.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from semantic_draw import OptionError, ResourceError, Scene, SemanticDrawError

from . import canvas as cv
from .ahead import ReadAhead
from .config import START, STOP
from .files import api_palette
from .limits import check_brushes, check_text_fields
from .page import Page
from .palette import build_scene
from .session import SessionState, friendly, held
from .work import edit_queue

TICK_S = 0.5  # while nothing new comes, the status is refreshed at most this often
WARMING = ("**Starting the stream** · warming up: the first frames walk every step and take longest "
           "(a new brush or prompt is prepared the first time it is seen)…")


STATUS_KINDS = ("same", "idle", "waiting")   # events that only refresh the status line
READ_AHEAD = True  # the page's loop reads events from a thread of their own (app_parts.ahead); False: in turn


def supersedes(new, old) -> bool:
    """Whether a page that has not seen `old` yet can skip it now that `new` came: a newer frame replaces an older
    frame and any status, a newer status replaces an older status. Warnings, "preparing" and "timeout" stay."""
    if new.kind == "frame":
        return old.kind == "frame" or old.kind in STATUS_KINDS
    return new.kind in STATUS_KINDS and old.kind in STATUS_KINDS


JPEG_QUALITY = 90  # frames on the way to a settled picture: JPEG, 1 ms and ~70 KB at 512 px (PNG: 30-60 ms, ~400 KB)


def frame_file(folder: Path, n: int, image, lossless: bool = True) -> str:
    """A stream frame as a file of its own: PNG (``lossless``), or a JPEG for a frame that a newer one replaces
    soon. Gradio caches a file by its content, atomically; handing it the PIL image instead would rewrite one
    cache file for equal frames while a client may be downloading it."""
    if lossless:
        path = folder / f"frame-{n % 4}.png"
        image.save(path)
    else:
        path = folder / f"frame-{n % 4}.jpg"
        image.save(path, quality=JPEG_QUALITY)
    return str(path)


@dataclass
class Live:
    """What the status line under a running stream shows, from the newest StreamEvent."""
    event: object                 # the newest app_parts.work.LiveEvent (a semantic_draw.StreamEvent)
    shown: int = 0                # frames sent to the page
    seconds: float = 0.0          # seconds the newest frame took to compute (StreamSession.stats)
    edit_seconds: float | None = None   # how long the newest edit took to reach the screen


def status_text(live: Live, new: bool, notes: list[str]) -> str:
    """The line under a running stream."""
    event = live.event
    if event.kind == "preparing":
        said = (event.message or "").removeprefix("Preparing the fast path: ").rstrip(".")   # the stream's words
        text = f"**Preparing the fast path** · {said or 'compiling the network'}. Frames follow."
    elif event.kind == "waiting":
        place = "next" if event.position == 1 else f"number {event.position} in line"
        text = f"**Waiting for a free stream slot** (other users are streaming) · you are {place}"
    elif (new or event.fps > 0) and event.fps <= 0:
        text = f"**Streaming** · warming up (frames/s after the first frames) · frame {live.shown}"
    elif new or event.fps > 0:
        parts = [f"**Streaming** · {event.fps:.1f} frames/s"]
        if live.seconds:
            parts.append(f"{live.seconds * 1000:.0f} ms a frame")
        if live.edit_seconds is not None:
            parts.append(f"last edit on screen in {live.edit_seconds:.1f} s")
        if event.views:
            parts.append(f"{event.views} views per frame")
        text = " · ".join(parts + [f"frame {live.shown}"])
    else:
        took = f" (a frame took {live.seconds * 1000:.0f} ms)" if live.seconds else ""
        text = f"**Streaming** · settled, waiting for your next edit{took} · frame {live.shown}"
    return text + "".join(f"  \n⚠ {x}" for x in notes)


def stopped_text(last, why: str) -> str:
    """The line under a stream that ended: why it did."""
    if last is not None and last.kind == "timeout":
        return f"Stream stopped: {last.message}"
    if why == "Stop":
        return "Stream stopped (you pressed Stop)."
    return "Stream stopped."


class Streaming:
    def __init__(self, ui: Page, work):
        self.ui, self.work = ui, work   # work: the GPU stream generator of app_parts.work.make_workers

    # ---------------------------------------------------------------- Start / Stop and the frames
    def toggle(self, st: SessionState):
        ui = self.ui
        if st.streaming:
            st.stop_stream("Stop")
            return {ui.stream_btn: gr.Button(START), ui.token: None}
        return {ui.stream_btn: gr.Button(STOP), ui.token: st.start_stream()}

    def restart(self, st: SessionState):
        """After a model switch: a running stream ends and a new one starts on the new model (same palette)."""
        ui = self.ui
        if not st.streaming:
            return {ui.token: None}
        st.stop_stream("model")
        gr.Info("The stream restarts on the new model.")
        return {ui.stream_btn: gr.Button(STOP), ui.token: st.start_stream(), ui.status: WARMING}

    def sync_button(self, st: SessionState):
        return gr.Button(STOP if st.streaming else START)

    def frames(self, st: SessionState, run: int, model: str, scene: Scene, seed, edits, count: int | None = None,
               regions: str = "latent"):
        """(frame or None, Live) of one stream run, until stopped or out of time. None means "nothing new" (the
        picture settled, or the stream waits for a slot; those come at most every TICK_S) or the end (a "timeout"
        event). With `count` (the API), every computed frame is sent as a PNG and the run ends after that many;
        the page gets JPEG frames while the picture changes (a PNG costs more host time than an H100 takes for a
        frame) and the settled picture once more as a PNG, the frame of an "idle" event."""
        run_dir = Path(tempfile.mkdtemp(prefix="stream-"))
        work = self.work(scene, int(seed or 0), edits, self.ui.cfg.stream_time_limit or None,
                         every_frame=count is not None, frames=count, regions=regions or "latent", model=model)
        if READ_AHEAD:  # the next frame computes while this one goes to the page; the API drops none
            work = ReadAhead(work, supersedes=None if count is not None else supersedes)
        live, last_tick, lossless = Live(None), 0.0, count is not None
        newest = None   # the newest frame sent as a JPEG, until the picture settles
        try:
            for event in work:
                if st.run != run or not st.streaming:
                    break
                live.event = event
                if event.kind == "warning":
                    gr.Warning(event.message)
                elif event.kind == "timeout":
                    yield None, live
                elif event.kind == "frame":
                    live.shown += 1
                    live.seconds = event.seconds
                    edited = st.edited_at
                    if edited is not None:
                        live.edit_seconds, st.edited_at = time.monotonic() - edited, None
                    newest = None if lossless else event.image
                    yield frame_file(run_dir, live.shown, event.image, lossless), live
                elif event.kind == "idle" and newest is not None:   # settled: its picture without JPEG's loss
                    image, newest = newest, None
                    yield frame_file(run_dir, live.shown, image), live
                else:  # "same", "idle" or "waiting": nothing new to show, only the status (at most every TICK_S)
                    now = time.monotonic()
                    if now - last_tick >= TICK_S:
                        last_tick = now
                        yield None, live
        finally:
            edits.put(("stop", None))   # first: a run waiting for an edit ends at once
            work.close()
            shutil.rmtree(run_dir, ignore_errors=True)
            with st.lock:
                if st.run == run:
                    st.streaming = False
                    st.edits = None

    @held
    def stream_ui(self, data, request: gr.Request = None):
        st: SessionState = data[self.ui.state]
        run = data[self.ui.token]
        if run is None or run != st.run or not st.streaming:
            yield gr.skip()  # the click stopped the stream (a generator that yields nothing clears outputs)
            return
        try:
            counted = self.ui.visitors.hold(request, "stream")
        except ResourceError:   # the visitor's other tabs already run their share
            st.streaming = False
            raise
        with counted:
            yield from self._stream_ui(data, st, run)

    def _stream_ui(self, data, st: SessionState, run: int):
        ui, cfg = self.ui, self.ui.cfg
        yield {ui.status: WARMING}
        model = ui.model_name(data)
        with st.lock:  # edits made since Start (while this run waited for a free slot) are newer than `data`
            if run != st.run or not st.streaming:
                return
            try:
                st.stream_model = model
                st.canvas = st.canvas or ui.read(data)
                st.fields = st.fields or ui.fields(data)
                scene, st.notes = self.live_scene(st)
                scene = check_brushes(scene, cfg.max_brushes).validate(max_side=cfg.max_stream_side,
                                                                       multiple=ui.multiple(data))
            except SemanticDrawError as e:
                st.streaming = False
                too_big = st.canvas is not None and max(st.canvas.height, st.canvas.width) > cfg.max_stream_side
                if isinstance(e, ResourceError) and too_big:  # the canvas is over the stream's limit
                    raise ResourceError(f"{e} (The stream takes canvases up to {cfg.max_stream_side} px a side; "
                                        "use Generate for larger ones.)") from None
                raise
            st.edits = edits = edit_queue()
        last = None
        for frame, live in self.frames(st, run, model, scene, data[ui.seed], edits, regions=data[ui.regions]):
            last = live
            if live.event.kind == "timeout":
                continue
            text = status_text(live, frame is not None and live.event.kind == "frame", st.notes)
            yield {ui.output: frame, ui.status: text} if frame is not None else {ui.status: text}
        if st.run != run:
            return  # a newer run (another Start, another model) owns the status and the button now
        yield {ui.status: stopped_text(last and last.event, st.stopped_by),
               ui.stream_btn: gr.Button(START)}

    # ---------------------------------------------------------------- live edits
    def live_scene(self, st: SessionState) -> tuple[Scene, list[str]]:
        """The scene of the page as the stream sees it; the server's limits (brushes, text) are checked before a
        scene is built, so an edit beyond them never reaches the stream (it says why under the frames)."""
        brushes, bg, neg = st.fields
        check_text_fields(brushes, bg, neg, self.ui.cfg.max_brushes)
        multiple = self.ui.models.multiple(st.stream_model)
        return build_scene(brushes, st.canvas, bg, neg, multiple=multiple, strict=False)

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
            st.edited_at = st.edited_at or time.monotonic()
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
            st.edited_at = st.edited_at or time.monotonic()
            st.edits.put(("seed", int(value or 0)))

    # ---------------------------------------------------------------- API
    @friendly
    def api_stream(self, palette, seed, frames, regions="latent", model=None, request: gr.Request = None):
        """Stream `frames` frames of a palette file (.zip) with one of this server's models (default: the first);
        yields each frame as it comes."""
        cfg = self.ui.cfg
        frames = int(frames or 0)
        if not 1 <= frames <= cfg.max_stream_frames:
            raise OptionError(f"Ask for between 1 and {cfg.max_stream_frames} frames, got {frames}.")
        name = self.ui.models.name(model)
        with self.ui.visitors.hold(request, "stream"):
            scene = api_palette(palette, cfg.max_stream_side, self.ui.models.multiple(name), cfg.max_brushes,
                                cfg.max_upload_bytes)
            st = SessionState()
            run = st.start_stream()
            for frame, _ in self.frames(st, run, name, scene, seed, edit_queue(), count=frames, regions=regions):
                if frame is not None:
                    yield frame
