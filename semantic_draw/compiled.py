"""The fast path: the network compiled with torch.compile, fed a few fixed batch shapes, warmed and cached.

``Compiled`` (a wrapper of denoiser.py's form, attached from outside by ``SemanticDraw.compile``) runs the model's
network through torch.compile (inductor; CUDA graphs, "reduce-overhead", on a GPU). Every new graph is counted and
logged; past dynamo's recompile limit the call fails instead of falling back to eager silently. Its ``buckets`` make
the calls above it go through denoiser.py's ``Padded``: item batches padded with copies of the last item (cut off
again before anything is aggregated), so the network sees one shape per stream and a handful overall.

With ``shapes="dynamic"`` (the default) the batch dimension of the network's inputs is dynamic: one graph serves
the batch sizes of a canvas (batch 1 has a graph of its own, as torch specializes sizes 0 and 1, and a size where the
network's code branches starts another: diffusers' upsampler at 64 items, torch's CPU convolution at 16 on some
canvases), so a new brush count, a stream's two frame shapes and a one-shot's steps mostly compile nothing more, and
a restarted process traces the network once instead of once per shape. On a GPU each batch size still gets a CUDA
graph of its own (recorded in about a second, not compiled), so the buckets keep mattering. A second canvas size
makes torch's automatic dynamic shapes take the spatial sizes symbolic too. In the attention layout the region
context's batch sizes and its number of prompt slots are dynamic too (its processors have no loop over the slots),
so every brush count is served by the graphs of the first. ``shapes="static"`` compiles one graph per input shape.

The compile cache can live in a folder (``cache_dir``): inductor's own cache goes there (``inductor/``: the code it
generated, C++ for a CPU, Triton for a GPU) and torch's portable artifacts are saved next to it after each new graph
and loaded when the model is compiled, so a restarted process on the same machine, GPU and versions is warm in
seconds instead of minutes.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import math
import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch

from .denoiser import BUCKETS, Denoiser, Views, Wrapper, find
from .errors import OptionError, ResourceError
from .options import COMPILE_SHAPES, check_choice

log = logging.getLogger("semantic_draw.compiled")

def _graphs() -> int:
    from torch._dynamo.utils import counters
    return sum(counters["stats"].get(k, 0) for k in ("unique_graphs",))


class Compiled(Wrapper):
    """The backbone's network module compiled once; calls go through it from then on (see ``Padded``)."""

    def __init__(self, inner: Denoiser, backbone, *, mode: str | None = None, buckets=BUCKETS,
                 cache_dir: str | Path | None = None, backend: str = "inductor", shapes: str = "dynamic"):
        super().__init__(inner)
        check_choice(shapes, "compile shapes", COMPILE_SHAPES)
        check_compilable(backbone.device, backend)
        self.backbone, self.bucket_sizes = backbone, tuple(buckets)
        cache_dir = None if cache_dir is None else Path(cache_dir).expanduser()    # "~/.cache/..." as users write it
        self.compiles = 0                 # graphs compiled so far (each new shape of a call, and each recompile)
        self.shapes: list[tuple] = []     # the input shape of each compile
        self.served: set[tuple] = set()   # every kind of call run so far (``kind``): what needs no compile again
        self.failures: dict[tuple, str] = {}   # kind -> why torch.compile failed for it (those calls run eager)
        self.cache = None if cache_dir is None else cache_prefix(cache_dir, backbone)
        if cache_dir is not None:     # process-wide: inductor reads it at each compile
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache_dir).resolve() / "inductor")
        self.cache_loaded = load_cache(self.cache)
        limit = 4 * len(self.bucket_sizes)   # room for every bucket, CFG and the attention layout's shapes
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        if mode is None and backbone.device.type == "cuda":
            mode = "reduce-overhead"      # CUDA graphs: one launch per call instead of hundreds
        self.mode, self.shapes_mode = mode, shapes
        net = torch.compile(backbone.denoiser, mode=mode, backend=backend,
                            dynamic=None if shapes == "dynamic" else False)
        net = DynamicBatch(net) if shapes == "dynamic" else net
        if isinstance(backbone.net, AheadOfTime):    # programs compiled ahead of time keep their calls
            backbone.net.module = net
        else:
            backbone.net = net

    @property
    def buckets(self) -> tuple:
        return self.bucket_sizes

    def predict(self, views: Views) -> torch.Tensor:
        kind = self.kind(views.x.shape, views.regions is not None)
        if kind in self.failures:
            return self._eager(views)
        before = _graphs()
        graphs = self.mode == "reduce-overhead"
        try:
            if graphs:    # a new step for the CUDA graph trees: the last call's output buffers may be reused
                torch.compiler.cudagraph_mark_step_begin()
            out = self.inner.predict(views)
            if graphs:    # ... so what a caller keeps is its own copy
                out = out.clone()
        except torch._dynamo.exc.FailOnRecompileLimitHit as err:
            raise ResourceError(f"The compiled network met more batch shapes than its limit "
                                f"({torch._dynamo.config.recompile_limit}); load the model without compile or "
                                "with fewer canvas sizes in use.") from err
        except compile_failed() as err:    # a compiler crash for this kind of call: eager from now on, said loudly
            self.failures[kind] = compile_error(err)
            log.warning("torch.compile failed for a batch of %s (%s); calls of that kind run eager from now on",
                        tuple(views.x.shape), self.failures[kind])
            return self._eager(views)
        self.served.add(kind)
        new = _graphs() - before
        if new:
            self.compiles += new
            self.shapes.append(tuple(views.x.shape))
            log.info("compiled the network for a batch of %s (%d graph(s) so far)", tuple(views.x.shape),
                     self.compiles)
            save_cache(self.cache)
        return out

    def _eager(self, views: Views) -> torch.Tensor:
        """The call on the eager module (past torch.compile's graphs; programs compiled ahead of time still serve
        theirs). Runs under the model's lock, as every network call does."""
        net = self.backbone.net
        holder, attr = (net, "module") if isinstance(net, AheadOfTime) else (self.backbone, "net")
        compiled = getattr(holder, attr)
        setattr(holder, attr, self.backbone.denoiser)
        try:
            return self.inner.predict(views)
        finally:
            setattr(holder, attr, compiled)

    def kind(self, shape: tuple, regions: bool) -> tuple:
        """What decides whether a call of input ``shape`` [N, C, h, w] finds a graph: its view size, its region
        layout and, with static shapes, its batch size; with dynamic ones the range of batch sizes it falls in,
        between the sizes where the network's code is known to branch (``BRANCHES``)."""
        n = shape[0]
        if self.shapes_mode == "static":
            return tuple(shape[1:]), regions, n
        branches = BRANCHES.get(self.backbone.device.type, BRANCHES[None])
        return tuple(shape[1:]), regions, sum(n >= b for b in branches)

    def would_compile(self, view: tuple, regions: bool, sizes) -> bool:
        """Whether calls of views ``view`` [C, h, w] in batches of ``sizes`` would compile something (as far as this
        wrapper can tell: torch may still branch on a size it did not foresee)."""
        return any(self.kind((n, *view), regions) not in self.served for n in sizes)

    def uncompile(self) -> Denoiser:
        """Back to eager: the module itself runs again (past any programs compiled ahead of time); returns the
        inner denoiser."""
        if isinstance(self.backbone.net, AheadOfTime):
            self.backbone.net.module = self.backbone.denoiser
        else:
            self.backbone.net = self.backbone.denoiser
        return self.inner


