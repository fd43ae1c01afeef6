"""Running out of memory anywhere in a request (masks, encode, model, decode) becomes one ResourceError with advice;
the request's tensors are released first, so the next request is served."""
from __future__ import annotations

import functools
import gc

import torch

from .errors import ResourceError


def release() -> None:
    """Give freed memory back: Python's cycles, then the CUDA cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def out_of_memory_is_a_resource_error(advice: str):
    """Decorator: a torch.OutOfMemoryError inside the call becomes ResourceError(advice). The original error (and
    the frames and tensors its traceback holds) is dropped before memory is released."""
    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except torch.OutOfMemoryError:
                pass
            release()
            raise ResourceError(f"Out of memory. {advice}")
        return call
    return wrap
