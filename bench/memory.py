"""Memory of a large one-shot, the VAE decode whole against tiled, a memory cap, and an out-of-memory answered cleanly.

    python bench/memory.py                                           # tiny-sd15 on the CPU (checks the script)
    python bench/memory.py --full-size --preset sd15 --cap-gib 8     # on a GPU: 4096x2048 must fit in 8 GiB

Rows, one process:
1. ``generate`` of the scene (default: Irworobongdo stretched to 4096x2048, mask blur scaled with the canvas) with
   the library's defaults (its VAE decode is tiled above 2 MP): peak memory above the loaded model, seconds, and the
   memory the model holds after the request (it must return near its level before).
2. The final latent decoded whole, then in tiles (peaks of the decode alone): what tiling saves. ``--skip-whole``
   leaves the whole decode out (a 4096x2048 whole decode needs about 21 GiB on a GPU in fp16).
3. ``--cap-gib X`` (CUDA): the same generate with the process capped at X GiB
   (``torch.cuda.set_per_process_memory_fraction``): "fits" or the error.
4. ``--inject-oom`` (CUDA): a cap just above the resident weights, so the request runs out of memory: it must end in
   one ResourceError with advice, the memory must be released, and the next (small) request must be served.

CPU peaks are of the process's RSS (bench/common.PeakMemory) and only check the script; GPU rows are the measurement.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.methods import scaled_scene  # noqa: E402
from bench.common import (ROOT, PeakMemory, add_model_args, build_model, machine_lines, markdown_table,  # noqa: E402
                          sync, write_outputs)
from semantic_draw import ResourceError, Scene  # noqa: E402
from semantic_draw.backbones import common as vae_io  # noqa: E402
from semantic_draw.memory import release  # noqa: E402

GIB = 2 ** 30


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--scene", default=str(ROOT / "assets" / "irworobongdo"), help="palette folder or .zip")
    parser.add_argument("--cap-gib", type=float, default=None, help="CUDA: cap the process at this many GiB")
    parser.add_argument("--inject-oom", action="store_true", help="CUDA: a cap the request cannot fit in")
    parser.add_argument("--skip-whole", action="store_true", help="no whole (untiled) decode of the canvas")
    return parser.parse_args(argv)


def held_mib(device) -> float:
    """Memory the process holds now: CUDA tensors, or the CPU's RSS."""
    if device.type == "cuda":
        sync(device)
        return torch.cuda.memory_allocated(device) / 2 ** 20
    from bench.common import _proc_status_kib
    return (_proc_status_kib("VmRSS") or 0) / 1024


def stretched(path: str, height: int, width: int) -> Scene:
    """The palette at height x width, its mask blur scaled with the canvas (bench/methods.scaled_scene)."""
    return scaled_scene(Scene.load(path), height, width).validate()


def measured(device, fn):
    """(result or the error, seconds, peak MiB above the start, MiB held after minus before)."""
    release()
    before = held_mib(device)
    start = time.perf_counter()
    with PeakMemory(device) as peak:
        try:
            out = fn()
        except ResourceError as err:
            out = err
    seconds = time.perf_counter() - start
    release()
    return out, seconds, peak.mib, held_mib(device) - before


def capped(device, gib: float | None):
    """Cap (or uncap: None) the CUDA process at ``gib`` GiB; False where that cannot be done."""
    if device.type != "cuda":
        return False
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(1.0 if gib is None else min(1.0, gib * GIB / total), device)
    return True


def main(argv=None):
    args = parse_args(argv)
    model = build_model(args)
    device = model.device
    height, width = args.height or 2048, args.width or 4096
    scene = stretched(args.scene, height, width)
    label = f"{width}x{height}, {len(scene.layers)} brushes"
    print("\n".join(machine_lines(model, args)))
    rows = []

    def row(what, result, seconds, peak, after):
        outcome = "ok" if not isinstance(result, Exception) else f"{type(result).__name__}: {str(result)[:70]}"
        rows.append([what, outcome, f"{seconds:.2f}", f"{peak:,.0f}", f"{after:+,.0f}"])
        print(markdown_table(["what", "outcome", "seconds", "peak above start (MiB)", "held after (MiB)"],
                             rows[-1:]).splitlines()[-1], flush=True)

    latent, *rest = measured(device, lambda: model.generate(scene, seed=args.seed, output="latent"))
    row(f"generate {label} (latent)", latent, *rest)
    image = measured(device, lambda: model.generate(scene, seed=args.seed))
    row(f"generate {label}, tiled VAE decode above {vae_io.TILE_ABOVE_PIXELS / 1e6:.1f} MP (library default)",
        *image)
    if not isinstance(latent, Exception):
        with torch.inference_mode():
            if not args.skip_whole:
                limit = vae_io.TILE_ABOVE_PIXELS
                vae_io.TILE_ABOVE_PIXELS = 1 << 62          # this decode whole, whatever its size
                try:
                    row("VAE decode, whole canvas", *measured(device, lambda: model.backbone.decode(latent)))
                finally:
                    vae_io.TILE_ABOVE_PIXELS = limit
            row("VAE decode, tiled", *measured(device, lambda: model.backbone.decode(latent)))
    if args.cap_gib and capped(device, args.cap_gib):
        try:
            row(f"generate {label}, capped at {args.cap_gib:g} GiB",
                *measured(device, lambda: model.generate(scene, seed=args.seed)))
        finally:
            capped(device, None)
    if args.inject_oom and capped(device, held_mib(device) / 1024 + 0.25):
        try:
            row("generate with a cap of the weights + 0.25 GiB (out of memory expected)",
                *measured(device, lambda: model.generate(scene, seed=args.seed)))
        finally:
            capped(device, None)
        small = stretched(args.scene, 512, 1280)
        row("the next request (1280x512), uncapped", *measured(device, lambda: model.generate(small, seed=1)))
    table = markdown_table(["what", "outcome", "seconds", "peak above start (MiB)", "held after (MiB)"], rows)
    print("\n" + table)
    for path in write_outputs(args.out, "memory", "\n".join(machine_lines(model, args)) + "\n\n" + table):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