def compile_error(err: Exception) -> str:
    """A compile failure in a line: the error the compiler raised (torch's wrapper adds only advice), or ``err``."""
    inner = getattr(err, "inner_exception", None) or err
    text = " ".join(str(inner).split())
    return f"{type(inner).__name__}: {text[:300]}"


def compile_failed() -> tuple:
    """What torch raises when a compiler fails (not the network): the backend's error, or inductor's own."""
    import torch._dynamo.exc
    import torch._inductor.exc
    return torch._dynamo.exc.BackendCompilerFailed, torch._inductor.exc.InductorError

# Batch sizes from which a dynamic graph's code takes another path, so that torch compiles another graph: 2 (torch
# specializes sizes 0 and 1), 64 (diffusers' upsampler interpolates batches of 64 and more in chunks) and, on a CPU,
# 16 (where torch's convolution picks another kernel). Other branches may exist; they only make a prediction wrong.
BRANCHES = {None: (2, 64), "cpu": (2, 16, 64)}


def compiled_layer(denoiser: Denoiser) -> "Compiled | None":
    """The Compiled wrapper in a chain of denoisers, or None (the network runs eager)."""
    return find(denoiser, Compiled)


class DynamicBatch:
    """The compiled network, its calls' batch dimension marked dynamic from the first call on (torch would only
    make it so after a second batch size, compiling twice). Every input tensor whose first size is the batch's is
    marked (the latents, timesteps, prompt rows, SDXL's added conditions), and in the attention layout the sizes of
    its region context that follow the batch or the number of prompt slots (the context says which); calls of one
    item keep their batch size."""

    def __init__(self, compiled):
        self.compiled = compiled

    def __call__(self, *args, **kwargs):
        for tensor, dim in _varying_sizes(args, kwargs):
            torch._dynamo.maybe_mark_dynamic(tensor, dim)
        return self.compiled(*args, **kwargs)


