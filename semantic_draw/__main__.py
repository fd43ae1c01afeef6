"""Command line: python -m semantic_draw {presets, generate, stream, preview} ..."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .backbones.registry import FAMILIES
from .errors import OptionError, SemanticDrawError
from .oneshot import METHODS
from .plan import LAYOUTS


def parse_lora(text: str) -> tuple[str, str | None, float]:
    """SOURCE[::WEIGHT_NAME][@SCALE], e.g. latent-consistency/lcm-lora-sdv1-5@1.0 or ./style.safetensors@0.8."""
    scale = 1.0
    if "@" in text:
        text, _, s = text.rpartition("@")
        try:
            scale = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"LoRA scale must be a number, not {s!r}") from None
    source, _, weight = text.partition("::")
    return source, weight or None, scale


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--preset", default=None, help="named preset (see `presets`); default sd15, or tiny-sd15 offline")
    g.add_argument("--model", default=None, help="any SD1.5 / SDXL / SD3 hub id, diffusers folder or .safetensors file")
    g.add_argument("--family", choices=list(FAMILIES), help="with --model, when it cannot be detected")
    g.add_argument("--lora", action="append", type=parse_lora, default=[], metavar="SRC[::WEIGHT][@SCALE]",
                   help="LoRA to apply with --model (repeatable)")
    g.add_argument("--device", default=None, help="cuda, cpu, mps (default: CUDA when present)")
    g.add_argument("--dtype", default=None, help="float16, bfloat16 or float32 (default: float16 on CUDA)")
    g.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile (CUDA graphs on a GPU); the first call of each shape "
                        "compiles (minutes), later ones are fast")
    g.add_argument("--compile-cache", default=None, metavar="DIR",
                   help="with --compile: keep the compile cache in DIR, so the next run starts warm")
    g.add_argument("--compile-shapes", choices=["dynamic", "static"], default="dynamic",
                   help="with --compile: one graph for every batch size of a canvas (dynamic, default) or one per "
                        "batch shape (static)")
    g.add_argument("--compile-ahead", action="store_true",
                   help="with --compile-cache: compile the network ahead of time for this palette's canvas, brush "
                        "count and region layout, the programs kept in the folder; the next run loads them in "
                        "seconds (nothing traced)")


def load_model(args, scene=None):
    """The model the options name; with --compile-ahead, its programs for ``scene`` compiled or loaded."""
    from .model import SemanticDraw
    ahead = getattr(args, "compile_ahead", False)
    if ahead and not args.compile_cache:
        raise OptionError("--compile-ahead keeps its programs in the compile cache folder: give --compile-cache DIR.")
    model = SemanticDraw.load(args.preset, model=args.model, family=args.family, loras=args.lora,
                              device=args.device, dtype=args.dtype, compile=args.compile,
                              compile_cache=args.compile_cache, compile_shapes=args.compile_shapes)
    if ahead and scene is not None:
        net = model.compile_ahead(args.compile_cache, canvases=[(scene.height, scene.width)],
                                  brushes=(len(scene.layers),), regions=(args.regions,), shapes=args.compile_shapes)
        failed = net.failed
        print(f"ahead of time: {model.packages.loaded} program(s) loaded, {model.packages.compiled} compiled"
              + (f", {len(failed)} kind(s) of call could not be compiled and run as before ({failed[0]})"
                 if failed else ""), file=sys.stderr)
    return model


def load_scene(args):
    from .scene import Scene
    scene = Scene.load(args.palette)
    if args.height or args.width:
        scene = scene.resized(args.height, args.width)
    return scene


def cmd_presets(args) -> int:
    from .presets import PRESETS
    width = max(len(n) for n in PRESETS)
    for p in PRESETS.values():
        source = "offline, random weights" if p.tiny else p.model
        print(f"{p.name:<{width}}  {p.family:<4}  {p.canvas[1]}x{p.canvas[0]}  {p.description}  [{source}]")
    return 0


def output_file(path: str) -> Path:
    """Where an image will go, checked before any work: a known image type, in a folder that can be made."""
    from PIL import Image
    out = Path(path)
    if out.suffix.lower() not in Image.registered_extensions():
        raise OptionError(f"--out {path}: the file name must end in an image type such as .png, .jpg or .webp.")
    make_folder(out.parent, "--out")
    return out


def make_folder(folder: Path, what: str) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OptionError(f"{what}: cannot make the folder {str(folder)!r} ({err.strerror or err}).") from None
    return folder


def cmd_generate(args) -> int:
    from tqdm import tqdm
    out = output_file(args.out)
    previews = None if not args.previews else make_folder(Path(args.previews), "--previews")
    scene = load_scene(args)
    model = load_model(args, scene)
    bar = None

    def progress(info):
        nonlocal bar
        if bar is None:   # made at the first step, so that an error before it is not glued to the bar
            bar = tqdm(total=info.steps, desc=f"{args.method} {scene.width}x{scene.height}", unit="step",
                       file=sys.stderr)
        bar.update(1)
        if previews is not None:
            info.preview().save(previews / f"step_{info.step:03d}.png")

    start = time.perf_counter()
    options = {} if args.batch_size is None else {"batch_size": args.batch_size}
    try:
        image = model.generate(scene, seed=args.seed, method=args.method, steps=args.steps, callback=progress,
                               regions=args.regions, **options)
    finally:
        if bar is not None:
            bar.close()
    image.save(out)
    print(f"saved {out} ({image.width}x{image.height}, {time.perf_counter() - start:.1f} s, "
          f"{model.calls} model calls)")
    return 0


def cmd_stream(args) -> int:
    out = make_folder(Path(args.out_dir), "--out-dir")
    scene = load_scene(args)
    model = load_model(args, scene)
    fps = 0.0
    with model.stream(scene, seed=args.seed, regions=args.regions) as session:
        for event in session.run(frames=args.frames, every_frame=True):
            event.image.save(out / f"frame_{event.frames - 1:04d}.png")
            fps = event.fps
        stats = session.stats()
    print(f"{args.frames} frames in {out} ({fps:.2f} frames/s after the first, which fills the pipeline; "
          f"{stats['items_last_frame']} views in {stats['calls_last_frame']} model call(s) per frame, "
          f"{args.regions} regions)")
    return 0


def cmd_preview(args) -> int:
    out = output_file(args.out)
    scene = load_scene(args)
    scene.preview().save(out)
    names = ", ".join(f"{layer.name}: {layer.prompt!r}" for layer in scene.layers)
    print(f"saved {args.out}: {scene.width}x{scene.height}, background {scene.background.prompt!r}; {names}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m semantic_draw",
                                     description="Region-based text-to-image generation with semantic brushes.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("presets", help="list the named presets").set_defaults(run=cmd_presets)

    def scene_command(name, help_text, run):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("palette", help="palette folder or .zip (scene.json + masks), e.g. assets/irworobongdo")
        p.add_argument("--height", type=int, default=None, help="resize the scene (keeps the aspect if alone)")
        p.add_argument("--width", type=int, default=None)
        p.set_defaults(run=run)
        return p

    def regions_option(p):
        p.add_argument("--regions", choices=LAYOUTS, default="latent",
                       help="latent: one view per brush (the paper's layout); attention: one view per slot, the "
                            "brushes mixed in the attention layers (cost flat in the number of brushes)")

    g = scene_command("generate", "one image from a palette (any canvas size)", cmd_generate)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--method", choices=METHODS, default="semanticdraw")
    g.add_argument("--steps", type=int, default=None, help="override the preset's number of steps")
    g.add_argument("--batch-size", type=int, default=None, help="most views in one model call")
    g.add_argument("--out", default="out.png")
    g.add_argument("--previews", default=None, metavar="DIR", help="save a preview after every step")
    regions_option(g)
    add_model_args(g)
    s = scene_command("stream", "stream frames from a palette into a folder", cmd_stream)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--frames", type=int, default=10)
    s.add_argument("--out-dir", default="frames")
    regions_option(s)
    add_model_args(s)
    v = scene_command("preview", "draw a palette's brushes in their colours", cmd_preview)
    v.add_argument("--out", default="palette.png")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SemanticDrawError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
