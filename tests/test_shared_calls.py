"""Frames of several sessions in one network call (share_calls=True): who joins whom, that every caller gets its own
rows back, and that one caller's failure stays its own."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from analytic import AnalyticBackbone
from scenes import rect_scene
from semantic_draw import OptionError, SemanticDraw
from semantic_draw.denoiser import Serialized, Wrapper
from semantic_draw.shared_calls import SharedCalls
from semantic_draw.sharing import FairLock

TWO_BRUSHES = [("a red apple", (8, 8, 40, 40)), ("a blue cup", (24, 24, 60, 60))]


def _together(model, work):
    """Run each of ``work`` (callables) in a thread of its own while the test holds the model lock, and let go only
    once all of them wait for it: whoever gets the lock then finds the others' calls pending. Returns their results
    and the network calls made meanwhile; the pool's ``joined`` and ``callers`` count from zero for each run."""
    out = [None] * len(work)
    model._lock.acquire()
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, work[i]())) for i in range(len(work))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while model.shared.pending() < len(work) and time.monotonic() < deadline:
        time.sleep(0.001)
    calls = model.calls
    model.shared.joined = model.shared.callers = 0
    model._lock.release()
    for t in threads:
        t.join(30)
    return out, model.calls - calls


class Slow(Wrapper):
    """A network that takes a while, so that callers pile up behind it."""

    def predict(self, views):
        time.sleep(0.005)
        return self.inner.predict(views)


def _started(model, scenes, seeds):
    """Streams past their filling frame (a steady frame is one network call)."""
    sessions = [model.stream(s, seed=k) for s, k in zip(scenes, seeds)]
    for s in sessions:
        s.next_frame(output="latent")
    return sessions


