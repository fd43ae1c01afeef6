"""Backbone adapters on the tiny random pipelines: text, denoiser, VAE conventions, per family."""
from __future__ import annotations

import types

import pytest
import torch

from semantic_draw.backbones import ADAPTERS, SD3Backbone, SD15Backbone, SDXLBackbone, adapter_for, family_of
from semantic_draw.errors import SemanticDrawError
from semantic_draw.loading import backbone_from_pipeline, load_backbone
from semantic_draw.tiny import build_tiny_pipeline
from semantic_draw.schedule import build_schedule

FAMILIES = ("sd15", "sdxl", "sd3")


@pytest.fixture(scope="module", params=FAMILIES)
def backbone(request):
    return backbone_from_pipeline(build_tiny_pipeline(request.param))


def _views(bb, n=6, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, bb.latent_channels, size, size, generator=g)


def _timesteps(bb, n):
    sched = build_schedule({"sd15": "lcm", "sdxl": "euler", "sd3": "flash"}[bb.family], bb.scheduler_config,
                           bb.prediction_type, steps=4, spacing="trailing" if bb.family == "sdxl" else None)
    return sched.timesteps.float().repeat(n)[:n]


def test_adapter_for_picks_the_family():
    for family, cls in (("sd15", SD15Backbone), ("sdxl", SDXLBackbone), ("sd3", SD3Backbone)):
        pipe = build_tiny_pipeline(family)
        assert adapter_for(pipe) is cls is ADAPTERS[family]
        assert cls.family == family
        # A pipeline of another class is recognized by its components.
        parts = types.SimpleNamespace(transformer=getattr(pipe, "transformer", None), unet=getattr(pipe, "unet", None))
        assert family_of(parts) == family
    assert SD3Backbone.prediction_type == "flow" and SD3Backbone.size_multiple == 16
    with pytest.raises(SemanticDrawError, match="not a pipeline"):
        adapter_for(object())


def test_encode_prompts_shapes_order_and_determinism(backbone):
    cond = backbone.encode_prompts(["a red cat", "a blue dog", "a red cat"])
    expected = {"sd15": {"embeds"}, "sdxl": {"embeds", "pooled"}, "sd3": {"embeds", "pooled"}}[backbone.family]
    assert set(cond) == expected
    for value in cond.values():
        assert value.shape[0] == 3 and value.dtype == torch.float32 and torch.isfinite(value).all()
    assert torch.equal(cond["embeds"][0], cond["embeds"][2])          # same prompt, same row
    assert not torch.allclose(cond["embeds"][0], cond["embeds"][1])   # different prompts differ
    again = backbone.encode_prompts(["a blue dog"])
    for key in cond:
        torch.testing.assert_close(again[key][0], cond[key][1])       # batch-independent and deterministic
    if "pooled" in cond:
        assert not torch.allclose(cond["pooled"][0], cond["pooled"][1])


def test_embeddings_match_the_pipelines_encode_prompt(backbone):
    prompts = ["a red cat", "a blue dog"]
    pipe, cpu = backbone.pipe, torch.device("cpu")
    cond = backbone.encode_prompts(prompts)
    with torch.no_grad():
        if backbone.family == "sd15":
            embeds, _ = pipe.encode_prompt(prompts, cpu, 1, False)
            expected = {"embeds": embeds}
        elif backbone.family == "sdxl":
            embeds, _, pooled, _ = pipe.encode_prompt(prompts, device=cpu, do_classifier_free_guidance=False)
            expected = {"embeds": embeds, "pooled": pooled}
        else:
            embeds, _, pooled, _ = pipe.encode_prompt(prompts, None, None, device=cpu,
                                                      do_classifier_free_guidance=False)
            expected = {"embeds": embeds, "pooled": pooled}
    torch.testing.assert_close(cond, expected)


def test_encode_prompts_rejects_a_bare_string(backbone):
    with pytest.raises(SemanticDrawError):
        backbone.encode_prompts("a cat")


