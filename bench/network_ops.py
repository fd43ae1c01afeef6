"""Operations one network call of the attention layout dispatches, and the arithmetic it does, by number of prompt
slots: the full-size SD1.5, SDXL and SD3 networks built on the meta device (nothing allocated, nothing computed),
so the counts are exact and the same on any machine. On a GPU an eager call launches about one kernel per
operation and waits on Python for each at small batches; a compiled one runs them as one graph, and then the
arithmetic (torch's FLOP counter: matrix products, convolutions, attention) is what is left.

    python bench/network_ops.py                        # 2, 4, 9, 17 slots (1, 3, 8, 16 brushes), 4 items a call
    python bench/network_ops.py --families sd15 --slots 2,17 --items 4

A call is what a steady stream frame makes at the family's native canvas: 4 items (the slots in flight of a 5-step
stream), each mixing every prompt slot.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bench.common import markdown_table, write_outputs  # noqa: E402
from bench.full_size import build_full_pipeline  # noqa: E402
from bench.host_ops import Counter  # noqa: E402
from semantic_draw import SemanticDraw  # noqa: E402
from semantic_draw.denoiser import Regions  # noqa: E402


def network(family: str) -> SemanticDraw:
    """The family's full-size model on the meta device, its region processors installed."""
    model = SemanticDraw.from_pipeline(build_full_pipeline(family, device="meta"))
    model.backbone.install_region_attention()
    return model


def call(model: SemanticDraw, slots: int, items: int) -> None:
    """One network call of ``items`` views at the native canvas, each mixing ``slots`` prompts (the backbone's own
    region context and conditioning)."""
    backbone = model.backbone
    side = model.native_size // backbone.vae_factor
    cond = model.encode_prompts([f"prompt {i}" for i in range(slots)])          # meta tensors of the real sizes
    context = backbone.region_context(Regions(torch.rand(items, slots, side, side), {k: v[None] for k, v in
                                                                                   cond.items()}), (side, side))
    x = torch.randn(items, backbone.latent_channels, side, side, device="meta")
    backbone.model_output(x, torch.zeros(items, device="meta"), None, torch.zeros(items, 2), regions=context)


def count(model: SemanticDraw, slots: int, items: int) -> tuple[int, float]:
    """(operations dispatched, views left out; TFLOP) of one call."""
    counter, flops = Counter(), FlopCounterMode(display=False)
    with flops, counter:
        call(model, slots, items)
    return counter.outside - counter.views, flops.get_total_flops() / 1e12


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="sd15,sdxl,sd3")
    parser.add_argument("--slots", default="2,4,9,17")
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    slots = [int(s) for s in args.slots.split(",")]
    ops, flops = [], []
    for family in args.families.split(","):
        model = network(family)
        counts = [count(model, s, args.items) for s in slots]
        ops.append([family, args.items] + [n for n, _ in counts])
        flops.append([family, args.items] + [f"{f:.2f}" for _, f in counts])
        print(f"{family}: done", flush=True)
    head = ["network", "items"] + [f"{s} slots ({s - 1} brushes)" for s in slots]
    table = ("Operations of one attention-layout call (views left out):\n\n" + markdown_table(head, ops)
             + "\n\nTFLOP of the same call:\n\n" + markdown_table(head, flops))
    print("\n" + table)
    write_outputs(args.out, "network_ops", table)


if __name__ == "__main__":
    main()
