"""The server's limits on every way in (issue 10, the app side), logins from the environment or a file, the queue
bound.

The API tests launch the app in-process on a free loopback port (tests/apphost.py) with small limits: 3 brushes,
one-shot canvases up to 256 px, stream canvases up to 128 px, uploads up to 1 MiB. Each limit is shown refused with a
readable message on /generate and on /stream, and a palette within the limits still works right after.
Run: python -m pytest tests/test_app_limits.py -v
"""
from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

gradio_client = pytest.importorskip("gradio_client")
import gradio as gr  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

import app  # noqa: E402
from app_parts.auth import AUTH_ENV, AuthError, auth_pairs, parse_auth, read_auth_file  # noqa: E402
from app_parts.limits import (BoundedImageEditor, check_text_fields, check_upload,  # noqa: E402
                              palette_brush_count)
from app_parts.palette import Brush  # noqa: E402
from apphost import serve_demo  # noqa: E402
from scenes import rect_scene  # noqa: E402
from semantic_draw import ResourceError, SceneError, SemanticDraw  # noqa: E402
from semantic_draw.scene import MAX_PROMPT_CHARS  # noqa: E402

SIZE = 64
LIMITS = dict(height=SIZE, width=SIZE, max_brushes=3, max_canvas=256, max_stream_side=128, max_upload_mb=1,
              stream_time_limit=60, queue_size=16)


