"""ONE region-based sampling step, shared by the one-shot and the stream modes (ALGORITHM.md sections 2, 5, 6, 7).

The step takes S latents ("slots"), each at its own step index, sends every non-empty (slot, tile, layer) item
through the denoiser as one batch of views, aggregates the predictions per slot with step masks and tile weights,
blends in the background and re-noises each slot once to its next level. It holds only the region math: guidance,
batching and the model lock live in the denoiser's wrappers (denoiser.py), every random draw comes from the caller.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from .denoiser import Denoiser, Regions, Views
from .options import StepOptions
from .transfer import to_device
from .plan import Plan
from .tiles import Tiling

@dataclass
class StepResult:
    x0: torch.Tensor       # [S, C, h, w] aggregated clean estimate (background blended)
    eps: torch.Tensor      # [S, C, h, w] aggregated noise estimate
    x_next: torch.Tensor   # [S, C, h, w] latents re-noised to each slot's next level (x0 at the last step)
    items: int             # (slot, tile, layer) items that went through the denoiser


class StepLayout:
    """What a step at given step indices computes before it sees any latent: its items, their step masks and tile
    weights, crops and conditioning, the bootstrapping's background, shifts and gather indices, the background blend.
    It depends on the plan, the options, the step indices and the background noise only, so a stream makes it once
    per (plan, steps, seed) and its frames do only the work that depends on the latents (``prepare_step``). A layout
    made to be ``reused`` also keeps the attention layout's network contexts (denoiser.Regions.source): memory held
    for as long as the layout, worth it only for what runs every frame."""

    def __init__(self, plan: Plan, opts: StepOptions, steps: torch.Tensor, dev, bg_noise: torch.Tensor,
                 reused: bool = False):
        self.plan, self.opts = plan, opts
        self.steps_cpu = steps.cpu().long()
        self.next_level = to_device(self.steps_cpu, dev) + 1
        # 1. Items: every (slot, layer, tile) whose step mask is not empty, with its weight and conditioning.
        idx = plan.item_index(self.steps_cpu, opts.bootstrap_steps)
        self.count = len(idx)
        if self.count == 0:   # no region has started yet (a photo with only soft or weak brushes)
            return
        self.items = items = _Items(idx, self.steps_cpu, plan.tiling.count, opts.bootstrap_steps, dev)
        m = plan.mask_views[items.step, items.layer, items.tile]                   # [N, vh, vw]
        self.weight = m * plan.tiling.weights.to(dev)[items.tile]
        self.crops = plan.tiling.origin_table(dev)[items.tile] * plan.vae_factor
        self.cond, self.uncond, self.regions = _conditioning(plan, items, keep_contexts=reused)
        # 2. Bootstrapping (steps < B): each layer alone over a plain background, its mask centred in the view.
        self.boot = _Bootstrap(plan, opts, items, m, bg_noise) if items.has_boot else None
        # 4. Where no layer's step mask reaches, the background (section 2.3).
        self.b = _uncovered(plan, self.steps_cpu, self.next_level - 1, opts.bootstrap_steps, dev)
        self._aggregate: _Aggregate | None = None   # the weighted means' denominators, once the layout's weights serve

    def aggregate(self, weight: torch.Tensor, slots: int, changed: bool) -> "_Aggregate":
        """The weighted means of this step: made once when the weights are the layout's own (no bootstrapped item,
        whose weight leak suppression changes with the prediction), else for ``weight``."""
        if changed:
            return _Aggregate(self.plan.tiling, self.items, weight, slots, self.b)
        if self._aggregate is None:
            self._aggregate = _Aggregate(self.plan.tiling, self.items, self.weight, slots, self.b)
        return self._aggregate

    def views(self, x: torch.Tensor, carried: torch.Tensor | None) -> Views:
        """The items' input views of the slots' latents x [S, C, h, w] (and of the noise they carry)."""
        tiling, items = self.plan.tiling, self.items
        return Views(_views(x, tiling, items.slot, items.tile), items.step, self.plan.schedule, self.cond, self.crops,
                     self.uncond, None if carried is None else _views(carried, tiling, items.slot, items.tile),
                     self.regions)


def most_call_items(plan: Plan, opts: StepOptions, steps: torch.Tensor) -> int:
    """The most network items a step at ``steps`` (host) can send, whatever is painted: the plan's most items, twice
    under full CFG. What a compiled network's calls are padded to (stream frames, one-shot steps)."""
    return (2 if opts.guidance_mode == "full" else 1) * plan.most_items(steps, opts.bootstrap_steps)


