"""The per-user bound (--max-per-user, issue 10): who a request is from, and a visitor's running work counted on every
GPU endpoint, so that one visitor's tabs and scripts cannot take every stream and generation of the server."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

import app  # noqa: E402
from app_parts.visitors import VisitorLimits  # noqa: E402
from apphost import serve_demo  # noqa: E402
from scenes import rect_scene  # noqa: E402
from semantic_draw import ResourceError, SemanticDraw  # noqa: E402
from semantic_draw.denoiser import Wrapper  # noqa: E402


def request(host="127.0.0.1", forwarded=None, username=None):
    headers = {} if forwarded is None else {"x-forwarded-for": forwarded}
    return SimpleNamespace(username=username, headers=headers, client=SimpleNamespace(host=host))


def test_a_visitor_is_the_login_else_the_address_the_trusted_proxy_saw():
    direct, behind_one = VisitorLimits(1, 0), VisitorLimits(1, 1)
    assert direct.key(request(username="ada")) == "user:ada"
    assert direct.key(request("10.0.0.9", forwarded="1.2.3.4")) == "address:10.0.0.9"   # no proxy: header ignored
    assert behind_one.key(request("10.0.0.9", forwarded="1.2.3.4")) == "address:1.2.3.4"
    # what a client writes itself stays on the left; the proxy appends the address it saw
    assert behind_one.key(request("10.0.0.9", forwarded="6.6.6.6, 1.2.3.4")) == "address:1.2.3.4"
    assert VisitorLimits(1, 2).key(request("10.0.0.9", forwarded="6.6.6.6, 1.2.3.4, 10.0.0.2")) == "address:1.2.3.4"
    assert behind_one.key(request("10.0.0.9")) == "address:10.0.0.9"   # no header: the socket's peer


def test_running_work_is_counted_per_visitor_and_released_however_it_ends():
    limits = VisitorLimits(2, 0)
    a, b = request("1.1.1.1"), request("2.2.2.2")
    with limits.hold(a), limits.hold(a):
        with pytest.raises(ResourceError, match="already have 2"):
            limits.hold(a, "stream")
        with limits.hold(b):                      # someone else is not affected
            assert limits.running(b) == 1
    assert limits.running(a) == 0
    with pytest.raises(ValueError):
        with limits.hold(a):
            raise ValueError("the work failed")
    assert limits.running(a) == 0
    unbounded = VisitorLimits(0, 0)
    with unbounded.hold(a), unbounded.hold(a), unbounded.hold(a):
        assert unbounded.running(a) == 0          # no bound: nothing counted
    with VisitorLimits(1, 0).hold(None), VisitorLimits(1, 0).hold(None):
        pass                                      # a call from Python (no request) is not a visitor


def test_the_command_line_sets_the_bound_and_a_space_gets_one_by_default():
    args = app.parse_args([], environ={})
    assert (args.max_per_user, args.forwarded_hops, args.share_calls) == (0, 0, True)
    args = app.parse_args([], environ={"SPACE_ID": "user/space"})
    assert (args.max_per_user, args.forwarded_hops) == (3, 1)
    args = app.parse_args(["--max-per-user", "1", "--forwarded-hops", "0", "--no-share-calls"],
                          environ={"SPACE_ID": "user/space"})
    assert (args.max_per_user, args.forwarded_hops, args.share_calls) == (1, 0, False)
    with pytest.raises(SystemExit):
        app.parse_args(["--max-per-user", "-1"], environ={})


class Gate(Wrapper):
    """The network waits while ``closed`` is set: a stream stays running for as long as the test needs."""

    def __init__(self, inner):
        super().__init__(inner)
        self.closed = threading.Event()

    def predict(self, views):
        while self.closed.is_set():
            time.sleep(0.01)
        return self.inner.predict(views)


@pytest.fixture(scope="module")
def served():
    model = SemanticDraw.from_preset("tiny-sd15")
    model.network = gate = Gate(model.network)
    with serve_demo(model, height=64, width=64, max_per_user=1, forwarded_hops=1, max_streams=4,
                    max_generations=4, stream_time_limit=60) as (_, url):
        yield url, gate


def test_a_visitor_over_the_bound_is_refused_on_every_endpoint_while_others_are_served(served, tmp_path):
    url, gate = served
    path = tmp_path / "scene.zip"
    rect_scene(64, 64).save(path)
    ada = Client(url, verbose=False, headers={"X-Forwarded-For": "203.0.113.7"})
    ada_again = Client(url, verbose=False, headers={"X-Forwarded-For": "203.0.113.7"})   # another tab, same address
    bob = Client(url, verbose=False, headers={"X-Forwarded-For": "198.51.100.4"})
    gate.closed.set()                       # ada's stream runs (and waits in the network) until the gate opens
    running = ada.submit(handle_file(str(path)), 0, 3, api_name="/stream")
    try:
        deadline = time.monotonic() + 60
        while running.status().code.name not in ("PROCESSING", "ITERATING") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)                     # the handler has counted the stream
        for endpoint, args in (("/generate", (handle_file(str(path)), 0, "semanticdraw")),
                               ("/stream", (handle_file(str(path)), 0, 1))):
            with pytest.raises(Exception) as err:
                ada_again.submit(*args, api_name=endpoint).result(timeout=60)
            message = str(err.value)
            assert "already have 1" in message and "Traceback" not in message, message
        gate.closed.clear()
        assert bob.predict(handle_file(str(path)), 0, "semanticdraw", api_name="/generate") is not None
    finally:
        gate.closed.clear()
    running.result(timeout=60)
    assert len(running.outputs()) == 3      # the running stream was not disturbed
    # once her stream has ended, ada is served again
    assert ada_again.predict(handle_file(str(path)), 0, "semanticdraw", api_name="/generate") is not None


def test_the_pages_generate_and_stream_handlers_receive_the_visitors_request():
    """Gradio hands a handler the gr.Request when its signature asks for one (through the page's error wrapper):
    the page's Generate and stream runs are counted like the API's."""
    from gradio.helpers import special_args
    model = SemanticDraw.from_preset("tiny-sd15")
    demo = app.create_demo(model, height=64, width=64, max_per_user=1)
    names = {"generate_ui", "stream_ui", "api_generate", "api_stream"}
    handlers = {fn.fn.__name__: fn.fn for fn in demo.fns.values() if getattr(fn.fn, "__name__", "") in names}
    assert set(handlers) == names
    marker = object()
    for name, fn in handlers.items():
        inputs, *_ = special_args(fn, [{}] if name.endswith("_ui") else [None] * 5, marker)
        assert marker in inputs, name
