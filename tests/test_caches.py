"""What is made once and reused, and that reusing it changes no image: a stream's step layout (once per plan and
seed, not per frame), one-shot calls' prompt rows (a model-wide LRU bounded in bytes), the white canvas's latent (once
per model)."""
from __future__ import annotations

import threading

import pytest
import torch

from scenes import rect_scene
from semantic_draw import SemanticDraw
from semantic_draw import stream as stream_module
from semantic_draw.plan import PromptCache

THREE = [("a red apple", (8, 8, 40, 40)), ("a blue cup", (24, 24, 60, 60)), ("a pear", (0, 30, 30, 64))]


def test_a_stream_makes_its_step_layout_once_per_plan_and_seed(monkeypatch):
    made = []
    prepare = stream_module.prepare_step
    monkeypatch.setattr(stream_module, "prepare_step", lambda *a, **k: made.append(1) or prepare(*a, **k))
    model = SemanticDraw.from_preset("tiny-sd15")
    with model.stream(rect_scene(64, 64, THREE), seed=0) as session:
        for _ in range(6):
            session.next_frame(output="latent")
        assert len(made) == 1                          # the filling frame makes none; five steady frames share one
        session.edit_layer(1, prompt="a green cup")
        for _ in range(3):                             # a whole frame (made once), then steady ones
            session.next_frame(output="latent")
        assert len(made) == 2                          # a new plan, a new layout
        session.set_seed(7)
        for _ in range(3):
            session.next_frame(output="latent")
        assert len(made) == 3                          # new noise: the bootstrap background is noised anew


