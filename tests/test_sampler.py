"""The region step with a denoiser whose answer is known (tests/analytic.py).

Checks ALGORITHM.md section 2's pre-averaging property (the latent keeps the scheduler's noise level everywhere,
tile overlaps and mask seams included), the naive baseline's loss of noise there, prompt separation, prompt
strength, and batching.
"""
import numpy as np
import pytest
import torch

from analytic import AnalyticBackbone, target
from scenes import rect_scene
from semantic_draw.model import SemanticDraw
from semantic_draw import SamplerSettings
from semantic_draw.schedule import LCM_REFERENCE_TIMESTEPS

LCM = SamplerSettings("lcm", timesteps=LCM_REFERENCE_TIMESTEPS)
FLASH = SamplerSettings("flash", steps=4)


def analytic_model(family="sd15", channels=16):
    backbone = AnalyticBackbone(family, channels=channels)
    return SemanticDraw(backbone, LCM if family != "sd3" else FLASH), backbone


def seam_scene(size=128):
    # Two brushes that meet and overlap in the middle of a tiled canvas (64 px tiles, 32 px stride).
    return rect_scene(size, size, [("a red apple", (16, 8, 112, 72)), ("a blue cup", (16, 56, 112, 120))],
                      background_prompt="a wooden table", mask_blur=6.0)


def noise_levels(model, scene, method, seed=0):
    """Per step: the noise in the re-noised latent, (x_next - alpha x0) / sigma, as [C, h, w]."""
    out = []
    sched = model.schedule(model.settings)

    def grab(info):
        i = info.step + 1
        if i < sched.steps:
            out.append(((info.latent - sched.alphas[i].item() * info.x0) / sched.sigmas[i].item())[0])

    model.generate(scene, seed=seed, method=method, callback=grab, output="latent", quantize="none")
    return out


@pytest.mark.parametrize("family", ["sd15", "sd3"])
def test_pre_averaging_keeps_the_noise_level_everywhere(family):
    model, _ = analytic_model(family)
    scene = seam_scene()
    overlap = torch.zeros(16, 16, dtype=torch.bool)
    overlap[:, 4:12] = True   # latent columns covered by two horizontal tiles and by the seam of both brushes
    for method, expect_low in (("semanticdraw", False), ("multidiffusion-fast", True)):
        stds = [(r[:, overlap].std().item(), r[:, ~overlap].std().item()) for r in noise_levels(model, scene, method)]
        for inside, outside in stds:
            if expect_low:
                assert inside < 0.85, (method, stds)
            else:
                assert abs(inside - 1) < 0.1 and abs(outside - 1) < 0.1, (method, stds)


def test_each_region_converges_to_its_own_prompt():
    model, _ = analytic_model("sd15", channels=4)
    scene = rect_scene(128, 128, [("a red apple", (8, 8, 64, 64)), ("a blue cup", (64, 64, 120, 120))],
                       background_prompt="a wooden table", mask_blur=0.0)
    z = model.generate(scene, seed=3, output="latent")[0]
    for prompt, (t, l, b, r) in (("a red apple", (2, 2, 7, 7)), ("a blue cup", (9, 9, 14, 14)),
                                 ("a wooden table", (1, 10, 6, 15))):
        got = z[:, t:b, l:r].mean((1, 2))
        assert torch.allclose(got, target(prompt, 4), atol=0.02), (prompt, got, target(prompt, 4))


def test_prompt_strength_pulls_toward_the_background_prompt():
    model, _ = analytic_model("sd15", channels=4)
    scene = rect_scene(64, 64, [("a red apple", (0, 0, 64, 32), {"prompt_strength": 0.5})],
                       background_prompt="a wooden table", mask_blur=0.0)
    z = model.generate(scene, seed=0, output="latent")[0]
    want = 0.5 * (target("a red apple", 4) + target("a wooden table", 4))
    assert torch.allclose(z[:, 2:6, 1:3].mean((1, 2)), want, atol=0.02)


def test_all_items_of_a_step_share_batched_calls_and_empty_tiles_are_skipped():
    model, backbone = analytic_model("sd15", channels=4)
    # A 128 px canvas is 3 x 3 tiles of 64 px; a brush in one corner touches only the tiles around it.
    scene = rect_scene(128, 128, [("a red apple", (0, 0, 24, 24))], background_prompt="grass", mask_blur=0.0)
    model.generate(scene, seed=0, batch_size=64, output="latent")
    steps = len(LCM_REFERENCE_TIMESTEPS)
    assert len(backbone.calls) == steps          # one call per step
    assert backbone.calls[0] == 9 + 1            # background on 9 tiles, the corner brush on one tile
    backbone.calls.clear()
    model.generate(scene, seed=0, batch_size=4, output="latent")
    assert max(backbone.calls) <= 4 and sum(backbone.calls) == 10 * steps


def test_background_image_is_kept_outside_the_regions():
    from PIL import Image
    from semantic_draw.scene import Background, Layer, Scene
    model, _ = analytic_model("sd15", channels=4)
    photo = np.zeros((64, 64, 3), np.uint8)
    photo[..., 0] = 200
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    scene = Scene(64, 64, [Layer("a red apple", mask, mask_blur=0.0)],
                  Background(prompt="", image=Image.fromarray(photo)))
    z = model.generate(scene, seed=0, output="latent")[0]
    z_photo = model.backbone.encode_image(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 127.5 - 1)[0]
    assert torch.allclose(z[:, :2, :], z_photo[:, :2, :], atol=1e-4)           # outside: the photo's latent
    assert torch.allclose(z[:, 3:5, 3:5].mean((1, 2)), target("a red apple", 4), atol=0.02)  # inside: the prompt


def test_out_of_memory_halves_the_batch_and_gives_the_same_image():
    model, backbone = analytic_model("sd15", channels=4)
    scene = rect_scene(128, 128, [("a red apple", (8, 8, 64, 64)), ("a blue cup", (64, 64, 120, 120))],
                       background_prompt="a wooden table")
    want = model.generate(scene, seed=0, batch_size=64, output="latent")
    plain = backbone.model_output

    def small_memory(x, t, cond, crops=None):
        if x.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return plain(x, t, cond, crops)

    backbone.model_output = small_memory
    backbone.calls.clear()
    got = model.generate(scene, seed=0, batch_size=64, output="latent")
    assert torch.allclose(got, want, atol=1e-6)
    assert max(backbone.calls) <= 4


def test_a_photo_whose_brushes_have_not_started_yet_keeps_the_photo_until_they_do():
    from PIL import Image
    from semantic_draw.scene import Background, Layer, Scene
    model, backbone = analytic_model("sd15", channels=4)
    photo = np.full((64, 64, 3), 90, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    # strength 0.9: the brush joins only once the noise level drops below 0.9 (not at the first steps)
    scene = Scene(64, 64, [Layer("a red apple", mask, mask_blur=0.0, mask_strength=0.9)],
                  Background(prompt="", image=Image.fromarray(photo)))
    z = model.generate(scene, seed=0, output="latent")[0]
    assert len(backbone.calls) < len(LCM_REFERENCE_TIMESTEPS)      # steps without items made no model call
    assert torch.allclose(z[:, 3:5, 3:5].mean((1, 2)), target("a red apple", 4), atol=0.02)
