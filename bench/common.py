"""What bench/methods.py and bench/stream.py share: building the model (a tiny preset, or a full-size architecture
with random weights), timing with device synchronization, the time spent inside the model and in decoding, peak
memory, machine facts, markdown tables and a PIL bar chart. Timing and the count-only network are denoiser wrappers
attached to ``model.network`` (semantic_draw/denoiser.py), nothing is monkeypatched.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import torch

from bench.full_size import ROOT, build_full_pipeline  # also puts the repository root on sys.path
from semantic_draw import SemanticDraw
from semantic_draw.denoiser import Timed, Wrapper
from semantic_draw.loading import default_device_dtype
from semantic_draw.options import COMPILE_SHAPES
from semantic_draw.presets import Preset, get_preset
from semantic_draw.sizes import to_multiple
from semantic_draw.timing import Clock


# -- command line and model --------------------------------------------------------------------------------------
def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny-sd15",
                        help="tiny-sd15 / tiny-sdxl / tiny-sd3 (offline), or sd15 / sd15-hyper / sdxl / sd3 (Hub)")
    parser.add_argument("--full-size", action="store_true",
                        help="the preset family's FULL-SIZE architecture with random weights (no download); "
                             "sampler settings of the real preset (tiny-sd15 -> sd15)")
    parser.add_argument("--device", default=None, help="cuda / cpu / mps (default: cuda when available)")
    parser.add_argument("--dtype", default=None,
                        help="float16 / bfloat16 / float32 (default: fp16 on GPU, fp32 on CPU)")
    parser.add_argument("--model-dir", default=None, metavar="DIR",
                        help="load the random-weight model (with --full-size the full-size one, else the tiny "
                             "preset's) from DIR/<family> (DIR/tiny-<family>) as a diffusers folder through the "
                             "library's loading code (a user's start-up), saving it there first when it is not there "
                             "yet; without it the weights are drawn in the process")
    parser.add_argument("--height", type=int, default=None, help="canvas height in px")
    parser.add_argument("--width", type=int, default=None, help="canvas width in px")
    parser.add_argument("--tile-size", type=int, default=None, help="view size in px (passed through)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; 1 gives steadier numbers on a busy CPU)")
    parser.add_argument("--out", default=None, help="folder for the markdown table and a PNG bar chart")


def add_compile_args(parser: argparse.ArgumentParser, what: str) -> None:
    """--compile (``what`` it then measures), --compile-cache and --compile-shapes."""
    parser.add_argument("--compile", action="store_true", help=what)
    parser.add_argument("--compile-cache", default=None, metavar="DIR", help="with --compile: the cache folder")
    parser.add_argument("--compile-shapes", choices=COMPILE_SHAPES, default=COMPILE_SHAPES[0],
                        help="with --compile: one graph for every batch size of a canvas, or one per shape")


def real_preset(args) -> Preset:
    """The preset whose sampler settings are used: the named one, or for --full-size (or --count-only) of a tiny
    preset its family's real preset (tiny-sd15 -> sd15)."""
    preset = get_preset(args.preset)
    real = args.full_size or getattr(args, "count_only", False)
    return get_preset(preset.family) if (real and preset.tiny) else preset


