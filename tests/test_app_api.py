"""The app's HTTP API through gradio_client, with the app launched in-process on a free port on tiny-sd15.

/generate: palette file (.zip) + seed + method -> image.  /stream: palette file + seed + frames -> frames.
Bad input comes back as a readable error and the app keeps serving.
Run: python -m pytest tests/test_app_api.py -v
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

from apphost import serve  # noqa: E402
from semantic_draw import Background, Layer, Scene, SemanticDraw  # noqa: E402

SIZE = 128


@pytest.fixture(scope="module")
def model():
    return SemanticDraw.from_preset("tiny-sd15")


@pytest.fixture(scope="module")
def client(model):
    with serve(model, height=SIZE, width=SIZE, max_canvas=256, max_stream_side=256, stream_time_limit=60) as url:
        yield Client(url, verbose=False)


def two_brush_scene() -> Scene:
    a = np.zeros((SIZE, SIZE), bool)
    a[16:64, 16:64] = True
    b = np.zeros((SIZE, SIZE), bool)
    b[64:120, 60:120] = True
    return Scene(SIZE, SIZE, layers=[Layer("a red apple", a, name="apple"), Layer("a banana", b, name="banana")],
                 background=Background("a wooden table"), negative_prompt="blurry")


@pytest.fixture
def palette(tmp_path) -> Path:
    path = tmp_path / "palette.zip"
    two_brush_scene().save(path)
    return path


def open_image(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_endpoints_are_named(client):
    names = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/generate" in names and "/stream" in names


def test_generate_returns_the_image_of_the_palette(client, model, palette):
    image = open_image(client.predict(handle_file(str(palette)), 7, "semanticdraw", api_name="/generate"))
    assert image.shape == (SIZE, SIZE, 3)
    # the same palette and seed through the library give the same picture (the app adds nothing of its own)
    direct = np.asarray(model.generate(Scene.load(palette), seed=7).convert("RGB"))
    assert np.abs(image.astype(int) - direct.astype(int)).max() <= 1
    other = open_image(client.predict(handle_file(str(palette)), 8, "semanticdraw", api_name="/generate"))
    assert np.abs(image.astype(int) - other.astype(int)).mean() > 0.5, "the seed has no effect"


def test_generate_with_a_baseline_method(client, palette):
    image = open_image(client.predict(handle_file(str(palette)), 1, "multidiffusion-fast", api_name="/generate"))
    assert image.shape == (SIZE, SIZE, 3)


def test_example_asset_palette_generates(client, tmp_path):
    zipped = tmp_path / "timessquare.zip"
    Scene.load(ROOT / "assets" / "timessquare").resized(SIZE, SIZE).save(zipped)
    image = open_image(client.predict(handle_file(str(zipped)), 0, "semanticdraw", api_name="/generate"))
    assert image.shape == (SIZE, SIZE, 3)


def test_stream_yields_the_frames_asked_for(client, palette):
    job = client.submit(handle_file(str(palette)), 3, 5, api_name="/stream")
    paths = list(job)
    frames = [open_image(p) for p in paths]
    assert len(frames) == 5
    assert all(Image.open(p).format == "PNG" for p in paths)   # a program's frames: lossless
    assert all(f.shape == (SIZE, SIZE, 3) for f in frames)


@pytest.mark.parametrize("content, expect", [
    (b"this is not a zip file", "damaged"),
    (None, "no prompt"),
])
def test_bad_palette_is_a_clear_error_and_the_app_keeps_serving(client, palette, tmp_path, content, expect):
    bad = tmp_path / "bad.zip"
    if content is not None:
        bad.write_bytes(content)
    else:  # a palette whose brush has no prompt
        scene = two_brush_scene()
        scene.save(bad)
        import json
        import zipfile
        with zipfile.ZipFile(bad) as z:
            files = {n: z.read(n) for n in z.namelist()}
        d = json.loads(files["scene.json"])
        d["layers"][0]["prompt"] = ""
        files["scene.json"] = json.dumps(d).encode()
        with zipfile.ZipFile(bad, "w") as z:
            for n, data in files.items():
                z.writestr(n, data)
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(bad)), 0, "semanticdraw", api_name="/generate")
    message = str(err.value)
    assert expect in message.lower(), message
    assert "Traceback" not in message and "/tmp/gradio" not in message
    # still serving
    image = open_image(client.predict(handle_file(str(palette)), 0, "semanticdraw", api_name="/generate"))
    assert image.shape == (SIZE, SIZE, 3)


def test_too_big_canvas_and_bad_requests_are_clear_errors(client, tmp_path, palette):
    big = tmp_path / "big.zip"
    scene = two_brush_scene().resized(512, 512)
    scene.save(big)
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(big)), 0, "semanticdraw", api_name="/generate")
    assert "256" in str(err.value), str(err.value)
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(palette)), 0, "no-such-method", api_name="/generate")
    assert "method" in str(err.value).lower()
    with pytest.raises(Exception) as err:
        client.submit(handle_file(str(palette)), 0, 0, api_name="/stream").result()
    assert "frames" in str(err.value).lower()


def test_photo_with_only_a_soft_brush_gives_an_image_or_says_what_to_change(client, tmp_path):
    # semantic_draw cannot yet edit a photo whose brushes are all soft at the first step; the app then says what to
    # change instead of the library's "every mask is empty"
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    photo = Image.fromarray(np.stack([xx * 2, yy * 2, np.full_like(xx, 90)], -1).astype(np.uint8))
    mask = np.zeros((SIZE, SIZE), bool)
    mask[16:56, 16:56] = True
    path = tmp_path / "photo.zip"
    Scene(SIZE, SIZE, layers=[Layer("a red apple", mask, mask_blur=8)],
          background=Background("", image=photo)).save(path)
    try:
        image = open_image(client.predict(handle_file(str(path)), 0, "semanticdraw", api_name="/generate"))
    except Exception as err:
        message = str(err)
        assert "mask blur to 0" in message and "every mask is empty" not in message, message
    else:
        assert image.shape == (SIZE, SIZE, 3)


def test_the_attention_layout_through_the_api(client, model, palette):
    image = open_image(client.predict(handle_file(str(palette)), 7, "semanticdraw", "attention", api_name="/generate"))
    direct = np.asarray(model.generate(Scene.load(palette), seed=7, regions="attention").convert("RGB"))
    assert np.abs(image.astype(int) - direct.astype(int)).max() <= 1
    latent = open_image(client.predict(handle_file(str(palette)), 7, "semanticdraw", "latent", api_name="/generate"))
    assert np.abs(image.astype(int) - latent.astype(int)).mean() > 0.5, "the layout has no effect"
    frames = [open_image(p) for p in client.submit(handle_file(str(palette)), 3, 3, "attention", api_name="/stream")]
    assert len(frames) == 3 and frames[0].shape == (SIZE, SIZE, 3)
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(palette)), 0, "semanticdraw", "pixels", api_name="/generate")
    assert "region layout" in str(err.value)
