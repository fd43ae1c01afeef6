"""Options of a generation or a stream, checked at the door: one OptionError naming the option and its range.

``StepOptions`` are what the region step reads (aggregation, guidance, bootstrapping, batching). ``check_call``
checks the other options of ``generate`` / ``stream`` (steps, sampler, quantize, cover_alpha, tile_size, output,
callback, the flags and cache sizes). ``check_number`` / ``check_whole`` are the typed range checks every module
shares (scene fields raise SceneError with them, options OptionError): a bool is not a number, NaN and infinities
are refused, a float is not a whole number. The limits are the constants below.
"""
from __future__ import annotations

import math
import operator
import reprlib
from dataclasses import dataclass
from typing import Any

from .errors import OptionError

MAX_STEPS = 50            # sampler steps of a call (LCM's original grid has 50 steps; the reference uses 50)
MAX_GUIDANCE = 50.0       # classifier-free guidance scale (the reference uses 7.5; beyond ~20 images burn)
MIN_TILE_SIZE = 64        # px of a view: smaller tiles multiply the views (and the time) for nothing
MAX_TILE_SIZE = 8192      # px of a view: the largest canvas side (scene.MAX_SIDE)
MAX_CACHE_SIZE = 1 << 16  # entries of a stream's mask / prompt cache
OUTPUTS = ("pil", "latent")
AGGREGATIONS = ("pre", "post")
GUIDANCE_MODES = ("none", "full", "self")


# -- typed range checks (shared with scene.py and noise.py) --------------------------------------------------------
def _span(low: float, high: float) -> str:
    if high == math.inf:
        return f"a finite number of at least {low:g}"
    return f"between {low:g} and {high:g}"


COMPILE_SHAPES = ("dynamic", "static")   # compiled.py: one graph for every batch size, or one per shape


def check_number(value: Any, what: str, low: float, high: float, *, error: type = OptionError,
                 above_low: bool = False) -> float:
    """``value`` as a finite float in [low, high] (``above_low``: in (low, high]), or one ``error`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_numpy_number(value):
        raise error(f"{what} must be a number, got {shown(value)}.")
    try:
        number = float(value)
    except OverflowError:           # an int beyond float range: out of any range we take
        number = math.inf if value > 0 else -math.inf
    if not (math.isfinite(number) and low <= number <= high) or (above_low and number == low):
        span = f"a finite number above {low:g}" if above_low and high == math.inf else _span(low, high)
        raise error(f"{what} must be {span}, got {number:g}.")
    return number


def check_whole(value: Any, what: str, low: int, high: int | float, *, error: type = OptionError) -> int:
    """``value`` as an int in [low, high] (numpy integers too; bools and floats refused), or one ``error``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:   # floats, strings, None, a tensor of floats...
        raise error(f"{what} must be a whole number, got {shown(value)}.") from None
    if not low <= number <= high:
        top = "" if high == math.inf else f" and at most {high}"
        raise error(f"{what} must be at least {low}{top}, got {shown(number)}.")
    return number


def check_choice(value: Any, what: str, choices: tuple, *, error: type = OptionError) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise error(f"Unknown {what} {shown(value)}; choose one of {', '.join(choices)}.")
    return value


def check_flag(value: Any, what: str, *, error: type = OptionError) -> bool:
    if not isinstance(value, bool) and not (type(value).__module__ == "numpy" and
                                            type(value).__name__ in ("bool_", "bool")):   # numpy's bools too
        raise error(f"{what} must be True or False, got {shown(value)}.")
    return bool(value)


def _is_numpy_number(value: Any) -> bool:
    module = type(value).__module__
    return module == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "iuf" and not value.shape