def test_embedding_layouts_follow_the_pipelines():
    sdxl = backbone_from_pipeline(build_tiny_pipeline("sdxl"))
    cond = sdxl.encode_prompts(["a cat"])
    width = sdxl.pipe.text_encoder.config.hidden_size + sdxl.pipe.text_encoder_2.config.hidden_size
    assert cond["embeds"].shape == (1, 77, width)                      # both encoders side by side
    assert cond["pooled"].shape == (1, sdxl.pipe.text_encoder_2.config.projection_dim)
    sd3 = backbone_from_pipeline(build_tiny_pipeline("sd3"))
    cond = sd3.encode_prompts(["a cat"])
    joint = sd3.denoiser.config.joint_attention_dim
    assert cond["embeds"].shape == (1, 77 + SD3Backbone.t5_max_length, joint)
    assert torch.count_nonzero(cond["embeds"][0, 77:]) == 0           # no T5: zeros, as diffusers does
    assert cond["pooled"].shape == (1, 2 * sd3.pipe.text_encoder.config.projection_dim)


def test_sd3_with_t5_uses_its_tokens():
    bb = backbone_from_pipeline(build_tiny_pipeline("sd3", with_t5=True))
    cond = bb.encode_prompts(["a red cat", "a blue dog"])
    t5 = cond["embeds"][:, 77:]
    assert t5.shape[1] == SD3Backbone.t5_max_length and torch.count_nonzero(t5) > 0
    assert not torch.allclose(t5[0], t5[1])
    with torch.no_grad():
        embeds, _, pooled, _ = bb.pipe.encode_prompt(["a red cat", "a blue dog"], None, None,
                                                     device=torch.device("cpu"), do_classifier_free_guidance=False)
    torch.testing.assert_close(cond, {"embeds": embeds, "pooled": pooled})
    out = bb.model_output(_views(bb, 2), _timesteps(bb, 2), cond)
    assert out.shape == (2, 16, 8, 8) and torch.isfinite(out).all()


def test_model_output_batch_with_mixed_timesteps(backbone):
    n = 6
    cond = backbone.encode_prompts(["a red cat", "a blue dog", "a tree"])
    cond = {k: v[torch.arange(n) % 3] for k, v in cond.items()}
    x, ts = _views(backbone, n), _timesteps(backbone, n)
    out = backbone.model_output(x, ts, cond)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    # Each item is computed on its own: the batch gives the same rows as items one by one.
    single = backbone.model_output(x[3:4], ts[3:4], {k: v[3:4] for k, v in cond.items()})
    torch.testing.assert_close(out[3:4], single, rtol=1e-4, atol=1e-5)
    # The timestep and the prompt both condition the output.
    other_t = backbone.model_output(x[3:4], ts[3:4] * 0.5, {k: v[3:4] for k, v in cond.items()})
    other_c = backbone.model_output(x[3:4], ts[3:4], {k: v[4:5] for k, v in cond.items()})
    assert not torch.allclose(single, other_t) and not torch.allclose(single, other_c)


def test_model_output_takes_larger_views(backbone):
    cond = backbone.encode_prompts(["a cat"])
    out = backbone.model_output(_views(backbone, 1, size=16), _timesteps(backbone, 1), cond)
    assert out.shape == (1, backbone.latent_channels, 16, 16) and torch.isfinite(out).all()


def test_sdxl_crops_and_view_size_condition_the_unet():
    bb = backbone_from_pipeline(build_tiny_pipeline("sdxl"))
    x, ts = _views(bb, 2), _timesteps(bb, 2)
    cond = {k: v.expand(2, *v.shape[1:]) for k, v in bb.encode_prompts(["a cat"]).items()}
    ids = bb.time_ids(x, torch.tensor([[0, 0], [64, 128]]))
    assert ids.tolist() == [[64, 64, 0, 0, 64, 64], [64, 64, 64, 128, 64, 64]]
    assert torch.equal(bb.time_ids(x, None), bb.time_ids(x, torch.zeros(2, 2)))
    zero = bb.model_output(x, ts, cond)
    assert torch.equal(zero, bb.model_output(x, ts, cond, crops=torch.zeros(2, 2)))
    shifted = bb.model_output(x, ts, cond, crops=torch.tensor([[0.0, 0.0], [64.0, 128.0]]))
    torch.testing.assert_close(shifted[0], zero[0])
    assert not torch.allclose(shifted[1], zero[1])


