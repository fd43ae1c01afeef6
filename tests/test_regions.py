"""The attention region layout (regions="attention", ALGORITHM.md section 11) on the tiny presets of all families."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import SD3Transformer2DModel

from scenes import fixture_scene, rect_mask, rect_scene
from semantic_draw import Background, Layer, OptionError, Scene, SemanticDraw
from semantic_draw.backbones.attention import (RegionCrossAttnProcessor, RegionJointAttnProcessor, joint_context,
                                               unet_context)
from semantic_draw.denoiser import Regions
from semantic_draw.tiny import build_tiny_pipeline

PRESETS = ["tiny-sd15", "tiny-sdxl", "tiny-sd3"]


@pytest.fixture(scope="module", params=PRESETS)
def model(request):
    return SemanticDraw.from_preset(request.param)


def latent(model, scene, **options):
    return model.generate(scene, seed=0, output="latent", **options)


# -- the layout against the scenes it must reproduce ------------------------------------------------------------------
def test_brushes_that_all_carry_the_background_prompt_give_the_plain_image(model):
    negative = "blurry"
    same = rect_scene(64, 96, [("a table", (8, 16, 56, 80)), ("a table", (0, 0, 32, 48), {"mask_blur": 2.0})],
                      background_prompt="a table", negative_prompt=negative)
    plain = Scene(64, 96, [], Background("a table"), negative_prompt=negative).validate()
    for options in ({}, {"guidance": 3.0}):          # CFG reads the negative prompts by the same rules
        want = latent(model, plain, bootstrap_steps=0, **options)           # the latent layout, one prompt
        got = latent(model, same, regions="attention", bootstrap_steps=0, **options)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_a_brush_over_the_whole_canvas_gives_the_scene_of_its_prompt(model):
    whole = rect_scene(64, 64, [("a red apple", (0, 0, 64, 64))], background_prompt="a table", mask_blur=0.0)
    alone = Scene(64, 64, [], Background("a red apple")).validate()
    torch.testing.assert_close(latent(model, whole, regions="attention"), latent(model, alone), rtol=1e-4, atol=1e-4)


def test_a_later_brush_wins_where_brushes_overlap(model):
    scene = rect_scene(64, 64, [("a red apple", (0, 0, 48, 48)), ("a blue cup", (16, 16, 64, 64))],
                       background_prompt="a table", mask_blur=0.0)
    plan = model.plan_builder(model.settings, model.step_options(), regions="attention").build(
        model.check_scene(scene))
    r = plan.regions
    apple, cup, table = (int(r.slot_of_layer[i]) for i in (1, 2, 0))
    overlap, apple_only, outside = (slice(3, 5), slice(3, 5)), (slice(0, 1), slice(0, 1)), (slice(7, 8), slice(0, 1))
    # At every step noisier than the cover alpha (a covered brush's strength) the brush on top has the overlap alone;
    # as in the latent layout, the covered one joins the mix only at the quietest steps.
    covered_steps = [i for i in range(r.weights.shape[0]) if plan.schedule.sigmas[i] > model.backbone.cover_alpha]
    assert covered_steps
    for w in r.weights[covered_steps]:
        assert torch.all(w[cup][overlap] == 1) and torch.all(w[apple][overlap] == 0)
        assert torch.all(w[apple][apple_only] == 1) and torch.all(w[cup][apple_only] == 0)
        assert torch.all(w[table][outside] == 1) and torch.all(w[table][overlap] == 0)


# -- the processors: each pixel's attention is that of its own prompt ----------------------------------------------
def two_regions(weights_hw, n=2, s=2, seed=0):
    h, w = weights_hw
    left = torch.zeros(n, s, h, w)
    left[:, 0, :, : w // 2] = 1
    left[:, 1, :, w // 2:] = 1
    return left


def test_unet_cross_attention_of_each_pixel_is_that_of_its_prompt_alone():
    for family in ("tiny-sd15", "tiny-sdxl"):
        model = SemanticDraw.from_preset(family)
        unet = model.backbone.denoiser
        attn = next(mod for name, mod in unet.named_modules() if name.endswith("attn2"))
        prompts = model.encode_prompts(["a red apple", "a blue cup"])["embeds"]          # [2, 77, D]
        g = torch.Generator().manual_seed(0)
        hidden = torch.randn(2, 8 * 8, attn.to_q.in_features, generator=g)
        cond = {"embeds": prompts[None]}
        if model.family == "sdxl":
            cond["pooled"] = torch.zeros(1, 2, 4)
        ctx = unet_context(Regions(two_regions((8, 8)), cond), (8, 8), torch.float32, "cpu")
        with torch.no_grad():
            mixed = RegionCrossAttnProcessor()(attn, hidden, prompts[:1].expand(2, -1, -1), regions=ctx)
            apple = RegionCrossAttnProcessor()(attn, hidden, prompts[0:1].expand(2, -1, -1))
            cup = RegionCrossAttnProcessor()(attn, hidden, prompts[1:2].expand(2, -1, -1))
        cols = torch.arange(64) % 8
        torch.testing.assert_close(mixed[:, cols < 4], apple[:, cols < 4], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mixed[:, cols >= 4], cup[:, cols >= 4], rtol=1e-5, atol=1e-6)
        # Identical prompts in two slots, any weights: the single prompt's attention.
        same = {"embeds": prompts[:1].repeat(2, 1, 1)[None], **({"pooled": cond["pooled"]} if "pooled" in cond else {})}
        weights = torch.rand(2, 2, 8, 8, generator=g) + 0.1
        ctx = unet_context(Regions(weights, same), (8, 8), torch.float32, "cpu")
        with torch.no_grad():
            torch.testing.assert_close(RegionCrossAttnProcessor()(attn, hidden, prompts[:1].expand(2, -1, -1),
                                                                  regions=ctx), apple, rtol=1e-5, atol=1e-6)


def test_slots_mixed_in_groups_give_the_mix_of_all_at_once(monkeypatch):
    from semantic_draw.backbones import attention
    g = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(*shape, generator=g) for shape in ((3, 2, 16, 8), (3, 5, 2, 7, 8),
                                                                         (3, 5, 2, 7, 8)))
    weights = attention.normalized(torch.rand(3, 5, 4, 4, generator=g)).flatten(2)[:, :, None, :, None]
    whole = attention.mixed_attention(query, key, value, weights)
    alone = sum(weights[:, k] * torch.nn.functional.scaled_dot_product_attention(query, key[:, k], value[:, k])
                for k in range(5))
    torch.testing.assert_close(whole, alone, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(attention, "MIX_ELEMENTS", 2 * query.numel())      # two slots a group: 2 + 2 + 1
    torch.testing.assert_close(attention.mixed_attention(query, key, value, weights), whole, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(attention, "MIX_ELEMENTS", 1)                      # one slot a group, past the budget
    torch.testing.assert_close(attention.mixed_attention(query, key, value, weights), whole, rtol=1e-5, atol=1e-6)


def test_sd3_image_tokens_attend_to_their_own_prompt_alone():
    model = SemanticDraw.from_preset("tiny-sd3")
    transformer = model.backbone.denoiser
    attn = transformer.transformer_blocks[0].attn
    cond = model.encode_prompts(["a red apple", "a blue cup"])
    with torch.no_grad():
        text = transformer.context_embedder(cond["embeds"])                      # [2, T, inner]
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 4 * 4, attn.to_q.in_features, generator=g)           # a 8x8 latent view: 4x4 patches
    ctx = joint_context(Regions(two_regions((8, 8), n=1), {"embeds": cond["embeds"][None],
                                                           "pooled": cond["pooled"][None]}),
                        (8, 8), 2, torch.float32, "cpu")
    with torch.no_grad():
        mixed, _ = RegionJointAttnProcessor()(attn, image, text.reshape(1, -1, text.shape[-1]), regions=ctx)
        apple, _ = RegionJointAttnProcessor()(attn, image, text[0:1])
        cup, _ = RegionJointAttnProcessor()(attn, image, text[1:2])
    length = ctx.bias.shape[-2]                       # 16 image tokens + 2 prompts' tokens
    assert ctx.bias.is_contiguous() and ctx.bias.shape[-1] % 8 == 0 and ctx.bias.shape[-1] > length   # padded rows
    cols = torch.arange(16) % 4
    torch.testing.assert_close(mixed[:, cols < 2], apple[:, cols < 2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixed[:, cols >= 2], cup[:, cols >= 2], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(apple, cup)


def test_sd3_without_t5_keeps_one_of_the_equal_zero_tokens_and_computes_the_same():
    """The 256 zero T5 rows of a prompt are one row with the bias log(256): same network output, 78 tokens a
    prompt instead of 333. Two joint blocks, so that the kept row is also updated as a query (the last block only
    reads the text). With T5 loaded nothing is dropped."""
    pipe = build_tiny_pipeline("sd3")
    torch.manual_seed(0)
    pipe.transformer = SD3Transformer2DModel.from_config({**pipe.transformer.config, "num_layers": 2})
    model = SemanticDraw.from_pipeline(pipe)
    backbone = model.backbone
    backbone.install_region_attention()
    cond = model.encode_prompts(["a red apple", "a blue cup", "grass", "sky"])
    g = torch.Generator().manual_seed(0)
    weights = torch.rand(3, 4, 8, 8, generator=g)
    weights[:, 1, :4] = 0                              # a prompt absent from part of the view
    weights[0, 2] = 0                                  # and one absent from a whole item
    x = torch.randn(3, backbone.latent_channels, 8, 8, generator=g)
    t = torch.tensor([900.0, 500.0, 100.0])
    t5 = backbone.t5_max_length

    def output(embeds, repeated=None):
        regions = Regions(weights, {"embeds": embeds[None], "pooled": cond["pooled"][None]})
        context = (backbone.region_context(regions, (8, 8)) if repeated is None else
                   joint_context(regions, (8, 8), 2, backbone.dtype, backbone.device, repeated))
        return context.tokens.shape[1], backbone.model_output(x, t, None, regions=context)

    (n_all, every), (n_kept, kept) = output(cond["embeds"], repeated=0), output(cond["embeds"])
    assert n_all == 4 * (77 + t5) and n_kept == 4 * 78
    torch.testing.assert_close(kept, every, rtol=1e-5, atol=1e-5)
    _, once = output(cond["embeds"][:, :78], repeated=0)      # the zero row kept once, without its weight
    assert not torch.allclose(once, every, atol=1e-3)
    tail = cond["embeds"].clone()                             # any repeated row, not just zeros
    tail[:, 77:] = 3 * torch.randn(4, 1, tail.shape[-1], generator=g)
    torch.testing.assert_close(output(tail)[1], output(tail, repeated=0)[1], rtol=1e-5, atol=1e-5)
    with_t5 = SemanticDraw.from_pipeline(build_tiny_pipeline("sd3", with_t5=True)).backbone
    cond = with_t5.encode_prompts(["a red apple", "a blue cup"])
    context = with_t5.region_context(Regions(two_regions((8, 8), n=1), {k: v[None] for k, v in cond.items()}),
                                     (8, 8))
    assert context.tokens.shape[1] == 2 * (77 + t5)


# -- cost, streams, edits ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("brushes", [1, 3, 8])
def test_items_per_frame_after_bootstrapping_are_one_per_slot_and_tile(brushes):
    model = SemanticDraw.from_preset("tiny-sd15")
    rects = [(f"thing {i}", (4 * (i % 4), 6 * (i // 4), 4 * (i % 4) + 40, 6 * (i // 4) + 40)) for i in range(brushes)]
    for size, tiles in ((64, 1), (128, 9)):
        scene = rect_scene(size, size, rects, background_prompt="a meadow")
        for boot in (0, 1):
            with model.stream(scene, seed=0, regions="attention", bootstrap_steps=boot) as session:
                for _ in range(3):
                    session.next_frame(output="latent")
                steady = session.stats()             # the slots in flight, all past bootstrapping: one view each
                slots = steady["slots"]
                assert steady["calls_last_frame"] == 1 and steady["regions"] == "attention"
                assert steady["items_last_frame"] == (slots - 1) * tiles, (size, boot, steady)
                session.edit_layer(0, prompt="a new thing")
                session.next_frame(output="latent")  # an edit: every slot, the bootstrapped one's brushes alone
                stats = session.stats()
                boot_items = int(session.plan.nonempty[0, :session.plan.layers].sum()) if boot else 0
                assert stats["calls_last_frame"] == 1
                assert stats["items_last_frame"] == (slots - boot) * tiles + boot_items, (size, boot, stats)
            with model.stream(scene, seed=0, bootstrap_steps=boot) as latent_session:
                latent_session.next_frame(output="latent")
                latent_session.next_frame(output="latent")
                assert latent_session.stats()["items_last_frame"] > steady["items_last_frame"]


def test_attention_streams_follow_live_edits_and_come_back(model):
    scene = rect_scene(64, 64, [("a red apple", (8, 8, 40, 40)), ("a blue cup", (24, 24, 64, 64))],
                       background_prompt="a table")
    session = model.stream(scene, seed=0, regions="attention")
    T = session.schedule.steps
    before = [session.next_frame(output="latent") for _ in range(T + 1)]
    session.edit_layer(1, prompt="a lighthouse")
    edited = [session.next_frame(output="latent") for _ in range(T + 1)]
    assert not torch.allclose(edited[-1], before[-1], atol=1e-6)
    session.update(scene)
    restored = [session.next_frame(output="latent") for _ in range(T + 1)]
    torch.testing.assert_close(restored[-1], before[-1], rtol=1e-5, atol=1e-5)
    again = model.stream(scene, seed=0, regions="attention")
    assert torch.equal(again.next_frame(output="latent"), before[0])     # sessions do not leak into each other
    session.close()


def test_photo_editing_keeps_the_photo_outside_the_brushes():
    model = SemanticDraw.from_preset("tiny-sd15")
    photo = np.zeros((64, 64, 3), np.uint8)
    photo[..., 1] = 150
    scene = Scene(64, 64, [Layer("a cat", rect_mask(64, 64, (16, 16, 48, 48)), mask_blur=0.0)],
                  Background("", image=photo)).validate()
    z = latent(model, scene, regions="attention")
    plan = model.plan_builder(model.settings, model.step_options()).build(scene)
    torch.testing.assert_close(z[..., :1, :], plan.z_bg[..., :1, :])           # a row far from the brush
    assert not torch.allclose(z[..., 3:5, 3:5], plan.z_bg[..., 3:5, 3:5])
    assert model.generate(scene, seed=0, regions="attention").size == (64, 64)


def test_large_canvases_tile_in_the_attention_layout_too(model):
    scene = fixture_scene("irworobongdo").resized(48, 128)
    calls = model.calls
    image = model.generate(scene, seed=0, regions="attention", callback=None)
    assert image.size == (128, 48) and model.calls - calls == model.schedule(model.settings).steps


def test_an_unknown_layout_is_an_option_error(model):
    with pytest.raises(OptionError, match="region layout"):
        model.generate(rect_scene(64, 64), seed=0, regions="pixels")


def test_sd3_bootstrapped_brushes_take_the_plain_path_in_a_call_of_their_own():
    model = SemanticDraw.from_preset("tiny-sd3")
    scene = rect_scene(64, 64, [("a red apple", (8, 8, 40, 40)), ("a blue cup", (24, 24, 64, 64))],
                       background_prompt="a table")
    with model.stream(scene, seed=0, regions="attention") as session:
        for _ in range(3):
            session.next_frame(output="latent")
        steady = session.stats()                 # the slots in flight: whole views only, one call
        session.edit_layer(0, prompt="a green apple")
        session.next_frame(output="latent")      # every slot: the bootstrapped brushes in a call of their own
        stats = session.stats()
        boot = int(session.plan.nonempty[0, :session.plan.layers].sum())
    assert steady["calls_last_frame"] == 1 and steady["items_last_frame"] == steady["slots"] - 1
    assert boot >= 1 and stats["calls_last_frame"] == 2 and stats["items_last_frame"] == (stats["slots"] - 1) + boot
    # the split changes nothing but the calls: the solo items' predictions are those of the regions path
    whole = model.generate(scene, seed=0, regions="attention", output="latent")
    model.backbone.region_solo_apart = False
    try:
        together = model.generate(scene, seed=0, regions="attention", output="latent")
    finally:
        del model.backbone.region_solo_apart
    torch.testing.assert_close(whole, together, rtol=1e-4, atol=1e-4)
