#!/usr/bin/env python3
"""The ZeroGPU path with torch's real AOTInductor instead of the test suite's stand-in (which runs the exported
programs eagerly): each exported program is compiled to a package and loaded again, as the spaces package does on
a GPU, here on the CPU (tens of seconds per program, so not in CI).

    python tests/aoti_real.py                        # tiny-sd15, -sdxl, -sd3; both region layouts
    python tests/aoti_real.py --presets tiny-sd3 --regions attention

Per preset: programs exported at one brush, then one-shots and streams at 1 and 3 brushes (a painting frame
included) compared with the eager model (within 1e-4), and the count of calls that found no program (must be 0).
Exit status 1 on any difference or fallback.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import torch  # noqa: E402

from scenes import rect_scene  # noqa: E402
from standins import StandInSpaces  # noqa: E402
from semantic_draw import SemanticDraw, compiled  # noqa: E402


class RealAOTI(StandInSpaces):
    """spaces' capture and GPU tasks from the stand-in; aoti_compile by AOTInductor: package, then load."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder, self.seconds = folder, []

    def aoti_compile(self, exported):
        start = time.monotonic()
        path = f"{self.folder}/program-{len(self.seconds)}.pt2"
        loaded = torch._inductor.aoti_load_package(torch._inductor.aoti_compile_and_package(exported,
                                                                                            package_path=path))
        self.seconds.append(time.monotonic() - start)
        self.compiled.append((exported, self.inside > 0))

        def program(*args, **kwargs):
            self.runs += 1
            return loaded(*args, **kwargs)
        return program


def check(preset: str, layouts: tuple[str, ...]) -> bool:
    model, eager = SemanticDraw.from_preset(preset), SemanticDraw.from_preset(preset)
    with tempfile.TemporaryDirectory() as folder:
        spaces = RealAOTI(folder)
        net = compiled.compile_ahead_of_time(model, spaces, canvases=[(64, 64)], brushes=(1,), regions=layouts)
        print(f"{preset}: {len(spaces.seconds)} programs, compiled in {sum(spaces.seconds):.0f} s", flush=True)
        worst = 0.0
        for layout in layouts:
            for k in (1, 3):
                scene = rect_scene(64, 64, [(f"brush {i}", (0, 12 * i, 64, 12 * i + 20)) for i in range(k)],
                                   background_prompt="a table")
                pairs = [(model.generate(scene, seed=1, output="latent", regions=layout),
                          eager.generate(scene, seed=1, output="latent", regions=layout))]
                with model.stream(scene, seed=1, regions=layout) as got, \
                        eager.stream(scene, seed=1, regions=layout) as want:
                    pairs += [(got.next_frame(output="latent"), want.next_frame(output="latent")) for _ in range(3)]
                    edited = replace(scene, layers=[replace(layer, mask_blur=2.0) for layer in scene.layers])
                    got.update(edited)
                    want.update(edited)
                    pairs.append((got.next_frame(output="latent"), want.next_frame(output="latent")))
                worst = max([worst] + [(a - b).abs().max().item() for a, b in pairs])
        ok = worst <= 1e-4 and net.fallbacks == 0
        print(f"{preset}: largest difference from eager {worst:.2e}, calls without a program {net.fallbacks}, "
              f"program runs {spaces.runs}: {'ok' if ok else 'FAILED'}", flush=True)
        return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny-sd15,tiny-sdxl,tiny-sd3")
    parser.add_argument("--regions", default="latent,attention")
    args = parser.parse_args(argv)
    results = [check(p, tuple(args.regions.split(","))) for p in args.presets.split(",")]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
