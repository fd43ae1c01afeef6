"""Launch the app in-process on a free loopback port for a test module: `with serve(model, **config) as url:`."""
from __future__ import annotations

import contextlib
import socket

import app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(model, **config):
    """The app around `model` (app.create_demo options in `config`), served until the block ends; yields its URL."""
    demo = app.create_demo(model, **config)
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                           quiet=True)
    try:
        yield url
    finally:
        demo.close()