def clipped(text: str, limit: int = 300) -> str:
    """The first line of a message from elsewhere, cut at a word (not mid-word) when longer than ``limit``."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0]
    return (cut if len(cut) > limit // 2 else line[:limit]) + " ..."


def shown(value: Any, limit: int = 60) -> str:
    """A short repr for messages: a 400 MB string, a 5,000-digit number or a huge list is cut (reprlib)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"a {value.bit_length()}-bit number"
    short = reprlib.Repr()
    short.maxstring = short.maxother = limit
    try:
        text = short.repr(value)
    except Exception:   # a hostile __repr__
        text = type(value).__name__
    return text if len(text) <= limit + 10 else text[:limit] + "..."


# -- the options of one call ---------------------------------------------------------------------------------------
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
        """Checks every field's type and range (one OptionError naming it) and normalizes numbers in place."""
        self.aggregation = check_choice(self.aggregation, "aggregation", AGGREGATIONS)
        self.guidance = check_number(self.guidance, "guidance", 0.0, MAX_GUIDANCE)
        self.guidance_mode = check_choice(self.guidance_mode, "guidance mode", GUIDANCE_MODES)
        self.bootstrap_steps = check_whole(self.bootstrap_steps, "bootstrap_steps", 0, MAX_STEPS)
        self.bootstrap_mix_steps = check_number(self.bootstrap_mix_steps, "bootstrap_mix_steps", 0.0, MAX_STEPS)
        self.centering = check_flag(self.centering, "centering")
        if self.leak_sensitivity is not None:
            self.leak_sensitivity = check_number(self.leak_sensitivity, "leak_sensitivity (None turns it off)",
                                                 0.0, math.inf, above_low=True)
        self.batch_size = check_whole(self.batch_size, "batch_size", 1, math.inf)
        return self


def check_call(*, steps=None, sampler=None, quantize=None, cover_alpha=None, tile_size=None, size_multiple: int = 8,
               output="pil", callback=None, flags: dict | None = None, cache_sizes: dict | None = None) -> None:
    """The options of one ``generate`` / ``stream`` call besides the StepOptions (None: the model's default).

    steps: 1..MAX_STEPS; sampler: schedule.SAMPLERS; quantize: masks.QUANTIZE_MODES; cover_alpha: [0, 1];
    tile_size: a multiple of the model's ``size_multiple`` in [MIN_TILE_SIZE, MAX_TILE_SIZE]; output: OUTPUTS;
    callback: callable; flags: {name: bool}; cache_sizes: {name: 0..MAX_CACHE_SIZE}.
    """
    from .masks import QUANTIZE_MODES
    from .schedule import SAMPLERS
    if steps is not None:
        check_whole(steps, "steps", 1, MAX_STEPS)
    if sampler is not None:
        check_choice(sampler, "sampler", SAMPLERS)
    if quantize is not None:
        check_choice(quantize, "mask quantization", QUANTIZE_MODES)
    if cover_alpha is not None:
        check_number(cover_alpha, "cover_alpha", 0.0, 1.0)
    if tile_size is not None:
        tile = check_whole(tile_size, "tile_size (px)", MIN_TILE_SIZE, MAX_TILE_SIZE)
        if tile % size_multiple:
            raise OptionError(f"tile_size must be a multiple of {size_multiple} px for this model, got {tile}.")
    check_choice(output, "output", OUTPUTS)
    if callback is not None and not callable(callback):
        raise OptionError(f"callback must be a function taking a StepInfo (or None), got {shown(callback)}.")
    for name, value in (flags or {}).items():
        check_flag(value, name)
    for name, value in (cache_sizes or {}).items():
        check_whole(value, name, 0, MAX_CACHE_SIZE)


def check_known(options: dict, known, where: str) -> None:
    """Refuses keyword options that ``where`` does not take (one OptionError naming them and the known ones)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise OptionError(f"Unknown option(s) {', '.join(unknown)}; {where} takes {', '.join(sorted(known))}.")


def check_max_pixels(value) -> int | None:
    """A model's pixel limit: None (no limit) or a whole number of pixels >= 64."""
    return None if value is None else check_whole(value, "max_pixels", 64, math.inf)
