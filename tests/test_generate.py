"""End to end on the tiny offline presets: every backbone, both fixture scenes and a single region, three methods."""
import numpy as np
import pytest
import torch

from scenes import fixture_scene, rect_scene
from semantic_draw import Background, Layer, Scene, SemanticDraw, SemanticDrawError

PRESETS = ["tiny-sd15", "tiny-sdxl", "tiny-sd3"]


@pytest.fixture(scope="module", params=PRESETS)
def model(request):
    return SemanticDraw.from_preset(request.param)


def scenes():
    # Scaled down; SD3 needs multiples of 16, so every side here is one.
    return {
        "irworobongdo": fixture_scene("irworobongdo").resized(48, 128),
        "timessquare": fixture_scene("timessquare", 64, 64),
        "single": rect_scene(64, 96, [("a red apple", (8, 16, 56, 80))], background_prompt="a table"),
    }


def pixels(image):
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("name", ["irworobongdo", "timessquare", "single"])
def test_generates_the_right_size_reproducibly_and_seed_dependent(model, name):
    scene = scenes()[name]
    a = model.generate(scene, seed=0)
    b = model.generate(scene, seed=0)
    c = model.generate(scene, seed=1)
    assert a.size == (scene.width, scene.height) and a.mode == "RGB"
    assert np.array_equal(pixels(a), pixels(b))
    assert np.abs(pixels(a) - pixels(c)).mean() > 0.5
    latent = model.generate(scene, seed=0, output="latent")
    assert torch.isfinite(latent).all()


def test_callback_sees_every_step_with_x0_latent_and_a_preview(model):
    seen = []
    scene = scenes()["single"]
    model.generate(scene, seed=0, callback=seen.append)
    steps = seen[0].steps
    assert [i.step for i in seen] == list(range(steps)) and steps >= 1
    f = model.backbone.vae_factor
    assert seen[-1].x0.shape == seen[-1].latent.shape == (1, model.backbone.latent_channels, 64 // f, 96 // f)
    assert torch.equal(seen[-1].x0, seen[-1].latent)      # after the last step the latent is the clean estimate
    assert seen[0].preview().size == (96, 64)


@pytest.mark.parametrize("method", ["multidiffusion-fast", "multidiffusion"])
def test_baselines_run_on_the_same_backbone(model, method):
    scene = scenes()["single"]
    calls = model.calls
    img = model.generate(scene, seed=0, method=method)
    assert img.size == (96, 64)
    assert model.calls - calls == (50 if method == "multidiffusion" else model.schedule(model.settings).steps)


def test_editing_keeps_the_photo_outside_the_brushes():
    model = SemanticDraw.from_preset("tiny-sd15")
    photo = np.zeros((64, 64, 3), np.uint8)
    photo[:, :, 2] = 180
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    scene = Scene(64, 64, [Layer("a cat", mask, mask_blur=2.0)], Background("", image=photo))
    out = pixels(model.generate(scene, seed=0))
    assert np.array_equal(out[:8], pixels(scene.validate().background.image)[:8])   # far outside: the photo
    assert np.abs(out[28:36, 28:36] - photo[28:36, 28:36]).mean() > 5             # inside: generated


def test_user_errors_are_semantic_draw_errors():
    model = SemanticDraw.from_preset("tiny-sd3")
    with pytest.raises(SemanticDrawError, match="multiples of 16"):
        model.generate(rect_scene(40, 64, [("x", (0, 0, 16, 16))]), seed=0)
    with pytest.raises(SemanticDrawError, match="method"):
        model.generate(rect_scene(64, 64), seed=0, method="magic")
    with pytest.raises(SemanticDrawError):
        model.generate(Scene(64, 64, [], Background("")), seed=0)
    with pytest.raises(SemanticDrawError, match="Scene"):
        model.generate({"height": 64}, seed=0)
    with pytest.raises(SemanticDrawError, match="multiples of 8|multiple of 8"):
        model.generate(Scene(60, 64, [Layer("x", np.ones((60, 64), bool))]), seed=0)
    with pytest.raises(SemanticDrawError, match="too big"):
        SemanticDraw(model.backbone, max_pixels=32 * 32).generate(rect_scene(64, 64), seed=0)
    with pytest.raises(SemanticDrawError, match="Unknown option"):
        model.generate(rect_scene(64, 64), seed=0, bootstrap=3)
    with pytest.raises(SemanticDrawError, match="tiny-sd15"):
        SemanticDraw.from_preset("no-such-preset")
    assert model.generate(rect_scene(64, 64), seed=0).size == (64, 64)    # still works afterwards


@pytest.mark.parametrize("preset", PRESETS)
def test_streams_on_every_backbone(preset):
    model = SemanticDraw.from_preset(preset)
    scene = scenes()["single"]
    session = model.stream(scene, seed=0)
    frames = [pixels(session.next_frame()) for _ in range(4)]
    assert all(f.shape == (64, 96, 3) for f in frames)
    again = model.stream(scene, seed=0)
    assert np.array_equal(pixels(again.next_frame()), frames[0])
    session.edit_layer(0, prompt="a green pear")
    assert not np.array_equal(pixels(session.next_frame()), frames[-1])


@pytest.mark.parametrize("family", ["sd15", "sd3"])
def test_from_pipeline_and_from_pretrained_match_the_preset(tmp_path, family):
    from semantic_draw.tiny import build_tiny_pipeline
    preset = SemanticDraw.from_preset(f"tiny-{family}")
    scene = scenes()["single"]
    want = pixels(preset.generate(scene, seed=5, tile_size=64))
    pipe = build_tiny_pipeline(family)
    wrapped = SemanticDraw.from_pipeline(pipe, settings=preset.settings, tiny_vae=pipe.tiny_vae)
    assert wrapped.family == family
    assert np.array_equal(pixels(wrapped.generate(scene, seed=5, tile_size=64)), want)
    pipe.save_pretrained(tmp_path / "model")
    loaded = SemanticDraw.from_pretrained(str(tmp_path / "model"), settings=preset.settings, device="cpu")
    assert np.array_equal(pixels(loaded.generate(scene, seed=5, tile_size=64)), want)
