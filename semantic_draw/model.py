"""SemanticDraw: owns one backbone (the weights, loaded once) and serves one-shot generations and stream sessions.

The model is read-only after loading; every call brings its own noise, plan and caches, so any number of callers and
sessions can share it. The layers below it (README, "How it works"): a scene becomes a Plan (plan.py), the region step
(sampler.py) runs on the Plan through the denoiser chain (denoiser.py), which ends in the backbone adapter's network
call (backbones/). The model's part of the chain is ``network`` (replace it with a wrapper to compile or time the
network), counted, and serialized by one lock.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from dataclasses import replace
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .backbones.base import Backbone
from .backbones.registry import Family, get_family
from .denoiser import BUCKETS, Counted, Counts, Denoiser, ModelDenoiser, Padded, Serialized, find, for_options
from .errors import LoadError, OptionError, ResourceError, SemanticDrawError
from .noise import NoiseSource, check_seed
from .memory import out_of_memory_is_a_resource_error
from .oneshot import StepInfo, method_settings, sample, step_shapes
from .plan import PlanBuilder, SharedCaches
from .options import (COMPILE_SHAPES, MAX_GUIDANCE, OUTPUTS, StepOptions, check_call, check_choice,  # noqa: F401
                      check_flag, check_known, check_max_pixels, check_number)
from .scene import check_path
from .schedule import SamplerSettings, build_schedule
from .shared_calls import CallPool, SharedCalls
from .sharing import FairLock

log = logging.getLogger("semantic_draw.model")

ONE_CALL = 1 << 30  # batch size that keeps every item of a stream frame in one model call
# every constructor passes them on
MODEL_OPTIONS = ("max_pixels", "compile", "compile_cache", "compile_shapes", "compile_ahead", "share_calls")
LOAD_OPTIONS = ("vae", "tiny_vae", "config", "keep_t5", "local_files_only", "fuse_loras")   # load_pipeline's extras


def to_pil(images: torch.Tensor) -> Image.Image:
    """[1, 3, H, W] in [-1, 1] -> PIL RGB."""
    arr = ((images[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr)


class Decoder:
    """Latents -> PIL images with the backbone's VAE (or its tiny VAE), one decode at a time."""

    def __init__(self, backbone: Backbone, lock: threading.RLock):
        self.backbone, self.lock = backbone, lock

    def __call__(self, latent: torch.Tensor, tiny: bool = False) -> Image.Image:
        with self.lock, torch.inference_mode():
            return to_pil(self.backbone.decode(latent, tiny=tiny))


