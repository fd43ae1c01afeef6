"""A load run against the app on loopback: clients streaming and generating at once, with good and bad input.

    python tests/load_app.py                              # 8 clients, 180 s (the issue's run; about 4 minutes)
    python tests/load_app.py --clients 3 --seconds 20     # what tests/test_load.py runs in CI

It starts `python app.py --preset tiny-sd15` on a free 127.0.0.1 port (a process of its own, stopped by its PID at
the end), then runs for --seconds:
- stream clients: /stream, 6 frames at a time, again and again, each with its own palette and seed;
- one-shot clients: /generate of their own palette (each reply is compared with the image the library makes for
  that palette and seed: no client may get another's image);
- a hostile client: a damaged zip, an unknown method, too many frames, a palette over the server's brush limit,
  each of which must come back as a readable error while the server keeps serving.
Before that, a stream alone sets its solo frame interval; during the run, one client generates a wide one-shot
(Irworobongdo) now and then, and the stream frame intervals while it runs are compared with the solo ones.
Prints a table and exits 1 when a check fails: unexpected errors, a wrong image, server memory growing after
warm-up (> 15 %), a stream client below 80 % of the mean frame count, p95 frame interval during the wide one-shot
above 3x the solo p95.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

SIZE = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def palettes(folder: Path, clients: int) -> dict:
    """One palette per client (its own prompts and brush), the wide scene, a damaged zip, an oversized palette."""
    from scenes import fixture_scene, rect_scene
    out = {}
    for i in range(clients):
        scene = rect_scene(SIZE, SIZE, [(f"object number {i}", (4 * i % 32, 8, 4 * i % 32 + 32, 56))],
                           background_prompt=f"background {i}")
        out[i] = folder / f"client{i}.zip"
        scene.save(out[i])
    out["wide"] = folder / "wide.zip"
    fixture_scene("irworobongdo").resized(96, 240).save(out["wide"])
    out["damaged"] = folder / "damaged.zip"
    out["damaged"].write_bytes(b"PK\x03\x04 not really a zip")
    crowded = rect_scene(SIZE, SIZE, [(f"thing {k}", (k % 8 * 8, k // 8 * 8, k % 8 * 8 + 8, k // 8 * 8 + 8))
                                      for k in range(30)], background_prompt="crowd")
    out["crowded"] = folder / "crowded.zip"
    crowded.save(out["crowded"])
    return out


def expected_images(files: dict, clients: int) -> dict:
    """What the library makes for each client's palette and seed (the server's model is the same, seeded)."""
    from semantic_draw import Scene, SemanticDraw
    model = SemanticDraw.from_preset("tiny-sd15")
    return {i: np.asarray(model.generate(Scene.load(files[i]), seed=100 + i).convert("RGB"), np.int16)
            for i in range(clients)}


class Run:
    def __init__(self, url: str, files: dict, want: dict, stop: threading.Event):
        self.url, self.files, self.want, self.stop = url, files, want, stop
        self.lock = threading.Lock()
        self.frames: dict[int, list[list[float]]] = {}  # client -> frame arrival times, one list per /stream call
        self.wide: list[tuple[float, float]] = []        # (start, end) of each wide one-shot
        self.generated = self.wrong = 0
        self.unexpected: list[str] = []
        self.refused = 0

    def client(self):
        from gradio_client import Client
        return Client(self.url, verbose=False)

    def note(self, what: str):
        with self.lock:
            self.unexpected.append(what)

    def streamer(self, i: int):
        from gradio_client import handle_file
        client, runs = self.client(), self.frames.setdefault(i, [])
        while not self.stop.is_set():
            runs.append([])
            try:
                for _ in client.submit(handle_file(str(self.files[i])), 100 + i, 6, api_name="/stream"):
                    runs[-1].append(time.monotonic())
            except Exception as err:
                self.note(f"stream {i}: {type(err).__name__}: {str(err)[:200]}")

    def generator(self, i: int):
        from gradio_client import handle_file
        from PIL import Image
        client = self.client()
        while not self.stop.is_set():
            try:
                path = client.predict(handle_file(str(self.files[i])), 100 + i, "semanticdraw", api_name="/generate")
                got = np.asarray(Image.open(path).convert("RGB"), np.int16)
                with self.lock:
                    self.generated += 1
                    self.wrong += int(np.abs(got - self.want[i]).max() > 1)
            except Exception as err:
                self.note(f"generate {i}: {type(err).__name__}: {str(err)[:200]}")

    def wide_generator(self):
        from gradio_client import handle_file
        client = self.client()
        while not self.stop.wait(3.0):
            start = time.monotonic()
            try:
                client.predict(handle_file(str(self.files["wide"])), 0, "semanticdraw", api_name="/generate")
                with self.lock:
                    self.wide.append((start, time.monotonic()))
            except Exception as err:
                self.note(f"wide one-shot: {type(err).__name__}: {str(err)[:200]}")

    def hostile(self):
        from gradio_client import handle_file
        client = self.client()
        bad = [(self.files["damaged"], 0, "semanticdraw", "/generate"), (self.files[0], 0, "no-such-method",
                                                                          "/generate"),
               (self.files[0], 0, 100000, "/stream"), (self.files["crowded"], 0, "semanticdraw", "/generate")]
        k = 0
        while not self.stop.wait(0.5):
            path, seed, third, api = bad[k % len(bad)]
            k += 1
            try:
                client.predict(handle_file(str(path)), seed, third, api_name=api) if api == "/generate" else \
                    client.submit(handle_file(str(path)), seed, third, api_name=api).result()
                self.note(f"hostile request {k} was accepted: {path.name} {third}")
            except Exception as err:
                text = str(err)
                if "Traceback" in text or "Something went wrong" in text:
                    self.note(f"hostile request {k}: not a readable error: {text[:200]}")
                else:
                    with self.lock:
                        self.refused += 1


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


def intervals(runs: list[list[float]], within=None) -> list[float]:
    """Frame-to-frame times inside each /stream call (optionally only those overlapping the ``within`` spans)."""
    out = []
    for times in runs:
        for a, b in zip(times, times[1:]):
            if within is None or any(s <= b and a <= e for s, e in within):
                out.append(b - a)
    return out


def phase(run: "Run", targets, seconds: float) -> None:
    """Run the client functions ``targets`` (callable, args) together for ``seconds``."""
    run.stop.clear()
    threads = [threading.Thread(target=f, args=a) for f, a in targets]
    for t in threads:
        t.start()
    time.sleep(seconds)
    run.stop.set()
    for t in threads:
        t.join(120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--max-streams", type=int, default=2)
    parser.add_argument("--no-timing-check", action="store_true",
                        help="print the frame-interval figures without gating on them (a short run has too few "
                             "frames during wide one-shots for a p95 on a busy machine)")
    args = parser.parse_args(argv)
    streams = max(1, args.clients // 2)
    generators = max(1, args.clients - streams - 1)
    folder = Path(tempfile.mkdtemp(prefix="load-"))
    files = palettes(folder, streams + generators)
    want = expected_images(files, streams + generators)
    port = free_port()
    server = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--preset", "tiny-sd15", "--port", str(port),
                               "--host", "127.0.0.1", "--height", str(SIZE), "--width", str(SIZE),
                               "--max-streams", str(args.max_streams), "--max-brushes", "12",
                               "--stream-time-limit", "0"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            print("the app did not start")
            return 1
        run = Run(url, files, want, threading.Event())
        short = min(15.0, max(5.0, args.seconds / 4))
        phase(run, [(run.streamer, (0,))], short)                     # one stream alone: its solo intervals
        solo_p95 = p95(intervals(run.frames.pop(0)))
        phase(run, [(run.streamer, (0,)), (run.wide_generator, ())], 2 * short)   # the same with wide one-shots
        during = intervals(run.frames.pop(0), run.wide)
        wide = len(run.wide)
        memory = []
        sampler = threading.Thread(target=lambda: [memory.append(rss_mib(server.pid)) for _ in iter(
            lambda: run.stop.wait(1.0), True)])
        run.stop.clear()
        sampler.start()
        phase(run, [(run.streamer, (i,)) for i in range(streams)] +
              [(run.generator, (streams + i,)) for i in range(generators)] +
              [(run.wide_generator, ()), (run.hostile, ())], args.seconds)
        sampler.join()
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    counts = [sum(len(r) for r in run.frames.get(i, [])) for i in range(streams)]
    mean = statistics.mean(counts) if counts else 0
    third = max(1, len(memory) // 3)
    warm, late = statistics.mean(memory[third:2 * third] or memory), statistics.mean(memory[-third:])
    checks = [
        ("unexpected errors", len(run.unexpected), len(run.unexpected) == 0),
        ("one-shots / wrong images", f"{run.generated} / {run.wrong}", run.generated > 0 and run.wrong == 0),
        ("hostile requests refused readably", run.refused, run.refused > 0),
        ("server memory after warm-up (MiB)", f"{warm:.0f} -> {late:.0f}", late <= 1.15 * warm),
        ("stream frames per client", counts, mean > 0 and min(counts) >= 0.8 * mean),
        ("frame interval p95, solo / during wide one-shots (s)", f"{solo_p95:.3f} / {p95(during):.3f}",
         args.no_timing_check or not during or p95(during) <= 3 * solo_p95),
        ("wide one-shots (alone with a stream / in the mix)", f"{wide} / {len(run.wide) - wide}", wide > 0),
    ]
    print(f"{args.clients} clients ({streams} streaming, {generators} generating, 1 wide one-shot, 1 hostile) for "
          f"{args.seconds:g} s, max streams {args.max_streams}\n")
    print("| check | value | ok |\n|---|---|---|")
    for name, value, ok in checks:
        print(f"| {name} | {value} | {'yes' if ok else 'NO'} |")
    for line in run.unexpected[:20]:
        print("  ", line)
    return 0 if all(ok for _, _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
