"""SemanticDraw vs the two MultiDiffusion baselines on one backbone and one scene, in one run.

    python bench/methods.py                             # tiny-sd15, Irworobongdo 1920x768 scaled to 240x96, CPU ok
    python bench/methods.py --full-size --preset sd15   # full-size SD1.5 (random weights) at 1920x768, on a GPU
    python bench/methods.py --preset sd15 --count-only  # exact calls/evaluations of the real configuration, CPU ok

Each method gets warm-up run(s), then --repeats timed runs (device synchronized around each); the table gives the
median wall time, the model calls and model evaluations of one run, the share of time inside the model, the peak
memory above the loaded weights, and the time relative to `multidiffusion` (50 DDIM steps with CFG).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (ROOT, PeakMemory, add_compile_args, add_model_args, build_model, clocked,  # noqa: E402
                          is_tiny, machine_lines, markdown_table, median, real_preset, timed, to_multiple,
                          write_outputs)
from semantic_draw import METHODS, Scene  # noqa: E402
from semantic_draw.compiled import FixedShapes  # noqa: E402
from semantic_draw.denoiser import Wrapper  # noqa: E402
from semantic_draw.oneshot import method_settings  # noqa: E402
from semantic_draw.plan import LAYOUTS  # noqa: E402
from semantic_draw.presets import get_preset  # noqa: E402
from semantic_draw.sizes import keep_aspect  # noqa: E402

TINY_HEIGHT = 96   # default canvas height for tiny presets (Irworobongdo 768x1920 -> 96x240)
GOAL = 10.0        # SemanticDraw should be at least this many times faster than multidiffusion


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--scene", default=str(ROOT / "assets" / "irworobongdo"), help="palette folder or .zip")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per method first")
    parser.add_argument("--batch-size", type=int, default=16, help="most items per model call")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ", ".join(METHODS))
    parser.add_argument("--regions", default="latent",
                        help="region layouts semanticdraw runs in, comma-separated (latent, attention): a row each")
    add_compile_args(parser, "after the eager rows, semanticdraw again with the network and decoders compiled "
                             "(its warm-up runs compile)")
    parser.add_argument("--count-only", action="store_true",
                        help="exact model calls / evaluations of the real preset's configuration at the real canvas, "
                             "fast on a CPU (tiny model whose denoiser returns zeros; its times mean nothing)")
    return parser.parse_args(argv)


def canvas(args, scene: Scene, multiple: int) -> tuple[int, int]:
    """(height, width): as given; one side given keeps the scene's aspect; none: the scene (full size) or 96 px high
    (tiny presets)."""
    height, width = args.height, args.width
    if height is None and width is None:
        if not is_tiny(args):
            return scene.height, scene.width
        height = TINY_HEIGHT
    return keep_aspect(height, width, (scene.height, scene.width), multiple)


def tile_size(args, model, scene: Scene, width: int) -> int | None:
    """--tile-size, or for a tiny preset the real family's tile scaled like the canvas (same tiling as full size)."""
    if args.tile_size or not is_tiny(args):
        return args.tile_size
    real_tile = get_preset(model.family).tile_size
    return to_multiple(real_tile * width / scene.width, 16)


def describe(model, method: str) -> tuple[str, int, str]:
    """(sampler, steps, guidance) of a method, as the library defines it."""
    settings, opts = method_settings(method, model.settings, model.step_options(), model.spec)
    guidance = f"CFG {opts.guidance:g}" if opts.guidance_mode == "full" else "none"
    return settings.sampler, model.schedule(settings).steps, guidance


def scaled_scene(original: Scene, height: int, width: int) -> Scene:
    """The scene at (height, width), mask blur scaled with the canvas so that masks keep their relative softness
    (Scene.resized keeps the blur in pixels: at 1/8 size an 8 px blur would empty the early step masks of small
    brushes and the run would evaluate fewer items than at full size)."""
    if (height, width) == (original.height, original.width):
        return original
    scene = original.resized(height, width)
    factor = width / original.width
    return replace(scene, layers=[replace(layer, mask_blur=layer.mask_blur * factor) for layer in scene.layers])


def run_method(model, scene: Scene, method: str, args, tile: int | None, regions: str = "latent") -> dict:
    kwargs = dict(seed=args.seed, method=method, batch_size=args.batch_size, tile_size=tile, regions=regions)
    with clocked(model) as clock:
        for _ in range(args.warmup):
            model.generate(scene, **kwargs)
        clock.take()
        times, inside, peaks = [], [], []
        for _ in range(args.repeats):
            model.counts.reset()
            with PeakMemory(model.device) as mem:
                image, seconds = timed(lambda: model.generate(scene, **kwargs), model.device)
            times.append(seconds)
            inside.append(clock.take("model")["model"] / seconds)
            peaks.append(mem.mib)
    sampler, steps, guidance = describe(model, method)
    label = method if regions == "latent" else f"{method} ({regions} regions)"
    return dict(method=label, sampler=sampler, steps=steps, guidance=guidance,
                time=median(times), min=min(times), max=max(times), calls=model.calls, items=model.items,
                inside=median(inside), peak=max(peaks), memory_method=mem.method, image=image,
                padded=padded_items(model, scene, kwargs) if args.count_only else None)


