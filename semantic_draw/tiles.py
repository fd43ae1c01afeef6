"""Overlapping views of a large latent canvas with tile weights that form a partition of unity (section 6)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _positions(size: int, tile: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = max(1, tile // 2)
    n = math.ceil((size - tile) / stride) + 1
    return sorted({round(k * (size - tile) / (n - 1)) for k in range(n)})


def _axis_weights(size: int, view: int, starts: list[int]) -> torch.Tensor:
    """[len(starts), view] triangular ramps, normalized so that the views' weights sum to 1 at every pixel."""
    x = torch.arange(view, dtype=torch.float64)
    ramp = torch.minimum(x + 1, view - x)  # 1 .. view/2 .. 1, never zero
    total = torch.zeros(size, dtype=torch.float64)
    for s in starts:
        total[s:s + view] += ramp
    return torch.stack([ramp / total[s:s + view] for s in starts])


@dataclass
class Tiling:
    """Views of a [h, w] latent canvas: each view is (top, left) with size (vh, vw); weights [K, vh, vw]."""
    height: int
    width: int
    view_h: int
    view_w: int
    origins: list[tuple[int, int]]
    weights: torch.Tensor

    @property
    def count(self) -> int:
        return len(self.origins)

    def origin_table(self, device) -> torch.Tensor:
        """[K, 2] long (top, left) of each view on ``device`` (cached)."""
        cache = self.__dict__.setdefault("_origins", {})
        if str(device) not in cache:
            cache[str(device)] = torch.tensor(self.origins, dtype=torch.long, device=device)
        return cache[str(device)]

    def crop(self, t: torch.Tensor, k: int) -> torch.Tensor:
        top, left = self.origins[k]
        return t[..., top:top + self.view_h, left:left + self.view_w]


def make_tiling(height: int, width: int, tile: int) -> Tiling:
    """Tiles of ``tile`` latent pixels with stride tile/2 (a side no larger than the tile is one view)."""
    vh, vw = min(height, tile), min(width, tile)
    ys, xs = _positions(height, tile), _positions(width, tile)
    wy, wx = _axis_weights(height, vh, ys), _axis_weights(width, vw, xs)
    origins, weights = [], []
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            origins.append((y, x))
            weights.append(wy[i][:, None] * wx[j][None, :])
    return Tiling(height, width, vh, vw, origins, torch.stack(weights).float())
