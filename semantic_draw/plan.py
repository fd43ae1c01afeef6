"""The one plan builder: a validated Scene -> the Plan the region step needs (ALGORITHM.md sections 3, 4, 6, 8).

A Plan holds what does not change from step to step: step masks on the latent grid, prompt embeddings (prompt
strength applied), the clean background latents and the tiling. ``PlanBuilder`` makes Plans for one schedule and one
set of mask options and keeps caches, so the one-shot mode builds once and a stream rebuilds after each edit at the
cost of what the edit changed: prompts are encoded once per text (LRU), a layer's step masks are computed once per
(mask, cover, blur, strength) digest, the background latent once per image, the tiling once per canvas.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from . import masks as M
from .backbones.base import Backbone, Cond
from .errors import ResourceError, SceneError
from .options import check_choice
from .schedule import Schedule
from .sizes import fit
from .tiles import Tiling, make_tiling


LAYOUTS = ("latent", "attention")


@dataclass
class RegionPlan:
    """The attention layout's prompts (ALGORITHM.md section 11): S distinct prompt slots (the background prompt and
    the brushes' prompts, identical rows merged) and each slot's weight per step: a brush's step mask, and for the
    background prompt clip(1 - sum of the brushes' step masks, 0, 1)."""
    prompts: Cond                # each tensor [1, S, ...]: the distinct prompt rows (prompt strength applied)
    negatives: Cond | None       # [1, S, ...]: their negative rows (full CFG), or None
    slot_of_layer: torch.Tensor  # [P] long: the slot of each plan layer (a bootstrapped layer reads its slot alone)
    weights: torch.Tensor        # [T, S, h, w]
    coverage: torch.Tensor       # [T, 1, h, w] where a whole view's prediction counts: everywhere when the
                                 # background prompt paints the canvas, the brushes' masks over a background image
    weight_views: torch.Tensor = field(init=False)   # [T, S, K, vh, vw], per tile
    slot_of_layer_cpu: torch.Tensor = field(init=False)   # the same on the host (per-item bookkeeping, no sync)

    @property
    def slots(self) -> int:
        return self.weights.shape[1]


@dataclass
class Plan:
    """Everything a step needs that does not change from step to step."""
    schedule: Schedule
    tiling: Tiling
    masks: torch.Tensor        # [T, P, h, w] step masks on the latent grid
    cond: Cond                 # P rows (prompt strength applied)
    uncond: Cond | None        # P rows for full CFG, else None
    z_bg: torch.Tensor         # [1, C, h, w] clean background latent (background image, or white)
    z_white: torch.Tensor      # [1, C, h, w] clean latent of a white canvas
    vae_factor: int = 8
    regions: RegionPlan | None = None   # the attention layout's prompt slots; None: the latent layout
    mask_views: torch.Tensor = field(init=False)  # [T, P (+1), K, vh, vw]
    nonempty: torch.Tensor = field(init=False)    # [T, P (+1), K] bool (CPU)
    coverage: torch.Tensor = field(init=False)    # [T, 1, h, w] sum of step masks over layers

    def __post_init__(self):
        self.tiling.weights = self.tiling.weights.to(self.masks.device)
        t = self.tiling
        self.coverage = self.masks.sum(1, keepdim=True)
        masks = self.masks
        if self.regions is not None:   # one more "layer": the whole view of the attention layout, where it counts
            masks = torch.cat([masks, self.regions.coverage.clamp(max=1.0)], 1)
            self.regions.weight_views = torch.stack([t.crop(self.regions.weights, k) for k in range(t.count)], 2)
        self.mask_views = torch.stack([t.crop(masks, k) for k in range(t.count)], 2)
        self.nonempty = (self.mask_views.flatten(3).amax(-1) > 0).cpu()

    @property
    def layers(self) -> int:
        return self.masks.shape[1]

    def item_index(self, steps: torch.Tensor, bootstrap_steps: int) -> torch.Tensor:
        """[N, 3] (slot, layer, tile) of every item of a step at step indices ``steps`` (CPU): each non-empty layer
        of each tile; in the attention layout, slots past bootstrapping have one item per tile, whose layer index
        is ``layers`` (the whole view)."""
        return self._chosen(self.nonempty[steps].clone(), steps, bootstrap_steps).nonzero()

    def most_items(self, steps: torch.Tensor, bootstrap_steps: int) -> int:
        """The most items a step at ``steps`` can have whatever is painted (every layer reaching every tile): the
        batch a compiled network's calls are padded to, so that edits never change its shape."""
        return int(self._chosen(torch.ones_like(self.nonempty[steps]), steps, bootstrap_steps).sum())

    def _chosen(self, chosen: torch.Tensor, steps: torch.Tensor, bootstrap_steps: int) -> torch.Tensor:
        if self.regions is not None:
            boot = steps < bootstrap_steps
            chosen[boot, self.layers] = False
            chosen[~boot, :self.layers] = False
        return chosen


@dataclass(frozen=True)
class LayerSpec:
    """One layer as the sampler sees it; the background prompt becomes a full-canvas bottom layer."""
    prompt: str
    negative_prompt: str
    mask: np.ndarray            # bool [H, W]
    blur: float = 0.0
    strength: float = 1.0
    prompt_strength: float = 1.0


def layer_specs(scene) -> list[LayerSpec]:
    """Layers bottom to top. Without a background image the background prompt paints the whole canvas under them."""
    bg = scene.background
    specs = []
    if bg.image is None:
        specs.append(LayerSpec(bg.prompt or "", bg.negative_prompt or "",
                               np.ones((scene.height, scene.width), dtype=bool)))
    for layer in scene.layers:
        specs.append(LayerSpec(layer.prompt, layer.negative_prompt or "", layer.mask, float(layer.mask_blur),
                               float(layer.mask_strength), float(layer.prompt_strength)))
    return specs


def covers(specs: Sequence[LayerSpec]) -> list[np.ndarray | None]:
    """For each layer, where a later (higher) layer is painted; None for the top layer (ALGORITHM.md 3.2). One OR
    per layer from the top down (numpy's accumulate along the layers took 10 ms at 512x512 and 31 ms at 1024x1024
    for 4 layers, on every edit of a stream)."""
    out: list[np.ndarray | None] = [None] * len(specs)
    above = None
    for p in range(len(specs) - 1, -1, -1):
        mask = np.asarray(specs[p].mask, dtype=bool)
        if above is None:
            above = mask
        else:
            out[p] = np.ascontiguousarray(above)
            above = np.logical_or(above, mask)
    return out


def soft_mask(spec: LayerSpec, cover: np.ndarray | None, cover_alpha: float, device, factor: int) -> torch.Tensor:
    """One layer's mask after cover, blur and strength: [H, W] pixels (factor 1) or the latent grid (factor 8)."""
    raw = torch.from_numpy(spec.mask).to(device)
    covered = None if cover is None else torch.from_numpy(cover).to(device)
    return M.prepare_layer(raw, covered, cover_alpha, spec.blur, spec.strength, factor=factor)


def digest(array: np.ndarray) -> bytes:
    """A key for an array's content: its shape and dtype with its bytes (a 64x128 and a 128x64 mask of the same
    bytes are different masks); a boolean mask's bits packed first, 8x fewer bytes to hash."""
    array = np.ascontiguousarray(array)
    h = hashlib.blake2b(repr((array.shape, array.dtype.str)).encode(), digest_size=16)
    h.update(np.packbits(array).tobytes() if array.dtype == bool else array.tobytes())
    return h.digest()


PROMPT_CACHE_BYTES = 256 * 2 ** 20   # prompt rows one cache keeps at most (SD3's rows are 5.4 MB a prompt)
MASK_CACHE_BYTES = 256 * 2 ** 20     # step masks one cache keeps at most (a 4096x2048 layer's: 2.6 MB)


def _nbytes(value) -> int:
    """Bytes of the tensors in a value: a tensor, a dict or sequence of them (prompt rows), or an object holding
    them (a schedule, a tiling)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        parts = value.values()
    elif isinstance(value, (list, tuple)):
        parts = value
    else:
        parts = vars(value).values() if hasattr(value, "__dict__") else ()
    return sum(_nbytes(v) for v in parts if isinstance(v, (torch.Tensor, dict, list, tuple)))


class BoundedLRU:
    """Values by key, the least recently used dropped first past ``max_items`` entries or ``max_bytes`` (the newest
    entry always stays); safe to share between threads. A caller that stores several values for one use raises the
    count bound for that store with ``keep`` (the byte bound holds whatever it asks)."""

    def __init__(self, max_items: int, max_bytes: int):
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict = OrderedDict()
        self.bytes = 0
        self._mutex = threading.Lock()

    def get(self, key):
        with self._mutex:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value, keep: int = 0) -> None:
        with self._mutex:
            if key in self._items:
                self.bytes -= _nbytes(self._items[key])
            self._items[key] = value
            self.bytes += _nbytes(value)
            self._items.move_to_end(key)
            while len(self._items) > 1 and (len(self._items) > max(self.max_items, keep)
                                            or self.bytes > self.max_bytes):
                _, old = self._items.popitem(last=False)
                self.bytes -= _nbytes(old)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._mutex:
            self._items.clear()
            self.bytes = 0


class PromptCache:
    """Embeddings by prompt text (a BoundedLRU of at most ``max_size`` prompts and ``max_bytes`` bytes); missing
    prompts are encoded together in one batch. Safe to share between threads: the encoding runs outside any lock
    (two callers may encode the same new prompt once each)."""

    def __init__(self, encode: Callable[[Sequence[str]], Cond], max_size: int = 256,
                 max_bytes: int = PROMPT_CACHE_BYTES):
        self._encode = encode
        self._rows = BoundedLRU(max_size, max_bytes)
        self.encoded = 0  # prompts encoded so far (for tests and benchmarks)
        self._count = threading.Lock()

    bytes = property(lambda self: self._rows.bytes)

    def get(self, prompts: Sequence[str]) -> Cond:
        distinct = list(dict.fromkeys(prompts))
        found = {p: row for p in distinct if (row := self._rows.get(p)) is not None}
        missing = [p for p in distinct if p not in found]
        if missing:
            cond = self._encode(missing)
            for i, p in enumerate(missing):
                found[p] = {k: v[i:i + 1] for k, v in cond.items()}
            with self._count:
                self.encoded += len(missing)
        for p in distinct:          # all of them the newest, the call's own prompts kept past the count bound
            self._rows.put(p, found[p], keep=len(distinct))
        rows = [found[p] for p in prompts]
        return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}

    def __len__(self) -> int:
        return len(self._rows)

    def clear(self) -> None:
        self._rows.clear()


def encode_prompts(backbone: Backbone, lock, prompts: Sequence[str]) -> Cond:
    """Prompt rows of ``backbone``: tokenized outside the model's lock (CPU work), encoded under it."""
    tokens = backbone.tokenize(list(prompts))
    with lock, torch.inference_mode():
        if tokens is None:
            return backbone.encode_prompts(list(prompts))
        return backbone.encode_prompts(list(prompts), tokens=tokens)


def white_latent(backbone: Backbone, lock) -> torch.Tensor:
    """[1, C, 1, 1]: the clean latent of a white canvas (the VAE maps a flat image to a flat latent)."""
    side = 8 * backbone.size_multiple
    with lock:
        white = torch.ones(1, 3, side, side, device=backbone.device)
        return backbone.encode_image(white).mean((2, 3), keepdim=True)


class SharedCaches:
    """What the plan builders of one model share: the prompt rows, step masks and tilings of recent one-shot calls
    (each call makes a builder of its own, so a repeated palette would be encoded and blurred again every call), the
    schedules of the sampler settings in use and the white canvas's latent."""

    def __init__(self, backbone: Backbone, lock, max_size: int = 256, max_bytes: int = PROMPT_CACHE_BYTES):
        self.backbone, self.lock = backbone, lock
        self.prompts = PromptCache(lambda prompts: encode_prompts(backbone, lock, prompts), max_size, max_bytes)
        self.masks = BoundedLRU(64, MASK_CACHE_BYTES)
        self.tilings = BoundedLRU(32, 64 << 20)       # (latent h, w, view) -> Tiling
        self.schedules = BoundedLRU(16, 16 << 20)     # sampler settings -> Schedule
        self._white: torch.Tensor | None = None
        self.whites_encoded = 0

    def schedule(self, key: tuple, build):
        """The schedule of ``key`` (the sampler settings), built by ``build()`` the first time."""
        schedule = self.schedules.get(key)
        if schedule is None:
            schedule = build()
            self.schedules.put(key, schedule)
        return schedule

    def white(self) -> torch.Tensor:
        if self._white is None:
            self._white = white_latent(self.backbone, self.lock)
            self.whites_encoded += 1
        return self._white


def strengthen(cond: Cond, anchor: Cond, strengths: Sequence[float]) -> Cond:
    """Prompt strength: e_p <- e_anchor + k_p (e_p - e_anchor), for every tensor of the conditioning."""
    out = {}
    for key, value in cond.items():
        k = torch.tensor(list(strengths), device=value.device, dtype=value.dtype).view(-1, *[1] * (value.dim() - 1))
        out[key] = anchor[key] + k * (value - anchor[key])
    return out


def conditioning(specs: Sequence[LayerSpec], background, cache: PromptCache,
                 with_uncond: bool) -> tuple[Cond, Cond | None]:
    """Per-layer embeddings with prompt strength applied (and negative ones when CFG is on)."""
    strengths = [s.prompt_strength for s in specs]
    anchor = cache.get([background.prompt or ""])
    cond = strengthen(cache.get([s.prompt for s in specs]), anchor, strengths)
    if not with_uncond:
        return cond, None
    neg_anchor = cache.get([background.negative_prompt or ""])
    uncond = strengthen(cache.get([s.negative_prompt for s in specs]), neg_anchor, strengths)
    return cond, uncond


def image_to_tensor(image, device) -> torch.Tensor:
    """PIL RGB -> [1, 3, H, W] in [-1, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].to(device)


def check_scene(scene, max_pixels: int | None = None):
    """The validated scene, or one SemanticDrawError naming the problem (a model's pixel limit included)."""
    from .scene import Scene
    if not isinstance(scene, Scene):
        raise SceneError("Expected a semantic_draw.Scene (use Scene.load(path) for a palette file).")
    scene = scene.validate()
    if max_pixels and scene.height * scene.width > max_pixels:
        raise ResourceError(f"The canvas {scene.width}x{scene.height} is too big for this server "
                            f"(at most {max_pixels} pixels).")
    return scene


def check_canvas(multiple: int, height: int, width: int) -> None:
    if height % multiple or width % multiple:
        h, w = fit(height, width, multiple)
        raise SceneError(f"This model needs a canvas whose sides are multiples of {multiple} pixels; "
                         f"{width}x{height} is not. Try {w}x{h}.")


class PlanBuilder:
    """Plans of one backbone for one schedule and mask options, with the caches that make rebuilding cheap."""

    def __init__(self, backbone: Backbone, schedule: Schedule, *, lock: threading.RLock | None = None,
                 quantize: str = "discrete", cover_alpha: float | None = None, tile_size: int | None = None,
                 with_uncond: bool = False, max_pixels: int | None = None, prompt_cache_size: int = 256,
                 mask_cache_size: int = 64, layout: str = "latent", shared: SharedCaches | None = None,
                 share: bool = False):
        check_choice(layout, "region layout", LAYOUTS)     # a string of LAYOUTS (an array is no layout)
        self.backbone, self.schedule, self.layout = backbone, schedule, layout
        self.lock = lock if lock is not None else threading.RLock()
        self.quantize = quantize
        self.cover_alpha = backbone.cover_alpha if cover_alpha is None else float(cover_alpha)
        self.tile_size = tile_size or backbone.tile_size
        self.with_uncond = with_uncond
        self.max_pixels = max_pixels
        self.shared = shared        # the model's caches: the white latent always; with ``share``, prompts and masks
        share = shared is not None and share
        self.prompts = shared.prompts if share else PromptCache(
            lambda prompts: encode_prompts(self.backbone, self.lock, prompts), prompt_cache_size)
        self._masks = shared.masks if share else BoundedLRU(mask_cache_size, MASK_CACHE_BYTES)
        self._mask_settings = (self.quantize, self.cover_alpha, tuple(schedule.noise_levels.tolist()),
                               backbone.vae_factor)   # what else a layer's step masks depend on
        self.masks_computed = 0       # layers whose step masks were computed (the rest came from the cache)
        self._background: tuple | None = None   # (image digest or None, z_bg, z_white)
        self._tilings: dict[tuple[int, int], Tiling] = {}
        self._slot_rows: tuple | None = None    # (the prompts of a plan, its prompt slots): _slots
        self._shared_tilings = shared.tilings if share else None

    # -- the door ------------------------------------------------------------------------------------------------
    def check(self, scene):
        return check_scene(scene, self.max_pixels)

    # -- the plan ------------------------------------------------------------------------------------------------
    def build(self, scene) -> Plan:
        """A Plan for a validated scene (``check``): only what no earlier build computed is computed now."""
        check_canvas(self.backbone.size_multiple, scene.height, scene.width)
        f = self.backbone.vae_factor
        h, w = scene.height // f, scene.width // f
        specs = layer_specs(scene)
        if not specs:
            raise SceneError("Nothing to draw: add a brush or a background prompt.")
        masks = self._step_masks(specs)
        cond, uncond = (self._to_model(c) for c in conditioning(specs, scene.background, self.prompts,
                                                                 self.with_uncond))
        z_bg, z_white = self._background_latents(scene.background.image, h, w)
        regions = self._regions(scene, masks, cond, uncond) if self.layout == "attention" else None
        return Plan(self.schedule, self._tiling(h, w), masks, cond, uncond, z_bg, z_white, f, regions)

    def _tiling(self, h: int, w: int) -> Tiling:
        """The views of an h x w latent: kept by the builder, or with ``share`` by the model (one-shots)."""
        view = max(1, self.tile_size // self.backbone.vae_factor)
        tiling = self._tilings.get((h, w))
        if tiling is None and self._shared_tilings is not None:
            tiling = self._shared_tilings.get((h, w, view))
        if tiling is None:
            tiling = make_tiling(h, w, view)
            if self._shared_tilings is not None:
                self._shared_tilings.put((h, w, view), tiling)
        self._tilings[(h, w)] = tiling
        return tiling

    def _regions(self, scene, masks: torch.Tensor, cond: Cond, uncond: Cond | None) -> RegionPlan:
        """The attention layout's prompt slots: row 0 the background prompt, then one row per brush; identical
        (prompt, negative) rows share a slot, whose weight is the sum of theirs."""
        first = 1 if scene.background.image is None else 0   # plan layer 0 is then the background prompt's
        bg = scene.background
        rows = {k: torch.cat([self._to_model(self.prompts.get([bg.prompt or ""]))[k], v[first:]])
                for k, v in cond.items()}
        negs = None if uncond is None else {
            k: torch.cat([self._to_model(self.prompts.get([bg.negative_prompt or ""]))[k], v[first:]])
            for k, v in uncond.items()}
        slot_of_row, distinct = self._slots(scene, rows, negs)
        brushes = masks[:, first:]                                     # [T, B, h, w]
        weights = masks.new_zeros((masks.shape[0], len(distinct)) + masks.shape[2:])
        weights[:, slot_of_row[0]] += (1 - brushes.sum(1)).clamp(0, 1)
        for b, slot in enumerate(slot_of_row[1:]):
            weights[:, slot] += brushes[:, b]
        index = torch.tensor(distinct, device=masks.device)

        def pick(c: Cond | None) -> Cond | None:
            return None if c is None else {k: v.index_select(0, index.to(v.device))[None] for k, v in c.items()}

        slot_of_layer = torch.tensor(slot_of_row[:1] * first + slot_of_row[1:])
        coverage = (weights if first else brushes).sum(1, keepdim=True)
        plan = RegionPlan(pick(rows), pick(negs), slot_of_layer.to(masks.device), weights, coverage)
        plan.slot_of_layer_cpu = slot_of_layer
        return plan

    def _slots(self, scene, rows: Cond, negs: Cond | None) -> tuple[list[int], list[int]]:
        """Each prompt row's slot and the rows that are slots: rows equal to an earlier one (every tensor, the
        negative rows too) share its slot. The rows follow from the prompts, negative prompts and strengths alone,
        so the answer is kept for them: an edit of masks compares nothing (on a GPU each comparison waits for
        the device)."""
        key = (scene.background.prompt, scene.background.negative_prompt, scene.background.image is None,
               negs is not None, tuple((l.prompt, l.negative_prompt, float(l.prompt_strength)) for l in scene.layers))
        if self._slot_rows is not None and self._slot_rows[0] == key:
            return self._slot_rows[1]
        slot_of_row, distinct = [], []
        for r in range(len(next(iter(rows.values())))):
            same = [i for i, d in enumerate(distinct) if all(torch.equal(t[r], t[d]) for t in (*rows.values(),
                    *(negs or {}).values()))]
            if not same:
                distinct.append(r)
            slot_of_row.append(same[0] if same else len(distinct) - 1)
        self._slot_rows = (key, (slot_of_row, distinct))
        return slot_of_row, distinct

    def pixel_masks(self, scene) -> torch.Tensor | None:
        """[P, H, W] soft masks of the brushes in pixels (for the final blend with a background photo)."""
        specs = layer_specs(scene)[0 if scene.background.image is not None else 1:]
        if not specs:
            return None
        return torch.stack([soft_mask(s, c, self.cover_alpha, self.backbone.device, 1)
                            for s, c in zip(specs, covers(specs))])

    def _step_masks(self, specs: list[LayerSpec]) -> torch.Tensor:
        """[T, P, h, w]; a layer's masks are recomputed only when its mask, blur, strength or the covered part of
        its mask changed (a cover only counts where the layer is painted, so a stroke above that does not reach a
        layer leaves that layer's masks as they were)."""
        out = []
        for spec, cover in zip(specs, covers(specs)):
            if cover is not None:
                cover = np.logical_and(cover, spec.mask)     # the same soft mask: outside it the layer is 0 anyway
            key = (self._mask_settings, digest(spec.mask), None if cover is None else digest(cover), spec.blur,
                   spec.strength)
            steps = self._masks.get(key)
            if steps is None:
                soft = soft_mask(spec, cover, self.cover_alpha, self.backbone.device, self.backbone.vae_factor)
                steps = M.quantize(soft, self.schedule.noise_levels, self.quantize)
                self.masks_computed += 1
                self._masks.put(key, steps, keep=len(specs))
            out.append(steps)
        return torch.stack(out, 1)

    def _to_model(self, cond: Cond | None) -> Cond | None:
        """Rows in the network's dtype, once per build (prompt strength is applied in float32 before)."""
        if cond is None:
            return None
        return {k: v.to(self.backbone.device, self.backbone.dtype) for k, v in cond.items()}

    def _background_latents(self, image, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean latents of the background image (or white) and of a white canvas, [1, C, h, w] each."""
        key = None if image is None else digest(np.asarray(image))
        if self._background is not None and self._background[0] == key and self._background[1].shape[-2:] == (h, w):
            return self._background[1], self._background[2]
        backbone = self.backbone
        white = self.shared.white() if self.shared is not None else white_latent(backbone, self.lock)
        z_white = white.expand(1, -1, h, w).contiguous()
        if image is None:
            z_bg = z_white
        else:
            with self.lock:
                z_bg = backbone.encode_image(image_to_tensor(image, backbone.device))
        self._background = (key, z_bg, z_white)
        return z_bg, z_white

    def clear(self) -> None:
        """Drop every cached tensor (a closed session); what the model's builders share stays."""
        if self.shared is None or self.prompts is not self.shared.prompts:
            self.prompts.clear()
            self._masks.clear()
        self._background = None
        self._slot_rows = None
        self._tilings.clear()
