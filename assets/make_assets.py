"""Regenerate the example palettes in assets/ from the paper's fixtures.

    python assets/make_assets.py [FIXTURES_DIR]     (default: ../shared/fixtures next to the repository)

Writes assets/irworobongdo/, assets/timessquare/ (the fixtures in our palette format) and assets/timessquare-edit/
(Times Square with the photo as background image, for editing / inpainting).
"""

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from semantic_draw.scene import Scene  # noqa: E402

FILE_KEYS = ("preview", "reference_painting", "photo")  # extra keys naming fixture files we do not copy
INPAINT_BLUR = 16.0


def convert(fixture: Path) -> Scene:
    scene = Scene.load(fixture)
    scene.extra = {k: v for k, v in scene.extra.items() if k not in FILE_KEYS}
    return scene


def write(scene: Scene, name: str) -> None:
    target = HERE / name
    if target.exists():
        shutil.rmtree(target)
    scene.save(target)
    print(f"wrote {target.relative_to(HERE.parent)}: {len(scene.layers)} brushes, {scene.width}x{scene.height}")


def main(fixtures: Path) -> None:
    write(convert(fixtures / "irworobongdo"), "irworobongdo")
    write(convert(fixtures / "timessquare"), "timessquare")

    edit = convert(fixtures / "timessquare")
    edit.name = "timessquare-edit"
    edit.background.image = fixtures / "timessquare" / "timessquare.jpeg"  # 800x800, resized to the canvas
    for layer in edit.layers:
        layer.mask_blur = INPAINT_BLUR
    edit.extra["about"] = ("Times Square editing / inpainting: the photo is the background image; the two brushes "
                           "repaint the people and everything else is kept. Mask blur 16 px harmonizes the edit.")
    write(edit.validate(), "timessquare-edit")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parent.parent / "shared" / "fixtures")
