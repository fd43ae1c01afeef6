"""The app's fast path (semantic_draw's compiled network): which compiler a server uses, and getting it warm.

    jit    torch.compile (CUDA graphs on a GPU): on by default when the server runs on CUDA, off on a CPU unless
           --compile asks. After launch a background thread compiles the starter palette's shapes of every model,
           in the latent region layout, then in the attention layout, so the first visitor does not wait; a shape
           nobody warmed compiles when first used (the page says "preparing the fast path" meanwhile).
    aoti   on a ZeroGPU Space, where every GPU task runs in a process of its own and a JIT-compiled graph would be
           lost after each: the network is compiled ahead of time once at start, one spaces.GPU task per model and
           region layout (latent first), for the starter canvas's views with a dynamic batch size and prompt count
           (semantic_draw.compiled.compile_ahead_of_time), so every brush count on that canvas size is served. Other
           view sizes run eager there.
    None   eager.

With --compile-ahead (elsewhere than ZeroGPU, with --compile-cache) every model's starter shapes are compiled ahead
of time into the cache folder before the page opens, or on a restart loaded from it in seconds
(``SemanticDraw.compile_ahead``: nothing traced again); calls no program serves go through torch.compile as above.
"""
from __future__ import annotations

import logging
import threading
import time

import torch

from semantic_draw import SemanticDrawError
from semantic_draw.compiled import compile_ahead_of_time, fast_path

from .palette import STARTER

log = logging.getLogger("semantic_draw.app")

AOT_DURATION = 300        # seconds the ahead-of-time compile may hold a ZeroGPU GPU (the most ZeroGPU grants)


def choose(compile_flag: bool | None, device: str | None, on_zero_gpu: bool, spaces_module=None) -> str | None:
    """"jit", "aoti" or None for --compile / --no-compile / neither (None) on this device."""
    if compile_flag is False:
        return None
    if on_zero_gpu:
        mode = fast_path(True, spaces_module)
        if mode != "aoti":
            log.warning("ZeroGPU without the spaces package's ahead-of-time compiler: the network runs eager")
            return None
        return "aoti"
    if compile_flag:
        return "jit"
    cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    return "jit" if cuda else None


def warm_shapes(models, layouts=("latent", "attention")) -> list[tuple[str, list[tuple[int, int]], tuple[int, ...],
                                                                     str]]:
    """(model name, canvases, brush counts, region layout) to prepare: each model's starting canvas with the starter
    palette, every model in the default layout first, then in the others (the attention layout's graphs serve every
    brush count, so warming it once covers whatever the visitor paints)."""
    return [(name, [(models.start_size(name),) * 2], (len(STARTER),), layout)
            for layout in layouts for name in models.by_name]


def prepare(models, mode: str | None, *, spaces_module=None, gpu=None,
            layouts=("latent", "attention")) -> threading.Thread | None:
    """Get the fast path ready for the region ``layouts``: "jit" warms in a background thread (returned, already
    started), "aoti" compiles ahead of time now inside GPU tasks (``gpu``: spaces.GPU)."""
    if mode == "jit":
        thread = threading.Thread(target=_warm_all, args=(models, layouts), name="warm-fast-path", daemon=True)
        thread.start()
        return thread
    if mode == "aoti":       # one GPU task per model and layout: each gets the whole duration ZeroGPU grants
        failed = set()
        for name, canvases, brushes, layout in warm_shapes(models, layouts):
            if name in failed:
                continue

            def compile_model(name=name, canvases=canvases, brushes=brushes, layout=layout):
                net = compile_ahead_of_time(models[name], spaces_module, canvases=canvases, brushes=brushes,
                                            regions=layout)
                log.info("%s: compiled ahead of time for %s, %s layout (every batch size of those views%s)", name,
                         canvases, layout, f"; {len(net.failed)} kind(s) of call left eager" if net.failed else "")
            try:
                (gpu or spaces_module.GPU)(duration=AOT_DURATION)(compile_model)()
            except Exception as err:   # that model keeps what it has (eager at first); the others go on
                failed.add(name)
                log.warning("%s: ahead-of-time compilation of the %s layout failed (%s); its calls run eager", name,
                            layout, err)
    return None


def compile_ahead(models, folder: str, layouts=("latent", "attention")) -> dict[str, str]:
    """--compile-ahead: each model's starter shapes, layout by layout, compiled ahead of time into ``folder`` or
    loaded from it. A model whose compile fails keeps what it has (torch.compile or eager) and the others go on.
    Returns a line per model saying what was done."""
    done: dict[str, list[str]] = {}
    failed = set()
    for name, canvases, brushes, layout in warm_shapes(models, layouts):
        if name in failed:
            continue
        model, start = models[name], time.monotonic()
        try:
            net = model.compile_ahead(folder, canvases=canvases, brushes=brushes, regions=(layout,))
        except SemanticDrawError as err:
            failed.add(name)
            log.warning("%s: ahead-of-time compilation of the %s layout failed (%s)", name, layout, err)
            done.setdefault(name, []).append(f"{layout}: failed")
            continue
        packages, left = model.packages, getattr(net, "failed", ())
        done.setdefault(name, []).append(f"{layout} in {time.monotonic() - start:.0f} s"
                                         + (f" ({len(left)} kind(s) of call left as before)" if left else ""))
        log.info("%s: %s layout ahead of time: %d program(s) loaded, %d compiled so far", name, layout,
                 packages.loaded, packages.compiled)
    return {name: ", ".join(parts) for name, parts in done.items()}


def _warm_all(models, layouts) -> None:
    for name, canvases, brushes, layout in warm_shapes(models, layouts):
        def progress(done, total, what, name=name):
            log.info("fast path, %s: warmed %d/%d (%s)", name, done, total, what)
        try:
            seconds = models[name].warm(canvases=canvases, brushes=brushes, regions=layout, progress=progress)
            log.info("fast path, %s: warm after %.0f s", name, seconds)
        except Exception as err:       # the server keeps serving; those shapes compile on first use instead
            log.warning("fast path, %s: warming failed (%s); shapes compile when first used", name, err)