REGION_KWARGS = ("cross_attention_kwargs", "joint_attention_kwargs")   # where the attention layout's context goes


def _call_shape(args, kwargs) -> tuple:
    """The input latents' shape of a call of the backbone's network (positional for UNets, hidden_states for SD3)."""
    return tuple((args[0] if args else kwargs["hidden_states"]).shape)


def _regions(kwargs):
    """The attention layout's region context of a network call, or None."""
    for name in REGION_KWARGS:
        regions = (kwargs.get(name) or {}).get("regions")
        if regions is not None:
            return regions
    return None


def _varying_sizes(args, kwargs) -> list[tuple[torch.Tensor, int]]:
    """(tensor, dimension) of every size of a network call that a compiled graph or an exported program keeps
    symbolic: the first dimension of every input tensor of the batch's size (not for a batch of 1, which torch
    specializes) and, in a region context, the sizes it declares as the batch's (the same) or the number of prompt
    slots' (in any call)."""
    n = _call_shape(args, kwargs)[0]
    regions = _regions(kwargs)
    sizes = [] if regions is None else regions.slot_dims()
    if n > 1:
        sizes += [(t, 0) for t in _tensors((args, {k: v for k, v in kwargs.items() if k not in REGION_KWARGS}))
                  if t.dim() and t.shape[0] == n]
        sizes += [] if regions is None else regions.batch_dims()
    return sizes


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [t for v in value for t in _tensors(v)] if isinstance(value, (list, tuple)) else []


def compile_decoders(backbone, backend: str = "inductor") -> list[str]:
    """The VAE's and the tiny VAE's decoder networks through torch.compile (inductor's fused kernels, no CUDA
    graphs: a decoded image is read back at once, and tiled decoding of large canvases brings tiles of a few sizes,
    which ``dynamic=None`` turns into one dynamic graph after the second). Returns what was compiled. With torch's
    "aot_eager" debugging backend the decoders stay eager: its traced VAE decoder fails a memory-format check on a
    CPU (torch 2.13)."""
    from .packages import DecoderPrograms, vaes
    done = []
    if backend == "aot_eager":
        return done
    for name, vae in vaes(backbone):
        holder, attr = vae, "decoder"
        if isinstance(getattr(vae, "decoder", None), DecoderPrograms):   # programs compiled ahead of time: the
            holder, attr = vae.decoder, "inner"                           # shapes they do not serve, compiled
        decoder = getattr(holder, attr, None)
        if isinstance(decoder, torch.nn.Module) and not hasattr(decoder, "_orig_mod"):
            setattr(holder, attr, CompiledDecoder(decoder, backend))
            done.append(name)
    return done


class CompiledDecoder(torch.nn.Module):
    """A VAE decoder through torch.compile (``_orig_mod``: the decoder itself, as torch's own wrapper names it);
    an input shape whose compile fails decodes eager from then on, logged and kept in ``failures``."""

    def __init__(self, decoder: torch.nn.Module, backend: str):
        super().__init__()
        self._orig_mod = decoder
        object.__setattr__(self, "compiled", torch.compile(decoder, backend=backend, dynamic=None))  # no 2nd copy
        self.failures: dict[tuple, str] = {}

    def forward(self, sample, *args, **kwargs):
        shape = tuple(sample.shape)
        if shape not in self.failures:
            try:
                return self.compiled(sample, *args, **kwargs)
            except compile_failed() as err:
                self.failures[shape] = compile_error(err)
                log.warning("torch.compile failed for a decode of %s (%s); that shape decodes eager from now on",
                            shape, self.failures[shape])
        return self._orig_mod(sample, *args, **kwargs)