def build_model(args) -> SemanticDraw:
    """The preset's model; --full-size: the real architecture with random weights; --count-only (methods.py): a tiny
    model with the real preset's settings whose denoiser returns zeros (calls and evaluations are exact, times not);
    --model-dir: either model (the full-size or the tiny one) saved to a folder once and loaded from it by the
    library's loading code, as a user's model is.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    count_only = getattr(args, "count_only", False)
    model_dir = getattr(args, "model_dir", None)
    preset = real_preset(args)
    if not (args.full_size or count_only or model_dir):
        return SemanticDraw.from_preset(args.preset, device=args.device, dtype=args.dtype)
    device, dtype = default_device_dtype(args.device, args.dtype)
    size = "tiny" if preset.tiny else "full size"
    if count_only:
        from semantic_draw.tiny import build_tiny_pipeline
        pipe = build_tiny_pipeline(preset.family).to(device)
        pipe.tiny_vae.to(device)
        name = f"{preset.name} settings, tiny zero denoiser (counts only)"
    elif model_dir:
        pipe = saved_pipeline(Path(model_dir), preset, device, dtype)
        name = f"{preset.name} {size}, random weights loaded from {model_dir}"
    else:
        pipe = build_full_pipeline(preset.family, device=device, dtype=dtype)
        name = f"{preset.name} full size, random weights"
    model = SemanticDraw.from_pipeline(pipe, settings=preset.settings, guidance=preset.guidance, name=name,
                                       native_size=preset.native_size, tile_size=preset.tile_size,
                                       cover_alpha=preset.cover_alpha)
    if count_only:
        model.network = ZeroNetwork(model.network)
    return model


def saved_pipeline(folder: Path, preset: Preset, device, dtype):
    """The preset's random-weight pipeline (its family's full-size one, or for a tiny preset the tiny one) loaded
    from ``folder/<family>`` (``tiny-<family>`` for a tiny preset; diffusers layout, its tiny VAE in
    ``...-tiny-vae``) by semantic_draw.loading.load_pipeline, as a user's model folder is; built and saved there
    first if missing."""
    from semantic_draw.loading import load_pipeline
    from semantic_draw.tiny import build_tiny_pipeline
    family = preset.family
    name = f"tiny-{family}" if preset.tiny else family
    where, tiny = folder / name, folder / f"{name}-tiny-vae"
    if not (where / "model_index.json").exists() or not (tiny / "config.json").exists():
        pipe = (build_tiny_pipeline(family) if preset.tiny
                else build_full_pipeline(family, device=device, dtype=dtype))
        pipe.save_pretrained(where)
        pipe.tiny_vae.save_pretrained(tiny)
        del pipe
    return load_pipeline(str(where), family=family, tiny_vae=str(tiny), device=device, dtype=dtype)


def is_tiny(args) -> bool:
    """True when the run uses a tiny preset as it is (small canvas defaults)."""
    return get_preset(args.preset).tiny and not (args.full_size or getattr(args, "count_only", False))


# -- timing --------------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    """(fn(), wall seconds), the device synchronized before and after."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


@contextlib.contextmanager
def clocked(model: SemanticDraw):
    """A Clock of the seconds inside the model's network ("model") and decoder ("decode"): the library's Timed
    wrapper goes around ``model.network`` and the decoder is wrapped the same way; both are put back afterwards.
    CUDA: event time on the GPU stream (no extra synchronization inside a frame); CPU: wall time around the calls.
    Open sessions after entering: a session keeps the network and decoder it started with."""
    clock = Clock(model.device)
    network, decoder = model.network, model.decoder
    model.network = Timed(network, clock, "model")
    model.decoder = clock.wrap(decoder, "decode")
    try:
        yield clock
    finally:
        model.network, model.decoder = network, decoder


class ZeroNetwork(Wrapper):
    """The network replaced by zeros: every call and item is counted as before, no time means anything."""

    def predict(self, views):
        return torch.zeros_like(views.x, dtype=torch.float32)


def median(values) -> float:
    return float(np.median(values))


def percentile(values, q: float) -> float:
    return float(np.percentile(values, q))


def process_age() -> float:
    """Seconds since this process started (Linux: /proc/self/stat against /proc/uptime; elsewhere since this module
    was imported): the time a restarted server takes to its first frame, imports and model build included."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - ticks / os.sysconf("SC_CLK_TCK")
    return time.monotonic() - _IMPORTED


_IMPORTED = time.monotonic()


# -- memory --------------------------------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_rss_peak() -> bool:
    """Linux: writing 5 to /proc/self/clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _proc_status_kib("VmHWM") is not None


