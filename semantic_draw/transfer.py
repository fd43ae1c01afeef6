"""Host-to-device moves that never make the host wait for the GPU (a frame stays free of synchronizations)."""
from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A small host tensor (indices, step numbers) on ``device``, the copy queued on the current stream. A copy
    from pageable host memory is staged before this returns, so ``t`` may be changed or freed at once."""
    return t.to(device, non_blocking=True)