def brushes(n: int, size: int = SIZE, prompt: str = "a thing"):
    """n small square brushes on a size x size canvas."""
    step = max(1, size // (n + 1))
    return [(f"{prompt} {k}", (k * step % (size - 8), 8, k * step % (size - 8) + 8, 16)) for k in range(n)]


def palette(tmp_path, name: str, n: int = 2, size: int = SIZE, prompt: str = "a thing") -> Path:
    path = tmp_path / f"{name}.zip"
    rect_scene(size, size, brushes(n, size, prompt), background_prompt="a field").save(path)
    return path


def with_prompt(path: Path, prompt: str) -> Path:
    """The palette `path` with its first brush's prompt replaced (written as is, past the library's checks)."""
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    d = json.loads(files["scene.json"])
    d["layers"][0]["prompt"] = prompt
    files["scene.json"] = json.dumps(d).encode()
    out = path.with_name(path.stem + "-prompt.zip")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in files.items():
            z.writestr(n, data)
    return out


@pytest.fixture(scope="module")
def model():
    return SemanticDraw.from_preset("tiny-sd15")


@pytest.fixture(scope="module")
def served(model):
    with serve_demo(model, **LIMITS) as (demo, url):
        yield demo, Client(url, verbose=False)


@pytest.fixture(scope="module")
def client(served):
    return served[1]


def generate(client, path, seed=0):
    return client.predict(handle_file(str(path)), seed, "semanticdraw", api_name="/generate")


def stream(client, path, frames=2):
    job = client.submit(handle_file(str(path)), 0, frames, api_name="/stream")
    job.result(timeout=120)   # raises the endpoint's error (iterating a job whose upload failed never ends)
    return job.outputs()


def refused(call, *args) -> str:
    with pytest.raises(Exception) as err:
        call(*args)
    message = str(err.value)
    assert "Traceback" not in message and "Something went wrong" not in message and "/tmp/" not in message, message
    return message


# ---------------------------------------------------------------- /generate and /stream
@pytest.mark.parametrize("endpoint", [generate, stream], ids=["generate", "stream"])
def test_a_palette_over_the_brush_limit_is_refused_and_one_within_works(client, tmp_path, endpoint):
    message = refused(endpoint, client, palette(tmp_path, "crowded", n=4))
    assert "4 brushes" in message and "at most 3" in message, message
    message = refused(endpoint, client, palette(tmp_path, "crowd", n=30))   # the 30-brush palette
    assert "30 brushes" in message and "at most 3" in message, message
    result = endpoint(client, palette(tmp_path, "three", n=3))
    assert result, "a palette of exactly 3 brushes must work"


@pytest.mark.parametrize("endpoint, limit", [(generate, 256), (stream, 128)], ids=["generate", "stream"])
def test_a_canvas_over_the_side_limit_is_refused_and_one_within_works(client, tmp_path, endpoint, limit):
    message = refused(endpoint, client, palette(tmp_path, "large", size=limit + 64))
    assert str(limit) in message and "larger than" in message, message
    result = endpoint(client, palette(tmp_path, "fits", size=limit))
    assert result


@pytest.mark.parametrize("endpoint", [generate, stream], ids=["generate", "stream"])
def test_a_prompt_over_the_length_limit_is_refused(client, tmp_path, endpoint):
    base = palette(tmp_path, "long", n=1)
    message = refused(endpoint, client, with_prompt(base, "a very long prompt " * 400))
    assert f"{MAX_PROMPT_CHARS:,}" in message or str(MAX_PROMPT_CHARS) in message, message
    assert endpoint(client, with_prompt(base, "a " * (MAX_PROMPT_CHARS // 2)))


@pytest.mark.parametrize("endpoint", [generate, stream], ids=["generate", "stream"])
def test_an_upload_over_the_size_limit_is_refused_and_the_server_keeps_serving(served, tmp_path, endpoint):
    demo, client = served
    big = palette(tmp_path, "heavy", n=1)
    with zipfile.ZipFile(big, "a", zipfile.ZIP_STORED) as z:   # 1.5 MiB of noise next to the palette
        z.writestr("padding.bin", np.random.default_rng(0).bytes(3 * 2 ** 19))
    assert big.stat().st_size > 2 ** 20
    # gradio_client reads the server's max_file_size and refuses before sending ...
    with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):
        endpoint(client, big)
    # ... and a client that does not check gets HTTP 413 from the server, before the file is stored
    import httpx
    reply = httpx.post(client.src.rstrip("/") + "/gradio_api/upload", files={"files": ("heavy.zip", big.read_bytes())})
    assert reply.status_code == 413, reply.text
    # the handlers check again (a file that reached the cache some other way): here with a lower limit
    small = palette(tmp_path, "small", n=1)
    with zipfile.ZipFile(small, "a", zipfile.ZIP_STORED) as z:
        z.writestr("padding.bin", np.random.default_rng(1).bytes(20_000))
    demo.sd_config.max_upload_mb = 0.01
    try:
        message = refused(endpoint, client, small)
    finally:
        demo.sd_config.max_upload_mb = LIMITS["max_upload_mb"]
    assert "“small.zip” is 20." in message and "up to 10.2 KiB" in message, message
    assert endpoint(client, palette(tmp_path, "light", n=1))


def test_the_server_limits_reach_gradio(served):
    demo, client = served
    assert demo.sd_launch_style["max_file_size"] == 2 ** 20
    assert demo._queue.max_size == 16
    editor = next(b for b in demo.blocks.values() if isinstance(b, BoundedImageEditor))
    assert editor.limits == (256, 3)
    assert editor.get_block_name() == "imageeditor", "the page must draw Gradio's own editor"
    props = next(c for c in demo.config["components"] if c["id"] == editor._id)["props"]
    assert props["elem_id"] == "sd-editor" and list(props["canvas_size"]) == [SIZE, SIZE]
    assert set(editor.get_config()) == set(gr.ImageEditor(render=False).get_config()), \
        "the page's editor must send the browser exactly the props of Gradio's own"
    import httpx   # the browser's upload of an editor layer, through Gradio's route: in range, then far beyond
    png = png_bytes(SIZE, SIZE)
    for index, status in (("0", 200), ("1000000000", 400)):
        reply = httpx.post(client.src.rstrip("/") + "/gradio_api/component_server",
                           data={"component_id": str(editor._id), "session_hash": "limits", "fn_name": "accept_blobs",
                                 "type": "layer", "index": index, "id": "limits-test"},
                           files={"file": ("blob", png, "image/png")})
        assert reply.status_code == status, reply.text
    assert len(editor.blob_storage.pop("limits-test").layers) == 1


# ---------------------------------------------------------------- the checks themselves
def test_check_upload_names_the_file_and_the_limit(tmp_path):
    path = tmp_path / "my palette.zip"
    path.write_bytes(b"x" * 2048)
    check_upload(path, 2048)
    with pytest.raises(ResourceError, match="“my palette.zip” is 2 KiB; this server takes files up to 1 KiB"):
        check_upload(path, 1024, "The palette file")
    with pytest.raises(SceneError, match="could not be read"):
        check_upload(tmp_path / "gone.zip", 1024)
    with pytest.raises(SceneError, match="not a regular file"):
        check_upload(tmp_path, 1024)


def test_the_brush_count_is_read_before_any_mask_is_decoded(tmp_path, monkeypatch):
    path = palette(tmp_path, "counted", n=5)
    import semantic_draw.scene as scene_module
    monkeypatch.setattr(scene_module, "_open_image", lambda *a, **k: pytest.fail("an image was decoded"))
    assert palette_brush_count(path) == 5
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    assert palette_brush_count(tmp_path / "junk.zip") is None


def test_text_fields_of_a_live_stream_are_checked_before_a_scene_is_built():
    ok = [Brush("a", "a cat"), Brush("b", "a dog")]
    check_text_fields(ok, "a field", "blurry", max_brushes=2)
    with pytest.raises(ResourceError, match="3 brushes"):
        check_text_fields(ok + [Brush("c", "x")], "", "", max_brushes=2)
    with pytest.raises(ResourceError, match="background prompt"):
        check_text_fields(ok, "x" * (MAX_PROMPT_CHARS + 1), "", max_brushes=2)
    with pytest.raises(ResourceError, match="a: the prompt"):
        check_text_fields([Brush("a", "y" * (MAX_PROMPT_CHARS + 1))], "", "", max_brushes=2)


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def test_the_editor_refuses_values_beyond_the_limits_before_decoding(tmp_path):
    from gradio.components.image_editor import EditorData, EditorDataBlobs
    from gradio.data_classes import FileData
    editor = BoundedImageEditor(type="numpy", image_mode="RGBA", max_side=256, max_layers=2, render=False)

    def file(w, h):
        path = tmp_path / f"{w}x{h}.png"
        path.write_bytes(png_bytes(w, h))
        return FileData(path=str(path))

    value = editor.preprocess(EditorData(background=file(128, 96), layers=[file(128, 96)] * 2))
    assert value["background"].shape == (96, 128, 4) and len(value["layers"]) == 2
    with pytest.raises(gr.Error, match="12000x12000.*256 px"):   # a 12,000^2 PNG is a few hundred KB
        editor.preprocess(EditorData(background=file(12000, 12000)))
    with pytest.raises(gr.Error, match="3 layers.*at most 2"):
        editor.preprocess(EditorData(background=file(128, 96), layers=[file(128, 96)] * 3))
    editor.blob_storage["x"] = EditorDataBlobs(background=png_bytes(300, 64), layers=[], composite=None)
    with pytest.raises(gr.Error, match="300x64"):
        editor.preprocess(EditorData(id="x"))
    assert "x" not in editor.blob_storage, "a refused value's images stay in memory"

    class Blob:   # what Gradio's /component_server hands accept_blobs
        def __init__(self, index, id_="y"):
            self.data = {"type": "layer", "index": str(index), "id": id_}
            self.files = [("layer.png", png_bytes(8, 8))]
    from fastapi import HTTPException
    with pytest.raises(HTTPException, match="at most 2"):
        editor.accept_blobs(Blob(10 ** 9))   # Gradio would make a list of a billion entries
    editor.accept_blobs(Blob(1))
    assert len(editor.blob_storage["y"].layers) == 2


# ---------------------------------------------------------------- logins
def test_auth_pairs_from_the_command_line_the_environment_and_a_file(tmp_path):
    assert parse_auth("alice:secret", "--auth") == [("alice", "secret")]
    assert parse_auth("alice:se:cret, bob:x", "--auth") == [("alice", "se:cret"), ("bob", "x")]
    logins = tmp_path / "logins.txt"
    logins.write_text("# who may log in\n\ncarol:pass word\n  dave:d#1  \n")
    assert read_auth_file(str(logins)) == [("carol", "pass word"), ("dave", "d#1")]
    assert auth_pairs(environ={}) is None
    assert auth_pairs("alice:a", str(logins), {AUTH_ENV: "bob:b"}) == [
        ("alice", "a"), ("bob", "b"), ("carol", "pass word"), ("dave", "d#1")]


@pytest.mark.parametrize("cli, env, content, expect", [
    ("admin", None, None, "without a colon"),
    ("admin:", None, None, "password of user 'admin' is empty"),
    (":secret", None, None, "user name before the colon is empty"),
    ("a:b,", None, None, "--auth, pair 2"),
    (None, "bob", None, f"{AUTH_ENV}: expected user:password"),
    (None, "", None, f"{AUTH_ENV} is empty"),
    (None, None, "alice:a\nbob\n", "line 2"),
    (None, None, "# nobody\n", "holds no user:password"),
    ("alice:a", "alice:b", None, "given more than once"),
])
def test_malformed_logins_are_one_clear_line(tmp_path, cli, env, content, expect):
    path = None
    if content is not None:
        path = tmp_path / "logins.txt"
        path.write_text(content)
    with pytest.raises(AuthError) as err:
        auth_pairs(cli, None if path is None else str(path), {} if env is None else {AUTH_ENV: env})
    message = str(err.value)
    assert expect in message and "\n" not in message, message
    assert "secret" not in message, "a message must not show the password"
    assert isinstance(err.value, SystemExit)


def test_parse_args_refuses_a_malformed_login_before_loading_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(app, "load_models", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr(app, "launch", lambda *a, **k: pytest.fail("a server was launched"))
    for argv, env in [(["--auth", "admin"], {}), (["--auth-file", str(tmp_path / "missing.txt")], {}),
                      ([], {AUTH_ENV: "admin:"})]:
        with pytest.raises(SystemExit) as err:
            app.parse_args(argv, environ=env)
        assert isinstance(err.value.code, str) and err.value.code.count("\n") == 0, err.value.code
    monkeypatch.setenv(AUTH_ENV, "admin")
    with pytest.raises(SystemExit, match="SEMANTICDRAW_AUTH"):
        app.main(["--preset", "tiny-sd15"])
    args = app.parse_args(["--auth-file", str(_logins(tmp_path)), "--max-queue", "5"], environ={AUTH_ENV: "b:c"})
    assert args.auth_pairs == [("b", "c"), ("a", "b")] and args.max_queue == 5


def _logins(tmp_path) -> Path:
    path = tmp_path / "ok.txt"
    path.write_text("a:b\n")
    return path


def test_queue_and_upload_options(capsys):
    args = app.parse_args([], environ={})
    assert args.max_queue == 64 and args.max_upload_mb == 64 and args.auth_pairs is None
    for bad in (["--max-queue", "0"], ["--max-upload-mb", "-1"], ["--max-brushes", "0"]):
        with pytest.raises(SystemExit):
            app.parse_args(bad, environ={})
    with pytest.raises(SystemExit):
        app.parse_args(["--help"], environ={})
    out = capsys.readouterr().out
    assert "--max-queue" in out and "--auth-file" in out and AUTH_ENV in out and "--max-upload-mb" in out


def test_a_served_login_is_required(model):
    demo = app.create_demo(model, **LIMITS)
    from apphost import free_port
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                           quiet=True, auth=auth_pairs("alice:secret", None, {}))
    try:
        with pytest.raises(Exception):
            Client(url, verbose=False)
        assert Client(url, auth=("alice", "secret"), verbose=False).view_api(print_info=False, return_format="dict")
    finally:
        demo.close()