def check_compilable(device: torch.device, backend: str = "inductor") -> None:
    """One OptionError when torch.compile cannot run on ``device`` here."""
    if device.type == "cuda":
        return
    if device.type != "cpu":
        raise OptionError(f"compile=True runs on CUDA GPUs and CPUs, not on {device.type}; load without compile.")
    if backend == "inductor" and not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
        raise OptionError("compile=True on a CPU needs a C++ compiler (g++ or clang++) for torch.compile's inductor; "
                          "install one or load without compile.")


def cache_prefix(folder: str | Path, backbone) -> Path:
    """Where a model's compile cache files live: one family of files per model shape, device and versions (torch
    also refuses artifacts of other versions)."""
    dev = torch.cuda.get_device_name(backbone.device) if backbone.device.type == "cuda" else "cpu"
    params = sum(p.numel() for p in backbone.denoiser.parameters())
    key = f"{torch.__version__}|{dev}|{backbone.family}|{params}|{backbone.dtype}"
    return Path(folder) / f"compile-{backbone.family}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def cache_files(prefix: Path) -> list[Path]:
    return sorted(prefix.parent.glob(prefix.name + "-*.bin")) if prefix.parent.is_dir() else []


def load_cache(prefix: Path | None) -> int:
    """Load every saved batch of artifacts; returns how many files were loaded."""
    loaded = 0
    for path in cache_files(prefix) if prefix is not None else []:
        try:
            torch.compiler.load_cache_artifacts(path.read_bytes())
            loaded += 1
        except Exception as err:   # a stale or damaged file only costs the compiles it would have saved
            log.warning("ignored compile cache %s (%s)", path, err)
    if loaded:
        log.info("loaded %d compile cache file(s) %s-*", loaded, prefix)
    return loaded


def save_cache(prefix: Path | None) -> Path | None:
    """Save the artifacts compiled since the last save as one more file, named by its content (a graph found in the
    cache is saved again by torch; the same bytes go to the same file). Each save is a file of its own: torch's
    serialized bytes keep one batch per kind of artifact, so rewriting one file would drop the earlier batches."""
    if prefix is None:
        return None
    artifacts = torch.compiler.save_cache_artifacts()
    if artifacts is None:
        return None
    prefix.parent.mkdir(parents=True, exist_ok=True)
    path = prefix.parent / f"{prefix.name}-{hashlib.sha1(artifacts[0]).hexdigest()[:16]}.bin"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(artifacts[0])
    tmp.replace(path)
    return path


# -- ZeroGPU: ahead-of-time compilation ----------------------------------------------------------------------------
# On a ZeroGPU Space every GPU call runs in a short-lived process, so a JIT-compiled graph is lost after each call.
# There the network is exported and compiled ahead of time once (spaces.aoti_capture / aoti_compile, inside a
# spaces.GPU function at start) for the batch shapes a server will use; calls of other shapes run eager, logged and
# counted. Elsewhere torch.compile (``Compiled``) is the fast path.

def fast_path(on_zero_gpu: bool, spaces_module=None) -> str:
    """Which compiler a server uses: "aoti" on ZeroGPU when the spaces package offers it, else "jit"."""
    aoti = spaces_module is not None and all(hasattr(spaces_module, f"aoti_{n}") for n in ("capture", "compile"))
    return "aoti" if on_zero_gpu and aoti else "jit"


class FixedShapes(Wrapper):
    """Asks for calls padded to bucket sizes (one shape per canvas and brush count) without compiling anything."""

    @property
    def buckets(self) -> tuple:
        return BUCKETS


