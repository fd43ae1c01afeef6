"""SemanticDraw: real-time region-based text-to-image generation with semantic brushes (SD1.5, SDXL, SD3)."""
from .errors import SemanticDrawError
from .model import SemanticDraw
from .oneshot import METHODS, SamplerSettings, StepInfo
from .scene import Background, Layer, Scene

__all__ = ["SemanticDraw", "Scene", "Layer", "Background", "SemanticDrawError", "StepInfo", "SamplerSettings",
           "METHODS"]
__version__ = "0.1.0"
