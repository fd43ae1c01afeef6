"""Stream frames per second and frame latency for 1, 3, 8 and 16 brushes, against one-shot `generate` per frame.

    python bench/stream.py                                        # tiny-sd15, 128x128, CPU ok
    python bench/stream.py --full-size --preset sd15 --layers 3   # the headline: full-size SD1.5, 512x512, 3 brushes,
                                                                  # fp16 on a GPU (goal >= 20 frames/s)

Scenes are synthetic: N rectangles and ellipses spread over the canvas on a grid, over a background prompt. For each
N the stream is filled (first frame) and warmed up, then --frames frames are timed one by one (device synchronized;
a frame ends when its PIL image exists). The time inside the network (a Timed wrapper on ``model.network``) and
inside the tiny-VAE decode (``model.decoder``) is measured per frame; the rest is "other" (region step, masks,
bookkeeping).
The same scene is then generated one-shot (``model.generate``, full VAE decode) --oneshot-repeats times.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (PeakMemory, add_compile_args, add_model_args, build_model, clocked, is_tiny,  # noqa: E402
                          machine_lines, markdown_table, median, percentile, process_age, real_preset, sync, timed,
                          to_multiple, write_outputs)
from semantic_draw.sizes import keep_aspect  # noqa: E402
from semantic_draw import Background, Layer, Scene  # noqa: E402

TINY_CANVAS = 128      # default canvas side for tiny presets
GOAL_FPS = 20.0        # headline goal: full-size SD1.5, 512x512, 3 brushes, fp16 on a GPU
GOAL_PRESET = "sd15"   # ... the preset it is set for
OBJECTS = ["a red apple", "a blue vase", "a black cat", "a yellow lemon", "a green bottle", "a white cup",
           "an orange", "a wooden bowl", "a pink flower", "a silver spoon", "a brown teddy bear", "a glass jar",
           "a purple grape bunch", "a candle", "a straw hat", "a small clock"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--layers", default="1,3,8,16", help="comma-separated brush counts")
    parser.add_argument("--frames", type=int, default=30, help="timed frames per brush count")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames after the first (filling) frame")
    parser.add_argument("--oneshot-repeats", type=int, default=3,
                        help="timed one-shot generations per brush count (0: none, and no one-shot shapes to compile)")
    add_compile_args(parser, "after the eager rows, the same rows with the network compiled (torch.compile; CUDA "
                             "graphs on a GPU), side by side; 'first frames' then includes compiling")
    parser.add_argument("--compile-ahead", action="store_true",
                        help="before the compiled rows, export and compile the network ahead of time (AOTInductor) "
                             "for this run's canvas, brush counts and layouts, the programs kept in --compile-cache "
                             "(loaded by the next run, which traces nothing); with --compile, calls no program "
                             "serves go through torch.compile, else eager")
    parser.add_argument("--compiled-only", action="store_true",
                        help="with --compile or --compile-ahead: no eager rows, so that the first row's 'since "
                             "process start' is a restarted server's time to its first frame (on a warm "
                             "--compile-cache)")
    parser.add_argument("--painting", action="store_true",
                        help="after each configuration's steady frames, as many frames with an edit before each "
                             "(the top brush grows by a stroke: a new mask, a new plan), as while someone paints")
    parser.add_argument("--regions", default="latent,attention",
                        help="region layouts to compare, side by side: latent (one view per brush), attention")
    return parser.parse_args(argv)


def synthetic_scene(brushes: int, height: int, width: int) -> Scene:
    """``brushes`` shapes on a grid of cells covering the canvas: rectangles and ellipses taking ~70 % of a cell,
    alternating, with a mask blur that scales with the canvas (8 px at 512 px)."""
    cols = math.ceil(math.sqrt(brushes))
    rows = math.ceil(brushes / cols)
    yy, xx = np.mgrid[0:height, 0:width]
    blur = 8.0 * min(height, width) / 512
    layers = []
    for i in range(brushes):
        r, c = divmod(i, cols)
        cy, cx = (r + 0.5) * height / rows, (c + 0.5) * width / cols
        ry, rx = 0.42 * height / rows, 0.42 * width / cols
        if i % 2 == 0:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            mask = (abs(yy - cy) <= 0.85 * ry) & (abs(xx - cx) <= 0.85 * rx)
        layers.append(Layer(OBJECTS[i % len(OBJECTS)], mask, name=f"brush {i + 1}", mask_blur=blur))
    return Scene(height, width, layers, Background("a wooden table, soft light"), name=f"{brushes} brushes")


def canvas(args, model) -> tuple[int, int]:
    if is_tiny(args):
        default = (TINY_CANVAS, TINY_CANVAS)
    else:
        default = real_preset(args).canvas
    if not (args.height or args.width):
        return default
    return keep_aspect(args.height, args.width, default, 16)


def tile_size(args, height: int, width: int) -> int | None:
    """--tile-size, or for a tiny preset one view over the whole canvas (as SD1.5's 768 px tile on 512x512)."""
    if args.tile_size or not is_tiny(args):
        return args.tile_size
    return to_multiple(max(height, width), 16)


def strokes(scene: Scene, n: int) -> list[np.ndarray]:
    """``n`` masks of the scene's top brush, each with one more short stroke than the one before."""
    mask = scene.layers[-1].mask.copy()
    h, w = mask.shape
    out = []
    for k in range(n):
        y, x = (7 * k) % max(1, h - 4), (11 * k) % max(1, w - 4)
        mask[y:y + 4, x:x + 4] = True
        out.append(mask.copy())
    return out


def measure_stream(model, scene: Scene, args, tile, regions: str, painting: bool = False) -> dict:
    with clocked(model) as clock:
        (session, first) = timed(lambda: model.stream(scene, seed=args.seed, tile_size=tile, regions=regions),
                                 model.device)
        first += timed(session.next_frame, model.device)[1]   # fills the pipeline: one latent walks every step
        first += timed(session.next_frame, model.device)[1]   # the first steady frame (a compiled one's 2nd shape)
        since_start = process_age()
        for _ in range(max(0, args.warmup - 1)):
            session.next_frame()
        clock.take()
        model.counts.reset()
        times, parts = [], []
        masks = strokes(scene, args.frames) if painting else [None] * args.frames
        top = len(scene.layers) - 1

        def frame(mask):
            if mask is not None:            # the edit's cost (a new plan) is part of the frame
                session.edit_layer(top, mask=mask)
            return session.next_frame()

        with PeakMemory(model.device) as mem:
            for mask in masks:
                _, seconds = timed(lambda: frame(mask), model.device)
                times.append(seconds)
                parts.append(clock.take("model", "decode"))
        slots = session.schedule.steps
        session.close()
    total = sum(times)
    model_s = sum(p["model"] for p in parts)
    decode_s = sum(p["decode"] for p in parts)
    path = compiled_path(model)
    return dict(path=path + (", painting" if painting else ""), first=first,
                since_start=since_start, graphs=model.compiled.compiles if model.compiled else None,
                regions=regions, brushes=len(scene.layers), slots=slots, fps=len(times) / total, median=median(times),
                p90=percentile(times, 90), model=model_s / total, decode=decode_s / total,
                other=max(0.0, 1 - (model_s + decode_s) / total), calls=model.calls / len(times),
                items=model.items / len(times), peak=mem.mib, memory_method=mem.method)


def compiled_path(model) -> str:
    """How the network runs: eager, torch.compile, programs compiled ahead of time, or both."""
    parts = []
    if model.packages is not None:
        net = model.backbone.net
        parts.append(f"ahead ({model.packages.loaded} programs loaded, {model.packages.compiled} compiled, "
                     f"{getattr(net, 'fallbacks', 0)} calls without one)")
    if model.compiled:
        parts.append(f"compiled ({model.compiled.shapes_mode} shapes)")
    return " + ".join(parts) or "eager"


def measure_oneshot(model, scene: Scene, args, tile, regions: str) -> dict:
    model.generate(scene, seed=args.seed, tile_size=tile, regions=regions)   # warm-up
    times = []
    for _ in range(args.oneshot_repeats):
        model.counts.reset()
        times.append(timed(lambda: model.generate(scene, seed=args.seed, tile_size=tile, regions=regions),
                           model.device)[1])
    return dict(time=median(times), calls=model.calls, items=model.items)


def report(model, args, height: int, width: int, tile, rows: list[dict]) -> str:
    headers = ["path", "regions", "brushes", "slots", "first frames (s)", "since process start (s)",
               "graphs compiled so far", "items / frame",
               "calls / frame", "frames/s",
               "latency median (ms)", "latency p90 (ms)", "in model", "tiny-VAE decode", "other", "peak mem (MiB)",
               "one-shot generate (s)", "one-shot evals", "stream speed-up"]
    table = [[r["path"], r["regions"], r["brushes"], r["slots"], f"{r['first']:.1f}", f"{r['since_start']:.1f}",
              "-" if r["graphs"] is None else r["graphs"], f"{r['items']:.0f}",
              f"{r['calls']:.0f}", f"{r['fps']:.2f}",
              f"{1000 * r['median']:.1f}", f"{1000 * r['p90']:.1f}", f"{100 * r['model']:.0f}%",
              f"{100 * r['decode']:.0f}%", f"{100 * r['other']:.0f}%", f"{r['peak']:.0f}",
              *((f"{r['oneshot']['time']:.3f}", r["oneshot"]["items"], f"{r['fps'] * r['oneshot']['time']:.1f}x")
                if r["oneshot"] else ("-", "-", "-"))]
             for r in rows]
    lines = [f"## Stream: {width}x{height} px, synthetic brushes", "", *machine_lines(model, args),
             f"- tile size: {tile or model.backbone.tile_size} px; {args.warmup} warm-up frames after the filling "
             f"frame, {args.frames} timed frames; one-shot: 1 warm-up + {args.oneshot_repeats} timed; seed {args.seed}",
             f"- peak mem (stream frames only): {rows[0]['memory_method']}",
             "- first frames: from opening the stream to its first steady frame (compiling included); since process "
             "start: the moment that frame was done, counted from the start of this process (imports and the model "
             "build included: for the first row of a fresh process on a warm cache folder, a restarted server's "
             "time to its first frame)",
             "- graphs compiled so far: the compiled network's graphs after the row (each took a compile; with "
             "dynamic shapes new batch sizes of a canvas take none)",
             "- in model / tiny-VAE decode / other: shares of the frame time (CUDA: event time on the GPU stream)",
             "- stream speed-up: frames/s x one-shot seconds (stream frames per one-shot image)", "",
             markdown_table(headers, table), ""]
    head = max((r for r in rows if r["brushes"] == 3 and r["regions"] == "latent"), key=lambda r: r["fps"],
               default=None)
    if args.full_size and real_preset(args).name == GOAL_PRESET and (height, width) == (512, 512) and head:
        met = "met" if head["fps"] >= GOAL_FPS else "NOT met"
        lines.append(f"Headline (full-size SD1.5, 512x512, 3 brushes, {model.backbone.dtype}, {model.device}): "
                     f"{head['fps']:.1f} frames/s (goal >= {GOAL_FPS:g}: {met}).")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.frames < 1 or args.warmup < 0 or args.oneshot_repeats < 0:
        raise SystemExit("--frames must be >= 1, --warmup and --oneshot-repeats >= 0.")
    counts = [int(n) for n in args.layers.split(",") if n.strip()]
    layouts = [r.strip() for r in args.regions.split(",") if r.strip()]
    model = build_model(args)
    height, width = canvas(args, model)
    tile = tile_size(args, height, width)
    print(f"{model.name} on {model.device}: {width}x{height}, brushes {counts}, regions {layouts}", flush=True)
    rows = []
    fast = args.compile or args.compile_ahead
    if args.compile_ahead and not args.compile_cache:
        raise SystemExit("--compile-ahead keeps its programs in --compile-cache: give one.")
    paths = ("compiled",) if fast and args.compiled_only else ("eager", "compiled") if fast else ("eager",)
    for path in paths:
        if path == "compiled" and args.compile:
            model.compile(cache_dir=args.compile_cache, shapes=args.compile_shapes)
        if path == "compiled" and args.compile_ahead:
            start = time.perf_counter()
            model.compile_ahead(args.compile_cache, canvases=[(height, width)], brushes=counts, regions=layouts,
                                shapes=args.compile_shapes, tile_size=tile)
            print(f"  ahead of time: {model.packages.loaded} programs loaded, {model.packages.compiled} compiled "
                  f"({time.perf_counter() - start:.1f} s; process age {process_age():.1f} s)", flush=True)
        for n in counts:
            scene = synthetic_scene(n, height, width)
            for regions in layouts:
                start = time.perf_counter()
                row = measure_stream(model, scene, args, tile, regions)
                row["oneshot"] = measure_oneshot(model, scene, args, tile, regions) if args.oneshot_repeats else None
                rows.append(row)
                if args.painting:
                    painted = measure_stream(model, scene, args, tile, regions, painting=True)
                    painted["oneshot"] = None
                    rows.append(painted)
                    print(f"  {path}, {n} brushes, {regions}, painting: {painted['fps']:.2f} frames/s", flush=True)
                sync(model.device)
                oneshot = f"; one-shot {row['oneshot']['time']:.3f} s" if row["oneshot"] else ""
                print(f"  {row['path']}, {n} brushes, {regions}: {row['fps']:.2f} frames/s, median "
                      f"{1000 * row['median']:.1f} ms, first frames {row['first']:.1f} s{oneshot} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    text = report(model, args, height, width, tile, rows)
    print("\n" + text)
    chart = ("Stream frames/s by brush count and region layout",
             [f"{r['path']}, {r['brushes']} brushes, {r['regions']}" for r in rows], [r["fps"] for r in rows],
             "frames/s")
    for path in write_outputs(args.out, "stream", text, chart):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