def test_encode_decode_round_trip_shapes(backbone):
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1)) * 2 - 1
    latents = backbone.encode_image(images)
    assert latents.shape == (2, backbone.latent_channels, 8, 12) and latents.dtype == torch.float32
    for tiny in (False, True):
        decoded = backbone.decode(latents, tiny=tiny)
        assert decoded.shape == (2, 3, 64, 96) and decoded.dtype == torch.float32
        assert decoded.min() >= -1 and decoded.max() <= 1
    assert not torch.allclose(backbone.decode(latents), backbone.decode(latents, tiny=True))


def test_latents_are_normalized_with_scale_and_shift(backbone):
    vae = backbone.pipe.vae
    scale, shift = vae.config.scaling_factor, vae.config.shift_factor or 0.0
    assert (shift != 0) == (backbone.family == "sd3")                 # only SD3's VAE has a shift factor
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        raw = vae.encode(images).latent_dist.mode()
        torch.testing.assert_close(backbone.encode_image(images), (raw - shift) * scale)
        latents = torch.randn(1, backbone.latent_channels, 8, 8, generator=torch.Generator().manual_seed(3))
        expected = vae.decode(latents / scale + shift).sample.clamp(-1, 1)
    torch.testing.assert_close(backbone.decode(latents), expected)


def test_tiny_vae_decodes_as_the_pipelines_would(backbone):
    # An AutoencoderTiny set as pipe.vae is decoded with its own config factors (1.0 and 0.0 for TAESD).
    tiny = backbone.tiny_vae
    latents = torch.randn(1, backbone.latent_channels, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = tiny.decode(latents / tiny.config.scaling_factor + tiny.config.shift_factor).sample.clamp(-1, 1)
    torch.testing.assert_close(backbone.decode(latents, tiny=True), expected)
    without = backbone_from_pipeline(backbone.pipe, tiny_vae=None)
    without.tiny_vae = None
    torch.testing.assert_close(without.decode(latents, tiny=True), backbone.decode(latents))


def test_building_tiny_models_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_pipeline("sd15", seed=7)
    assert torch.equal(torch.rand(3), expected)
    a, b = build_tiny_pipeline("sd15", seed=7), build_tiny_pipeline("sd15", seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.unet.parameters(), b.unet.parameters()))


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sdxl", "tiny-sd3"])
def test_tiny_presets_load_as_backbones(name):
    bb = load_backbone(name, device="cpu")
    assert bb.device == torch.device("cpu") and bb.dtype == torch.float32
    assert (bb.native_size, bb.tile_size) == (64, 64) and bb.tiny_vae is not None
    assert bb.scheduler_config["num_train_timesteps"] == 1000


def test_v_prediction_models_are_refused():
    pipe = build_tiny_pipeline("sd15")
    pipe.scheduler.register_to_config(prediction_type="v_prediction")
    with pytest.raises(SemanticDrawError, match="v_prediction"):
        backbone_from_pipeline(pipe)


def test_large_canvases_go_through_the_vae_in_tiles_and_a_whole_pass_out_of_memory_falls_back(monkeypatch):
    from semantic_draw.backbones import common
    bb = backbone_from_pipeline(build_tiny_pipeline("sd15"))
    latents = torch.randn(1, 4, 24, 24, generator=torch.Generator().manual_seed(5))   # 192 px: three 64 px tiles
    whole = bb.decode(latents)
    seen = []
    decode = type(bb.pipe.vae).decode

    def spy(vae, z, *args, **kwargs):
        seen.append(vae.use_tiling)
        return decode(vae, z, *args, **kwargs)

    monkeypatch.setattr(type(bb.pipe.vae), "decode", spy)
    monkeypatch.setattr(common, "TILE_ABOVE_PIXELS", 128 * 128)
    tiled = bb.decode(latents)
    assert seen == [True] and tiled.shape == whole.shape and not torch.allclose(tiled, whole)
    assert bb.pipe.vae.use_tiling is False                                  # the flag is put back
    assert bb.encode_image(torch.zeros(1, 3, 192, 192)).shape == (1, 4, 24, 24)

    def short_of_memory(vae, z, *args, **kwargs):
        if not vae.use_tiling:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return decode(vae, z, *args, **kwargs)

    monkeypatch.setattr(type(bb.pipe.vae), "decode", short_of_memory)
    monkeypatch.setattr(common, "TILE_ABOVE_PIXELS", 4096 * 4096)
    torch.testing.assert_close(bb.decode(latents), tiled)                  # the whole pass failed: tiles instead