@pytest.mark.parametrize("preset", ["tiny-sd15", "tiny-sd3"])
def test_kept_layouts_and_entry_steps_give_the_frames_of_ones_made_every_frame(preset):
    model = SemanticDraw.from_preset(preset)
    scene = rect_scene(64, 64, THREE)
    for regions in ("latent", "attention"):
        kept, remade, every = (model.stream(scene, seed=3, regions=regions) for _ in range(3))
        for k in range(8):
            if k == 3:
                for s in (kept, remade, every):
                    s.edit_layer(0, prompt="a yellow apple", mask_blur=2.0)
            remade._steady = None                     # the layout made again inside the frame: the same batch
            every._entry = None                       # every slot computed: another batch, equal up to rounding
            frame = kept.next_frame(output="latent")
            assert torch.equal(frame, remade.next_frame(output="latent")), (regions, k)
            torch.testing.assert_close(frame, every.next_frame(output="latent"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny-sd15", "tiny-sdxl", "tiny-sd3"])
def test_a_stream_in_the_attention_layout_makes_its_network_context_once_per_layout(preset):
    model = SemanticDraw.from_preset(preset)
    made = []
    context = model.backbone.region_context
    model.backbone.region_context = lambda *a: made.append(1) or context(*a)
    with model.stream(rect_scene(64, 64, THREE), seed=0, regions="attention") as session:
        session.next_frame(output="latent")              # the filling frame: one context per step
        filling = len(made)
        for _ in range(4):
            session.next_frame(output="latent")
        assert len(made) == filling + 1                  # four steady frames, one context
        session.edit_layer(2, prompt="a plum")
        session.next_frame(output="latent")              # every slot: a context for this frame alone
        session.next_frame(output="latent")              # the slots in flight: the steady frames' context
        session.next_frame(output="latent")
        assert len(made) == filling + 3
    model.generate(rect_scene(64, 64, THREE), seed=0, regions="attention", output="latent")
    steps = model.schedule(model.settings).steps   # a one-shot keeps none: one context a step (SD3's first step has
    mixed = steps - 1 if model.family == "sd3" else steps   # only bootstrapped brushes, which need no context)
    assert len(made) == filling + 3 + mixed


def test_a_mask_edit_in_the_attention_layout_compares_no_prompt_rows(monkeypatch):
    """Which prompt rows share a slot follows from the prompts alone: a stroke keeps the answer (on a GPU every
    comparison of rows waits for the device), a new prompt asks again; the frames are those of a new session."""
    import numpy as np
    from semantic_draw import plan as plan_module
    model = SemanticDraw.from_preset("tiny-sd15")
    compared = []
    equal = torch.equal
    monkeypatch.setattr(plan_module.torch, "equal", lambda a, b: compared.append(1) or equal(a, b))
    scene = rect_scene(64, 64, THREE)
    with model.stream(scene, seed=0, regions="attention") as session:
        session.next_frame(output="latent")
        assert compared
        compared.clear()
        mask = np.array(session.scene.layers[2].mask)
        mask[40:48, 40:48] = True
        session.edit_layer(2, mask=mask)
        assert compared == []
        session.edit_layer(1, prompt=session.scene.layers[2].prompt)   # the same prompt as brush 3: one slot
        assert compared and session.plan.regions.slots == 3
        frames = [session.next_frame(output="latent") for _ in range(session.stats()["slots"] + 1)]
        with model.stream(session.scene, seed=0, regions="attention") as fresh:
            fresh_frames = [fresh.next_frame(output="latent") for _ in range(len(frames))]
        assert torch.allclose(frames[-1], fresh_frames[-1], atol=1e-5)


def test_one_shots_share_prompt_rows_masks_and_the_white_latent_and_images_stay_the_same(monkeypatch):
    import semantic_draw.plan as plan_module
    blurred = []
    soft_mask = plan_module.soft_mask
    monkeypatch.setattr(plan_module, "soft_mask", lambda *a: blurred.append(1) or soft_mask(*a))
    model = SemanticDraw.from_preset("tiny-sd15")
    scene = rect_scene(64, 64, THREE)
    first = model.generate(scene, seed=1, output="latent")
    encoded, whites, masks = model.caches.prompts.encoded, model.caches.whites_encoded, len(blurred)
    again = model.generate(scene, seed=1, output="latent")
    assert torch.equal(first, again)
    assert model.caches.prompts.encoded == encoded and model.caches.whites_encoded == whites == 1
    assert masks == 4 and len(blurred) == masks                  # background + 3 brushes, once
    model.generate(scene, seed=1, output="latent", quantize="continuous")
    assert len(blurred) == 2 * masks                             # other step masks: other settings, computed
    other = rect_scene(64, 64, THREE[:2] + [("a plum", (0, 30, 30, 64))])
    model.generate(other, seed=1, output="latent")
    assert model.caches.prompts.encoded == encoded + 1           # only the new prompt
    with model.stream(scene, seed=0) as session:                 # a stream keeps its own prompts...
        session.next_frame(output="latent")
        assert session.prompts is not model.caches.prompts and session.prompts.encoded > 0
    assert model.caches.whites_encoded == 1                      # ... and shares the white latent
    fresh = SemanticDraw.from_preset("tiny-sd15")                # the same weights, nothing cached
    assert torch.equal(fresh.generate(other, seed=1, output="latent"), model.generate(other, seed=1, output="latent"))


def test_one_shots_share_schedules_and_tilings_and_a_new_canvas_or_setting_gets_its_own(monkeypatch):
    import semantic_draw.model as model_module
    import semantic_draw.plan as plan_module
    built, tiled = [], []
    build_schedule, make_tiling = model_module.build_schedule, plan_module.make_tiling
    monkeypatch.setattr(model_module, "build_schedule", lambda *a, **k: built.append(1) or build_schedule(*a, **k))
    monkeypatch.setattr(plan_module, "make_tiling", lambda *a: tiled.append(a) or make_tiling(*a))
    model = SemanticDraw.from_preset("tiny-sd15")
    wide = rect_scene(64, 128, THREE)                            # two views
    first = model.generate(wide, seed=2, output="latent")
    assert len(built) == 1 and len(tiled) == 1
    assert torch.equal(model.generate(wide, seed=2, output="latent"), first)
    assert len(built) == 1 and len(tiled) == 1                   # the second one-shot: both from the model's caches
    model.generate(wide, seed=2, output="latent", steps=2)       # other settings: their own schedule
    model.generate(rect_scene(64, 64, THREE), seed=2, output="latent")   # another canvas: its own views
    assert len(built) == 2 and len(tiled) == 2
    fresh = SemanticDraw.from_preset("tiny-sd15")
    assert torch.equal(fresh.generate(wide, seed=2, output="latent"), first)
    assert model.schedule(model.settings) is model.schedule(model.settings)


def test_the_prompt_cache_is_bounded_in_bytes_and_count_and_keeps_the_newest():
    def encode(prompts):
        return {"embeds": torch.ones(len(prompts), 10, 25)}     # 1000 bytes a prompt
    cache = PromptCache(encode, max_size=100, max_bytes=5000)
    for k in range(20):
        cache.get([f"prompt {k}"])
    assert len(cache) == 5 and cache.bytes == 5000
    encoded = cache.encoded
    cache.get(["prompt 19", "prompt 15"])                        # still there
    assert cache.encoded == encoded
    cache.get(["prompt 0"])                                      # long gone
    assert cache.encoded == encoded + 1
    rows = cache.get([f"new {k}" for k in range(8)])             # one call larger than the budget still gets its rows
    assert rows["embeds"].shape[0] == 8 and cache.bytes <= 5000
    small = PromptCache(encode, max_size=3, max_bytes=10 ** 9)
    for k in range(10):
        small.get([f"p{k}"])
    assert len(small) == 3


def test_one_shots_on_threads_share_the_cache_and_each_gets_its_own_image():
    model = SemanticDraw.from_preset("tiny-sd15")
    scenes = [rect_scene(64, 64, [(f"thing {k}", (8, 8, 40, 40)), (f"thing {k + 1}", (24, 24, 60, 60))])
              for k in range(4)]
    alone = [SemanticDraw.from_preset("tiny-sd15").generate(s, seed=k, output="latent") for k, s in enumerate(scenes)]
    got = [None] * 4
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, model.generate(scenes[k], seed=k,
                                                                                     output="latent")))
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(torch.equal(a, b) for a, b in zip(got, alone))
    assert model.caches.prompts.encoded <= 4 * 3 + 3 and len(model.caches.prompts) == 5 + 1   # 5 things + the bg


