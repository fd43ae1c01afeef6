"""StreamSession: the multi-prompt stream batch (ALGORITHM.md section 7) on top of the shared region step.

T latents are in flight, one per step. Each frame is ONE batched model call over every (slot, tile, layer) item:
a fresh latent enters at step 0, every slot advances one step, and the slot that finishes is decoded (tiny VAE).
The latent that enters is the same every frame, with the same noise, until the plan or the seed changes, so its step
is computed by the first frame after a change and kept: the frames in between call the network for the T - 1 slots
in flight only (the same frames, fewer items; in the attention layout the bootstrapped brushes' items go entirely).
The step layout of those frames (items, masks, crops, conditioning) is made once per plan and seed as well.
A session depends on three things only: a denoiser (the model's chain), a plan builder (its own caches) and a
decoder. It owns its latents, noise and lock; the weights behind the three are shared with other sessions.
Edits (``update``) take effect at the next frame without re-filling the pipeline and recompute only what changed.
``run`` is the loop the app, the command line and the HTTP API share: it applies queued edits, skips recomputing a
settled frame until the next edit, stops at a time limit and reports frames per second.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

import torch

from .denoiser import Counted, Counts, Denoiser, Padded, RegionAttention, find, for_options
from .errors import OptionError, SemanticDrawError, SessionClosedError, SceneError
from .memory import out_of_memory_is_a_resource_error
from .noise import NoiseSource
from .oneshot import initial_latent
from .plan import Plan, PlanBuilder
from .options import OUTPUTS, StepOptions, check_choice, check_flag, check_number, check_whole, shown
from .sampler import StepLayout, most_call_items, prepare_step, region_step
from .sharing import Slots
from .transfer import to_device

MAX_IDLE_WAIT = 60.0     # seconds a settled run waits for an edit between two "idle" events, at most
EDIT_KINDS = ("scene", "seed", "stop")   # what a run's edit queue carries: (kind, payload) pairs
LAYER_FIELDS = ("prompt", "negative_prompt", "mask", "mask_strength", "mask_blur", "prompt_strength", "name")
BACKGROUND_FIELDS = ("prompt", "negative_prompt", "image")


@dataclass
class StreamEvent:
    """What ``StreamSession.run`` yields.

    kind: "frame" (a new picture in ``image``), "same" (a frame whose latent equals the last one's, not sent
    again), "idle" (the picture settled: nothing is computed until the next edit), "waiting" (for a stream slot:
    ``position``), "preparing" (a compiled network compiles the session's shapes with its first frames: ``message``),
    "warning" (a live edit was refused; the stream goes on with the scene before it: ``message``), "timeout" (the
    time limit ended the run: ``message``).
    """
    kind: str
    frames: int = 0                 # frames computed so far in this run
    fps: float = 0.0                # frames per second over the last few frames (0 while settled)
    image: Any = None
    message: str = ""
    views: int = 0                  # views (items) the last computed frame evaluated, in calls_last_frame calls
    position: int = 0               # "waiting": the place in line for a stream slot (1 = next)


class StreamSession:
    """Frames keep coming (``next_frame``, or ``run``) while the scene changes (``update``)."""

    def __init__(self, denoiser: Denoiser, builder: PlanBuilder, decoder: Callable, scene, seed: int,
                 opts: StepOptions, *, tiny_decode: bool = True):
        self.builder, self.decoder, self.opts = builder, decoder, opts
        self.counts = Counts()       # this session's network calls and items (stats)
        self.denoiser = for_options(Counted(denoiser, self.counts), opts.guidance_mode, opts.guidance, opts.batch_size,
                                    regions=builder.backbone if builder.layout == "attention" else None)
        self._last = {"calls": 0, "items": 0, "seconds": 0.0, "graphs": 0}
        self._padded = find(self.denoiser, Padded)      # a compiled network: every frame of one shape
        self._compiled = _compiled_layer(self.denoiser)   # its Compiled wrapper (the graphs it compiled), or None
        self._padded_for = None                          # the plan its minimum batch was set for
        self.schedule = builder.schedule
        self._in_flight_steps = torch.arange(1, builder.schedule.steps)   # the steps of the slots in flight (host)
        self._in_flight_levels: dict = {}   # device -> (alpha, sigma) [T-1, 1, 1, 1] of those steps, made once
        self.tiny_decode = tiny_decode
        self._self_guided = opts.guidance_mode == "self" and opts.guidance > 1
        self._lock = threading.RLock()
        self.frames = 0
        self.closed = False
        self.scene = None
        self.plan: Plan | None = None
        self._inflight: torch.Tensor | None = None   # [T-1, C, h, w] latents at steps 1 .. T-1
        self._carried: torch.Tensor | None = None    # [T-1, C, h, w] the noise each of them carries
        self._steady: StepLayout | None = None       # the steady frame's step layout (plan and seed fixed)
        self._fresh: torch.Tensor | None = None      # [1, C, h, w] the latent entering at step 0 (plan and seed)
        self._entry: tuple | None = None             # (x0, x_next) of its step, the same every frame (plan and seed)
        self._most = (0, 0)                          # compiled: the padded batch of a whole frame, of the slots in flight
        self._to_settle = 1                          # frames until the picture is final (``settled``)
        self._latest: torch.Tensor | None = None     # the latent of the newest frame
        self._apply(builder.check(scene))
        self.set_seed(seed)

    # -- what the caches did (tests, benchmarks) ------------------------------------------------------------------
    prompts = property(lambda self: self.builder.prompts, doc="The prompt embedding cache (PromptCache).")
    masks_computed = property(lambda self: self.builder.masks_computed, doc="Layers whose step masks were computed.")

    # -- edits ---------------------------------------------------------------------------------------------------
    def update(self, scene) -> None:
        """Make ``scene`` the session's scene from the next frame on; only what differs is recomputed.

        Raises SemanticDrawError for a bad scene (or a new canvas size) and keeps streaming the old one.
        """
        scene = self.builder.check(scene)
        with self._lock:
            self._check_open()
            if (scene.height, scene.width) != (self.scene.height, self.scene.width):
                raise SceneError(f"The canvas size is fixed for a stream ({self.scene.width}x{self.scene.height}); "
                                 f"start a new stream for {scene.width}x{scene.height}.")
            self._apply(scene)

    def edit_layer(self, key: int | str, **fields) -> None:
        """Change one layer, named by index or name: edit_layer("sun", prompt="the moon", mask_blur=4)."""
        with self._lock:
            self._check_open()
            layers = list(self.scene.layers)
            index = self._layer_index(key, layers)
            unknown = set(fields) - set(LAYER_FIELDS)
            if unknown:
                raise SceneError(f"Unknown layer field(s) {', '.join(sorted(unknown))}; "
                                 f"a layer has {', '.join(sorted(LAYER_FIELDS))}.")
            layers[index] = replace(layers[index], **fields)
            self.update(replace(self.scene, layers=layers))

    def edit_background(self, **fields) -> None:
        """Change the background: edit_background(prompt="a beach", image=None)."""
        with self._lock:
            self._check_open()
            unknown = set(fields) - set(BACKGROUND_FIELDS)
            if unknown:
                raise SceneError(f"Unknown background field(s) {', '.join(sorted(unknown))}; "
                                 "the background has prompt, negative_prompt and image.")
            self.update(replace(self.scene, background=replace(self.scene.background, **fields)))

    @staticmethod
    def _layer_index(key: int | str, layers) -> int:
        if isinstance(key, int) and not isinstance(key, bool) and -len(layers) <= key < len(layers):
            return key % len(layers)
        names = [layer.name for layer in layers]
        if isinstance(key, str) and key in names:
            return names.index(key)
        raise SceneError(f"There is no layer {key!r}; the layers are "
                         f"{', '.join(repr(n) for n in names) or 'none'}.")

    def set_seed(self, seed: int) -> None:
        """New noise from the next frame on (the latents in flight keep going)."""
        with self._lock:
            self._check_open()
            noise = NoiseSource(seed, self.plan.z_bg.device)
            shape = (self.schedule.steps,) + tuple(self.plan.z_bg.shape[1:])
            self.seed = noise.seed
            self._noise = noise
            self._bg_noise = noise.draw((1,) + shape[1:])
            self._slot_noise = noise.draw(shape)
            self._changed()

    def _apply(self, scene) -> None:
        self.plan = self.builder.build(scene)
        self.scene = scene
        self._changed()

    def _changed(self) -> None:
        """The plan or the seed changed: what was made for the old ones goes, and the picture settles again."""
        self._steady = self._fresh = self._entry = None
        self._to_settle = 1 if self._inflight is None else self.schedule.steps

    @property
    def settled(self) -> bool:
        """Whether the next frames would all give the newest frame's picture again, until the next edit or seed.

        A slot that finishes has taken every step of its own walk under the plan and seed of the moment; after a
        change, the slot that entered on the first frame after it finishes on the T-th (the filling frame is the
        first's own walk), and from then on each finishing slot is the same latent taken through the same steps
        with the same noise. So the stream knows it settled by counting, not by comparing pictures (the order of
        a GPU's atomic additions need not repeat, so equal frames need not be equal to the bit). The naive
        aggregation draws new noise every frame: it never settles."""
        return self.opts.aggregation == "pre" and self._to_settle == 0

    # -- frames --------------------------------------------------------------------------------------------------
    def stats(self) -> dict:
        """What the stream costs: frames so far, and the network calls, items (views; a CFG view counts twice) and
        seconds of the last frame, with the region layout that set them; for a compiled network the graphs it has
        compiled (the model's, every session's together), those the last frame compiled, and the kinds of call
        torch.compile failed on, which run eager (None / 0 when eager)."""
        with self._lock:
            return {"frames": self.frames, "calls_last_frame": self._last["calls"],
                    "items_last_frame": self._last["items"], "seconds_last_frame": self._last["seconds"],
                    "graphs_compiled": None if self._compiled is None else self._compiled.compiles,
                    "graphs_compiled_last_frame": self._last["graphs"],
                    "compile_failures": None if self._compiled is None else len(self._compiled.failures),
                    "regions": self.builder.layout, "slots": self.schedule.steps, "layers": len(self.scene.layers)}

    @out_of_memory_is_a_resource_error("Try a smaller canvas, fewer brushes, or the attention region layout.")
    def next_frame(self, output: str = "pil"):
        """The next frame: a PIL image (or its latent [1, C, h, w] with output="latent")."""
        check_choice(output, "output", OUTPUTS)
        with self._lock:
            self._check_open()
            start, calls, items = time.perf_counter(), self.counts.calls, self.counts.items
            graphs = 0 if self._compiled is None else self._compiled.compiles
            plan, T = self.plan, self.schedule.steps
            if self._fresh is None:   # the same every frame until the background or the seed changes
                self._fresh = initial_latent(plan, self._bg_noise, self.scene.background.image is not None)
            fresh = self._fresh
            if self._inflight is None:
                latent = self._fill(fresh)
            elif self._entry is None:     # after an edit or a new seed: every slot, the entering latent's included
                x = torch.cat([fresh, self._inflight])
                carried = torch.cat([self._bg_noise, self._carried]) if self._self_guided else None
                res = self._step(x, torch.arange(T), self._slot_noise, carried)
                self._remember_entry(res.x0[:1], res.x_next[:1])
                self._keep(res.x0[:T - 1], res.x_next[:T - 1])
                latent = res.x0[T - 1:]
            elif T == 1:                  # one step: the frame is the entering latent's, made already
                latent = self._entry[0]
            else:                         # the entering latent's step is kept: the slots in flight only
                res = self._step(self._inflight, self._in_flight_steps, self._slot_noise[1:],
                                 self._carried if self._self_guided else None)
                entry_x0, entry_next = self._entry
                self._keep(torch.cat([entry_x0, res.x0[:T - 2]]), torch.cat([entry_next, res.x_next[:T - 2]]))
                latent = res.x0[T - 2:]
            self.frames += 1
            self._to_settle = max(0, self._to_settle - 1)
            self._latest = latent
            image = latent if output == "latent" else self.decoder(latent, tiny=self.tiny_decode)
            self._last = {"calls": self.counts.calls - calls, "items": self.counts.items - items,
                          "seconds": time.perf_counter() - start,
                          "graphs": 0 if self._compiled is None else self._compiled.compiles - graphs}
        return image

    def _remember_entry(self, x0: torch.Tensor, x_next: torch.Tensor) -> None:
        """Keep the step of the latent that enters at step 0: it is the same latent with the same noise every frame
        (``_fresh``, ``_slot_noise[0]``) until the plan or the seed changes, so its step gives the same result every
        frame (a naive step draws new noise for each view: nothing is kept then)."""
        if self.opts.aggregation == "pre":
            self._entry = (x0, x_next)

    def _step(self, x, steps, noise, carried):
        """region_step for the slots at ``steps``: every slot (0 .. T-1), the slots in flight (1 .. T-1), or one step
        of the filling frame. For a compiled network a call with a slot at step 0 is padded to the most items a whole
        frame can have, any other to the most the slots in flight can have: two shapes per plan. The layout of the
        frequent call (the slots in flight) is made once per plan and seed."""
        T = self.schedule.steps
        in_flight = bool((steps >= 1).all())          # no slot at step 0: the shape of the slots in flight
        if self._padded is not None:
            self._padded.minimum = self._padded_sizes()[1 if in_flight else 0]
        layout = None
        if in_flight and len(steps) == T - 1:
            if self._steady is None:
                self._steady = prepare_step(self.plan, self.opts, steps, x.device, self._bg_noise, reused=True)
            layout = self._steady
        return region_step(self.denoiser, self.plan, self.opts, x, steps, bg_noise=self._bg_noise, noise=noise,
                           draw=self._noise.draw, carried=carried, layout=layout)

    def _padded_sizes(self) -> tuple[int, int]:
        """The two batch sizes a compiled network's calls are padded to: the most items a frame with a slot at step
        0 can have, and the most of the slots in flight (made once per plan, not per frame)."""
        if self._padded_for is not self.plan:
            self._most = tuple(most_call_items(self.plan, self.opts, s)
                               for s in (torch.arange(self.schedule.steps), self._in_flight_steps))
            self._padded_for = self.plan
        return self._most

    def _compiles_ahead(self) -> bool:
        """Whether this stream's first frames will compile the network: calls of its two padded shapes that the
        compiled network has not run before."""
        if self._padded is None or self._compiled is None:
            return False
        tiling = self.plan.tiling
        view = (self.plan.z_bg.shape[1], tiling.view_h, tiling.view_w)
        regions = find(self.denoiser, RegionAttention)
        kinds = [regions is not None]           # calls with the region context, and where the region layer splits
        if regions is not None and regions.plain_solo_calls:    # them off, the bootstrapped brushes' plain calls
            kinds.append(False)
        return any(self._compiled.would_compile(view, kind, self._padded_sizes()) for kind in kinds)

    def _fill(self, x: torch.Tensor) -> torch.Tensor:
        """First frame: one latent walks through every step; its intermediate latents become the slots in flight."""
        T = self.schedule.steps
        carried = self._bg_noise
        kept_x0, kept_next = [], []
        for i in range(T):
            res = self._step(x, torch.tensor([i]), self._slot_noise[i:i + 1], carried if self._self_guided else None)
            if i == 0:
                self._remember_entry(res.x0, res.x_next)
            kept_x0.append(res.x0)
            kept_next.append(res.x_next)
            if i + 1 < T:
                carried = self._noise_in(res.x0, res.x_next, torch.tensor([i + 1]))
            x = res.x_next
        if T > 1:
            self._keep(torch.cat(kept_x0[:T - 1]), torch.cat(kept_next[:T - 1]))
        else:
            self._inflight = self._carried = x[:0]
        return kept_x0[-1]

    def _levels(self, level: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (-1, 1, 1, 1)
        level = to_device(level, device)
        return (self.schedule.table("alphas", device)[level].view(shape),
                self.schedule.table("sigmas", device)[level].view(shape))

    def _noise_in(self, x0: torch.Tensor, x: torch.Tensor, level: torch.Tensor | None = None) -> torch.Tensor:
        """The noise x carries at ``level`` (host), given its clean estimate x0; None: the slots in flight, whose
        coefficients are the same every frame (made once per device)."""
        if level is None:
            key = str(x.device)
            if key not in self._in_flight_levels:
                self._in_flight_levels[key] = self._levels(self._in_flight_steps, x.device)
            alpha, sigma = self._in_flight_levels[key]
        else:
            alpha, sigma = self._levels(level, x.device)
        return (x - alpha * x0) / sigma

    def _keep(self, x0: torch.Tensor, x_next: torch.Tensor) -> None:
        """The latents of the slots in flight (steps 1 .. T-1) and the noise each carries."""
        self._inflight = x_next
        self._carried = self._noise_in(x0, x_next)

    # -- the run loop --------------------------------------------------------------------------------------------
    def run(self, edits: "queue.Queue | None" = None, *, time_limit: float | None = None, frames: int | None = None,
            every_frame: bool = False, idle_wait: float = 0.25,
            slots: Slots | None = None) -> Iterator[StreamEvent]:
        """Stream until a ("stop", None) edit, ``time_limit`` seconds or ``frames`` frames.

        ``edits`` (a queue.Queue or anything with get(timeout=) and get_nowait()) brings ("scene", Scene),
        ("seed", int) and ("stop", None); before each frame every queued edit is applied (the newest scene and seed
        win). Unless ``every_frame``, a frame whose latent equals the last one's is reported as "same", and once
        the picture is final (``settled``: T frames after an edit, the slots' depth) the session computes nothing
        until the next edit ("idle" every ``idle_wait`` seconds, up to MAX_IDLE_WAIT): a stream nobody edits costs
        no GPU time, and without ``edits`` the run ends there (nothing can change it any more). With ``slots``
        (sharing.Slots, shared by the streams of a server) frames are computed only while holding a slot: a
        settled stream gives its slot back until its next edit, and one waiting for a slot reports "waiting"
        events with its place in line. Bad arguments raise an OptionError here, before the first event.
        """
        if edits is not None and not all(callable(getattr(edits, name, None)) for name in ("get", "get_nowait")):
            raise OptionError(f"run's edits must be a queue (with get and get_nowait) or None, got {shown(edits)}.")
        if time_limit is not None:
            time_limit = check_number(time_limit, "run's time_limit (s)", 0.0, math.inf, above_low=True)
        if frames is not None:
            frames = check_whole(frames, "run's frames", 1, math.inf)
        every_frame = check_flag(every_frame, "run's every_frame")
        idle_wait = check_number(idle_wait, "run's idle_wait (s)", 0.0, MAX_IDLE_WAIT, above_low=True)
        if slots is not None and not isinstance(slots, Slots):
            raise OptionError(f"run's slots must be a semantic_draw.sharing.Slots or None, got {shown(slots)}.")
        return self._run(edits, time_limit, frames, every_frame, idle_wait, slots)

    def _run(self, edits, time_limit, frames, every_frame, idle_wait, slots) -> Iterator[StreamEvent]:
        start, times, last, idle, made = time.monotonic(), [], None, False, 0
        kept = 0.0      # frames/s of the frames before the last pause (a pause is no frame interval)
        holding, ticket = slots is None, None
        if self.frames == 0 and self._compiles_ahead():
            what = ("canvas size" if self._compiled.shapes_mode == "dynamic" else "canvas size and brush count")
            yield StreamEvent("preparing", message=f"Preparing the fast path: the first frames of a new {what} "
                                                   "compile the network (minutes the first time, seconds once "
                                                   "cached).")
        try:
            while True:
                todo = _drain(edits, idle_wait if idle else None)
                if any(kind == "stop" for kind, _ in todo):
                    return
                if time_limit and time.monotonic() - start >= time_limit:
                    yield StreamEvent("timeout", made, 0.0, message=f"The stream stopped after its time limit of "
                                                                     f"{time_limit:g} s. Start it again to continue.")
                    return
                warning = self._apply_edits(todo)
                if warning:
                    yield StreamEvent("warning", made, _fps(times) or kept, message=warning)
                idle = idle and not todo and self.settled   # an edit (queued, or made on the session) wakes it
                if idle:
                    if times:                           # the frames/s of this burst of frames, kept for the next
                        kept, times = _fps(times) or kept, []
                    if holding and slots is not None:   # settled: the slot goes to whoever waits
                        slots.release()
                        holding = False
                    yield StreamEvent("idle", made, 0.0)
                    continue
                if not holding:
                    ticket = ticket or slots.join()
                    if not slots.take(ticket, idle_wait):
                        yield StreamEvent("waiting", made, 0.0, position=slots.position(ticket))
                        continue
                    ticket, holding = None, True
                image = self.next_frame()
                made += 1
                times = (times + [time.monotonic()])[-12:]
                views = self._last["items"]
                if every_frame:
                    yield StreamEvent("frame", made, _fps(times) or kept, image, views=views)
                else:
                    same = last is not None and torch.equal(self._latest, last)
                    last, idle = self._latest, self.settled
                    fps = _fps(times) or kept
                    yield StreamEvent("same", made, fps, views=views) if same else StreamEvent(
                        "frame", made, fps, image, views=views)
                if (frames is not None and made >= frames) or (idle and edits is None):
                    return              # (settled, and nothing can change it any more)
        finally:
            if slots is not None:
                if holding:
                    slots.release()
                if ticket is not None:
                    slots.leave(ticket)

    def _apply_edits(self, todo: list[tuple[str, Any]]) -> str:
        """Apply the newest scene and seed of ``todo``; the message of a refused scene, or ""."""
        scenes = [payload for kind, payload in todo if kind == "scene"]
        seeds = [payload for kind, payload in todo if kind == "seed"]
        message = ""
        if scenes:
            try:
                self.update(scenes[-1])
            except SemanticDrawError as err:
                message = str(err)
        if seeds:
            self.set_seed(seeds[-1])
        return message

    # -- lifetime ------------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.closed:
            raise SessionClosedError("This stream was closed; start a new one.")

    def close(self) -> None:
        """Stop and free the session's tensors (the model stays loaded)."""
        with self._lock:
            self.closed = True
            self.plan = None
            self._inflight = self._carried = self._bg_noise = self._slot_noise = None
            self._steady = self._fresh = self._entry = None
            self.builder.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _drain(edits, wait: float | None) -> list:
    """Everything queued now (after waiting up to ``wait`` seconds for the first item when given)."""
    todo = []
    if edits is None:
        if wait:
            time.sleep(wait)
        return todo
    try:
        todo.append(edits.get(timeout=wait) if wait else edits.get_nowait())
        while True:
            todo.append(edits.get_nowait())
    except queue.Empty:
        pass
    return todo


def _fps(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


def _compiled_layer(denoiser: Denoiser):
    from .compiled import compiled_layer     # late: compiled.py (torch.compile) is only needed once compiling
    return compiled_layer(denoiser)
