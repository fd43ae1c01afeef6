"""The app as a Hugging Face ZeroGPU Space runs it: `python app.py` with SPACES_ZERO_GPU set and a stand-in `spaces`
module whose `spaces.GPU` records every decoration (with the duration asked for) and every call, and whether each
model call happens inside a GPU function. Three tiny models, all resident, on the CPU (`--device cpu`: the stand-in
has no GPU to give).

Checks: the page with three tiny models serves in under a minute; start-up reports the models' memory; nothing runs on
a GPU at import or start; every GPU entry point is decorated with a sensible duration; /generate and /stream reach
each model only inside a GPU function.
Run: python -m pytest tests/test_space.py -v
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["tiny-sd15", "tiny-sdxl", "tiny-sd3"]
START_LIMIT_S = 60
MAX_GPU_SECONDS = 300   # ZeroGPU refuses longer durations

STANDIN = '''
"""Stand-in for Hugging Face's `spaces` package (tests/test_space.py): records, runs nothing on a GPU."""
import functools, inspect, json, os, threading

_LOG = os.environ["SPACES_STANDIN_LOG"]
_lock = threading.Lock()
_active = [0]   # GPU functions running now (the generate worker runs the model in a thread of its own)


def _write(**record):
    with _lock, open(_LOG, "a") as f:
        f.write(json.dumps(record) + "\\n")


def _watch_models():
    """Record every model call and whether a GPU function was running."""
    from semantic_draw.model import SemanticDraw
    if getattr(SemanticDraw, "_standin", False):
        return
    SemanticDraw._standin = True
    for what in ("generate", "stream", "encode_prompts"):
        real = getattr(SemanticDraw, what)

        def watched(self, *args, __real=real, __what=what, **kwargs):
            _write(event="model", what=__what, model=self.name, inside_gpu=_active[0] > 0)
            return __real(self, *args, **kwargs)
        setattr(SemanticDraw, what, watched)


def GPU(fn=None, *, duration=60, **options):
    def decorate(f):
        _write(event="decorate", name=f.__qualname__, duration=duration)
        _watch_models()
        if inspect.isgeneratorfunction(f):
            @functools.wraps(f)
            def run(*args, **kwargs):
                _write(event="call", name=f.__qualname__)
                _active[0] += 1
                try:
                    yield from f(*args, **kwargs)
                finally:
                    _active[0] -= 1
        else:
            @functools.wraps(f)
            def run(*args, **kwargs):
                _write(event="call", name=f.__qualname__)
                _active[0] += 1
                try:
                    return f(*args, **kwargs)
                finally:
                    _active[0] -= 1
        return run
    return decorate(fn) if callable(fn) else decorate
'''


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """`python app.py` as on a ZeroGPU Space; yields (url, seconds to serve, stdout so far, log path)."""
    folder = tmp_path_factory.mktemp("space")
    (folder / "spaces").mkdir()
    (folder / "spaces" / "__init__.py").write_text(STANDIN)
    log = folder / "gpu.jsonl"
    port = free_port()
    env = {**os.environ, "SPACES_ZERO_GPU": "1", "SPACES_STANDIN_LOG": str(log), "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)] + [os.environ.get("PYTHONPATH", "")])}
    out = folder / "stdout.txt"
    t0 = time.monotonic()
    # `python app.py ...`, with a note in the log once the import is done (and whether it initialised CUDA)
    argv = ["app.py", "--preset", ",".join(MODELS), "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    run = (f"import json, sys, torch; sys.argv = {argv!r}; sys.path.insert(0, '.'); import app; "
           f"open({str(log)!r}, 'a').write(json.dumps(dict(event='imported', cuda=torch.cuda.is_initialized())) "
           "+ '\\n'); app.main()")
    with open(out, "w") as sink:
        # a process group of its own: on ZeroGPU the app's edit queues live in a multiprocessing manager, a child
        # process that must go with it
        proc = subprocess.Popen([sys.executable, "-c", run], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            assert proc.poll() is None, f"the app exited:\n{out.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() - t0 < 3 * START_LIMIT_S, "the app did not start"
            time.sleep(0.5)
        yield url, time.monotonic() - t0, out, log
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=20)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue


def test_three_tiny_models_serve_within_a_minute_and_report_their_memory(space):
    _, seconds, out, _ = space
    assert seconds < START_LIMIT_S, f"the page with three tiny models took {seconds:.0f} s to start"
    text = out.read_text()
    assert "Serving 3 model(s)" in text, text[-2000:]
    for name in MODELS:
        assert f"{name}: " in text and "MiB of weights" in text, text[-2000:]


def test_the_page_starts_at_the_first_models_canvas_size(space):
    """Finding 4: the offline demo opened a 512x512 canvas for a 128 px model."""
    url = space[0]
    with urllib.request.urlopen(url + "config", timeout=10) as r:
        config = json.load(r)
    props = {c["props"].get("elem_id"): c["props"] for c in config["components"] if c.get("props")}
    assert list(props["sd-editor"]["canvas_size"]) == [128, 128]
    assert props["sd-canvas-h"]["value"] == props["sd-canvas-w"]["value"] == 128
    assert [choice[1] for choice in props["sd-model"]["choices"]] == MODELS


def test_no_gpu_work_at_import_or_start_and_every_entry_point_has_a_duration(space):
    _, _, _, log = space
    seen = records(log)
    assert seen and seen[0] == {"event": "imported", "cuda": False}, "importing the app decorated, ran or " \
        f"initialised something on the GPU: {seen[:3]}"
    assert [r for r in seen if r["event"] in ("call", "model")] == [], "GPU or model work before any visitor"
    durations = {r["name"].rsplit(".", 1)[-1]: r["duration"] for r in seen if r["event"] == "decorate"}
    assert set(durations) == {"generate", "stream"}, durations
    for name, seconds in durations.items():
        assert isinstance(seconds, (int, float)) and 1 <= seconds <= MAX_GPU_SECONDS, (name, seconds)
    assert durations["stream"] >= 60, "a stream's GPU task must outlast the stream's time limit (60 s on ZeroGPU)"


def test_every_model_runs_only_inside_a_gpu_function(space, tmp_path):
    from gradio_client import Client, handle_file

    from semantic_draw import Background, Layer, Scene
    url, _, _, log = space
    mask = np.zeros((128, 128), bool)
    mask[16:80, 16:80] = True
    palette = tmp_path / "p.zip"
    Scene(128, 128, layers=[Layer("a red apple", mask)], background=Background("a table")).save(palette)
    client = Client(url, verbose=False)
    for name in MODELS:
        client.predict(handle_file(str(palette)), 0, "semanticdraw", "latent", name, api_name="/generate")
    frames = list(client.submit(handle_file(str(palette)), 0, 2, "latent", MODELS[-1], api_name="/stream"))
    assert len(frames) == 2
    seen = records(log)
    model_calls = [r for r in seen if r["event"] == "model"]
    assert {r["model"] for r in model_calls if r["what"] == "generate"} == set(MODELS)
    assert any(r["what"] == "stream" and r["model"] == MODELS[-1] for r in model_calls)
    outside = [r for r in model_calls if not r["inside_gpu"]]
    assert not outside, f"model work outside spaces.GPU: {outside}"
    calls = {r["name"].rsplit(".", 1)[-1] for r in seen if r["event"] == "call"}
    assert calls == {"generate", "stream"}