class AheadOfTime:
    """What ``backbone.net`` becomes on ZeroGPU (and with ``SemanticDraw.compile_ahead``): compiled programs, each
    for one view shape and the calls whose inputs fit its signature (``Program``: with a dynamic batch, every batch
    size from 2 up to where the network's own code branches, such as diffusers' upsampler at 64, and in the attention
    layout every number of prompt slots; a batch of 1 has its own program), and ``module`` for any other call (the
    eager module, or torch.compile's when the model is compiled too; each such call logged and counted in
    ``fallbacks``)."""

    def __init__(self, module, programs: dict[tuple, list["Program"]], failures: dict | None = None):
        self.module, self.programs = module, programs     # view shape -> the programs for calls of such views
        self.fallbacks = 0
        self.failures = dict(failures or {})   # (call shape, region call?) -> why its export or compile failed

    @property
    def failed(self) -> list[str]:
        """Why each kind of call that could not be compiled (and so runs on ``module``) failed."""
        return list(self.failures.values())

    def program(self, args, kwargs) -> "Program | None":
        """The first program whose signature the call fits, or None."""
        candidates = self.programs.get(_call_shape(args, kwargs)[1:], ())
        if not candidates:
            return None
        spec, tensors = _inputs(args, kwargs)
        return next((p for p in candidates if p.fits(spec, tensors)), None)

    def __call__(self, *args, **kwargs):
        program = self.program(args, kwargs)
        if program is None:
            self.fallbacks += 1
            log.warning("no ahead-of-time program for a %scall of %s: %s (%d such calls)",
                        "region " if _regions(kwargs) is not None else "", _call_shape(args, kwargs),
                        "torch.compile" if _jit(self.module) else "eager", self.fallbacks)
            return self.module(*args, **kwargs)
        return program.run(*args, **kwargs)


def _jit(module) -> bool:
    """Whether ``module`` is the network through torch.compile (either shape mode) rather than the module itself."""
    return isinstance(module, DynamicBatch) or hasattr(module, "_orig_mod")


@dataclass
class Program:
    """One exported and compiled network, with the inputs it takes: their structure (``spec``: which keywords,
    which parts of a region context) and, per input tensor, each dimension's size or (lowest, highest) range (None
    where the size is a product of others, which the call's own sizes then decide)."""
    run: Callable
    spec: object
    sizes: list[tuple]
    regions: bool = False       # for calls of the attention layout (with a region context)

    @property
    def batches(self) -> tuple[int, float]:
        """The batch sizes it takes: its first input's first dimension."""
        first = self.sizes[0][0]
        return first if isinstance(first, tuple) else (first, first)

    def fits(self, spec, tensors: list[torch.Tensor]) -> bool:
        if spec != self.spec or len(tensors) != len(self.sizes):
            return False
        for tensor, sizes in zip(tensors, self.sizes):
            if tensor.dim() != len(sizes):
                return False
            for size, want in zip(tensor.shape, sizes):
                if isinstance(want, int) and size != want:
                    return False
                if isinstance(want, tuple) and not want[0] <= size <= want[1]:
                    return False
        return True


def _inputs(args, kwargs) -> tuple[object, list[torch.Tensor]]:
    """A call's input structure and its tensors, in the order torch.export numbers them."""
    leaves, spec = torch.utils._pytree.tree_flatten((args, kwargs))
    return spec, [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]


def _program(exported, run, regions: bool) -> Program:
    """The Program of an exported network: each input's sizes read off its placeholder (a symbol's range from the
    program's range constraints)."""
    user = set(exported.graph_signature.user_inputs)
    sizes = []
    for node in exported.graph.nodes:
        value = node.meta.get("val") if node.op == "placeholder" and node.name in user else None
        if not isinstance(value, torch.Tensor):
            continue
        dims = []
        for size in value.shape:
            if isinstance(size, int):
                dims.append(size)
                continue
            bounds = exported.range_constraints.get(size.node.expr)
            if bounds is None:
                dims.append(None)
                continue
            high = bounds.upper        # sympy: an integer, or torch's integer infinity (no upper bound)
            dims.append((int(bounds.lower), math.inf if bool(high > 2 ** 62) else int(high)))
        sizes.append(tuple(dims))
    return Program(run, exported.call_spec.in_spec, sizes, regions)


