"""StreamSession: the multi-prompt stream batch (ALGORITHM.md section 7) on top of the shared region step.

T latents are in flight, one per step. Each frame is ONE batched model call over every (slot, tile, layer) item:
a fresh latent enters at step 0, every slot advances one step, and the slot that finishes is decoded (tiny VAE).
A session owns its latents, noises, step masks, embedding cache and lock; the model it runs on is shared.
Edits (``update``) take effect at the next frame without re-filling the pipeline, and recompute only what changed.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import replace

import numpy as np
import torch

from . import masks as M
from .errors import SemanticDrawError
from .oneshot import SamplerSettings, initial_latent
from .plan import LayerSpec, background_latents, check_canvas, conditioning, layer_specs
from .sampler import Plan, region_step
from .tiles import make_tiling

ONE_CALL = 1 << 30  # batch size that keeps every item of a frame in one model call


def _digest(array: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).digest()


class StreamSession:
    """Frames keep coming (``next_frame``) while the scene changes (``update``)."""

    def __init__(self, model, scene, seed: int = 0, *, quantize: str | None = None, cover_alpha: float | None = None,
                 tile_size: int | None = None, tiny_decode: bool = True, mask_cache_size: int = 64,
                 prompt_cache_size: int = 256,
                 **step_overrides):
        self.model = model
        self._lock = threading.RLock()
        settings: SamplerSettings = model.settings if quantize is None else replace(model.settings, quantize=quantize)
        self.schedule = model.schedule(settings)
        self.quantize = settings.quantize
        self.opts = model.step_options(**{"batch_size": ONE_CALL, **step_overrides})
        self.cover_alpha = model.backbone.cover_alpha if cover_alpha is None else float(cover_alpha)
        self.tile_size = tile_size or model.backbone.tile_size
        self.tiny_decode = tiny_decode
        self.prompts = model.prompt_cache(prompt_cache_size)
        self._mask_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._mask_cache_size = mask_cache_size
        self.masks_computed = 0       # layers whose step masks were computed (the rest came from the cache)
        self.frames = 0
        self.closed = False
        self.scene = None
        self.plan: Plan | None = None
        self._bg_key = None
        self._inflight: torch.Tensor | None = None   # [T-1, C, h, w] latents at steps 1 .. T-1
        self._carried: torch.Tensor | None = None    # [T-1, C, h, w] the noise each of them carries
        self._apply(model.check_scene(scene))
        self.set_seed(seed)

    # -- edits ---------------------------------------------------------------------------------------------------
    def update(self, scene) -> None:
        """Make ``scene`` the session's scene from the next frame on; only what differs is recomputed.

        Raises SemanticDrawError for a bad scene (or a new canvas size) and keeps streaming the old one.
        """
        scene = self.model.check_scene(scene)
        with self._lock:
            self._check_open()
            if (scene.height, scene.width) != (self.scene.height, self.scene.width):
                raise SemanticDrawError(f"The canvas size is fixed for a stream ({self.scene.width}x"
                                        f"{self.scene.height}); start a new stream for {scene.width}x{scene.height}.")
            self._apply(scene)

    def edit_layer(self, key: int | str, **fields) -> None:
        """Change one layer, named by index or name: edit_layer("sun", prompt="the moon", mask_blur=4)."""
        with self._lock:
            self._check_open()
            layers = list(self.scene.layers)
            index = self._layer_index(key, layers)
            allowed = {"prompt", "negative_prompt", "mask", "mask_strength", "mask_blur", "prompt_strength", "name"}
            unknown = set(fields) - allowed
            if unknown:
                raise SemanticDrawError(f"Unknown layer field(s) {', '.join(sorted(unknown))}; "
                                        f"a layer has {', '.join(sorted(allowed))}.")
            layers[index] = replace(layers[index], **fields)
            self.update(replace(self.scene, layers=layers))

    def edit_background(self, **fields) -> None:
        """Change the background: edit_background(prompt="a beach", image=None)."""
        with self._lock:
            self._check_open()
            unknown = set(fields) - {"prompt", "negative_prompt", "image"}
            if unknown:
                raise SemanticDrawError(f"Unknown background field(s) {', '.join(sorted(unknown))}; "
                                        "the background has prompt, negative_prompt and image.")
            self.update(replace(self.scene, background=replace(self.scene.background, **fields)))

    @staticmethod
    def _layer_index(key: int | str, layers) -> int:
        if isinstance(key, int) and not isinstance(key, bool) and -len(layers) <= key < len(layers):
            return key % len(layers)
        names = [layer.name for layer in layers]
        if isinstance(key, str) and key in names:
            return names.index(key)
        raise SemanticDrawError(f"There is no layer {key!r}; the layers are "
                                f"{', '.join(repr(n) for n in names) or 'none'}.")

    def set_seed(self, seed: int) -> None:
        """New noise from the next frame on (the latents in flight keep going)."""
        with self._lock:
            self._check_open()
            g = torch.Generator().manual_seed(int(seed))
            shape = (self.schedule.steps,) + tuple(self.plan.z_bg.shape[1:])
            dev = self.plan.z_bg.device
            self.seed = int(seed)
            self._bg_noise = torch.randn((1,) + shape[1:], generator=g).to(dev)
            self._slot_noise = torch.randn(shape, generator=g).to(dev)

    def _apply(self, scene) -> None:
        model, backbone = self.model, self.model.backbone
        check_canvas(backbone, scene.height, scene.width)
        specs = layer_specs(scene)
        f = backbone.vae_factor
        h, w = scene.height // f, scene.width // f
        masks = self._step_masks(specs, h, w)
        cond, uncond = conditioning(specs, scene.background, self.prompts, self.opts.guidance_mode == "full")
        image = scene.background.image
        bg_key = None if image is None else _digest(np.asarray(image))
        if self.plan is None or bg_key != self._bg_key:
            z_bg, z_white = background_latents(backbone, image, h, w)
            self._bg_key = bg_key
        else:
            z_bg, z_white = self.plan.z_bg, self.plan.z_white
        tiling = self.plan.tiling if self.plan is not None else make_tiling(h, w, max(1, self.tile_size // f))
        self.plan = Plan(self.schedule, tiling, masks, cond, uncond, z_bg, z_white, f)
        self.scene = scene

    def _step_masks(self, specs: list[LayerSpec], h: int, w: int) -> torch.Tensor:
        """[T, P, h, w]; a layer's masks are recomputed only when its mask, blur, strength or cover changed."""
        dev = self.model.device
        painted = np.stack([s.mask for s in specs])
        above = np.flip(np.logical_or.accumulate(np.flip(painted, 0), 0), 0)
        out = []
        for p, spec in enumerate(specs):
            cover = above[p + 1] if p + 1 < len(specs) else None
            key = (_digest(spec.mask), None if cover is None else _digest(cover), spec.blur, spec.strength,
                   self.cover_alpha)
            steps = self._mask_cache.get(key)
            if steps is None:
                raw = torch.from_numpy(spec.mask).to(dev)
                cov = None if cover is None else torch.from_numpy(np.ascontiguousarray(cover)).to(dev)
                soft = M.prepare_layer(raw, cov, self.cover_alpha, spec.blur, spec.strength,
                                       factor=self.model.backbone.vae_factor)
                steps = M.quantize(soft, self.schedule.noise_levels, self.quantize)
                self.masks_computed += 1
                self._mask_cache[key] = steps
                while len(self._mask_cache) > max(self._mask_cache_size, len(specs)):
                    self._mask_cache.popitem(last=False)
            self._mask_cache.move_to_end(key)
            out.append(steps)
        return torch.stack(out, 1)

    # -- frames --------------------------------------------------------------------------------------------------
    def next_frame(self, output: str = "pil"):
        """The next frame: a PIL image (or its latent [1, C, h, w] with output="latent")."""
        with self._lock:
            self._check_open()
            plan, sched = self.plan, self.schedule
            edit = self.scene.background.image is not None
            fresh = initial_latent(plan, self._bg_noise, edit)
            if self._inflight is None:
                latent = self._fill(fresh)
            else:
                T = sched.steps
                x = torch.cat([fresh, self._inflight])
                carried = torch.cat([self._bg_noise, self._carried])
                res = region_step(self.model.model_fn, plan, self.opts, x, torch.arange(T), self._bg_noise,
                                  noise=self._slot_noise, carried_eps=carried)
                self._keep(res.x0[:T - 1], res.x_next[:T - 1], torch.arange(1, T))
                latent = res.x0[T - 1:]
            self.frames += 1
        if output == "latent":
            return latent
        return self.model.decode(latent, tiny=self.tiny_decode)

    def _fill(self, x: torch.Tensor) -> torch.Tensor:
        """First frame: one latent walks through every step; its intermediate latents become the slots in flight."""
        sched, T = self.schedule, self.schedule.steps
        carried = self._bg_noise
        kept_x0, kept_next = [], []
        for i in range(T):
            res = region_step(self.model.model_fn, self.plan, self.opts, x, torch.tensor([i]), self._bg_noise,
                              noise=self._slot_noise[i:i + 1], carried_eps=carried)
            kept_x0.append(res.x0)
            kept_next.append(res.x_next)
            if i + 1 < T:
                carried = self._noise_in(res.x0, res.x_next, torch.tensor([i + 1]))
            x = res.x_next
        if T > 1:
            self._keep(torch.cat(kept_x0[:T - 1]), torch.cat(kept_next[:T - 1]), torch.arange(1, T))
        else:
            self._inflight = self._carried = x[:0]
        return kept_x0[-1]

    def _noise_in(self, x0: torch.Tensor, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        shape = (-1, 1, 1, 1)
        alpha = self.schedule.table("alphas", x.device)[level].view(shape)
        sigma = self.schedule.table("sigmas", x.device)[level].view(shape)
        return (x - alpha * x0) / sigma

    def _keep(self, x0: torch.Tensor, x_next: torch.Tensor, levels: torch.Tensor) -> None:
        self._inflight = x_next
        self._carried = self._noise_in(x0, x_next, levels)

    # -- lifetime ------------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise SemanticDrawError("This stream was closed; start a new one.")

    def close(self) -> None:
        """Stop and free the session's tensors (the model stays loaded)."""
        with self._lock:
            self.closed = True
            self.plan = None
            self._inflight = self._carried = self._bg_noise = self._slot_noise = None
            self._mask_cache.clear()
            self.prompts = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
