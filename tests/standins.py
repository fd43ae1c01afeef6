"""Stand-ins for packages that only exist on Hugging Face Spaces, for tests that run anywhere."""
from __future__ import annotations

import functools


class StandInSpaces:
    """What the spaces package offers for ahead-of-time compilation, without compiling: a "program" runs the eager
    module and counts its calls."""

    def __init__(self):
        self.compiled, self.runs = [], 0
        self.durations, self.inside = [], 0   # spaces.GPU: durations asked for, GPU tasks running now

    def aoti_capture(self, module):
        """spaces.aoti_capture: the call of ``module`` inside the context recorded, not run (the library's own
        capture, which packages.py offers its compiler)."""
        from semantic_draw.packages import Packages
        return Packages.aoti_capture(module)

    def aoti_compile(self, exported):
        module = exported.module()
        self.compiled.append((exported, self.inside > 0))

        def program(*args, **kwargs):
            self.runs += 1
            return module(*args, **kwargs)
        return program

    def GPU(self, fn=None, *, duration=60, **options):
        """spaces.GPU: records the duration asked for; the function runs here, counted as a GPU task."""
        self.durations.append(duration)

        def decorate(f):
            @functools.wraps(f)
            def task(*args, **kwargs):
                self.inside += 1
                try:
                    return f(*args, **kwargs)
                finally:
                    self.inside -= 1
            return task
        return decorate(fn) if callable(fn) else decorate
