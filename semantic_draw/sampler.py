"""ONE region-based sampling step, shared by the one-shot and the stream modes (ALGORITHM.md sections 2, 5, 6, 7).

The step takes S latents ("slots"), each at its own step index, and runs every non-empty (slot, tile, layer) item
through the model in as few batched calls as the batch size allows. It then aggregates the predictions per slot with
step masks and tile weights, blends in the background, and re-noises each slot once to its next level.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .backbones.base import Cond
from .errors import SemanticDrawError
from .schedule import Schedule
from .tiles import Tiling

ModelFn = Callable[[torch.Tensor, torch.Tensor, Cond, torch.Tensor], torch.Tensor]
AGGREGATIONS = ("pre", "post")
GUIDANCE_MODES = ("none", "full", "self")


@dataclass
class StepOptions:
    aggregation: str = "pre"          # "pre": SemanticDraw latent pre-averaging; "post": naive MultiDiffusion
    guidance: float = 0.0             # classifier-free guidance scale (used when guidance_mode != "none")
    guidance_mode: str = "none"       # "none", "full" (doubles the batch) or "self" (residual CFG from carried noise)
    bootstrap_steps: int = 1          # B: steps at which each layer is denoised as if alone (0 = off)
    bootstrap_mix_steps: float = 1.0  # steps over which the bootstrap background fades from white to z_bg
    centering: bool = True            # shift each bootstrapped layer's mask box to the view centre
    leak_sensitivity: float | None = 0.2  # leak suppression during bootstrapping (None = off)
    batch_size: int = 16              # most items in one model call (a stream uses one call per frame)

    def check(self) -> "StepOptions":
        if self.aggregation not in AGGREGATIONS:
            raise SemanticDrawError(f"Unknown aggregation {self.aggregation!r}; choose 'pre' or 'post'.")
        if self.guidance_mode not in GUIDANCE_MODES:
            raise SemanticDrawError(f"Unknown guidance mode {self.guidance_mode!r}; choose one of "
                                    f"{', '.join(GUIDANCE_MODES)}.")
        if self.bootstrap_steps < 0 or self.batch_size < 1:
            raise SemanticDrawError("bootstrap_steps must be >= 0 and batch_size >= 1.")
        if self.leak_sensitivity is not None and self.leak_sensitivity <= 0:
            raise SemanticDrawError("leak_sensitivity must be positive (or None to turn it off).")
        return self


@dataclass
class Plan:
    """Everything a step needs that does not change from step to step (the stream edits it in place)."""
    schedule: Schedule
    tiling: Tiling
    masks: torch.Tensor        # [T, P, h, w] step masks on the latent grid
    cond: Cond                 # P rows (prompt strength applied)
    uncond: Cond | None        # P rows for full CFG, else None
    z_bg: torch.Tensor         # [1, C, h, w] clean background latent (background image, or white)
    z_white: torch.Tensor      # [1, C, h, w] clean latent of a white canvas
    vae_factor: int = 8
    mask_views: torch.Tensor = field(init=False)  # [T, P, K, vh, vw]
    nonempty: torch.Tensor = field(init=False)    # [T, P, K] bool (CPU)
    coverage: torch.Tensor = field(init=False)    # [T, 1, h, w] sum of step masks over layers

    def __post_init__(self):
        self.tiling.weights = self.tiling.weights.to(self.masks.device)
        self.refresh_masks()

    @property
    def layers(self) -> int:
        return self.masks.shape[1]

    def refresh_masks(self) -> None:
        """Recompute what derives from ``masks`` (call after editing them)."""
        t = self.tiling
        self.mask_views = torch.stack([t.crop(self.masks, k) for k in range(t.count)], 2)
        self.nonempty = (self.mask_views.flatten(3).amax(-1) > 0).cpu()
        self.coverage = self.masks.sum(1, keepdim=True)


@dataclass
class StepResult:
    x0: torch.Tensor       # [S, C, h, w] aggregated clean estimate (background blended)
    eps: torch.Tensor      # [S, C, h, w] aggregated noise estimate
    x_next: torch.Tensor   # [S, C, h, w] latents re-noised to each slot's next level (x0 at the last step)
    items: int             # (slot, tile, layer) items that went through the model


def _roll(t: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Per-item circular shift of [N, C, H, W] by (dy[n], dx[n]) pixels, like torch.roll for each item."""
    n, c, h, w = t.shape
    iy = (torch.arange(h, device=t.device)[None] - dy[:, None]) % h
    ix = (torch.arange(w, device=t.device)[None] - dx[:, None]) % w
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


