"""The page's stream loop reads its events ahead (app_parts.ahead.ReadAhead): the next frame is computed while the
last one goes to the page, stale frames are skipped, the API's frames all arrive, and Stop ends the producer.

Run: python -m pytest tests/test_ahead.py -v
"""
from __future__ import annotations

import contextvars
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app_parts.ahead import ReadAhead  # noqa: E402
from app_parts.streaming import supersedes  # noqa: E402

WAIT = 20.0   # s a test waits for something that must happen (it fails, instead of hanging, when it does not)


@dataclass
class Ev:
    kind: str
    n: int = 0


def test_the_next_event_is_computed_while_the_consumer_holds_the_last():
    asked = [threading.Event() for _ in range(3)]

    def events():
        for i in range(3):
            asked[i].set()      # the producer started on event i
            yield Ev("frame", i)

    ahead = ReadAhead(events())
    first = next(ahead)
    # Iterated in turn, event 1 would only be asked for after this consumer asks: here it is asked for meanwhile.
    assert asked[1].wait(WAIT), "the producer did not go on while the consumer held an event"
    assert first.n == 0 and [e.n for e in ahead] == [1, 2]


def test_a_slow_consumer_sees_the_newest_frame_and_every_warning_in_order():
    gate = threading.Event()
    script = [Ev("frame", 1), Ev("same", 2), Ev("frame", 3), Ev("warning", 4), Ev("frame", 5), Ev("idle", 6),
              Ev("idle", 7), Ev("preparing", 8), Ev("waiting", 9)]
    done = threading.Event()

    def events():
        yield Ev("frame", 0)
        gate.wait(WAIT)         # the consumer holds frame 0 until everything else was produced
        yield from script
        done.set()

    ahead = ReadAhead(events(), supersedes=supersedes, depth=8)
    assert next(ahead).n == 0
    gate.set()
    assert done.wait(WAIT)
    got = [(e.kind, e.n) for e in ahead]
    # frames 1 and 3 were replaced by 5 before anyone saw them, the statuses by newer ones; the warning and
    # "preparing" stay, in their places
    assert got == [("warning", 4), ("frame", 5), ("preparing", 8), ("waiting", 9)]
    assert ahead.dropped == 5


def test_without_supersedes_nothing_is_dropped_and_the_producer_stays_at_most_depth_ahead():
    made = [0]

    def events():
        while True:
            made[0] += 1
            yield Ev("frame", made[0])

    ahead = ReadAhead(events(), depth=2)
    got = [next(ahead).n for _ in range(5)]
    time.sleep(0.3)             # room to run away, were it unbounded
    assert made[0] <= 5 + 2 + 1  # taken + pending + the one in hand
    got += [next(ahead).n for _ in range(20)]
    assert got == list(range(1, 26))
    ahead.close()
    assert not ahead.running


def test_an_error_reaches_the_consumer_after_the_events_before_it():
    def events():
        yield Ev("frame", 1)
        yield Ev("frame", 2)
        raise RuntimeError("out of memory on the device")

    ahead = ReadAhead(events(), depth=4)
    assert [next(ahead).n, next(ahead).n] == [1, 2]
    with pytest.raises(RuntimeError, match="out of memory"):
        next(ahead)
    with pytest.raises(StopIteration):
        next(ahead)


def test_the_producer_runs_in_the_callers_context():
    # ZeroGPU's spaces.GPU reads the Gradio request from a context variable when its generator starts
    request = contextvars.ContextVar("request")
    request.set("the visitor's request")

    def events():
        yield Ev("frame", 0)
        yield Ev(request.get("none"), 1)

    assert [e.kind for e in ReadAhead(events())] == ["frame", "the visitor's request"]


