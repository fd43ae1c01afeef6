"""Tensor operations a steady stream frame dispatches outside the network and the decoder: the host work that a GPU
frame waits on when the network itself is fast (each operation is a Python call, most of them a kernel launch).

    python bench/host_ops.py                      # tiny-sd15, -sdxl, -sd3; both region layouts; 1, 3, 8 brushes
    python bench/host_ops.py --size 256 --tile-size 128   # a tiled canvas (9 views a slot)

Counted with a TorchDispatchMode over one steady frame (after two), every aten operation once; the counts do not
depend on the machine. Three ways to make the same frame, in one run on the same sessions:
- "every slot, layout per frame": as the stream did before it kept anything (the frame after an edit still does):
  every slot, the entering latent's included, and the step's layout (items, masks, crops, conditioning, bootstrap
  shifts, background blend; the attention layout's network context) made inside the frame;
- "in flight, layout per frame": the entering latent's step kept, the layout made inside the frame;
- "in flight, layout kept": the stream as it is between edits.
Then one-shot generations of the same scenes: the first (the model's caches empty) against a repeated one (prompt
rows, step masks and the white latent from the model's caches), the plan build's share in brackets.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from bench.common import markdown_table, write_outputs  # noqa: E402
from bench.stream import synthetic_scene  # noqa: E402
from semantic_draw import SemanticDraw  # noqa: E402
from semantic_draw.denoiser import Wrapper  # noqa: E402

VIEWS = {"aten.view.default", "aten.unsqueeze.default", "aten.slice.Tensor", "aten.expand.default",
         "aten.alias.default", "aten.select.int", "aten.detach.default", "aten._unsafe_view.default",
         "aten.transpose.int", "aten.permute.default", "aten.squeeze.dim", "aten.t.default"}


class Counter(TorchDispatchMode):
    """Counts the aten operations dispatched while it is active and not inside the network or the decoder."""

    def __init__(self):
        super().__init__()
        self.outside = self.views = 0
        self.depth = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.depth == 0:
            self.outside += 1
            self.views += str(func) in VIEWS
        return func(*args, **(kwargs or {}))


class Inside(Wrapper):
    """Marks the network's calls, so that the counter leaves them out."""

    def __init__(self, inner, counter: Counter):
        super().__init__(inner)
        self.counter = counter

    def predict(self, views):
        self.counter.depth += 1
        try:
            return self.inner.predict(views)
        finally:
            self.counter.depth -= 1


def count_frame(session, counter: Counter, layout: bool, entry: bool) -> tuple[int, int]:
    if layout:
        session._steady = None       # the layout is made again inside this frame
    if entry:
        session._entry = None        # ... and every slot is computed
    counter.outside = counter.views = 0
    with counter:
        session.next_frame(output="latent")
    return counter.outside, counter.views


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny-sd15,tiny-sdxl,tiny-sd3")
    parser.add_argument("--layers", default="1,3,8")
    parser.add_argument("--size", type=int, default=128, help="canvas side in px")
    parser.add_argument("--tile-size", type=int, default=None,
                        help="view size in px (default: the canvas, one view, as SD1.5's 768 px tile on 512x512)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    headers = ["preset", "regions", "brushes", "every slot, layout per frame: ops (views)",
               "in flight, layout per frame", "in flight, layout kept", "kept / every slot"]
    rows = []
    for preset in args.presets.split(","):
        model = SemanticDraw.from_preset(preset)
        counter = Counter()
        model.network = Inside(model.network, counter)
        for regions in ("latent", "attention"):
            for n in [int(v) for v in args.layers.split(",")]:
                scene = synthetic_scene(n, args.size, args.size)
                with model.stream(scene, seed=0, regions=regions, tile_size=args.tile_size or args.size) as session:
                    for _ in range(2):
                        session.next_frame(output="latent")
                    whole = count_frame(session, counter, layout=True, entry=True)
                    session.next_frame(output="latent")
                    remade = count_frame(session, counter, layout=True, entry=False)
                    kept = count_frame(session, counter, layout=False, entry=False)
                rows.append([preset, regions, n, *(f"{ops} ({views})" for ops, views in (whole, remade, kept)),
                             f"{kept[0] / whole[0]:.2f}"])
                print(markdown_table(headers, rows[-1:]).splitlines()[-1], flush=True)
    table = markdown_table(headers, rows)
    print("\n" + table)
    oneshots = oneshot_rows(args)
    print("\n" + oneshots)
    write_outputs(args.out, "host_ops", table + "\n\n" + oneshots)


def oneshot_rows(args) -> str:
    from semantic_draw import plan as plan_module
    headers = ["preset", "regions", "brushes", "first one-shot: ops (plan build)", "repeated one-shot",
               "repeated / first"]
    rows = []
    build = plan_module.PlanBuilder.build
    for preset in args.presets.split(","):
        model = SemanticDraw.from_preset(preset)
        counter = Counter()
        model.network = Inside(model.network, counter)

        def counted(builder, scene):
            before = counter.outside
            plan = build(builder, scene)
            counted.ops = counter.outside - before
            return plan

        plan_module.PlanBuilder.build = counted
        try:
            for regions in ("latent", "attention"):
                for n in [int(v) for v in args.layers.split(",")]:
                    scene = synthetic_scene(n, args.size, args.size)
                    got = []
                    for _ in range(2):
                        counter.outside = 0
                        with counter:
                            model.generate(scene, seed=0, regions=regions, output="latent",
                                           tile_size=args.tile_size or args.size)
                        got.append((counter.outside, counted.ops))
                    model.caches = plan_module.SharedCaches(model.backbone, model._lock)   # empty for the next
                    rows.append([preset, regions, n, f"{got[0][0]} ({got[0][1]})", f"{got[1][0]} ({got[1][1]})",
                                 f"{got[1][0] / got[0][0]:.2f}"])
        finally:
            plan_module.PlanBuilder.build = build
    return markdown_table(headers, rows)


if __name__ == "__main__":
    main()
