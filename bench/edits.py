"""What an edit costs a stream before its next frame: the plan rebuilt for a new mask of the top brush (the layer's
masks and those of the layers whose covered part changed; the rest come from the plan builder's cache).

    python bench/edits.py                                   # tiny-sd15, 512 and 1024 px, 3 and 8 brushes
    python bench/edits.py --full-size --preset sdxl --sizes 1024 --brushes 3   # on a GPU: its masks on the device

Each edit adds one 4x4 stroke to the top brush (bench/stream.py's painting strokes, spread over the canvas); the
table gives the median seconds of ``session.edit_layer`` over the timed edits and how many layers' step masks each
edit computed. On a GPU the blur of the recomputed masks runs on the device and the rest is host work (covers,
cache keys, the scene's validation); on a CPU everything is.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_model_args, build_model, is_tiny, markdown_table, sync, write_outputs  # noqa: E402
from bench.stream import strokes, synthetic_scene  # noqa: E402


def measure(model, size: int, brushes: int, edits: int, warmup: int, tile: int | None) -> dict:
    scene = synthetic_scene(brushes, size, size)
    masks = strokes(scene, warmup + edits)
    top = brushes - 1
    with model.stream(scene, seed=0, tile_size=tile) as session:
        session.next_frame(output="latent")
        for mask in masks[:warmup]:
            session.edit_layer(top, mask=mask)
        computed, times = session.masks_computed, []
        for mask in masks[warmup:]:
            sync(model.device)
            start = time.perf_counter()
            session.edit_layer(top, mask=mask)
            sync(model.device)
            times.append(time.perf_counter() - start)
        per_edit = (session.masks_computed - computed) / edits
    return dict(size=size, brushes=brushes, ms=1e3 * statistics.median(times), layers=per_edit)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--sizes", default="512,1024", help="comma-separated square canvas sides (px)")
    parser.add_argument("--brushes", default="3,8", help="comma-separated brush counts")
    parser.add_argument("--edits", type=int, default=15, help="timed edits per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed edits first")
    args = parser.parse_args(argv)
    model = build_model(args)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for brushes in (int(b) for b in args.brushes.split(",")):
            r = measure(model, size, brushes, args.edits, args.warmup, size if is_tiny(args) else args.tile_size)
            rows.append([f"{size}x{size}", brushes, r["ms"], r["layers"]])
            print(f"  {size}x{size}, {brushes} brushes: {r['ms']:.1f} ms an edit, {r['layers']:.1f} layers "
                  "recomputed", flush=True)
    table = markdown_table(["canvas", "brushes", "edit median (ms)", "layers recomputed / edit"], rows)
    print(f"{model.name} on {model.device}, {args.edits} edits of the top brush each (a 4x4 stroke)")
    print(table)
    write_outputs(args.out, "edits", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
