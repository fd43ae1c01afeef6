"""One app, several resident models: the HTTP API with each of the three tiny models (gradio_client, the app
launched in-process), and the app's pieces that need no server (model registry, command line, masks from files,
brush opacity, palette file names, the stream status line).
Run: python -m pytest tests/test_app_models.py -v
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

import app  # noqa: E402
from apphost import serve  # noqa: E402
from app_parts import canvas as cv  # noqa: E402
from app_parts.models import Models, memory_report  # noqa: E402
from app_parts.palette import Brush, build_scene  # noqa: E402
from app_parts.palette_actions import file_name  # noqa: E402
from app_parts.streaming import Live, status_text, stopped_text  # noqa: E402
from semantic_draw import Background, Layer, OptionError, Scene, SceneError, SemanticDraw, StreamEvent  # noqa: E402

NAMES = ["tiny-sd15", "tiny-sdxl", "tiny-sd3"]
SIZE = 128


@pytest.fixture(scope="module")
def models():
    return {name: SemanticDraw.from_preset(name) for name in NAMES}


@pytest.fixture(scope="module")
def client(models):
    with serve(models, height=SIZE, width=SIZE, max_canvas=256, max_stream_side=256, stream_time_limit=60) as url:
        yield Client(url, verbose=False)


@pytest.fixture
def palette(tmp_path) -> Path:
    a = np.zeros((SIZE, SIZE), bool)
    a[16:64, 16:64] = True
    b = np.zeros((SIZE, SIZE), bool)
    b[64:120, 48:120] = True
    path = tmp_path / "palette.zip"
    Scene(SIZE, SIZE, layers=[Layer("a red apple", a), Layer("a banana", b)],
          background=Background("a wooden table")).save(path)
    return path


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


@pytest.mark.parametrize("name", NAMES)
def test_generate_and_stream_with_each_model(client, models, palette, name):
    image = pixels(client.predict(handle_file(str(palette)), 3, "semanticdraw", "latent", name,
                                  api_name="/generate"))
    direct = np.asarray(models[name].generate(Scene.load(palette), seed=3).convert("RGB")).astype(int)
    assert image.shape == (SIZE, SIZE, 3)
    assert np.abs(image - direct).max() <= 1, f"/generate did not draw with {name}"
    frames = list(client.submit(handle_file(str(palette)), 3, 2, "latent", name, api_name="/stream"))
    assert len(frames) == 2 and pixels(frames[-1]).shape == (SIZE, SIZE, 3)


def test_the_model_argument_is_optional_and_checked(client, models, palette):
    first = pixels(client.predict(handle_file(str(palette)), 5, "semanticdraw", api_name="/generate"))
    named = pixels(client.predict(handle_file(str(palette)), 5, "semanticdraw", model=NAMES[0], api_name="/generate"))
    assert np.abs(first - named).max() <= 1, "the default model is not the first"
    other = pixels(client.predict(handle_file(str(palette)), 5, "semanticdraw", model=NAMES[1], api_name="/generate"))
    assert np.abs(first - other).mean() > 0.5, "the model argument has no effect"
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(palette)), 0, "semanticdraw", "latent", "sd99", api_name="/generate")
    assert "Unknown model 'sd99'" in str(err.value) and "tiny-sd3" in str(err.value), str(err.value)
    params = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]["parameters"]
    model = [p for p in params if p["parameter_name"] == "model"][0]
    assert model["parameter_has_default"] and model["parameter_default"] == NAMES[0]


def test_sd3_takes_canvas_sides_in_multiples_of_16(client, tmp_path):
    mask = np.zeros((136, 136), bool)
    mask[8:64, 8:64] = True
    odd = tmp_path / "odd.zip"
    Scene(136, 136, layers=[Layer("a cat", mask)]).save(odd)
    image = pixels(client.predict(handle_file(str(odd)), 0, "semanticdraw", "latent", "tiny-sd15",
                                  api_name="/generate"))
    assert image.shape == (136, 136, 3)
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(odd)), 0, "semanticdraw", "latent", "tiny-sd3", api_name="/generate")
    assert "16" in str(err.value), str(err.value)


# ---------------------------------------------------------------- no server
def test_models_registry(models):
    reg = Models(models)
    assert reg.names == NAMES and reg.default == "tiny-sd15"
    assert reg.name(None) == reg.name("") == "tiny-sd15" and reg["tiny-sd3"] is models["tiny-sd3"]
    assert reg.multiple("tiny-sd3") == 16 and reg.multiple("tiny-sdxl") == 8
    assert reg.start_size() == 128, "the tiny presets start at their 128 px canvas"
    with pytest.raises(OptionError, match="Unknown model"):
        reg.name("nope")
    assert Models(models["tiny-sdxl"]).names == ["tiny-sdxl"]
    report = memory_report(reg)
    assert all(f"{n}: " in report for n in NAMES) and "MiB of weights" in report


def test_command_line_takes_several_models_and_the_space_default(monkeypatch):
    args = app.parse_args(["--preset", "tiny-sd15,tiny-sdxl", "--preset", "tiny-sd3", "--preset", "tiny-sd15"])
    assert args.preset == NAMES and args.model == []
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert app.parse_args([]).preset == ["sd15"]
    monkeypatch.setenv("SPACE_ID", "someone/semantic-draw")
    assert app.parse_args([]).preset == ["sd15", "sdxl", "sd3"], "a Space serves the three real presets"
    assert app.parse_args(["--model", "a/b,c/d"]).model == ["a/b", "c/d"]


def test_a_mask_from_a_black_and_white_or_transparent_image(tmp_path):
    bw = np.zeros((64, 64), np.uint8)
    bw[8:40, 8:24] = 255
    Image.fromarray(bw).save(tmp_path / "bw.png")
    mask, note = cv.mask_from_image(tmp_path / "bw.png", 128, 128)
    assert mask.shape == (128, 128) and note is None
    assert (mask > 0).sum() == 32 * 16 * 4 and mask[20, 20] == 255 and mask[100, 100] == 0
    rgba = np.zeros((128, 256, 4), np.uint8)
    rgba[:, :64, 3] = 255   # opaque left quarter, colour does not matter
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    mask, note = cv.mask_from_image(tmp_path / "alpha.png", 128, 128)
    assert "stretched" in note and mask[:, :32].all() and not mask[:, 40:].any()
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(SceneError, match="not an image"):
        cv.mask_from_image(tmp_path / "text.png", 128, 128)
    Image.new("L", (32, 32), 0).save(tmp_path / "black.png")
    with pytest.raises(SceneError, match="all black"):
        cv.mask_from_image(tmp_path / "black.png", 128, 128)


def test_brush_opacity_in_the_editor_scales_the_mask_strength():
    half = np.zeros((64, 64), np.uint8)
    half[10:30, 10:30] = 128            # painted at 50 % opacity
    full = np.zeros((64, 64), np.uint8)
    full[40:60, 40:60] = 255
    canvas = cv.Canvas(64, 64, [half, full], None)
    scene, _ = build_scene([Brush("a", "an apple", mask_strength=1.0), Brush("b", "a pear", mask_strength=0.6)],
                           canvas, "", "", multiple=8, strict=True)
    assert [layer.mask_strength for layer in scene.layers] == [0.5, 0.6]
    assert np.asarray(scene.layers[0].mask).sum() == 400
    # the editor gets the layer back at the opacity it was painted with (a round trip keeps the strength)
    layer = cv.layer_image(half, (255, 0, 0), 64, 64)
    assert np.asarray(layer)[20, 20, 3] == 128 and np.asarray(layer)[0, 0, 3] == 0


def test_palette_file_names():
    assert file_name("My scene!") == "My-scene.zip"
    assert file_name("") == "palette.zip" and file_name("  ") == "palette.zip"
    assert file_name("../../etc/passwd") == "etc-passwd.zip"


def test_the_stream_status_says_how_live_it_is():
    warm = status_text(Live(StreamEvent("frame", 1, 0.0), shown=1), True, [])
    assert "warming up" in warm and "0.0 frames/s" not in warm
    live = status_text(Live(StreamEvent("frame", 9, 7.5, views=4), shown=9, seconds=0.12, edit_seconds=0.4),
                       True, ["Brush 3 is not painted yet"])
    assert "7.5 frames/s" in live and "120 ms a frame" in live and "last edit on screen in 0.4 s" in live
    assert "4 views per frame" in live and "Brush 3 is not painted yet" in live
    settled = status_text(Live(StreamEvent("idle", 9), shown=9, seconds=0.12), False, [])
    assert "settled, waiting for your next edit" in settled and "120 ms" in settled and "frames/s" not in settled
    waiting = status_text(Live(StreamEvent("waiting", position=3)), False, [])
    assert "number 3 in line" in waiting
    timeout = StreamEvent("timeout", message="The stream stopped after its time limit of 60 s. Start it again.")
    assert "time limit of 60 s" in stopped_text(timeout, "")
    assert "you pressed Stop" in stopped_text(StreamEvent("frame"), "Stop")
