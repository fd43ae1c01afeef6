"""The app's stream loop, its events taken in turn against read ahead (app_parts/ahead.py), in one run.

    python bench/page_loop.py                        # tiny-sd15, 128 and 256 px, 3 brushes, 1 torch thread
    python bench/page_loop.py --sizes 256 --frames 60 --repeats 3

In turn, the loop asks the GPU worker for the next frame only after the last one went through the host work that
brings it to the page: the file, Gradio's post-processing and file cache, the message to the browser. Read ahead, a
thread asks for the next frame at once and the loop takes the newest. Two measurements, each mode alternating
(ABAB...) on one model and one server:

- "API": the app served on 127.0.0.1 and its /stream endpoint called through gradio_client for --frames frames
  (every frame, PNG): the whole path, Gradio's queue and server-sent events included. Frames/s at the client.
- "page": the page's loop (Streaming.frames, JPEG frames, newer frames replacing unseen ones) with the real GPU
  worker, while a painter changes the seed after every frame the page gets (someone painting), each frame then going
  through the output component's post-processing and Gradio's file cache, as a frame the page is sent. Frames the page
  got a second, and the frames computed meanwhile.

Each `--networks` entry is a row per canvas: "real" runs the tiny network on this CPU (one torch thread by default:
the network on one core, the host work on the other), whose Python dispatch holds the interpreter lock much of a
frame; a number of milliseconds replaces the network by that much device time (a sleep, which releases the lock as
a CUDA synchronisation does, returning zeros): a GPU's frame, the stream's own host work and the decoder still real.
Figures are ratios on this machine (the GPU machines have no gradio to run the app).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402

from bench.common import ZeroNetwork, cpu_model, markdown_table, median, write_outputs  # noqa: E402
from bench.stream import synthetic_scene  # noqa: E402
from semantic_draw import SemanticDraw  # noqa: E402

MODES = ("in turn", "read ahead")


class DeviceTime(ZeroNetwork):
    """The network as a fixed device time: sleeps (the interpreter lock released), then predicts zeros."""

    def __init__(self, inner, seconds: float):
        super().__init__(inner)
        self.seconds = seconds

    def predict(self, views):
        time.sleep(self.seconds)
        return super().predict(views)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny-sd15")
    parser.add_argument("--sizes", default="128,256", help="canvas sides in px")
    parser.add_argument("--networks", default="real,25",
                        help="'real' (the tiny network) and/or milliseconds of device time a network call takes")
    parser.add_argument("--layers", type=int, default=3, help="brushes")
    parser.add_argument("--frames", type=int, default=40, help="frames a measurement takes")
    parser.add_argument("--repeats", type=int, default=2, help="measurements of each mode (alternating)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", default=None, help="folder for page_loop.md")
    return parser.parse_args(argv)


def set_mode(mode: str) -> None:
    import app_parts.streaming as streaming
    streaming.READ_AHEAD = mode == "read ahead"


def api_fps(client, palette: str, frames: int) -> float:
    from gradio_client import handle_file
    start = time.perf_counter()
    got = client.predict(handle_file(palette), 0, frames, "latent", api_name="/stream")
    elapsed = time.perf_counter() - start
    assert got, "the stream sent no frame"
    return frames / elapsed


def page_fps(model, scene, frames: int) -> tuple[float, float]:
    """(frames the page got a second, frames computed a second) while the seed changes after every frame got."""
    import gradio as gr
    from gradio import processing_utils

    from app_parts.session import SessionState
    from app_parts.streaming import Streaming
    from app_parts.work import edit_queue, make_workers

    _, work = make_workers(model)
    output = gr.Image(type="pil", format="png")   # the page's output component

    class Cfg:
        stream_time_limit = 600

    class Ui:
        cfg = Cfg()

    st, edits = SessionState(), edit_queue()
    run = st.start_stream()
    loop = Streaming(Ui(), work).frames(st, run, None, scene, 0, edits)
    got, seed, start, last = 0, 0, None, None
    try:
        for frame, live in loop:
            if frame is None or live.event.kind != "frame":
                continue
            processing_utils.move_files_to_cache(output.postprocess(frame), output, postprocess=True)
            seed += 1
            edits.put(("seed", seed))          # the painter's next stroke
            if start is None:                  # timing starts after the first frame (warm-up)
                start, first = time.perf_counter(), live.event.frames
                continue
            got += 1
            last = live.event.frames
            if got >= frames:
                break
        elapsed = time.perf_counter() - start
    finally:
        loop.close()
    return got / elapsed, (last - first) / elapsed


def measure(args, client, model, scene, palette: str, size: int, network: str) -> list:
    """One row: both modes, alternating, --repeats times each."""
    api, page, computed = {m: [] for m in MODES}, {m: [] for m in MODES}, {m: [] for m in MODES}
    set_mode(MODES[1])
    api_fps(client, palette, 3)        # warm-up: the model's caches, the server's first request
    for _ in range(args.repeats):
        for mode in MODES:
            set_mode(mode)
            api[mode].append(api_fps(client, palette, args.frames))
            shown, made = page_fps(model, scene, args.frames)
            page[mode].append(shown)
            computed[mode].append(made)
    a0, a1 = median(api[MODES[0]]), median(api[MODES[1]])
    p0, p1 = median(page[MODES[0]]), median(page[MODES[1]])
    what = "tiny, this CPU" if network == "real" else f"{network} ms device time"
    return [f"{size}x{size}", what, a0, a1, f"{a1 / a0:.2f}x", p0, p1, f"{p1 / p0:.2f}x",
            median(computed[MODES[1]])]


def main(argv=None) -> str:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)   # (a caller in the same process, a test, keeps its threads)


def run(args) -> str:
    from apphost import serve
    model = SemanticDraw.from_preset(args.preset)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for size in sizes:
        scene = synthetic_scene(args.layers, size, size)
        palette = str(Path(tempfile.mkdtemp(prefix="page-loop-")) / "palette.zip")
        scene.save(palette)
        with serve(model, height=size, width=size, max_canvas=max(sizes), max_stream_side=max(sizes),
                   stream_time_limit=600, max_stream_frames=max(args.frames, 10)) as url:
            from gradio_client import Client
            client = Client(url, verbose=False)
            for network in args.networks.split(","):
                real = model.network
                if network != "real":
                    model.network = DeviceTime(real, float(network) / 1000)
                try:
                    rows.append(measure(args, client, model, scene, palette, size, network))
                finally:
                    model.network = real
                print(" | ".join(map(str, rows[-1])), flush=True)
        set_mode(MODES[1])
    table = markdown_table(["canvas", "network", "API in turn (frames/s)", "API read ahead", "ratio", "page in turn",
                            "page read ahead", "ratio", "computed, read ahead (frames/s)"], rows)
    text = "\n".join([f"{args.preset}, {args.layers} brushes, {args.frames} frames a measurement, medians of "
                      f"{args.repeats}; CPU: {cpu_model()}, torch threads {args.threads}", "", table])
    print(text)
    write_outputs(args.out, "page_loop", text)
    return text


if __name__ == "__main__":
    main()