def prepare_step(plan: Plan, opts: StepOptions, steps: torch.Tensor, dev, bg_noise: torch.Tensor,
                 reused: bool = False) -> StepLayout:
    """The StepLayout of a step at step indices ``steps`` [S] (host) on ``plan``; ``reused``: for many steps."""
    return StepLayout(plan, opts, steps, dev, bg_noise, reused)


def region_step(denoiser: Denoiser, plan: Plan, opts: StepOptions, x: torch.Tensor, steps: torch.Tensor, *,
                bg_noise: torch.Tensor, noise: torch.Tensor, draw: Callable | None = None,
                carried: torch.Tensor | None = None, layout: StepLayout | None = None) -> StepResult:
    """One step for S slots: x [S, C, h, w] at step indices ``steps`` [S].

    bg_noise [S or 1, C, h, w]: the noise the background carries. noise [S, C, h, w]: the fresh noise of the
    re-noising (section 2.4). draw(shape): more noise, for the naive baseline's per-view steps. carried
    [S, C, h, w]: the noise each slot's latent carries (for self guidance). layout: the step's StepLayout made
    before (``prepare_step`` of the same plan, options, steps and bg_noise), or None to make it now.
    """
    if layout is None:
        layout = prepare_step(plan, opts, steps, x.device, bg_noise)
    sched, next_level = plan.schedule, layout.next_level
    if layout.count == 0:   # no region has started yet: the background goes on
        x0, eps = plan.z_bg.expand_as(x).clone(), bg_noise.expand_as(x).clone()
        return StepResult(x0, eps, sched.renoise(x0, eps, noise, next_level), 0)
    items, boot, weight = layout.items, layout.boot, layout.weight
    views = layout.views(x, carried)
    if boot is not None:
        views = boot.inputs(views)
    # 3. Every item through the denoiser, as one batch of views.
    x0, eps = denoiser(views)
    if boot is not None:
        x0, eps, weight = boot.outputs(x0, eps, weight)
    # 4. Aggregate per slot (section 2.2), blend the background (2.3), re-noise once (2.4).
    agg = layout.aggregate(weight, x.shape[0], changed=boot is not None)
    x0_agg = agg.blend(agg.mean(x0, plan.z_bg), plan.z_bg)
    eps_agg = agg.blend(agg.mean(eps, bg_noise), bg_noise)
    if opts.aggregation == "pre":
        x_next = sched.renoise(x0_agg, eps_agg, noise, next_level)
    else:   # naive MultiDiffusion: every view takes its own scheduler step (own fresh noise), then views are averaged
        stepped = sched.renoise(x0, eps, draw(x0.shape), next_level[items.slot])
        bg_next = sched.renoise(plan.z_bg.expand_as(x), bg_noise.expand_as(x), None, next_level, eta=0.0)
        x_next = torch.where(agg.has, agg.blend(agg.mean(stepped, 0.0), bg_next), bg_next)
    return StepResult(x0_agg, eps_agg, x_next, layout.count)


class _Items:
    """The (slot, layer, tile) items of a step, indexed on the host once and moved to the device once."""

    def __init__(self, idx: torch.Tensor, steps_cpu: torch.Tensor, tiles: int, boot_steps: int, dev):
        slot, layer, tile = idx[:, 0], idx[:, 1], idx[:, 2]
        step = steps_cpu[slot]
        boot = (step < boot_steps).nonzero().flatten()
        groups = [(k, (tile == k).nonzero().flatten()) for k in range(tiles)]
        groups = [(k, sel) for k, sel in groups if len(sel)]
        moved = torch.cat([slot, layer, tile, step, boot] + [sel for _, sel in groups]).to(dev, non_blocking=True)
        n, nb = len(idx), len(boot)
        self.count, self.layer_cpu = n, layer
        self.slot, self.layer, self.tile, self.step = moved[:n], moved[n:2 * n], moved[2 * n:3 * n], moved[3 * n:4 * n]
        self.boot = moved[4 * n:4 * n + nb]
        self.has_boot = nb > 0
        self.by_tile, at = [], 4 * n + nb
        for k, sel in groups:
            sel_dev = moved[at:at + len(sel)]
            self.by_tile.append((k, sel_dev, self.slot[sel_dev]))
            at += len(sel)


