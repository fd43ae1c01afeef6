"""The models one app serves: loaded once at start, resident, keyed by name (the preset's name or the model's path).

The page has a model selector and the API a `model` argument; the first model is the default. Each model keeps its
own lock, so visitors of different models do not wait for each other (they share the GPU).
"""
from __future__ import annotations

import logging
from typing import Iterable

import torch

from semantic_draw import OptionError, SemanticDraw
from semantic_draw.presets import PRESETS

log = logging.getLogger("semantic_draw.app")


class Models:
    """Name -> SemanticDraw, in the order given (the first is the default)."""

    def __init__(self, models: SemanticDraw | dict[str, SemanticDraw] | Iterable[SemanticDraw]):
        if isinstance(models, SemanticDraw):
            models = [models]
        if not isinstance(models, dict):
            models = {m.name: m for m in models}
        if not models:
            raise OptionError("The app needs at least one model.")
        self.by_name: dict[str, SemanticDraw] = dict(models)
        self.names: list[str] = list(self.by_name)
        self.default: str = self.names[0]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.by_name.items())

    def name(self, name: str | None) -> str:
        """The name asked for (None or "" -> the default); OptionError naming the choices for an unknown one."""
        name = (name or "").strip() or self.default
        if name not in self.by_name:
            raise OptionError(f"Unknown model {name!r}; this server has {', '.join(map(repr, self.names))}.")
        return name

    def __getitem__(self, name: str | None) -> SemanticDraw:
        return self.by_name[self.name(name)]

    def multiple(self, name: str | None) -> int:
        """The canvas sides this model takes are multiples of this (16 for SD3, 8 otherwise)."""
        return int(self[name].size_multiple)

    def start_size(self, name: str | None = None) -> int:
        """The canvas side a new page starts at: the preset's canvas, or the model's native size."""
        model = self[name]
        preset = PRESETS.get(model.name)
        return int(max(preset.canvas)) if preset is not None else int(model.native_size)

    def label(self, name: str) -> str:
        """What the selector shows: the name, the family (unless the name says it) and "compiled" for the fast path."""
        model = self[name]
        notes = ([] if model.family in name else [model.family]) + (
            ["compiled"] if getattr(model, "compiled", None) is not None else [])
        return f"{name} ({', '.join(notes)})" if notes else name


def weight_bytes(model: SemanticDraw) -> int:
    """Bytes of the weights of a model's networks (every torch module its pipeline and backbone hold, once)."""
    seen, total = set(), 0
    backbone = model.backbone
    holders = [getattr(backbone, "pipe", None), backbone]
    modules = []
    for holder in holders:
        if holder is None:
            continue
        parts = getattr(holder, "components", None)
        values = list(parts.values()) if isinstance(parts, dict) else []
        values += list(vars(holder).values())
        modules += [v for v in values if isinstance(v, torch.nn.Module)]
    for module in modules:
        for t in list(module.parameters()) + list(module.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def memory_report(models: Models) -> str:
    """One line per model (weights, device) and what the GPU holds: logged at start."""
    lines = []
    for name, model in models:
        lines.append(f"{name}: {model.family}, {weight_bytes(model) / 2**20:,.0f} MiB of weights on {model.device}")
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        lines.append(f"GPU memory in use: {torch.cuda.memory_allocated() / 2**30:.2f} GiB")
    return "\n".join(lines)


def load_models(presets: list[str], paths: list[str], loras=(), device=None, dtype=None, **options) -> Models:
    """Load every preset and model once (SemanticDraw.load; `options` such as compile=True go to each); the app keeps
    them all resident."""
    loaded = {}
    for preset in presets or ([] if paths else ["sd15"]):
        loaded[preset] = SemanticDraw.load(preset, device=device, dtype=dtype, **options)
    for path in paths:
        loaded[path] = SemanticDraw.load(None, model=path, loras=loras, device=device, dtype=dtype, **options)
    return Models(loaded)