def compile_ahead_of_time(model, spaces_module, canvases=None, brushes=(1, 3), dynamic: bool = True,
                          regions=("latent", "attention"), tile_size: int | None = None) -> AheadOfTime:
    """Export and compile the network for the stream and one-shot shapes of ``canvases`` x ``brushes`` in the region
    layouts ``regions``, in views of ``tile_size`` (default: the model's), with ``spaces_module``'s ``aoti_capture``
    and ``aoti_compile`` (on ZeroGPU the spaces package, inside a spaces.GPU function; elsewhere packages.py's).
    With ``dynamic`` one program per view shape and kind of call serves every batch size above 1 (so other brush
    counts on those canvases are served too; in the attention layout every number of prompt slots too); else one
    per captured shape. Installs the programs as the
    backbone's network and returns them. Called again (another layout, other canvases), it adds to the programs
    already installed and exports only calls they do not serve. A call that cannot be exported or compiled (out of
    memory or disk, say) costs only itself: it runs as before, and ``failed`` of the result says why."""
    from .warm import warm
    backbone = model.backbone
    if not model.network.buckets:      # calls padded to one shape per canvas and brush count, as compiled ones are
        model.network = FixedShapes(model.network)
    captured: dict[tuple, tuple] = {}
    real = backbone.net
    programs: dict[tuple, list[Program]] = ({view: list(ps) for view, ps in real.programs.items()}
                                            if isinstance(real, AheadOfTime) else {})

    def capture(*args, **kwargs):
        spec, tensors = _inputs(args, kwargs)
        captured.setdefault((spec, tuple(tuple(t.shape) for t in tensors)), (args, kwargs))
        program = real.program(args, kwargs) if isinstance(real, AheadOfTime) else None
        # a program that serves the call, else the eager module (not a torch.compile'd one: nothing is traced twice)
        return program.run(*args, **kwargs) if program is not None else backbone.denoiser(*args, **kwargs)

    backbone.net = capture
    try:
        warm(model, canvases, brushes, regions, tile_size=tile_size)   # a warm-up: a stream's frames, a one-shot
    finally:
        backbone.net = real
    # the smallest call not served yet, exported (with a dynamic batch: for as many sizes as the network allows),
    # until every captured call is served; a call whose export or compile fails is left to the module (its reason
    # kept in ``failures``) and the others go on
    failures = dict(real.failures) if isinstance(real, AheadOfTime) else {}
    tried = set()
    for args, kwargs in sorted(captured.values(), key=lambda call: _call_shape(*call)[0]):
        shape = _call_shape(args, kwargs)
        view = shape[1:]
        spec, tensors = _inputs(args, kwargs)
        kind = "region " if _regions(kwargs) is not None else ""
        key = (shape, bool(kind))
        if key in tried or any(p.fits(spec, tensors) for p in programs.get(view, ())):
            continue
        tried.add(key)
        try:
            with spaces_module.aoti_capture(backbone.denoiser) as call:
                backbone.denoiser(*args, **kwargs)
            shapes = _dynamic_dims(backbone.denoiser, call.args, call.kwargs) if dynamic else None
            exported = torch.export.export(backbone.denoiser, args=call.args, kwargs=call.kwargs,
                                           dynamic_shapes=shapes)
            program = _program(exported, spaces_module.aoti_compile(exported), bool(kind))
        except Exception as err:      # out of memory or disk, an export torch cannot make: this call only
            failures[key] = f"{kind}calls of {shape}: {compile_error(err)}"
            log.warning("could not compile the network ahead of time for %s; those calls run as before",
                        failures[key])
            continue
        programs.setdefault(view, []).append(program)
        log.info("compiled the network ahead of time for %scalls of views of %s, batches %s to %s",
                 kind, view, *program.batches)
    for args, kwargs in captured.values():     # a failure of an earlier call that a program now serves is over
        spec, tensors = _inputs(args, kwargs)
        if any(p.fits(spec, tensors) for p in programs.get(_call_shape(args, kwargs)[1:], ())):
            failures.pop((_call_shape(args, kwargs), _regions(kwargs) is not None), None)
    # calls no program serves go where they went before: the eager module, or torch.compile's (``Compiled``)
    backbone.net = AheadOfTime(real.module if isinstance(real, AheadOfTime) else real, programs, failures)
    return backbone.net


def _dynamic_dims(module, args, kwargs) -> dict:
    """torch.export's dynamic_shapes for a call: the sizes ``_varying_sizes`` names (as ``DynamicBatch`` marks them
    for torch.compile), the rest static."""
    from torch.export import Dim
    marked: dict[int, set] = {}
    for tensor, dim in _varying_sizes(args, kwargs):
        marked.setdefault(id(tensor), set()).add(dim)
    regions = _regions(kwargs)

    def spec(value):
        if isinstance(value, torch.Tensor):
            return {d: Dim.AUTO for d in sorted(marked.get(id(value), ()))} or None
        if regions is not None and value is regions:     # a registered dataclass: its non-None fields, in order
            return [spec(getattr(value, f.name)) for f in fields(value) if getattr(value, f.name) is not None]
        if isinstance(value, dict):
            return {k: spec(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(spec(v) for v in value)
        return None
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    return {name: spec(value) for name, value in bound.arguments.items()}