@pytest.mark.parametrize("preset", ["tiny-sd15", "tiny-sdxl", "tiny-sd3"])
def test_frames_of_sessions_waiting_together_come_from_one_call_and_equal_their_own(preset):
    shared = SemanticDraw.from_preset(preset, share_calls=True)
    alone = SemanticDraw.from_preset(preset)            # the same weights: presets are seeded
    scenes = [rect_scene(64, 64), rect_scene(64, 64, TWO_BRUSHES[:1]), rect_scene(64, 64, TWO_BRUSHES[1:])]
    sessions = _started(shared, scenes, [0, 1, 2])
    solo = _started(alone, scenes, [0, 1, 2])
    own = [s.next_frame(output="latent") for s in solo]
    shared.shared.max_items = 64                        # room for all three frames
    frames, calls = _together(shared, [lambda s=s: s.next_frame(output="latent") for s in sessions])
    assert calls == 1 and shared.shared.joined == 1 and shared.shared.callers == 3
    for frame, mine in zip(frames, own):            # each caller got its own rows (the seeds differ)
        torch.testing.assert_close(frame, mine, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(frames[0], frames[1])
    for s, mine in zip(sessions, solo):             # a session's stats still count its own call and items
        assert s.stats()["calls_last_frame"] == 1
        assert s.stats()["items_last_frame"] == mine.stats()["items_last_frame"]


def test_one_shot_steps_join_stream_frames_and_the_image_is_unchanged():
    """A one-shot among two busy streams (real threads): its steps are served with their frames, and it is the
    image it makes alone."""
    scene = rect_scene(64, 64, TWO_BRUSHES)
    expected = SemanticDraw.from_preset("tiny-sd15").generate(scene, seed=3, output="latent")
    model = SemanticDraw.from_preset("tiny-sd15", share_calls=True)
    model.shared.max_items = 64
    model.network = Slow(model.network)
    done, result = threading.Event(), []

    def stream(seed):
        with model.stream(rect_scene(64, 64), seed=seed) as s:
            while not done.is_set():
                s.next_frame(output="latent")

    streams = [threading.Thread(target=stream, args=(k,)) for k in range(2)]
    for t in streams:
        t.start()
    time.sleep(0.2)
    model.shared.joined = 0
    result.append(model.generate(scene, seed=3, output="latent"))
    joined = model.shared.joined
    done.set()
    for t in streams:
        t.join(30)
    assert joined >= 1
    torch.testing.assert_close(result[0], expected, rtol=1e-5, atol=1e-5)


def test_calls_that_cannot_join_are_served_one_at_a_time():
    model = SemanticDraw.from_preset("tiny-sd15", share_calls=True)
    small, large = rect_scene(64, 64), rect_scene(64, 128)            # two view shapes
    sessions = _started(model, [small, large], [0, 0])
    _, calls = _together(model, [lambda s=s: s.next_frame(output="latent") for s in sessions])
    assert calls == 2 and model.shared.joined == 0
    attention = model.stream(small, seed=0, regions="attention")      # a context of its own prompts
    attention.next_frame(output="latent")
    plain = _started(model, [small], [1])[0]
    _, calls = _together(model, [lambda: attention.next_frame(output="latent"),
                                 lambda: plain.next_frame(output="latent")])
    assert calls == 2 and model.shared.joined == 0


def test_joined_calls_stay_within_max_items():
    model = SemanticDraw.from_preset("tiny-sd15", share_calls=True)
    model.shared.max_items = 6
    sessions = _started(model, [rect_scene(64, 64)] * 3, [0, 1, 2])    # 3 slots in flight x 2 layers: 6 views
    _, calls = _together(model, [lambda s=s: s.next_frame(output="latent") for s in sessions])
    assert calls == 3 and model.shared.joined == 0
    model.shared.max_items = 12
    _, calls = _together(model, [lambda s=s: s.next_frame(output="latent") for s in sessions])
    assert calls == 2 and model.shared.joined == 1


class FailsAbove(Wrapper):
    """Out of memory for batches of more than ``limit`` views; a ValueError for a view whose input is NaN."""

    def __init__(self, inner, limit):
        super().__init__(inner)
        self.limit = limit

    def predict(self, views):
        if len(views) > self.limit:
            raise torch.OutOfMemoryError("injected: the joined batch does not fit")
        if torch.isnan(views.x).any():
            raise ValueError("injected: a caller's bad input")
        return self.inner.predict(views)


def test_a_joined_call_that_fails_is_retried_one_caller_at_a_time_and_errors_stay_their_own():
    model = SemanticDraw.from_preset("tiny-sd15", share_calls=True)
    alone = SemanticDraw.from_preset("tiny-sd15")
    scenes = [rect_scene(64, 64), rect_scene(64, 64, TWO_BRUSHES[:1])]
    own = [s.next_frame(output="latent") for s in _started(alone, scenes, [0, 1])]
    model.network = failing = FailsAbove(model.network, limit=6)       # each frame alone fits, both do not
    sessions = _started(model, scenes, [0, 1])
    frames, calls = _together(model, [lambda s=s: s.next_frame(output="latent") for s in sessions])
    assert calls == 3 and model.shared.joined == 0       # the joined try (out of memory), then each frame alone
    for frame, mine in zip(frames, own):
        torch.testing.assert_close(frame, mine, rtol=1e-5, atol=1e-5)
    failing.limit = 64
    sessions[1]._inflight[0] = float("nan")                           # one caller's call now fails on its own
    results = []

    def frame_or_error(s):
        try:
            return s.next_frame(output="latent")
        except ValueError as err:
            return err

    results, _ = _together(model, [lambda s=s: frame_or_error(s) for s in sessions])
    assert isinstance(results[1], ValueError) and isinstance(results[0], torch.Tensor)
    assert torch.isfinite(results[0]).all()


def test_busy_streams_join_calls_and_each_gets_exactly_its_own_frames():
    """Six streams on threads for real: calls join whenever several wait, and every session's frames are those it
    makes alone (the analytic backbone is exact at any batch size)."""
    def frames_of(model, scene, seed, n):
        with model.stream(scene, seed=seed) as s:
            return [s.next_frame(output="latent") for _ in range(n)]

    scenes = [rect_scene(64, 64, TWO_BRUSHES[k % 2:k % 2 + 1]) for k in range(6)]
    alone = SemanticDraw(AnalyticBackbone("sd15", channels=4))
    expected = [frames_of(alone, sc, k, 12) for k, sc in enumerate(scenes)]
    model = SemanticDraw(AnalyticBackbone("sd15", channels=4), share_calls=True)
    model.network = Slow(model.network)
    got = [None] * 6
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, frames_of(model, scenes[k], k, 12)))
               for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert model.shared.joined > 0 and model.shared.callers > model.shared.calls
    for mine, want in zip(got, expected):
        assert len(mine) == 12 and all(torch.equal(a, b) for a, b in zip(mine, want))


def test_share_calls_is_off_by_default_and_checked():
    model = SemanticDraw(AnalyticBackbone("sd15", channels=4))
    assert model.shared is None and isinstance(model.denoiser, Serialized)
    assert isinstance(SemanticDraw(AnalyticBackbone("sd15"), share_calls=True).denoiser, SharedCalls)
    with pytest.raises(OptionError):
        SemanticDraw(AnalyticBackbone("sd15"), share_calls="yes")


def test_a_waiter_leaves_the_line_once_its_work_is_done():
    lock, done, got = FairLock(), threading.Event(), []
    lock.acquire()
    t = threading.Thread(target=lambda: got.append(lock.acquire(until=done.is_set)))
    t.start()
    while lock.waiting() < 1:
        time.sleep(0.001)
    done.set()
    lock.release()              # wakes the waiter: its work is done, it goes without the lock
    t.join(5)
    assert got == [False] and lock.waiting() == 0 and lock.acquire(blocking=False)
    lock.release()
