"""Sharing one model fairly: a first-come-first-served lock, streams that take frames in turn while a one-shot runs,
and stream slots that settled streams give back."""
from __future__ import annotations

import queue
import threading
import time

import pytest
import torch

from analytic import AnalyticBackbone
from scenes import rect_scene
from semantic_draw import SemanticDraw
from semantic_draw.denoiser import Wrapper
from semantic_draw.sharing import FairLock, Slots


def test_the_fair_lock_serves_waiters_in_order_and_is_reentrant():
    lock, order = FairLock(), []
    lock.acquire()
    threads = []
    for i in range(5):
        t = threading.Thread(target=lambda i=i: (lock.acquire(), order.append(i), lock.release()))
        t.start()
        threads.append(t)
        while lock.waiting() < i + 1:      # each joins the line before the next one starts
            time.sleep(0.001)
    with lock:                            # re-entrant for the holder
        pass
    lock.release()
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3, 4]
    assert lock.acquire(timeout=0.1) and not _other_thread_gets(lock)
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def _other_thread_gets(lock) -> bool:
    got = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=0.05)))
    t.start()
    t.join()
    return got[0]


class Slow(Wrapper):
    """The network takes a while and notes whose call it served."""

    def __init__(self, inner, log):
        super().__init__(inner)
        self.log = log

    def predict(self, views):
        time.sleep(0.01)
        self.log.append(threading.current_thread().name)
        return self.inner.predict(views)


def test_streams_take_frames_in_turn_while_a_long_one_shot_runs():
    model = SemanticDraw(AnalyticBackbone("sd15", channels=4))
    log = []
    model.network = Slow(model.network, log)
    scene = rect_scene(64, 64)
    stop = threading.Event()
    frames = {}

    def stream(name):
        with model.stream(scene, seed=0) as session:
            frames[name] = 0
            while not stop.is_set():
                session.next_frame(output="latent")
                frames[name] += 1

    def one_shot():
        model.generate(scene, seed=0, method="multidiffusion", output="latent")   # 50 steps, 100 calls with CFG
        stop.set()

    threads = [threading.Thread(target=stream, args=(n,), name=n) for n in ("s1", "s2")]
    threads.append(threading.Thread(target=one_shot, name="oneshot"))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert stop.is_set()
    # The one-shot's 100 calls did not shut the streams out: they were served in turn between its steps.
    both = [i for i, n in enumerate(log) if n == "oneshot"]
    runs = _longest_runs(log[both[0]:both[-1] + 1])         # while the one-shot ran
    assert runs["s1"] <= 2 and runs["s2"] <= 2, runs
    assert min(frames.values()) >= 20, frames
    assert abs(frames["s1"] - frames["s2"]) <= 0.2 * max(frames.values()), frames   # each its fair share


def _longest_runs(names):
    best, current, last = {}, 0, None
    for n in names:
        current = current + 1 if n == last else 1
        best[n] = max(best.get(n, 0), current)
        last = n
    return best


def test_a_settled_stream_gives_its_slot_to_a_waiting_one():
    model = SemanticDraw(AnalyticBackbone("sd15", channels=4))
    slots = Slots(1)
    scene = rect_scene(64, 64)
    first, second = model.stream(scene, seed=0), model.stream(scene, seed=1)
    edits1 = queue.Queue()
    run1 = first.run(edits1, slots=slots, idle_wait=0.01)
    kinds1 = [next(run1).kind for _ in range(3)]           # the filling frame is final: idle, the slot is free again
    assert kinds1 == ["frame", "idle", "idle"] and slots.held == 0
    edits1.put(("scene", rect_scene(64, 64, [("a blue cup", (8, 8, 40, 40))])))   # an edit: it wants a slot again
    assert next(run1).kind == "frame" and slots.held == 1
    run2 = second.run(queue.Queue(), slots=slots, idle_wait=0.01)
    event = next(run2)
    assert event.kind == "waiting" and event.position == 1   # next in line
    depth = first.stats()["slots"]
    kinds1 = [next(run1).kind for _ in range(depth)]        # the first settles again (T frames) and lets go
    assert kinds1[-1] == "idle" and "idle" not in kinds1[:-1]
    assert next(e for e in run2 if e.kind != "waiting").kind == "frame"
    run1.close()
    run2.close()
    assert slots.held == 0 and slots.waiting() == 0        # closing a run gives everything back


def test_the_apps_streams_share_slots_and_a_settled_tab_lets_an_api_stream_in():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from app_parts.work import make_workers
    model = SemanticDraw(AnalyticBackbone("sd15", channels=4))
    slots = Slots(1)
    _, stream = make_workers(model, slots=slots)
    scene = rect_scene(64, 64)
    tab = stream(scene, 0, queue.Queue(), None)                       # a page's stream, nobody edits it
    kinds = []
    while "idle" not in kinds:
        kinds.append(next(tab).kind)
    api = stream(scene, 1, queue.Queue(), 30.0, every_frame=True, frames=3)   # an API client's stream
    assert [e.kind for e in api] == ["frame"] * 3
    tab.close()
    assert slots.held == 0


def test_prompts_are_tokenized_outside_the_model_lock():
    model = SemanticDraw.from_preset("tiny-sd15")
    held = []
    tokenize = model.backbone.tokenize

    def spy(prompts):
        held.append(model._lock._owner == threading.get_ident())
        return tokenize(prompts)

    model.backbone.tokenize = spy
    model.generate(rect_scene(64, 64), seed=0)
    assert held and not any(held)
    direct = model.backbone.encode_prompts(["a red apple", "a cup", "a red apple"])
    via_tokens = model.backbone.encode_prompts(["a red apple", "a cup", "a red apple"],
                                              tokens=tokenize(["a red apple", "a cup", "a red apple"]))
    assert all(torch.equal(direct[k], via_tokens[k]) for k in direct)