def _gather_cond(cond: Cond, rows: torch.Tensor) -> Cond:
    return {k: v[rows.to(v.device)] for k, v in cond.items()}


def _views(t: torch.Tensor, tiling: Tiling, slot: torch.Tensor, tile: torch.Tensor) -> torch.Tensor:
    """[S or 1, C, h, w] -> the (slot, tile) view of each item, [N, C, vh, vw]."""
    stacked = torch.stack([tiling.crop(t, k) for k in range(tiling.count)], 1)
    if stacked.shape[0] == 1:
        return stacked[0][tile]
    return stacked[slot, tile]


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
        self.count = n
        self.slot, self.layer, self.tile, self.step = moved[:n], moved[n:2 * n], moved[2 * n:3 * n], moved[3 * n:4 * n]
        self.boot = moved[4 * n:4 * n + nb]
        self.has_boot = nb > 0
        self.by_tile, at = [], 4 * n + nb
        for k, sel in groups:
            sel_dev = moved[at:at + len(sel)]
            self.by_tile.append((k, sel_dev, self.slot[sel_dev]))
            at += len(sel)


def _scatter(parts: torch.Tensor, tiling: Tiling, items: _Items, slots: int) -> torch.Tensor:
    """Sum item views [N, C, vh, vw] back onto [slots, C, h, w] canvases."""
    out = parts.new_zeros((slots, parts.shape[1], tiling.height, tiling.width))
    for k, sel, slot in items.by_tile:
        tiling.crop(out, k).index_add_(0, slot, parts[sel])
    return out


