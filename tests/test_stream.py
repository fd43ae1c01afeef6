"""The stream: one batched model call per frame, live edits without re-filling, isolated sessions, memory."""
import gc
import math
import threading
import time
import weakref

import numpy as np
import pytest
import torch

from analytic import AnalyticBackbone
from scenes import rect_mask, rect_scene
from semantic_draw import OptionError, SemanticDraw, SemanticDrawError
from semantic_draw import SamplerSettings
from semantic_draw.schedule import LCM_REFERENCE_TIMESTEPS

T = len(LCM_REFERENCE_TIMESTEPS)


def model_and_backbone():
    backbone = AnalyticBackbone("sd15", channels=4)
    return SemanticDraw(backbone, SamplerSettings("lcm", timesteps=LCM_REFERENCE_TIMESTEPS)), backbone


def scene_with(n_layers, size=64, **kw):
    rects = [(f"thing {i}", (4 * i % 40, 2 * i, 4 * i % 40 + 24, 2 * i + 24)) for i in range(n_layers)]
    return rect_scene(size, size, rects, background_prompt="a meadow", **kw)


def frames(session, n):
    return [session.next_frame(output="latent") for _ in range(n)]


def noisy_model():
    """The analytic model with a seed-dependent wobble, so frames depend on the noise they carry."""
    model, backbone = model_and_backbone()
    plain = backbone.model_output
    backbone.model_output = lambda x, t, c, crops=None: plain(x, t, c, crops) + 0.05 * torch.tanh(x)
    return model, backbone


@pytest.mark.parametrize("layers", [1, 3, 8])
def test_one_model_call_per_frame_whatever_the_number_of_layers(layers):
    model, backbone = model_and_backbone()
    session = model.stream(scene_with(layers), seed=0)
    first = session.next_frame()
    assert first.size == (64, 64)
    backbone.calls.clear()
    frames(session, 6)
    assert len(backbone.calls) == 6
    # every non-empty (slot, layer) item of the slots in flight is in that one call; the entering latent's step
    # was made by the filling frame and is the same every frame
    in_flight = int(session.plan.nonempty[torch.arange(1, T)].sum())
    assert backbone.calls == [in_flight] * 6 and in_flight >= T - 1
    assert model.calls == T + 6
    session.edit_layer(0, prompt="a lighthouse")      # a new plan: the next frame computes every slot, once
    backbone.calls.clear()
    frames(session, 3)
    assert backbone.calls == [int(session.plan.nonempty[torch.arange(T)].sum()), in_flight, in_flight]


@pytest.mark.parametrize("mode", ["none", "full", "self"])
def test_the_entering_latents_step_is_made_once_per_plan_and_seed_and_frames_are_the_same(mode):
    """A new latent enters at step 0 every frame with the same noise until the plan or the seed changes, so the
    session keeps that step's result: frames equal those of a session that computes it every frame."""
    model, _ = noisy_model()
    scene = scene_with(3)
    kept = model.stream(scene, seed=4, guidance=3.0, guidance_mode=mode)
    every = model.stream(scene, seed=4, guidance=3.0, guidance_mode=mode)
    for k in range(3 * T):
        if k == T:
            for s in (kept, every):
                s.edit_layer(1, prompt="a lighthouse", mask_blur=3.0)
        if k == 2 * T:
            for s in (kept, every):
                s.set_seed(9)
        every._entry = None                          # computed again inside the frame
        assert torch.equal(kept.next_frame(output="latent"), every.next_frame(output="latent")), k


def test_frames_are_reproducible_for_a_seed_and_differ_across_seeds():
    model, _ = noisy_model()
    a = frames(model.stream(scene_with(2), seed=1), 6)
    b = frames(model.stream(scene_with(2), seed=1), 6)
    c = frames(model.stream(scene_with(2), seed=2), 6)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.allclose(a[-1], c[-1])