class SemanticDraw:
    """Region-based text-to-image generation with semantic brushes on SD1.5, SDXL or SD3."""

    def __init__(self, backbone: Backbone, settings: SamplerSettings | None = None, guidance: float = 0.0,
                 name: str = "", max_pixels: int | None = None, compile: bool = False,
                 compile_cache: str | None = None, compile_shapes: str = "dynamic", compile_ahead: bool = False,
                 share_calls: bool = False):
        self.backbone = backbone
        self.spec: Family = get_family(backbone.family)
        self.name = name or backbone.family
        self.settings = settings or self.spec.sampler
        self.guidance = guidance
        self.max_pixels = max_pixels
        self._lock = FairLock()        # network calls, encodes and decodes take turns, first come first served
        self.counts = Counts()
        self.network: Denoiser = ModelDenoiser(backbone)   # wrap it to change how the network runs (timing, compile)
        self.decoder = Decoder(backbone, self._lock)
        self.caches = SharedCaches(backbone, self._lock)   # one-shots' prompt rows and masks, the white latent
        check_flag(share_calls, "share_calls")
        self.shared = CallPool() if share_calls else None   # shared_calls.py: callers waiting together, one call
        check_flag(compile, "compile")
        check_choice(compile_shapes, "compile_shapes", COMPILE_SHAPES)
        self.packages = None            # with compile_ahead: the folder of ahead-of-time programs (packages.py)
        check_flag(compile_ahead, "compile_ahead")
        if compile_ahead and compile_cache is None:
            raise OptionError("compile_ahead keeps its programs in the compile cache folder: give compile_cache too.")
        if compile:
            self.compile(cache_dir=compile_cache, shapes=compile_shapes)
        if compile_ahead:
            self.compile_ahead(compile_cache, shapes=compile_shapes)

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, preset: str | None = None, *, model: str | None = None, family: str | None = None, loras=(),
             device=None, dtype=None, **kwargs) -> "SemanticDraw":
        """What the command line and the app load: a named ``preset`` (default "sd15"), or any checkpoint ``model``
        (hub id, diffusers folder, .safetensors file) with optional ``loras``. One LoadError when it cannot."""
        if model and preset:
            raise LoadError("Give a preset or a model, not both.")
        if model:
            return cls.from_pretrained(model, family=family, loras=loras, device=device, dtype=dtype, **kwargs)
        if loras:
            raise LoadError("LoRAs go with a model (--model); presets bring their own.")
        if family:
            raise LoadError("A family goes with a model (--model); presets know theirs.")
        return cls.from_preset(preset or "sd15", device=device, dtype=dtype, **kwargs)

    @classmethod
    def from_preset(cls, name: str = "sd15", device=None, dtype=None, **kwargs) -> "SemanticDraw":
        from .loading import load_backbone
        from .presets import get_preset
        check_known(kwargs, MODEL_OPTIONS, "from_preset (besides name, device and dtype)")
        check_max_pixels(kwargs.get("max_pixels"))
        preset = get_preset(name)
        backbone = load_backbone(preset, device=device, dtype=dtype)
        return cls(backbone, preset.settings, guidance=preset.guidance, name=preset.name, **kwargs)

    @classmethod
    def from_pretrained(cls, source: str, family: str | None = None, loras=(), device=None, dtype=None,
                        settings: SamplerSettings | None = None, guidance: float = 0.0, **load_kwargs):
        """Any SD1.5 / SDXL / SD3 checkpoint: hub id, local diffusers folder or single .safetensors file."""
        from .loading import load_pipeline
        model_kwargs = {k: load_kwargs.pop(k) for k in MODEL_OPTIONS if k in load_kwargs}
        check_known(load_kwargs, LOAD_OPTIONS, "from_pretrained (besides source, family, loras, device, dtype, "
                    "settings and guidance)")
        check_number(guidance, "guidance", 0.0, MAX_GUIDANCE)
        if settings is not None and not isinstance(settings, SamplerSettings):
            raise OptionError(f"settings must be a SamplerSettings, got {type(settings).__name__}.")
        pipe = load_pipeline(source, family=family, loras=loras, device=device, dtype=dtype, **load_kwargs)
        return cls.from_pipeline(pipe, settings=settings, guidance=guidance, name=str(source), family=family,
                                 **model_kwargs)

    @classmethod
    def from_pipeline(cls, pipe, settings: SamplerSettings | None = None, guidance: float = 0.0,
                      name: str = "", **backbone_kwargs) -> "SemanticDraw":
        """Wrap an already loaded diffusers pipeline of a registered family (SD1.5, SDXL, SD3, ...)."""
        from .loading import backbone_from_pipeline
        model_kwargs = {k: backbone_kwargs.pop(k) for k in MODEL_OPTIONS if k in backbone_kwargs}
        return cls(backbone_from_pipeline(pipe, **backbone_kwargs), settings, guidance=guidance, name=name,
                   **model_kwargs)

    # -- facts: the backbone's, and the counts of every caller and session together ----------------------------
    family = property(lambda self: self.backbone.family)
    size_multiple = property(lambda self: self.backbone.size_multiple)
    native_size = property(lambda self: self.backbone.native_size)
    device = property(lambda self: self.backbone.device)
    calls = property(lambda self: self.counts.calls, doc="Network calls so far (batched).")
    items = property(lambda self: self.counts.items, doc="Views evaluated so far (a CFG call counts both halves).")

    # -- the fast path (compiled.py) ------------------------------------------------------------------------------
    def compile(self, *, mode: str | None = None, buckets=BUCKETS, cache_dir: str | None = None,
                backend: str = "inductor", shapes: str = "dynamic") -> "SemanticDraw":
        """Run the network through torch.compile from now on (CUDA graphs on a GPU), its calls padded to ``buckets``
        sizes, and the VAE's and tiny VAE's decoders compiled too (no CUDA graphs). ``cache_dir``: a folder for the
        compile cache, loaded now and saved after each new graph. ``shapes``: "dynamic" (one graph for every batch
        size of a canvas) or "static" (one per shape). The first call of each new graph compiles (a minute or two;
        see ``warm``). Returns the model."""
        from .compiled import Compiled, compile_decoders
        if cache_dir is not None:
            cache_dir = check_path(cache_dir, "The compile cache folder", error=OptionError)
        with self._lock:
            if self.compiled is None:
                self.network = Compiled(self.network, self.backbone, mode=mode, buckets=buckets, cache_dir=cache_dir,
                                        backend=backend, shapes=shapes)
                compile_decoders(self.backbone, backend)
        return self

    @property
    def compiled(self):
        """The Compiled wrapper of the network (its ``compiles`` and ``shapes`` say what was compiled), or None."""
        from .compiled import compiled_layer
        return compiled_layer(self.network)

    def warm(self, canvases=None, brushes=(1, 3), regions=("latent",), progress=None,
             tile_size: int | None = None) -> float:
        """Compile the shapes of streams and one-shots before anyone waits for them: for each canvas (height,
        width; default the native size), brush count and region layout, three stream frames (the filling one, a
        steady one and one after an edit, as while someone paints) and one generate, in views of ``tile_size``
        (default: the model's). ``progress(done, total, what)`` after each. Returns the seconds it took."""
        from .warm import warm
        return warm(self, canvases, brushes, regions, progress, tile_size)

    def compile_ahead(self, folder: str, canvases=None, brushes=(1, 3), regions=("latent", "attention"),
                      shapes: str = "dynamic", tile_size: int | None = None, decoders: bool = True):
        """Export the network and compile it ahead of time (AOTInductor) for the calls ``warm`` makes over
        ``canvases`` x ``brushes`` x ``regions`` (in views of ``tile_size``), and keep the programs in ``folder``
        (packages.py): a later process loads them in milliseconds, where torch.compile would trace the network again
        before each graph. Programs already in the folder are loaded first, and only calls they do not serve are
        compiled (minutes on a GPU, as with torch.compile). With ``shapes="dynamic"`` a program serves every batch
        size of a canvas and every brush count. Calls no program serves run as before: eager, or through
        torch.compile after ``compile``. With ``decoders`` the VAE's and tiny VAE's decoders are compiled too, for a
        whole-canvas decode of each canvas. Returns the network (its ``programs``; ``fallbacks``: the calls that
        found none; ``failed``: why a kind of call could not be compiled, out of memory or disk say, which then runs
        as before while the other programs are kept and saved)."""
        from .compiled import AheadOfTime, check_compilable, compile_ahead_of_time
        from .packages import Packages
        if not isinstance(folder, (str, Path)) or not str(folder):
            raise OptionError(f"compile_ahead needs a folder for its programs, got {folder!r}.")
        folder = check_path(folder, "The folder of compile_ahead's programs", error=OptionError)
        check_choice(shapes, "compile_shapes", COMPILE_SHAPES)
        check_compilable(self.device)
        packages = Packages(folder, self.backbone)
        if self.packages is not None and self.packages.folder == packages.folder:
            packages = self.packages     # called again on the same folder: its programs are in place already
        with self._lock:
            saved = packages.load() if packages is not self.packages else {}
            if saved:
                real, failures = self.backbone.net, {}
                if isinstance(real, AheadOfTime):
                    saved = {view: real.programs.get(view, []) + ps for view, ps in saved.items()} | {
                        view: ps for view, ps in real.programs.items() if view not in saved}
                    real, failures = real.module, real.failures
                self.backbone.net = AheadOfTime(real, saved, failures)
        try:
            net = compile_ahead_of_time(self, packages, canvases, brushes, dynamic=shapes == "dynamic",
                                        regions=regions, tile_size=tile_size)
        except SemanticDrawError:
            raise
        except Exception as err:
            raise ResourceError(f"Could not compile the network ahead of time ({type(err).__name__}: {err}); "
                                "the model runs as before.") from err
        packages.save(net.programs)
        self.packages = packages
        if decoders:
            try:
                with self._lock:
                    packages.compile_decoders(canvases or [(self.native_size, self.native_size)])
            except Exception as err:     # the network's programs stand; the decoders stay as they were
                log.warning("the decoders were not compiled ahead of time (%s: %s)", type(err).__name__, err)
            else:
                packages.save(net.programs)
        return net

    # -- the parts the modes are made of -------------------------------------------------------------------------
    @property
    def denoiser(self) -> Denoiser:
        """The model's denoiser chain: the network (and what wraps it), counted, one call at a time (with
        ``share_calls``, calls of several sessions waiting at the same time joined into one)."""
        counted = Counted(self.network, self.counts)
        if self.shared is not None:
            return SharedCalls(counted, self._lock, self.shared)
        return Serialized(counted, self._lock)

    def decode(self, latent: torch.Tensor, tiny: bool = False) -> Image.Image:
        return self.decoder(latent, tiny=tiny)

    def encode_prompts(self, prompts):
        with self._lock, torch.inference_mode():
            return self.backbone.encode_prompts(list(prompts))

    def check_scene(self, scene):
        """Validate a scene for this model: one SemanticDrawError naming the problem, or the normalized scene."""
        from .plan import check_scene
        return check_scene(scene, self.max_pixels)

    def step_options(self, **overrides) -> StepOptions:
        check_known(overrides, StepOptions.__dataclass_fields__, "the sampler")
        opts = replace(StepOptions(guidance=self.guidance), **overrides).check()   # types and ranges first
        if "guidance_mode" not in overrides:
            opts.guidance_mode = "full" if opts.guidance > 1 else "none"
        return opts

    def schedule(self, settings: SamplerSettings):
        """The schedule of ``settings``, built once per settings (the model keeps the ones in use)."""
        timesteps = None if settings.timesteps is None else tuple(settings.timesteps)
        key = (settings.sampler, settings.steps, timesteps, settings.spacing, settings.eta)
        return self.caches.schedule(key, lambda: build_schedule(
            settings.sampler, self.backbone.scheduler_config, self.backbone.prediction_type, steps=settings.steps,
            timesteps=settings.timesteps, eta=settings.eta, spacing=settings.spacing))

    def plan_builder(self, settings: SamplerSettings, opts: StepOptions, *, cover_alpha: float | None = None,
                     tile_size: int | None = None, regions: str = "latent", share: bool = False,
                     **cache_sizes) -> PlanBuilder:
        """A PlanBuilder of this model. ``share``: prompt rows and step masks from the model's caches of recent
        one-shots (a stream keeps caches of its own, sized by its options)."""
        builder = PlanBuilder(self.backbone, self.schedule(settings), lock=self._lock, quantize=settings.quantize,
                              cover_alpha=cover_alpha, tile_size=tile_size, with_uncond=opts.guidance_mode == "full",
                              max_pixels=self.max_pixels, layout=regions, shared=self.caches,
                              share=share, **cache_sizes)
        if builder.layout == "attention":
            with self._lock:
                self.backbone.install_region_attention()
        return builder

    # -- stream --------------------------------------------------------------------------------------------------
    def stream(self, scene, seed: int = 0, *, quantize: str | None = None, cover_alpha: float | None = None,
               tile_size: int | None = None, tiny_decode: bool = True, mask_cache_size: int = 64,
               prompt_cache_size: int = 256, regions: str = "latent", **step_overrides):
        """A StreamSession of this model: ``session.next_frame()`` gives frames, ``session.update(scene)`` edits,
        ``session.run(edits)`` is the whole loop.

        Options: regions ("latent": the paper's layout, one view per brush; "attention": one view per slot, the
        brushes mixed inside the attention layers), quantize, cover_alpha, tile_size, tiny_decode, and StepOptions
        fields (guidance, guidance_mode "none" / "full" / "self", bootstrap_steps, ...). Each session owns its state;
        the weights are shared.
        """
        from .stream import StreamSession
        check_seed(seed)
        check_call(quantize=quantize, cover_alpha=cover_alpha, tile_size=tile_size, size_multiple=self.size_multiple,
                   flags={"tiny_decode": tiny_decode},
                   cache_sizes={"mask_cache_size": mask_cache_size, "prompt_cache_size": prompt_cache_size})
        settings = self.settings if quantize is None else replace(self.settings, quantize=quantize)
        opts = self.step_options(**{"batch_size": ONE_CALL, **step_overrides})
        builder = self.plan_builder(settings, opts, cover_alpha=cover_alpha, tile_size=tile_size, regions=regions,
                                    mask_cache_size=mask_cache_size, prompt_cache_size=prompt_cache_size)
        return StreamSession(self.denoiser, builder, self.decoder, scene, seed, opts, tiny_decode=tiny_decode)

    # -- one-shot ------------------------------------------------------------------------------------------------
    @out_of_memory_is_a_resource_error("Try a smaller canvas, a smaller tile_size or batch_size, or fewer brushes.")
    def generate(self, scene, seed: int = 0, method: str = "semanticdraw", *, steps: int | None = None,
                 sampler: str | None = None, quantize: str | None = None, cover_alpha: float | None = None,
                 tile_size: int | None = None, blend_background: bool = True, regions: str = "latent",
                 callback: Callable[[StepInfo], None] | None = None, output: str = "pil", **step_overrides):
        """Generate the scene's image (PIL, at the scene's size) with ``method``.

        method: "semanticdraw" (default), "multidiffusion-fast" (naive few-step baseline) or "multidiffusion"
        (50-step reference). regions: "latent" (the paper's layout: one view per brush) or "attention" (one view
        per tile, the brushes mixed inside the attention layers; its cost does not grow with the number of brushes).
        steps/sampler/quantize override the model's defaults; other keyword arguments are
        StepOptions fields (guidance, guidance_mode, bootstrap_steps, bootstrap_mix_steps, centering,
        leak_sensitivity, batch_size). callback(info) runs after every step. output="latent" returns the latent.
        """
        check_seed(seed)
        check_call(steps=steps, sampler=sampler, quantize=quantize, cover_alpha=cover_alpha, tile_size=tile_size,
                   size_multiple=self.size_multiple, output=output, callback=callback,
                   flags={"blend_background": blend_background})
        scene = self.check_scene(scene)
        noise = NoiseSource(seed, self.device)
        base = self.settings
        if sampler is not None:
            base = replace(base, sampler=sampler, timesteps=None, steps=steps or base.steps or 4)
        elif steps is not None:
            base = replace(base, steps=steps, timesteps=None)
        if quantize is not None:
            base = replace(base, quantize=quantize)
        settings, opts = method_settings(method, base, self.step_options(**step_overrides), self.spec)
        builder = self.plan_builder(settings, opts, cover_alpha=cover_alpha, tile_size=tile_size, regions=regions,
                                    share=True)
        plan = builder.build(scene)
        edit = scene.background.image is not None
        denoiser = for_options(self.denoiser, opts.guidance_mode, opts.guidance, opts.batch_size,
                               regions=builder.backbone if plan.regions is not None else None)
        padded = find(denoiser, Padded)
        latent = sample(denoiser, plan, opts, noise, edit=edit, callback=callback,
                        decode=lambda z: self.decode(z, tiny=True),
                        before_step=None if padded is None else step_shapes(plan, opts, padded))
        if output == "latent":
            return latent
        image = self.decode(latent)
        if edit and blend_background:
            image = blend_outside(image, scene.background.image, builder.pixel_masks(scene))
        return image


def blend_outside(image: Image.Image, background: Image.Image, soft: torch.Tensor | None) -> Image.Image:
    """Paste the original background outside the (blurred) layer masks."""
    if soft is None:
        return background.convert("RGB").copy()
    keep = soft.max(0).values.clamp(0, 1).cpu().numpy()[..., None]
    photo = np.asarray(background.convert("RGB"), dtype=np.float32)
    out = np.asarray(image, dtype=np.float32) * keep + photo * (1 - keep)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