def _conditioning(plan: Plan, items: _Items, keep_contexts: bool = False):
    """(cond, uncond, regions) of the items: each item's layer's prompt rows (latent layout), or the plan's prompt
    slots with per-pixel weights (attention layout: a bootstrapped layer reads its own slot alone, a whole view the
    slot weights of its step and tile; ``keep_contexts``: regions with a source, whose network contexts are kept)."""
    if plan.regions is None:
        def rows(cond):
            return None if cond is None else {k: v[items.layer.to(v.device)] for k, v in cond.items()}
        return rows(plan.cond), rows(plan.uncond), None
    r = plan.regions
    whole = r.weight_views[items.step, :, items.tile]                               # [N, S, vh, vw]
    alone = F.one_hot(r.slot_of_layer[items.layer.clamp(max=plan.layers - 1)], r.slots).to(whole.dtype)
    weights = torch.where((items.layer < plan.layers).view(-1, 1, 1, 1), alone[..., None, None], whole)
    layer = items.layer_cpu
    slot = torch.where(layer < plan.layers, r.slot_of_layer_cpu[layer.clamp(max=plan.layers - 1)], -1)
    return {}, None, Regions(weights, r.prompts, r.negatives, alone=slot, source=({}, ()) if keep_contexts else None)


def _views(t: torch.Tensor, tiling: Tiling, slot: torch.Tensor, tile: torch.Tensor) -> torch.Tensor:
    """[S or 1, C, h, w] -> the (slot, tile) view of each item, [N, C, vh, vw]."""
    stacked = torch.stack([tiling.crop(t, k) for k in range(tiling.count)], 1)
    if stacked.shape[0] == 1:
        return stacked[0][tile]
    return stacked[slot, tile]


class _Bootstrap:
    """Mask-centering bootstrapping (section 5) for the items at steps < B."""

    def __init__(self, plan: Plan, opts: StepOptions, items: _Items, m: torch.Tensor, bg_noise: torch.Tensor):
        self.plan, self.opts, self.sel = plan, opts, items.boot
        slot, tile, steps = items.slot[self.sel], items.tile[self.sel], items.step[self.sel]
        self.mask = m[self.sel]
        # 5.1 the bootstrap background: white fading into the background latent, noised to the item's level
        mix = (opts.bootstrap_mix_steps - steps.float()).clamp(0, 1).view(-1, 1, 1, 1)
        tiling = plan.tiling
        self.bg_clean = mix * _views(plan.z_white, tiling, slot, tile) + (1 - mix) * _views(plan.z_bg, tiling, slot,
                                                                                            tile)
        self.bg_noisy = plan.schedule.renoise(self.bg_clean, _views(bg_noise, tiling, slot, tile), None, steps, eta=0.0)
        self.shift = _Shift(*_centering_shift(self.mask), *self.mask.shape[1:]) if opts.centering else None

    def inputs(self, views: Views) -> Views:
        """5.2 outside its mask a layer sees the bootstrap background; 5.3 shifted so its mask box is centred."""
        sel, mb = self.sel, self.mask.unsqueeze(1)
        x = views.x.clone()
        x[sel] = mb * x[sel] + (1 - mb) * self.bg_noisy
        carried = views.carried
        if self.shift is not None:
            x[sel] = self.shift.forward(x[sel])
            if carried is not None:
                carried = carried.clone()
                carried[sel] = self.shift.forward(carried[sel])
        return replace(views, x=x, carried=carried)

    def outputs(self, x0: torch.Tensor, eps: torch.Tensor, weight: torch.Tensor):
        """Shift the predictions back; 5.4 leak suppression down-weights what still looks like the background."""
        sel = self.sel
        if self.shift is not None:
            x0[sel] = self.shift.back(x0[sel])
            eps[sel] = self.shift.back(eps[sel])
        if self.opts.leak_sensitivity is not None:
            dist = (x0[sel] - self.bg_clean).pow(2).mean(1)
            weight = weight.clone()
            weight[sel] = weight[sel] * (2 * torch.sigmoid(dist / self.opts.leak_sensitivity) - 1)
        return x0, eps, weight


