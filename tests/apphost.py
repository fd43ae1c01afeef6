"""Launch the app in-process on a free loopback port for a test module: `with serve(models, **config) as url:`
(`serve_demo` yields the Blocks too, whose `sd_config` a test may change while it serves)."""
from __future__ import annotations

import contextlib
import socket

import app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_demo(models, **config):
    """The app around `models` (one SemanticDraw or a dict name -> SemanticDraw; app.create_demo options in
    `config`), served until the block ends; yields (demo, URL)."""
    demo = app.create_demo(models, **config)
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                           quiet=True)
    try:
        yield demo, url
    finally:
        demo.close()


@contextlib.contextmanager
def serve(models, **config):
    """serve_demo, yielding the URL only."""
    with serve_demo(models, **config) as (_, url):
        yield url
