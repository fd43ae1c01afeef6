"""SemanticDraw: real-time region-based text-to-image generation with semantic brushes (SD1.5, SDXL, SD3)."""
from . import logs  # noqa: F401  (first: it quiets a notice the imports below would print)
from .errors import (LoadError, OptionError, ResourceError, SceneError, SemanticDrawError, SessionClosedError)
from .model import SemanticDraw
from .oneshot import METHODS, StepInfo
from .scene import Background, Layer, Scene
from .schedule import SamplerSettings
from .stream import StreamEvent, StreamSession

__all__ = ["SemanticDraw", "Scene", "Layer", "Background", "StepInfo", "SamplerSettings", "METHODS",
           "StreamSession", "StreamEvent", "SemanticDrawError", "SceneError", "OptionError", "LoadError",
           "ResourceError", "SessionClosedError"]
__version__ = "0.1.0"