def test_close_stops_a_producer_waiting_for_room_and_closes_its_events_in_its_own_thread():
    closed_in = []

    def events():
        try:
            for i in range(10 ** 9):
                yield Ev("frame", i)
        finally:
            closed_in.append(threading.current_thread().name)

    ahead = ReadAhead(events(), depth=1, name="producer-under-test")
    assert next(ahead).n == 0
    time.sleep(0.1)             # the producer now waits for room
    ahead.close(timeout=WAIT)
    assert not ahead.running and closed_in == ["producer-under-test"]
    with pytest.raises(StopIteration):
        next(ahead)


def test_close_during_a_slow_event_ends_the_producer_after_that_event():
    started, finish, closed = threading.Event(), threading.Event(), threading.Event()

    def events():
        try:
            yield Ev("frame", 0)
            started.set()
            finish.wait(WAIT)   # a frame computing on the GPU
            yield Ev("frame", 1)
            yield Ev("frame", 2)
        finally:
            closed.set()

    ahead = ReadAhead(events(), depth=4)
    next(ahead)
    assert started.wait(WAIT)
    closer = threading.Thread(target=ahead.close, kwargs={"timeout": WAIT})
    closer.start()
    finish.set()
    closer.join(WAIT)
    assert closed.is_set() and not ahead.running


def test_the_page_loop_shows_the_newest_frame_then_the_settled_picture_as_a_png(tmp_path):
    """Streaming.frames with a stand-in GPU worker that makes frames faster than this consumer takes them."""
    from PIL import Image

    from app_parts.session import SessionState
    from app_parts.streaming import Streaming
    from app_parts.work import LiveEvent
    from app_parts.work import edit_queue

    release, settled, stopped = threading.Event(), threading.Event(), threading.Event()

    def work(scene, seed, edits, time_limit, **_):
        try:
            for i in range(1, 6):
                yield LiveEvent("frame", i, 30.0, Image.new("RGB", (8, 8), (40 * i, 0, 0)), seconds=0.01)
                if i == 1:
                    release.wait(WAIT)   # frames 2-5 come while the page still handles frame 1
            yield LiveEvent("idle", 5, 0.0)
            settled.set()                # (resumed: the producer has queued frame 5 and the idle event)
            while True:                  # settled: idle until stopped
                time.sleep(0.01)
                yield LiveEvent("idle", 5, 0.0)
        finally:
            stopped.set()

    class Cfg:
        stream_time_limit = 10

    class Ui:
        cfg = Cfg()

    streaming = Streaming(Ui(), work)
    st = SessionState()
    run = st.start_stream()
    loop = streaming.frames(st, run, "m", None, 0, edit_queue())
    first, _ = next(loop)
    assert first.endswith(".jpg")
    release.set()
    assert settled.wait(WAIT)            # the worker made frames 2-5 and settled meanwhile
    shown = []
    for frame, live in loop:
        if frame is not None:
            shown.append((frame, live.shown, Image.open(frame).convert("RGB").getpixel((4, 4))))
        if frame is not None and frame.endswith(".png"):
            break
    loop.close()
    assert stopped.wait(WAIT)
    # frames 2-4 were never shown: the page went from frame 1 to frame 5, then frame 5 again without loss
    assert [(Path(f).suffix, n) for f, n, _ in shown] == [(".jpg", 2), (".png", 2)]
    assert shown[1][2] == (200, 0, 0) and abs(shown[0][2][0] - 200) <= 8


def test_the_page_loop_benchmark_runs_both_modes():
    """bench/page_loop.py on a small canvas, both networks, a few frames: the table has a row of figures each."""
    from bench.page_loop import main

    text = main(["--sizes", "64", "--frames", "3", "--repeats", "1", "--networks", "real,5"])
    rows = [line for line in text.splitlines() if line.startswith("| 64x64")]
    assert len(rows) == 2 and "5 ms device time" in rows[1]
    for row in rows:
        figures = [float(cell.strip().rstrip("x")) for cell in row.strip("|").split("|")[2:]]
        assert len(figures) == 7 and all(f > 0 for f in figures), row