def test_live_edits_change_the_next_frames_without_refilling_and_restoring_brings_frames_back():
    model, backbone = noisy_model()
    scene = scene_with(2)
    session = model.stream(scene, seed=0)
    before = frames(session, T + 2)
    calls = model.calls
    session.edit_layer(1, prompt="a lighthouse")
    edited = frames(session, T + 2)
    assert model.calls == calls + T + 2              # one call per frame: nothing was re-filled
    assert not torch.allclose(edited[-1], before[-1])
    assert not torch.allclose(edited[0], before[-1])  # the edit shows up in the very next frame
    session.update(scene)                            # back to where it was
    restored = frames(session, T + 2)
    assert torch.allclose(restored[-1], before[-1], atol=1e-5)

    mask = rect_mask(64, 64, (30, 30, 60, 60))
    session.edit_layer(0, mask=mask)
    moved = frames(session, T)
    assert not torch.allclose(moved[-1], before[-1])


def test_edits_recompute_only_what_changed():
    model, _ = model_and_backbone()
    session = model.stream(scene_with(3), seed=0)
    session.next_frame()
    encoded, computed = session.prompts.encoded, session.masks_computed
    session.edit_layer(2, prompt="a red kite")            # one new prompt, no mask work
    assert session.prompts.encoded == encoded + 1 and session.masks_computed == computed
    session.edit_layer(2, prompt="thing 2")               # back to a cached prompt: nothing encoded
    assert session.prompts.encoded == encoded + 1
    session.edit_layer(0, mask_blur=3.0)                  # the bottom brush: only its masks
    assert session.masks_computed == computed + 1
    session.edit_layer(2, mask_strength=0.7)              # the top brush: only its masks
    assert session.masks_computed == computed + 2
    # brushes 0 / 1 / 2 (top) at rows x cols 0-24 x 0-24 / 4-28 x 2-26 / 8-32 x 4-28: a layer is covered where a
    # later one is painted, and only the covered part of a layer's own mask changes its masks
    session.edit_layer(2, mask=rect_mask(64, 64, (50, 50, 60, 60)))  # the top moves off the brushes: it, the
    assert session.masks_computed == computed + 2 + 3                 # background and brush 1 (uncovered)
    # (brush 0 keeps its masks: where the old top covered it, brush 1 covers it still)
    session.edit_layer(2, mask=rect_mask(64, 64, (10, 10, 20, 20)))  # back over brush 1, inside it: it, the
    assert session.masks_computed == computed + 5 + 3                 # background and brush 1; brush 0 again not
    grown = rect_mask(64, 64, (10, 10, 20, 20)) | rect_mask(64, 64, (50, 50, 60, 60))
    session.edit_layer(2, mask=grown)            # a stroke away from every brush: the top only (the background's
    assert session.masks_computed == computed + 8 + 1    # covered part is the first edit's again: in the cache)
    session.edit_layer(2, mask=grown | rect_mask(64, 64, (0, 0, 3, 3)))   # a stroke on brush 0 alone: it and
    assert session.masks_computed == computed + 9 + 2                 # brush 0 (brush 0 covers the background there)


def test_add_remove_and_reorder_layers_live():
    model, backbone = model_and_backbone()
    scene = scene_with(2)
    session = model.stream(scene, seed=0)
    frames(session, 2)
    layers = list(scene.layers)
    extra = scene_with(3).layers[2]
    for new_layers in ([*layers, extra], layers[::-1], layers[:1]):
        backbone.calls.clear()
        session.update(type(scene)(64, 64, new_layers, scene.background))
        frames(session, 2)
        assert len(backbone.calls) == 2


