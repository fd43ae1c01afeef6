"""Options of a generation or a stream, checked at the door: one OptionError naming the option and its range.

``StepOptions`` are what the region step reads (aggregation, guidance, bootstrapping, batching).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import OptionError

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
            raise OptionError(f"Unknown aggregation {self.aggregation!r}; choose 'pre' or 'post'.")
        if self.guidance_mode not in GUIDANCE_MODES:
            raise OptionError(f"Unknown guidance mode {self.guidance_mode!r}; choose one of "
                              f"{', '.join(GUIDANCE_MODES)}.")
        if self.bootstrap_steps < 0 or self.batch_size < 1:
            raise OptionError("bootstrap_steps must be >= 0 and batch_size >= 1.")
        if self.leak_sensitivity is not None and self.leak_sensitivity <= 0:
            raise OptionError("leak_sensitivity must be positive (or None to turn it off).")
        return self
