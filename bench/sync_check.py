"""Checks that a stream frame does no device-to-host synchronization (needs a CUDA GPU).

    python bench/sync_check.py --full-size --preset sd15 --layers 3          # eager
    python bench/sync_check.py --full-size --preset sd15 --layers 3 --compile

The stream is filled and warmed first; then its steady frames run (latents out: turning a frame into a PIL image
has to read it back, by design) under torch.cuda.set_sync_debug_mode("warn"): every synchronizing call is recorded
with the stack of our code that made it. Prints each such place and how often it happened (exit status 1), or that
there was none.
"""
from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import add_model_args, build_model  # noqa: E402
from bench.stream import canvas, synthetic_scene, tile_size  # noqa: E402


def steady_frame_syncs(session, frames: int) -> dict[str, int]:
    """Run ``frames`` frames in torch's sync "warn" mode; every synchronizing call's stack (our code's frames only)
    with how often it happened."""
    sites: dict[str, int] = {}
    root = str(Path(__file__).resolve().parents[1])

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchronizing" not in str(message):
            return
        stack = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(root) and "bench" not in f.filename]
        where = "".join(traceback.format_list(stack[-4:]))
        sites[where] = sites.get(where, 0) + 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(frames):
                session.next_frame(output="latent")
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sites


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--regions", default="latent")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    model = build_model(args)
    if model.device.type != "cuda":
        print("sync_check needs a CUDA device: nothing to check here.")
        return 0
    if args.compile:
        model.compile()
    height, width = canvas(args, model)
    scene = synthetic_scene(args.layers, height, width)
    with model.stream(scene, seed=args.seed, tile_size=tile_size(args, height, width), regions=args.regions) as s:
        for _ in range(3):
            s.next_frame(output="latent")
        torch.cuda.synchronize()
        sites = steady_frame_syncs(s, args.frames)
    if sites:
        print(f"{len(sites)} place(s) in a steady frame synchronized with the host:")
        for (where, count) in sites.items():
            print(f"  {count} x at\n{where}")
        return 1
    print(f"{args.frames} steady frames ({args.layers} brushes, {args.regions} regions, "
          f"{'compiled' if args.compile else 'eager'}): no device-to-host synchronization")
    return 0


if __name__ == "__main__":
    sys.exit(main())
