"""Checks that a stream frame does no device-to-host synchronization (needs a CUDA GPU).

    python bench/sync_check.py --full-size --preset sd15 --layers 3          # eager
    python bench/sync_check.py --full-size --preset sd15 --layers 3 --compile

The stream is filled and warmed first; then its steady frames run (latents out: turning a frame into a PIL image
has to read it back, by design) under torch.cuda.set_sync_debug_mode("error"), which raises at the first
synchronizing call. Prints where the first one happened, or that there was none.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import add_model_args, build_model  # noqa: E402
from bench.stream import canvas, synthetic_scene, tile_size  # noqa: E402


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
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(args.frames):
                s.next_frame(output="latent")
        except RuntimeError:
            torch.cuda.set_sync_debug_mode(0)
            print("a frame synchronized with the host:")
            traceback.print_exc()
            return 1
        finally:
            torch.cuda.set_sync_debug_mode(0)
    print(f"{args.frames} steady frames ({args.layers} brushes, {args.regions} regions, "
          f"{'compiled' if args.compile else 'eager'}): no device-to-host synchronization")
    return 0


if __name__ == "__main__":
    sys.exit(main())
