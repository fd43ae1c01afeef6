"""A short load run against the app on loopback (tests/load_app.py; the full run is 8 clients for 3 minutes):
streams and one-shots at once with good and bad input, every check of the script must hold."""
import os

import pytest

import load_app

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads server memory from /proc")


def test_three_clients_for_twenty_seconds(capsys):
    # 20 s gives a handful of frames during wide one-shots: the latency ratio is printed, gated in the full run only
    status = load_app.main(["--clients", "3", "--seconds", "20", "--no-timing-check"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "| one-shots / wrong images |" in out