def _uncovered(plan: Plan, steps_cpu: torch.Tensor, steps: torch.Tensor, boot_steps: int, dev) -> torch.Tensor:
    """[S, 1, h, w]: b = where no layer's step mask reaches (1) or where they all do (0), per slot (section 2.3); in
    the attention layout a slot past bootstrapping counts as its whole views."""
    cover = plan.coverage[to_device(steps_cpu, plan.coverage.device)].to(dev)
    if plan.regions is not None:
        whole = (steps >= boot_steps).view(-1, 1, 1, 1)
        regions_cover = plan.regions.coverage[to_device(steps_cpu, plan.regions.coverage.device)].to(dev)
        cover = torch.where(whole, regions_cover, cover)
    return (1 - cover).clamp(0, 1)


class _Aggregate:
    """Weighted means of item predictions per slot (section 2.2) and the background blend (2.3)."""

    def __init__(self, tiling: Tiling, items: _Items, weight: torch.Tensor, slots: int, b: torch.Tensor):
        self.tiling, self.items, self.slots, self.b = tiling, items, slots, b
        self.w4 = weight.unsqueeze(1)
        den = self._scatter(self.w4)
        self.has = den > 1e-8
        self.safe = den.clamp_min(1e-8)

    def _scatter(self, parts: torch.Tensor) -> torch.Tensor:
        """Sum item views [N, C, vh, vw] back onto [slots, C, h, w] canvases."""
        out = parts.new_zeros((self.slots, parts.shape[1], self.tiling.height, self.tiling.width))
        for k, sel, slot in self.items.by_tile:
            self.tiling.crop(out, k).index_add_(0, slot, parts[sel])
        return out

    def mean(self, values: torch.Tensor, empty) -> torch.Tensor:
        """sum_p M_p w values_p / sum_p M_p w where some weight reaches, ``empty`` elsewhere."""
        return torch.where(self.has, self._scatter(self.w4 * values) / self.safe, empty)

    def blend(self, value: torch.Tensor, background) -> torch.Tensor:
        """(1 - b) value + b background: the background wherever no layer's step mask reaches."""
        return (1 - self.b) * value + self.b * background


class _Shift:
    """Per-item circular shifts of [N, C, H, W] by (dy[n], dx[n]) pixels and back, like torch.roll for each item;
    the gather indices are made once."""

    def __init__(self, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int):
        rows, cols = torch.arange(h, device=dy.device)[None], torch.arange(w, device=dx.device)[None]
        self._there = ((rows - dy[:, None]) % h, (cols - dx[:, None]) % w)
        self._back = ((rows + dy[:, None]) % h, (cols + dx[:, None]) % w)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return _gather_rows_cols(t, *self._there)

    def back(self, t: torch.Tensor) -> torch.Tensor:
        return _gather_rows_cols(t, *self._back)


def _gather_rows_cols(t: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
    n, c, h, w = t.shape
    t = t.gather(2, iy[:, None, :, None].expand(n, c, h, w))
    return t.gather(3, ix[:, None, None, :].expand(n, c, h, w))


def _centering_shift(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift that moves the centre of each mask's bounding box ([N, H, W]) to the view centre."""
    n, h, w = m.shape
    rows, cols = m.amax(2) > 0, m.amax(1) > 0
    top = rows.float().argmax(1)
    bottom = h - 1 - rows.flip(1).float().argmax(1)
    left = cols.float().argmax(1)
    right = w - 1 - cols.flip(1).float().argmax(1)
    dy = torch.round(h / 2 - (top + bottom + 1).float() / 2).long()
    dx = torch.round(w / 2 - (left + right + 1).float() / 2).long()
    return dy, dx