class PeakMemory:
    """Peak memory above the level at entry, in MiB (``.mib`` after the block; ``.method`` says how).

    CUDA: torch.cuda.max_memory_allocated (tensors only, allocator cache excluded), minus memory_allocated at entry.
    CPU (Linux): peak RSS (VmHWM after resetting it through /proc/self/clear_refs) minus RSS at entry, after
    malloc_trim so that freed heap goes back to the system first. Elsewhere: RSS sampled every 2 ms with psutil.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.mib = float("nan")
        self.method = ""
        self._stop = None

    def __enter__(self):
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "CUDA max_memory_allocated above the allocation at start"
            return self
        _malloc_trim()
        if _reset_rss_peak():
            self._base = _proc_status_kib("VmRSS") * 1024
            self.method = "peak RSS (VmHWM, reset via /proc/self/clear_refs) above RSS at start"
            return self
        import psutil
        proc = psutil.Process()
        self._base = proc.memory_info().rss
        self._sampled = self._base
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(0.002):
                self._sampled = max(self._sampled, proc.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        self.method = "RSS sampled every 2 ms (psutil) above RSS at start"
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._stop is None:
            peak = _proc_status_kib("VmHWM") * 1024
        else:
            self._stop.set()
            self._thread.join()
            peak = self._sampled
        self.mib = max(0.0, (peak - self._base) / 2 ** 20)


def weights_mib(model: SemanticDraw) -> float:
    pipe = model.backbone.pipe
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    if model.backbone.tiny_vae is not None:
        modules.append(model.backbone.tiny_vae)
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters()) / 2 ** 20


# -- facts about the run -------------------------------------------------------------------------------------------
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_lines(model: SemanticDraw, args) -> list[str]:
    import diffusers
    dev = model.device
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "none"
    denoiser = model.backbone.denoiser
    params = sum(p.numel() for p in denoiser.parameters())
    return [
        f"- model: {model.name} ({model.family}; denoiser {params:,} parameters, "
        f"{model.backbone.dtype}; weights of all components {weights_mib(model):,.1f} MiB); "
        f"sampler {model.settings.sampler}",
        f"- device: {dev} (GPU: {gpu}); CPU: {cpu_model()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}",
        f"- torch {torch.__version__}, diffusers {diffusers.__version__}, Python {platform.python_version()}",
    ]


# -- output --------------------------------------------------------------------------------------------------------
def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def bar_chart(path: Path, title: str, labels: list[str], values: list[float], unit: str) -> None:
    """A horizontal bar chart drawn with PIL (matplotlib is not a dependency)."""
    from PIL import Image, ImageDraw
    bar_h, gap, left, right, top = 26, 10, 230, 140, 40
    width = 760
    height = top + len(labels) * (bar_h + gap) + gap
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 12), title, fill="black")
    vmax = max([v for v in values if np.isfinite(v)] + [1e-12])
    colors = [(0, 130, 200), (245, 130, 48), (60, 180, 75), (145, 30, 180), (230, 25, 75), (70, 200, 200)]
    for i, (label, value) in enumerate(zip(labels, values)):
        y = top + i * (bar_h + gap)
        draw.text((10, y + 7), label[:34], fill="black")
        length = 0 if not np.isfinite(value) else int((width - left - right) * value / vmax)
        draw.rectangle([left, y, left + max(length, 1), y + bar_h], fill=colors[i % len(colors)])
        draw.text((left + length + 6, y + 7), f"{value:.3g} {unit}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def write_outputs(out: str | None, stem: str, markdown: str, chart: tuple | None = None) -> list[Path]:
    """Write ``<out>/<stem>.md`` (and ``<out>/<stem>.png`` from chart = (title, labels, values, unit))."""
    if not out:
        return []
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / f"{stem}.md"]
    written[0].write_text(markdown + "\n")
    if chart is not None:
        written.append(folder / f"{stem}.png")
        bar_chart(written[1], *chart)
    return written


__all__ = ["ROOT", "add_model_args", "build_model", "real_preset", "is_tiny", "sync", "timed", "clocked", "ZeroNetwork",
           "process_age",
           "median", "percentile", "PeakMemory", "weights_mib", "machine_lines", "markdown_table", "bar_chart",
           "write_outputs", "to_multiple"]
