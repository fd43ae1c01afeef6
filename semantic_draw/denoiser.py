"""The denoiser layer: a batch of views in, (x0_hat, eps_hat) out, and the small wrappers that nest around it.

``ModelDenoiser`` wraps a backbone once: the adapter's raw network call, turned into the common form by the adapter's
parametrization (ALGORITHM.md section 1). Each wrapper adds one concern and passes everything else through:

    SelfGuidance    residual CFG: the unconditional prediction is the noise the stream already carries
    FullGuidance    classifier-free guidance on a doubled batch (negative prompt rows, then the prompts)
    Batched         calls of at most ``batch_size`` views; halves the batch and retries on out-of-memory
    RegionAttention the attention layout: prompt weights turned into what the attention processors read
    Padded          batches padded to a few bucket sizes, for a compiled network (compiled.py)
    Serialized      one model call at a time across threads and sessions
    Counted         model calls and items, for tests, session stats and benchmarks
    Timed           time inside the network (CUDA events on a GPU), for the benchmarks

A model owns the inner part of the chain (``SemanticDraw.network`` -> Counted -> Serialized); a one-shot call or a
stream session puts the guidance and batching its options ask for on top (``for_options``). A compiled or scheduled
denoiser is one more wrapper. Wrappers override ``predict``, the network's own output (epsilon or flow velocity) for
the views, so that guidance mixes predictions exactly where the diffusers pipelines do; ``__call__`` turns the
final prediction into (x0_hat, eps_hat) once, at the top.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import torch

from .backbones.base import Backbone, Cond
from .errors import ResourceError
from .schedule import Schedule
from .timing import Clock
from .transfer import to_device


def _pad(t: torch.Tensor | None, size: int) -> torch.Tensor | None:
    """t [N, ...] and size - N copies of its last row."""
    if t is None or size <= len(t):
        return t
    return torch.cat([t, t[-1:].expand((size - len(t),) + tuple(t.shape[1:]))])


@dataclass
class Regions:
    """The attention layout's conditioning of a batch of views (ALGORITHM.md section 11): every item reads one set of
    S prompts, mixed per pixel by its weights. ``context`` is what the backbone's attention processors read, made from
    the rest once per network call (``RegionAttention``)."""
    weights: torch.Tensor                 # [N, S, vh, vw] per item and prompt slot; their sum is > 0 at every pixel
    prompts: Cond                         # each tensor [G, S, ...]: G prompt sets of S slots
    negatives: Cond | None = None         # [1, S, ...] the negative prompts of the set, for full CFG
    alone: torch.Tensor | None = None     # [N] long, on the host: the one slot an item reads alone, or -1 (a mix)
    group: torch.Tensor | None = None     # [N] long: the prompt set each item reads (None: all read set 0)
    context: object = None
    # Where these regions come from, for ``RegionAttention`` to keep the contexts it makes: (a dict owned by the
    # step layout that made the regions, the path of slices, paddings and doublings from them to these), or None
    # when they were picked by an index only the caller knows. A stream's frames take the same path every frame.
    source: tuple | None = None

    def __getitem__(self, items) -> "Regions":
        return self.take(items, items)

    def along(self, *step) -> tuple | None:
        """The source of regions made from these by one more ``step`` (a hashable description)."""
        return None if self.source is None else (self.source[0], self.source[1] + (step,))

    def take(self, items, host_items) -> "Regions":
        """The items ``items`` (on the weights' device), ``host_items`` the same on the host (for ``alone``)."""
        source = self.along("take", items.start, items.stop, items.step) if isinstance(items, slice) else None
        return replace(self, weights=self.weights[items], alone=None if self.alone is None else self.alone[host_items],
                       group=None if self.group is None else self.group[items], context=None, source=source)

    def pad(self, size: int) -> "Regions":
        return replace(self, weights=_pad(self.weights, size), alone=_pad(self.alone, size),
                       group=_pad(self.group, size), context=None, source=self.along("pad", size))

    def item_groups(self) -> torch.Tensor:
        if self.group is not None:
            return self.group
        return torch.zeros(len(self.weights), dtype=torch.long, device=self.weights.device)


@dataclass
class Views:
    """A batch of N views (items) and what the network is conditioned on."""
    x: torch.Tensor                     # [N, C, vh, vw] inputs, x_t = alpha x0 + sigma eps
    step: torch.Tensor                  # [N] long step index of each item in ``schedule``
    schedule: Schedule
    cond: Cond                          # N rows of prompt embeddings
    crops: torch.Tensor                 # [N, 2] (top, left) pixel offset of each view in its canvas
    uncond: Cond | None = None          # N rows of negative-prompt embeddings (full CFG)
    carried: torch.Tensor | None = None  # [N, C, vh, vw] the noise each input carries (self guidance)
    regions: Regions | None = None      # the attention layout's prompts and weights (cond is then unused)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, items) -> "Views":
        """Some of the views; a host index tensor is moved to the device once, without waiting."""
        host = items
        if isinstance(items, torch.Tensor) and items.device != self.x.device:
            items = to_device(items, self.x.device)

        def part(t):
            return None if t is None else t[items]
        return replace(self, x=self.x[items], step=self.step[items], crops=self.crops[items],
                       cond={k: v[items] for k, v in self.cond.items()},
                       uncond=None if self.uncond is None else {k: v[items] for k, v in self.uncond.items()},
                       carried=part(self.carried),
                       regions=None if self.regions is None else self.regions.take(items, host))

    def pad(self, size: int) -> "Views":
        """The views and ``size - len`` copies of the last one: made on each tensor's own device (a host index
        would make the host wait for the GPU)."""
        return replace(self, x=_pad(self.x, size), step=_pad(self.step, size), crops=_pad(self.crops, size),
                       cond={k: _pad(v, size) for k, v in self.cond.items()},
                       uncond=None if self.uncond is None else {k: _pad(v, size) for k, v in self.uncond.items()},
                       carried=_pad(self.carried, size),
                       regions=None if self.regions is None else self.regions.pad(size))

    @staticmethod
    def join(parts: "list[Views]") -> "Views":
        """The views of several callers as one batch, for the network alone (shared_calls.py): their inputs, steps,
        crops and prompt rows one after the other. Their shapes and schedules agree (``share_key``); what only the
        wrappers above the network read (negative rows, carried noise) is left out."""
        first = parts[0]
        return replace(first, x=torch.cat([p.x for p in parts]), step=torch.cat([p.step for p in parts]),
                       crops=torch.cat([p.crops for p in parts]),
                       cond={k: torch.cat([p.cond[k] for p in parts]) for k in first.cond},
                       uncond=None, carried=None, regions=None)

    def share_key(self) -> tuple | None:
        """Views with equal keys can be joined into one network call: same view shape, dtype and device, the same
        kinds of prompt rows, the same schedule. None for the attention layout, whose views carry a context built
        for their own prompts."""
        if self.regions is not None:
            return None
        return (tuple(self.x.shape[1:]), self.x.dtype, str(self.x.device),
                tuple((k, tuple(v.shape[1:]), v.dtype) for k, v in sorted(self.cond.items())),
                self.schedule.key)

    def with_negatives(self) -> "Views | None":
        """The views twice, negative prompts first (full CFG); None when there are no negative prompts."""
        regions, cond = self.regions, {}
        if regions is not None:
            if regions.negatives is None:
                return None
            ones = regions.item_groups() + 1
            regions = Regions(torch.cat([regions.weights, regions.weights]),
                              {k: torch.cat([regions.negatives[k], v]) for k, v in regions.prompts.items()},
                              alone=None if regions.alone is None else torch.cat([regions.alone, regions.alone]),
                              group=torch.cat([torch.zeros_like(ones), ones]), source=regions.along("negatives"))
        elif self.uncond is None:
            return None
        else:
            cond = {k: torch.cat([self.uncond[k], v]) for k, v in self.cond.items()}
        return replace(self, x=torch.cat([self.x, self.x]), step=torch.cat([self.step, self.step]),
                       crops=torch.cat([self.crops, self.crops]), cond=cond, uncond=None, carried=None,
                       regions=regions)

    @property
    def timesteps(self) -> torch.Tensor:
        """What the network is conditioned on at each item's step (diffusers' timesteps)."""
        return self.schedule.table("timesteps", self.x.device)[self.step]


class Denoiser:
    """views -> (x0_hat, eps_hat). Subclasses give ``predict``, the network's raw output for the views."""
    parametrization = None
    fanout = 1     # network items per view (full CFG evaluates two)
    buckets = ()   # batch sizes a compiled network wants its calls padded to (compiled.py); () for none

    def predict(self, views: Views) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, views: Views) -> tuple[torch.Tensor, torch.Tensor]:
        k = views.schedule.coefficients(views.step, views.x.device)
        return self.parametrization.split(self.predict(views), views.x, k)