def test_bad_updates_raise_and_the_stream_keeps_going():
    model, _ = model_and_backbone()
    scene = scene_with(2)
    session = model.stream(scene, seed=0)
    good = frames(session, T + 1)
    from semantic_draw import Background, Layer, Scene
    bad = [
        Scene(64, 64, [Layer("x", np.ones((32, 48), bool))], Background("meadow")),   # wrong mask shape
        Scene(64, 64, [], Background("")),                                             # nothing to draw
        Scene(128, 128, [Layer("x", np.ones((128, 128), bool))], Background("m")),    # another canvas size
    ]
    for scene_bad in bad:
        with pytest.raises(SemanticDrawError):
            session.update(scene_bad)
    with pytest.raises(SemanticDrawError, match="no layer"):
        session.edit_layer("nonexistent", prompt="x")
    with pytest.raises(SemanticDrawError, match="Unknown layer field"):
        session.edit_layer(0, colour="red")
    assert torch.allclose(session.next_frame(output="latent"), good[-1])


def test_sessions_are_isolated_interleaved_and_in_threads():
    model, _ = noisy_model()
    s1, s2 = scene_with(2), scene_with(3)
    alone1 = frames(model.stream(s1, seed=1), 8)
    alone2 = frames(model.stream(s2, seed=2), 8)
    a, b = model.stream(s1, seed=1), model.stream(s2, seed=2)
    inter1, inter2 = [], []
    for _ in range(8):
        inter1.append(a.next_frame(output="latent"))
        inter2.append(b.next_frame(output="latent"))
    assert all(torch.equal(x, y) for x, y in zip(alone1, inter1))
    assert all(torch.equal(x, y) for x, y in zip(alone2, inter2))

    results = {}

    def run(key, scene, seed):
        results[key] = frames(model.stream(scene, seed=seed), 8)

    threads = [threading.Thread(target=run, args=(k, s, seed)) for k, s, seed in ((1, s1, 1), (2, s2, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(x, y) for x, y in zip(alone1, results[1]))
    assert all(torch.equal(x, y) for x, y in zip(alone2, results[2]))


def live_tensors():
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is torch.Tensor or type(o) is torch.nn.Parameter)


def test_memory_stays_flat_over_200_frames_with_edits_and_closing_frees_the_session():
    model, _ = model_and_backbone()
    scene = scene_with(3)
    session = model.stream(scene, seed=0, mask_cache_size=6, prompt_cache_size=6)

    def edit_and_stream(start):
        for i in range(start, start + 200):
            if i % 5 == 0:
                session.edit_layer(i % 3, prompt=f"edit {i}", mask_blur=float(i % 7))
            session.next_frame(output="latent")

    edit_and_stream(0)          # fills the bounded caches
    baseline = live_tensors()
    edit_and_stream(200)        # 200 more frames, 40 more edits
    assert live_tensors() <= baseline + 4
    assert len(session.builder._masks) <= 6 and len(session.prompts._rows) <= 6

    ref = weakref.ref(session._inflight)
    session.close()
    gc.collect()
    assert ref() is None
    with pytest.raises(SemanticDrawError, match="closed"):
        session.next_frame()
    abandoned = model.stream(scene, seed=0)
    frames(abandoned, 2)
    ref = weakref.ref(abandoned._inflight)
    del abandoned
    gc.collect()
    assert ref() is None


def test_guidance_modes_in_the_stream():
    model, backbone = model_and_backbone()
    scene = scene_with(2)
    got = {}
    for mode in ("none", "full", "self"):
        session = model.stream(scene, seed=0, guidance=3.0, guidance_mode=mode)
        frames(session, 2)
        backbone.calls.clear()
        got[mode] = frames(session, 3)[-1]
        items = int(session.plan.nonempty[torch.arange(1, T)].sum())         # the slots in flight
        assert backbone.calls == [items * (2 if mode == "full" else 1)] * 3   # still one call per frame
    assert not torch.allclose(got["none"], got["full"])
    assert not torch.allclose(got["none"], got["self"])
    with pytest.raises(SemanticDrawError, match="guidance mode"):
        model.stream(scene, guidance_mode="loud")


def test_the_run_loop_applies_queued_edits_settles_and_stops():
    import queue
    model, _ = noisy_model()
    scene = scene_with(2)
    session = model.stream(scene, seed=0)
    edits = queue.Queue()
    run = session.run(edits, idle_wait=0.01)
    kinds = [next(run).kind for _ in range(3)]
    assert kinds == ["frame", "idle", "idle"]             # the filling frame is final: nothing more is computed
    calls = model.calls
    assert next(run).kind == "idle" and model.calls == calls and session.settled
    edited = scene_with(2)
    edited.layers[0].prompt = "a lighthouse"
    edits.put(("scene", scene_with(3)))
    edits.put(("scene", edited))                                              # the newest scene wins
    edits.put(("seed", 5))
    event = next(run)
    assert event.kind == "frame" and event.image.size == (64, 64) and event.frames == 2
    assert session.scene.layers[0].prompt == "a lighthouse" and len(session.scene.layers) == 2
    assert session.seed == 5 and model.calls == calls + 1
    kinds = [event.kind] + [next(run).kind for _ in range(T + 1)]
    assert kinds == ["frame"] * T + ["idle", "idle"]      # T frames after an edit, the slots' depth, then nothing
    assert model.calls == calls + T and session.settled
    edits.put(("scene", type(scene)(64, 64, [], scene.background.__class__(""))))   # nothing to draw: refused
    assert next(run).kind == "warning" and len(session.scene.layers) == 2
    edits.put(("stop", None))
    assert [e.kind for e in run if e.kind not in ("frame", "same", "idle")] == []   # ends without more events
    session.close()


@pytest.mark.parametrize("regions", ["latent", "attention"])
def test_a_stream_settles_on_its_final_picture(regions):
    """The frame a run settles on is the picture every later frame gives, and the one a new stream of the edited
    scene gives; the frames before it mix the slots' walks before and after the edit."""
    import queue
    model = SemanticDraw.from_preset("tiny-sd15")
    session = model.stream(scene_with(3), seed=2, regions=regions)
    slots = session.stats()["slots"]
    assert slots > 1
    edits = queue.Queue()
    run = session.run(edits, idle_wait=0.01)
    assert next(run).kind == "frame" and next(run).kind == "idle"
    edited = scene_with(3)
    edited.layers[1].mask = rect_mask(64, 64, (30, 30, 60, 60))
    edited.layers[2].prompt = "a red kite"
    edits.put(("scene", edited))
    shown = []
    for event in run:
        if event.kind == "idle":
            break
        assert event.kind == "frame"
        shown.append(np.asarray(event.image))
    assert len(shown) == slots and session.settled
    later = [np.asarray(session.next_frame()) for _ in range(2)]   # computed anyway: the same picture each time
    assert all(np.array_equal(f, shown[-1]) for f in later)
    def apart(a, b):
        return int(np.abs(a.astype(int) - b).max())
    with model.stream(edited, seed=2, regions=regions) as fresh:   # its filling frame: other batches, same picture
        assert apart(np.asarray(fresh.next_frame()), shown[-1]) <= 2
    assert apart(shown[0], shown[-1]) > 8                 # the first frames after the edit were not final yet
    session.close()


def test_a_run_without_edits_ends_once_settled_and_a_direct_edit_wakes_an_idle_one():
    import itertools
    import queue
    model, _ = noisy_model()
    with model.stream(scene_with(2), seed=0) as session:
        run = session.run(frames=10)                       # nothing can change the picture: the run ends
        events = list(itertools.islice(run, 50))
        assert [e.kind for e in events] == ["frame"] and next(run, None) is None
        run = session.run(queue.Queue(), idle_wait=0.01)   # with a queue it waits for edits, ...
        assert [next(run).kind for _ in range(2)] == ["frame", "idle"]
        session.edit_layer(0, prompt="a lighthouse")      # ... and an edit made on the session wakes it too
        assert next(run).kind == "frame"
        run.close()


@pytest.mark.parametrize("kwargs", [{"frames": 0}, {"frames": 1.5}, {"frames": "3"}, {"time_limit": -1},
                                    {"time_limit": math.nan}, {"time_limit": "3"}, {"idle_wait": -1},
                                    {"idle_wait": math.inf}, {"idle_wait": 1e300}, {"idle_wait": "x"},
                                    {"every_frame": "yes"}, {"edits": 5}, {"edits": [("seed", 1)]},
                                    {"slots": 3}])
def test_bad_run_arguments_are_refused_before_the_first_frame(kwargs):
    model, _ = model_and_backbone()
    with model.stream(scene_with(1), seed=0) as session:
        with pytest.raises(OptionError, match="run's"):
            session.run(**kwargs)                          # at the call, not at the first event
        assert session.frames == 0 and model.calls == 0
        assert next(session.run(frames=1)).kind == "frame"


def test_frames_per_second_leave_out_the_pauses():
    """A settled stream computes nothing until the next edit: that pause is no frame interval. After it the rate is
    the new frames' (the first frame of a burst reports the rate of the burst before)."""
    import queue
    model, _ = noisy_model()
    with model.stream(scene_with(2), seed=0) as session:
        edits = queue.Queue()
        run = session.run(edits, idle_wait=0.05)

        def burst():
            edits.put(("seed", session.seed + 1))
            events = []
            while (event := next(run)).kind != "idle":
                events.append(event)
            return events
        assert next(run).kind == "frame" and next(run).kind == "idle"
        first = burst()
        assert len(first) == T and first[-1].fps > 0
        time.sleep(1.5)                                   # a pause: no frames, only idle events
        second = burst()
        assert second[0].fps == first[-1].fps             # the burst before
        assert second[-1].fps > 20, [e.fps for e in second]   # T analytic frames, not T frames in 1.5 s
        run.close()


def test_a_stream_settles_when_equal_frames_are_not_equal_to_the_bit():
    """On a GPU the order of atomic additions (index_add_) changes from call to call, so a settled picture need not
    repeat to the bit: the stream settles by counting its slots' walks, not by comparing frames."""
    import queue
    model, backbone = model_and_backbone()
    plain = backbone.model_output
    jitter = torch.Generator().manual_seed(0)
    backbone.model_output = lambda x, t, c, crops=None: plain(x, t, c, crops) + 1e-3 * torch.randn(
        x.shape, generator=jitter)
    session = model.stream(scene_with(2), seed=0)
    edits = queue.Queue()
    run = session.run(edits, idle_wait=0.01)
    assert [next(run).kind for _ in range(2)] == ["frame", "idle"]
    edits.put(("seed", 3))
    kinds = [next(run).kind for _ in range(T + 1)]
    assert kinds == ["frame"] * T + ["idle"]


def test_naive_aggregation_never_settles():
    """The naive baseline draws new noise for every view of every frame: its frames keep changing."""
    model, _ = noisy_model()
    session = model.stream(scene_with(2), seed=0, aggregation="post")
    kinds = [e.kind for e in session.run(frames=2 * T, idle_wait=0.01)]
    assert len(kinds) == 2 * T and "idle" not in kinds and not session.settled
    assert kinds[2:] == ["frame"] * (2 * T - 2)   # the second finishes the filling frame's own walk: the same


def test_the_run_loop_reports_frames_per_second_and_ends_at_its_limits():
    model, _ = noisy_model()
    with model.stream(scene_with(2), seed=0) as session:
        events = list(session.run(frames=5, every_frame=True))
        assert [e.kind for e in events] == ["frame"] * 5 and [e.frames for e in events] == [1, 2, 3, 4, 5]
        assert events[-1].fps > 0 and events[0].fps == 0
        timed = list(session.run(time_limit=0.05, every_frame=True))
        assert timed[-1].kind == "timeout" and "time limit" in timed[-1].message