class _Items(Wrapper):
    """Items reaching the network itself (below the padding a compiled network asks for)."""
    def __init__(self, inner):
        super().__init__(inner)
        self.items = 0

    def predict(self, views):
        self.items += len(views)
        return self.inner.predict(views)


def padded_items(model, scene: Scene, kwargs: dict) -> int:
    """The evaluations of one run as a compiled network sees them: calls padded to its shapes (compiled.py)."""
    network = model.network
    inner = _Items(network)
    model.network = FixedShapes(inner)
    try:
        model.generate(scene, **kwargs)
    finally:
        model.network = network
    return inner.items


def report(model, args, scene: Scene, rows: list[dict], tile) -> str:
    ref = next((r for r in rows if r["method"] == "multidiffusion"), None)
    sd = next((r for r in rows if r["method"] == "semanticdraw"), None)
    lines = [f"## Methods: {scene.name or args.scene} at {scene.width}x{scene.height} px, {len(scene.layers)} brushes",
             "", *machine_lines(model, args),
             f"- tile size: {tile or model.backbone.tile_size} px; batch size {args.batch_size}; "
             f"{args.warmup} warm-up + {args.repeats} timed runs per method; seed {args.seed}"]
    if args.count_only:
        headers = ["method", "sampler", "steps", "guidance", "model calls", "model evals", "compiled evals",
                   "evals / multidiffusion"]
        table = [[r["method"], r["sampler"], r["steps"], r["guidance"], r["calls"], r["items"], r["padded"],
                  f"{r['items'] / ref['items']:.3f}" if ref else "-"] for r in rows]
        lines += ["- counts only: the denoiser returns zeros, so no time here means anything; compiled evals: the "
                  "same run with its calls padded to the shapes a compiled network is given", "",
                  markdown_table(headers, table), ""]
        if sd and ref:
            lines.append(f"multidiffusion evaluates the denoiser {ref['items'] / sd['items']:.1f}x as often as "
                         "SemanticDraw: about the speed-up to expect where the denoiser dominates the time.")
        return "\n".join(lines)
    headers = ["method", "sampler", "steps", "guidance", "time median (s)", "min-max (s)", "model calls",
               "model evals", "in model", "peak mem (MiB)", "time / multidiffusion", "speed-up"]
    table = []
    for r in rows:
        ratio = r["time"] / ref["time"] if ref else None
        table.append([r["method"], r["sampler"], r["steps"], r["guidance"], f"{r['time']:.3f}",
                      f"{r['min']:.3f}-{r['max']:.3f}", r["calls"], r["items"], f"{100 * r['inside']:.0f}%",
                      f"{r['peak']:.0f}", "-" if ratio is None else f"{ratio:.3f}",
                      "-" if ratio is None else f"{1 / ratio:.1f}x"])
    lines += [f"- peak mem: {rows[0]['memory_method']}", "", markdown_table(headers, table), ""]
    if sd and ref:
        speed = ref["time"] / sd["time"]
        lines.append(f"SemanticDraw is {speed:.1f}x faster than multidiffusion with {ref['items'] / sd['items']:.1f}x "
                     f"fewer model evaluations (goal: >= {GOAL:g}x faster: {'met' if speed >= GOAL else 'NOT met'}).")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.count_only:
        args.warmup, args.repeats = 0, 1
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0.")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"Unknown method(s) {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}.")
    layouts = [r.strip() for r in args.regions.split(",") if r.strip()]
    if not layouts or set(layouts) - set(LAYOUTS) or len(set(layouts)) < len(layouts):
        raise SystemExit(f"--regions takes one or more of {', '.join(LAYOUTS)}, comma-separated.")
    model = build_model(args)
    original = Scene.load(args.scene)
    height, width = canvas(args, original, model.size_multiple)
    scene = scaled_scene(original, height, width)
    tile = tile_size(args, model, original, width)
    print(f"{model.name} on {model.device}: {scene.width}x{scene.height}, preset settings of "
          f"{real_preset(args).name}", flush=True)
    rows = []
    for method in methods:
        for regions in layouts if method == "semanticdraw" else ["latent"]:
            rows.append(run_method(model, scene, method, args, tile, regions))
            r = rows[-1]
            print(f"  {r['method']}: {r['time']:.3f} s, {r['calls']} calls, {r['items']} evals", flush=True)
    if args.compile and "semanticdraw" in methods and not args.count_only:
        model.compile(cache_dir=args.compile_cache, shapes=args.compile_shapes)   # warm-up runs compile
        for regions in layouts:
            rows.append(run_method(model, scene, "semanticdraw", args, tile, regions))
            where = "" if regions == "latent" else f", {regions} regions"
            rows[-1]["method"] = f"semanticdraw (compiled, {args.compile_shapes} shapes{where})"
            print(f"  {rows[-1]['method']}: {rows[-1]['time']:.3f} s", flush=True)
    text = report(model, args, scene, rows, tile)
    print("\n" + text)
    if args.count_only:
        chart = ("Model evaluations per image", [r["method"] for r in rows], [r["items"] for r in rows], "evals")
    else:
        chart = ("Wall time per image (s), median", [r["method"] for r in rows], [r["time"] for r in rows], "s")
    for path in write_outputs(args.out, "methods", text, chart):
        print(f"wrote {path}")
    if args.out and not args.count_only:
        for r in rows:
            r["image"].save(Path(args.out) / f"methods-{r['method']}.png")


if __name__ == "__main__":
    main()