def test_a_cached_mask_is_never_served_to_a_canvas_of_another_shape():
    """Masks with the same bytes in another shape (a background-only scene at 64x128, then at 128x64: both all
    ones) are different cache entries: each canvas gets its own image, the same as a fresh model's."""
    from semantic_draw import Background, Scene
    model = SemanticDraw.from_preset("tiny-sd15")
    wide, tall = (Scene(h, w, [], Background(prompt="a wall")) for (h, w) in ((64, 128), (128, 64)))
    first = model.generate(wide, seed=0)
    second = model.generate(tall, seed=0)
    assert first.size == (128, 64) and second.size == (64, 128)
    fresh = SemanticDraw.from_preset("tiny-sd15").generate(tall, seed=0)
    assert list(second.getdata()) == list(fresh.getdata())


def test_covers_are_the_union_of_the_masks_above_each_layer():
    """plan.covers against its definition (ALGORITHM.md 3.2) on random masks: layer p is covered where any layer
    above it is painted; the top layer has no cover."""
    import numpy as np
    from semantic_draw.plan import LayerSpec, covers
    rng = np.random.default_rng(0)
    masks = [rng.random((9, 13)) > 0.7 for _ in range(5)]
    got = covers([LayerSpec("p", "", m) for m in masks])
    assert got[-1] is None
    for p in range(4):
        want = np.zeros((9, 13), bool)
        for m in masks[p + 1:]:
            want |= m
        assert got[p].dtype == bool and got[p].flags.c_contiguous and np.array_equal(got[p], want)
    assert masks[0].sum() > 0 and not np.array_equal(got[0], got[3])   # the check is not a trivial one
