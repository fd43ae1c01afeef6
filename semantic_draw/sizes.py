"""Canvas sizes: the one place where a side is rounded to what a model takes (a multiple of 8, or 16 for SD3)."""
from __future__ import annotations

from fractions import Fraction


def to_multiple(value: float, multiple: int, *, down: bool = False) -> int:
    """``value`` rounded to a multiple of ``multiple`` (to the nearest one, or down), never below ``multiple``."""
    steps = int(value // multiple) if down else round(value / multiple)
    return max(multiple, steps * multiple)


def fit(height: float, width: float, multiple: int, max_side: int | None = None) -> tuple[int, int]:
    """The largest canvas of the same shape that fits ``max_side`` (never scaled up), each side rounded down to
    ``multiple``."""
    scale = 1.0 if not max_side else min(1.0, max_side / max(height, width))
    return to_multiple(height * scale, multiple, down=True), to_multiple(width * scale, multiple, down=True)


def keep_aspect(height: int | None, width: int | None, like: tuple[int, int], multiple: int) -> tuple[int, int]:
    """(height, width) with the missing side taken from the shape of ``like`` = (height, width), rounded to
    ``multiple``. The ratio is exact, so a side half-way between two multiples always rounds the same way."""
    if height is None and width is None:
        raise ValueError("keep_aspect needs a height or a width")
    aspect = Fraction(like[1], like[0])
    if height is None:
        height = to_multiple(width / aspect, multiple)
    if width is None:
        width = to_multiple(height * aspect, multiple)
    return height, width