def region_step(model_fn: ModelFn, plan: Plan, opts: StepOptions, x: torch.Tensor, steps: torch.Tensor,
                bg_noise: torch.Tensor, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, carried_eps: torch.Tensor | None = None) -> StepResult:
    """One step for S slots: x [S, C, h, w] at step indices ``steps`` [S] (long, CPU or device).

    bg_noise [S or 1, C, h, w]: the noise the background carries (initial noise). ``noise`` [S, C, h, w]: fresh
    noise for re-noising (drawn from ``generator`` when None). ``carried_eps`` [S, C, h, w]: the noise each slot's
    latent carries, for guidance_mode "self".
    """
    sched, tiling = plan.schedule, plan.tiling
    dev = x.device
    slots = x.shape[0]
    steps_cpu = steps.cpu().long()
    # 1. Items: every non-empty (slot, layer, tile) triple.
    idx = plan.nonempty[steps_cpu].nonzero()            # [N, 3] = (slot, layer, tile)
    if noise is None:
        noise = torch.randn(x.shape, generator=generator, device=generator.device if generator else dev).to(dev)
    if len(idx) == 0:
        # No region has started yet (a photo with only soft or weak brushes): the background carries on.
        x0_bg, eps_bg = plan.z_bg.expand_as(x).clone(), bg_noise.expand_as(x).clone()
        level = steps_cpu.to(dev) + 1
        return StepResult(x0_bg, eps_bg, sched.renoise(x0_bg, eps_bg, noise, level), 0)
    items = _Items(idx, steps_cpu, tiling.count, opts.bootstrap_steps, dev)
    slot, layer, tile, step = items.slot, items.layer, items.tile, items.step
    x_in = _views(x, tiling, slot, tile)
    m = plan.mask_views[step, layer, tile]                # [N, vh, vw]
    weight = m * tiling.weights.to(dev)[tile]

    # 2. Mask-centering bootstrapping for items at steps < B: the layer sees a plain background outside its mask.
    boot = items.boot
    bg_clean = None
    if items.has_boot:
        bsteps = step[boot]
        mix = (opts.bootstrap_mix_steps - bsteps.float()).clamp(0, 1).view(-1, 1, 1, 1)
        zb = _views(plan.z_bg, tiling, slot[boot], tile[boot])
        zw = _views(plan.z_white, tiling, slot[boot], tile[boot])
        bg_clean = mix * zw + (1 - mix) * zb
        bg_noisy = sched.renoise(bg_clean, _views(bg_noise, tiling, slot[boot], tile[boot]), None, bsteps, eta=0.0)
        mb = m[boot].unsqueeze(1)
        x_in = x_in.clone()
        x_in[boot] = mb * x_in[boot] + (1 - mb) * bg_noisy
        if opts.centering:
            dy, dx = _centering_shift(m[boot])
            x_in[boot] = _roll(x_in[boot], dy, dx)

    # 3. One batched model call (or a few, by batch size) for all items.
    crops = tiling.origin_table(dev)[tile] * plan.vae_factor
    timesteps = sched.table("timesteps", dev)[step]
    cond = _gather_cond(plan.cond, layer)
    full_cfg = opts.guidance_mode == "full" and plan.uncond is not None
    if full_cfg:
        uncond = _gather_cond(plan.uncond, layer)
    chunk = max(1, opts.batch_size // 2) if full_cfg else opts.batch_size
    outs, a = [], 0
    while a < len(idx):
        b = min(a + chunk, len(idx))
        xi, ti, ci = x_in[a:b], timesteps[a:b], crops[a:b]
        ce = {k: v[a:b] for k, v in cond.items()}
        try:
            if full_cfg:
                ue = {k: v[a:b] for k, v in uncond.items()}
                both = model_fn(torch.cat([xi, xi]), torch.cat([ti, ti]),
                                {k: torch.cat([ue[k], ce[k]]) for k in ce}, torch.cat([ci, ci]))
                u, c = both.chunk(2)
                outs.append(u + opts.guidance * (c - u))
            else:
                outs.append(model_fn(xi, ti, ce, ci))
        except torch.OutOfMemoryError:
            if b - a <= 1:
                raise
            chunk = (b - a) // 2      # as many items per call as memory allows: halve and retry
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        a = b
    out = torch.cat(outs)
    x0, eps = sched.to_x0_eps(out, x_in, step)

    if opts.guidance_mode == "self" and carried_eps is not None and opts.guidance > 1:
        eps_u = _views(carried_eps, tiling, slot, tile)
        if items.has_boot and opts.centering:
            eps_u = eps_u.clone()
            eps_u[boot] = _roll(eps_u[boot], dy, dx)
        eps = eps_u + opts.guidance * (eps - eps_u)
        alpha = sched.table("alphas", dev)[step].view(-1, 1, 1, 1)
        sigma = sched.table("sigmas", dev)[step].view(-1, 1, 1, 1)
        x0 = torch.where(alpha > 1e-3, (x_in - sigma * eps) / alpha.clamp_min(1e-3), x0)

    if items.has_boot:
        if opts.centering:
            x0[boot] = _roll(x0[boot], -dy, -dx)
            eps[boot] = _roll(eps[boot], -dy, -dx)
        if opts.leak_sensitivity is not None:
            dist = (x0[boot] - bg_clean).pow(2).mean(1)
            weight = weight.clone()
            weight[boot] = weight[boot] * (2 * torch.sigmoid(dist / opts.leak_sensitivity) - 1)

    # 4. Aggregate per slot, blend the background, re-noise once.
    w4 = weight.unsqueeze(1)
    den = _scatter(w4, tiling, items, slots)
    has = den > 1e-8
    safe = den.clamp_min(1e-8)
    cover = plan.coverage[steps_cpu.to(plan.coverage.device)].to(dev)
    b = (1 - cover).clamp(0, 1)
    next_level = steps_cpu.to(dev) + 1
    x0_agg = torch.where(has, _scatter(w4 * x0, tiling, items, slots) / safe, plan.z_bg)
    eps_agg = torch.where(has, _scatter(w4 * eps, tiling, items, slots) / safe, bg_noise)
    x0_agg = (1 - b) * x0_agg + b * plan.z_bg
    eps_agg = (1 - b) * eps_agg + b * bg_noise
    if opts.aggregation == "pre":
        x_next = sched.renoise(x0_agg, eps_agg, noise, next_level)
    else:
        # Naive MultiDiffusion: every view takes its own scheduler step (own fresh noise), then views are averaged.
        z_items = torch.randn(x0.shape, generator=generator,
                              device=generator.device if generator else dev).to(dev)
        stepped = sched.renoise(x0, eps, z_items, next_level[slot])
        avg = torch.where(has, _scatter(w4 * stepped, tiling, items, slots) / safe, 0.0)
        bg_next = sched.renoise(plan.z_bg.expand_as(x), bg_noise.expand_as(x), None, next_level, eta=0.0)
        x_next = torch.where(has, (1 - b) * avg + b * bg_next, bg_next)
    return StepResult(x0_agg, eps_agg, x_next, len(idx))
