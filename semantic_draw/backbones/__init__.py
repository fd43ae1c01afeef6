"""One small adapter per model family, and the registry that holds every fact that differs between families."""
from __future__ import annotations

from .base import Backbone, Cond
from .registry import (ADAPTERS, FAMILIES, Family, adapter_for, family_of, family_of_class, family_of_single_file,
                       get_family, register, unregister)
from .sd3 import SD3Backbone
from .sd15 import SD15Backbone
from .sdxl import SDXLBackbone

__all__ = ["ADAPTERS", "FAMILIES", "Backbone", "Cond", "Family", "SD15Backbone", "SDXLBackbone", "SD3Backbone",
           "adapter_for", "family_of", "family_of_class", "family_of_single_file", "get_family", "register",
           "unregister"]
