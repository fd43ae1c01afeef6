"""The one source of randomness of a call or a session: every random draw comes from a generator seeded from its
seed, in a fixed order, on the CPU (so a seed gives the same image on any device), then moves to the device."""
from __future__ import annotations

import torch

from .options import check_whole

SEED_LIMIT = 2 ** 64   # seeds are whole numbers in [0, 2**64), what torch.Generator takes


def check_seed(seed) -> int:
    """A seed as an int in [0, 2**64 - 1] (numpy integers too; bools, floats, text refused), or one OptionError."""
    return check_whole(seed, "The seed", 0, SEED_LIMIT - 1)


class NoiseSource:
    def __init__(self, seed: int, device: torch.device | str):
        self.seed = check_seed(seed)
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(self.seed)

    def draw(self, shape) -> torch.Tensor:
        """Standard Gaussian noise of ``shape`` on the source's device."""
        return torch.randn(tuple(shape), generator=self.generator).to(self.device)
