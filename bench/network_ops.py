"""Operations one network call of the attention layout dispatches, by number of prompt slots: the full-size
SD1.5, SDXL and SD3 networks built on the meta device (nothing allocated, nothing computed), so the counts are exact
and the same on any machine. On a GPU an eager call launches about one kernel per operation and waits on Python
for each at small batches; a compiled one runs them as one graph.

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

from bench.common import markdown_table, write_outputs  # noqa: E402
from bench.full_size import SD3_MEDIUM_TRANSFORMER, SD15_UNET, SDXL_UNET  # noqa: E402
from bench.host_ops import Counter  # noqa: E402
from semantic_draw.backbones.attention import (RegionCrossAttnProcessor, RegionJointAttnProcessor,  # noqa: E402
                                               joint_context, unet_context)
from semantic_draw.denoiser import Regions  # noqa: E402

META = torch.device("meta")


def network(family: str):
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel
    with META:
        if family == "sd3":
            net = SD3Transformer2DModel(**SD3_MEDIUM_TRANSFORMER)
            net.set_attn_processor(RegionJointAttnProcessor())
        else:
            net = UNet2DConditionModel(**(SD15_UNET if family == "sd15" else SDXL_UNET))
            net.set_attn_processor(RegionCrossAttnProcessor())
    return net


def call(family: str, net, slots: int, items: int) -> None:
    """One call of ``items`` views, each mixing ``slots`` prompts, at the family's native view size."""
    side = 64 if family == "sd15" else 128
    channels = 16 if family == "sd3" else 4
    weights = torch.rand(items, slots, side, side)
    x, t = torch.randn(items, channels, side, side, device=META), torch.zeros(items, device=META)
    with torch.no_grad():
        if family == "sd3":
            cond = {"embeds": torch.randn(1, slots, 333, 4096), "pooled": torch.randn(1, slots, 2048)}
            ctx = joint_context(Regions(weights, cond), (side, side), 2, torch.float32, META)
            net(hidden_states=x, timestep=t, encoder_hidden_states=ctx.tokens, pooled_projections=ctx.pooled,
                joint_attention_kwargs={"regions": ctx}, return_dict=False)
            return
        width = 768 if family == "sd15" else 2048
        cond = {"embeds": torch.randn(1, slots, 77, width)}
        if family == "sdxl":
            cond["pooled"] = torch.randn(1, slots, 1280)
        ctx = unet_context(Regions(weights, cond), (side, side), torch.float32, META)
        added = (None if family == "sd15"
                 else {"text_embeds": ctx.pooled, "time_ids": torch.zeros(items, 6, device=META)})
        net(x, t, encoder_hidden_states=ctx.tokens, added_cond_kwargs=added, cross_attention_kwargs={"regions": ctx},
            return_dict=False)


def count(family: str, net, slots: int, items: int) -> int:
    counter = Counter()
    with counter:
        call(family, net, slots, items)
    return counter.outside - counter.views


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="sd15,sdxl,sd3")
    parser.add_argument("--slots", default="2,4,9,17")
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    slots = [int(s) for s in args.slots.split(",")]
    rows = []
    for family in args.families.split(","):
        net = network(family)
        rows.append([family, args.items] + [count(family, net, s, args.items) for s in slots])
        print(f"{family}: done", flush=True)
    table = markdown_table(["network", "items"] + [f"{s} slots ({s - 1} brushes)" for s in slots], rows)
    print("\nOperations of one attention-layout call (views left out):\n\n" + table)
    write_outputs(args.out, "network_ops", table)


if __name__ == "__main__":
    main()