class ModelDenoiser(Denoiser):
    """The backbone's network call, once per batch of views."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        self.parametrization = backbone.parametrization

    def predict(self, views: Views) -> torch.Tensor:
        if views.regions is not None:
            return self.backbone.model_output(views.x, views.timesteps, views.cond, views.crops,
                                              regions=views.regions.context)
        return self.backbone.model_output(views.x, views.timesteps, views.cond, views.crops)


class Wrapper(Denoiser):
    """A denoiser around another one: by default it passes everything through."""

    def __init__(self, inner: Denoiser):
        self.inner = inner

    @property
    def parametrization(self):
        return self.inner.parametrization

    @property
    def fanout(self) -> int:
        return self.inner.fanout

    @property
    def buckets(self) -> tuple:
        return self.inner.buckets

    def predict(self, views: Views) -> torch.Tensor:
        return self.inner.predict(views)


class FullGuidance(Wrapper):
    """Classifier-free guidance: out = u + scale (c - u) over one call of twice the views (negatives first)."""

    def __init__(self, inner: Denoiser, scale: float):
        super().__init__(inner)
        self.scale = scale

    @property
    def fanout(self) -> int:
        return 2 * self.inner.fanout

    def predict(self, views: Views) -> torch.Tensor:
        both = views.with_negatives()
        if both is None:
            return self.inner.predict(views)
        u, c = self.inner.predict(both).chunk(2)
        return u + self.scale * (c - u)


class SelfGuidance(Wrapper):
    """Residual CFG (StreamDiffusion's self guidance): the noise a stream latent already carries stands in for the
    unconditional prediction, eps <- eps_u + scale (eps_c - eps_u), at no extra model cost; x0_hat follows eps."""

    def __init__(self, inner: Denoiser, scale: float):
        super().__init__(inner)
        self.scale = scale

    def __call__(self, views: Views) -> tuple[torch.Tensor, torch.Tensor]:
        x0, eps = self.inner(views)
        if views.carried is None:
            return x0, eps
        eps_u = views.carried
        eps = eps_u + self.scale * (eps - eps_u)
        k = views.schedule.coefficients(views.step, views.x.device)
        x0 = torch.where(k.alpha > 1e-3, (views.x - k.sigma * eps) / k.alpha.clamp_min(1e-3), x0)
        return x0, eps


class RegionAttention(Wrapper):
    """The attention layout: before each network call, the backbone turns the views' prompt weights into what its
    attention processors read (weights per attention resolution, or SD3's joint-attention bias), once per call.

    Items that read one prompt alone (bootstrapped brushes) go through the network's plain path in a call of their
    own where the backbone says that is cheaper (``region_solo_apart``: SD3, whose text stream would otherwise carry
    every prompt's tokens for them). For a compiled network (``buckets``) every call is padded to a bucket size and
    the processors get no solo / mixed split, so the shapes depend on the batch size and the prompt count only."""

    def __init__(self, inner: Denoiser, backbone: Backbone, buckets=()):
        super().__init__(inner)
        self.backbone, self.bucket_sizes = backbone, tuple(buckets)

    def predict(self, views: Views) -> torch.Tensor:
        r = views.regions
        if r is None:
            return self._call(views)
        if self.plain_solo_calls and r.alone is not None and (r.alone >= 0).any():
            return self._apart(views, r.alone >= 0)
        return self._whole(views)       # already padded (``Padded`` wraps this)

    @property
    def plain_solo_calls(self) -> bool:
        """Whether solo items go in a plain call of their own (no region context), next to the region call."""
        return getattr(self.backbone, "region_solo_apart", False)

    def _whole(self, views: Views) -> torch.Tensor:
        r = views.regions
        if self.bucket_sizes:
            r = replace(r, alone=None)
        return self.inner.predict(replace(views, regions=replace(r, context=self._context(r, views.x.shape[-2:]))))

    def _context(self, r: Regions, view_hw):
        """The backbone's context of ``r``, made once for regions of a known source (a stream's every frame)."""
        if r.source is None:
            return self.backbone.region_context(r, view_hw)
        kept, key = r.source[0], (r.source[1], r.alone is None, tuple(view_hw))
        if key not in kept:
            kept[key] = self.backbone.region_context(r, view_hw)
        return kept[key]

    def _call(self, views: Views) -> torch.Tensor:
        """A part of a split batch, padded to a bucket size of its own for a compiled network."""
        if not self.bucket_sizes:
            return self.inner.predict(views)
        return padded_call(self.inner, views, bucket(len(views), self.bucket_sizes))

    def _apart(self, views: Views, solo: torch.Tensor) -> torch.Tensor:
        """The solo items with their one prompt's rows (one call), the whole views with the regions (another)."""
        r, dev = views.regions, views.x.device
        idx, rest = solo.nonzero().flatten(), (~solo).nonzero().flatten()
        group = r.group[idx] if r.group is not None and r.group.device.type == "cpu" else None
        slot = r.alone[idx]
        idx_dev, rest_dev = to_device(idx, dev), to_device(rest, dev)
        if group is None:
            group = r.item_groups()[to_device(idx, r.weights.device)]
        plain = replace(views[idx], regions=None,
                        cond={k: v[to_device(group, v.device), to_device(slot, v.device)] for k, v in r.prompts.items()})
        out = self._call(plain)
        if len(rest) == 0:
            return out
        rest_views = views[rest]          # picked by ``alone``, which the regions' source fixes
        rest_views = replace(rest_views, regions=replace(rest_views.regions, source=r.along("mixed")))
        size = bucket(len(rest_views), self.bucket_sizes) if self.bucket_sizes else len(rest_views)
        whole = self._whole(rest_views.pad(size))[:len(rest_views)]
        merged = out.new_empty((len(views),) + out.shape[1:])
        merged[idx_dev], merged[rest_dev] = out, whole
        return merged


class Batched(Wrapper):
    """Calls of at most ``batch_size`` network items; on out-of-memory the batch is halved and the call retried, so a
    step uses as many items per call as memory allows and gives the same image."""

    def __init__(self, inner: Denoiser, batch_size: int):
        super().__init__(inner)
        self.batch_size = batch_size

    def predict(self, views: Views) -> torch.Tensor:
        chunk = max(1, self.batch_size // self.inner.fanout)
        outs, a = [], 0
        while a < len(views):
            b = min(a + chunk, len(views))
            try:
                outs.append(self.inner.predict(views[a:b]))
            except torch.OutOfMemoryError as err:
                if b - a <= 1:
                    raise ResourceError("Out of memory even for a single view of the canvas. Try a smaller tile "
                                        "size, a smaller canvas, or free memory used by other programs.") from err
                chunk = (b - a) // 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            a = b
        return torch.cat(outs)


class Serialized(Wrapper):
    """One network call at a time across every thread and session of a model (the weights are shared)."""

    def __init__(self, inner: Denoiser, lock: threading.RLock):
        super().__init__(inner)
        self.lock = lock

    def predict(self, views: Views) -> torch.Tensor:
        with self.lock, torch.inference_mode():
            return self.inner.predict(views)


@dataclass
class Counts:
    calls: int = 0   # network calls (batched)
    items: int = 0   # views evaluated (a CFG call counts both halves)

    def reset(self) -> None:
        self.calls = self.items = 0


class Counted(Wrapper):
    """Adds every network call and its items to ``counts`` (shared by whoever wants to read them)."""

    def __init__(self, inner: Denoiser, counts: Counts | None = None):
        super().__init__(inner)
        self.counts = counts if counts is not None else Counts()

    def predict(self, views: Views) -> torch.Tensor:
        self.counts.calls += 1
        self.counts.items += len(views)
        return self.inner.predict(views)


class Timed(Wrapper):
    """Time inside the wrapped denoiser, added to ``clock`` under ``key`` (CUDA events: no sync inside a step)."""

    def __init__(self, inner: Denoiser, clock: Clock, key: str = "model"):
        super().__init__(inner)
        self.clock, self.key = clock, key

    def predict(self, views: Views) -> torch.Tensor:
        with self.clock.span(self.key):
            return self.inner.predict(views)


# Batch sizes the network is compiled for: a stream frame of T slots x (brushes + 1) views, doubled by CFG, lands on
# one of them; larger batches are padded to a multiple of the largest.
BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64)


def bucket(n: int, buckets=BUCKETS) -> int:
    for b in buckets:
        if b >= n:
            return b
    return -(-n // buckets[-1]) * buckets[-1]


def padded_call(inner: Denoiser, views: Views, size: int) -> torch.Tensor:
    """inner's prediction for ``views`` made on a batch of ``size`` (copies of the last item, cut off again)."""
    n = len(views)
    if size <= n:
        return inner.predict(views)
    return inner.predict(views.pad(size))[:n]


class Padded(Wrapper):
    """Batches padded to bucket sizes, or to ``minimum`` when a caller knows its largest batch (a stream frame of
    a given canvas and brush count always has the same shape; so has a one-shot step that fits one call, see
    oneshot.step_shapes), so a compiled network sees few shapes."""

    def __init__(self, inner: Denoiser, buckets=BUCKETS):
        super().__init__(inner)
        self.bucket_sizes = tuple(buckets)
        self.minimum = 0

    def predict(self, views: Views) -> torch.Tensor:
        n = len(views)
        return padded_call(self.inner, views, self.minimum if n <= self.minimum else bucket(n, self.bucket_sizes))


def find(denoiser: Denoiser, kind: type) -> Denoiser | None:
    """The first layer of ``kind`` in a chain of wrappers, or None."""
    while denoiser is not None and not isinstance(denoiser, kind):
        denoiser = getattr(denoiser, "inner", None)
    return denoiser


def for_options(denoiser: Denoiser, guidance_mode: str, guidance: float, batch_size: int, *,
                regions: Backbone | None = None) -> Denoiser:
    """What a call or session puts on top of the model's chain: the attention layout's processors' input (with the
    backbone of ``regions``), guidance (full or self) and batching."""
    buckets = denoiser.buckets
    if regions is not None:
        denoiser = RegionAttention(denoiser, regions, buckets)
    if buckets:
        denoiser = Padded(denoiser, buckets)
    if guidance_mode == "full":
        denoiser = FullGuidance(denoiser, guidance)
    denoiser = Batched(denoiser, batch_size)
    if guidance_mode == "self" and guidance > 1:
        denoiser = SelfGuidance(denoiser, guidance)
    return denoiser
