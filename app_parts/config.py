"""The server's settings (AppConfig, what `create_demo(model, **config)` takes) and the page's fixed labels."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from semantic_draw.sizes import to_multiple

ROOT = Path(__file__).resolve().parents[1]
START, STOP = "▶ Start stream", "■ Stop stream"
GENERATE, STOP_GENERATE = "Generate", "■ Stop generating"
METHOD_CHOICES = [("SemanticDraw", "semanticdraw"),
                  ("MultiDiffusion, few-step (naive baseline)", "multidiffusion-fast"),
                  ("MultiDiffusion, 50 steps (reference, slow)", "multidiffusion")]


REGION_CHOICES = [("Latent: one view per brush (the paper's)", "latent"),
                  ("Attention: one view, brushes mixed in attention (fast with many brushes)", "attention")]


def method_label(method: str) -> str:
    return dict((v, k) for k, v in METHOD_CHOICES).get(method, method)


@dataclass
class AppConfig:
    height: int = 512                 # starting canvas
    width: int = 512
    max_canvas: int = 2048            # largest canvas side for one-shot generation (tiled)
    max_stream_side: int = 1024       # largest canvas side for the stream
    max_brushes: int = 12
    stream_time_limit: float = 180.0  # seconds per stream run; 0 = no limit
    max_streams: int = 2              # streams running at once (all users)
    max_generations: int = 2          # one-shot generations running at once
    max_per_user: int = 0             # streams and generations one visitor may run at once (0: no bound)
    forwarded_hops: int = 0           # trusted proxies in front of the server (X-Forwarded-For); a Space has 1
    max_stream_frames: int = 500      # most frames one /stream API call may ask for
    history: int = 12                 # results kept per session
    queue_size: int = 64              # events waiting in Gradio's queue, all users together (--max-queue)
    max_upload_mb: float = 64.0       # largest uploaded file (palette .zip, mask, photo, each canvas image), MiB
    generate_duration: int = 120      # seconds a one-shot generation may hold a ZeroGPU GPU (spaces.GPU duration)
    assets: str = str(ROOT / "assets")
    title: str = "SemanticDraw"

    def __post_init__(self):
        self.max_brushes = max(1, int(self.max_brushes))
        self.max_canvas = int(self.max_canvas)
        self.max_stream_side = min(int(self.max_stream_side), self.max_canvas)
        self.queue_size = max(1, int(self.queue_size))
        self.max_upload_mb = float(self.max_upload_mb)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2 ** 20)

    def fit_canvas_size(self, multiple: int) -> None:
        """Round the starting canvas down to what the model takes (sides that are multiples of `multiple`)."""
        self.height = to_multiple(int(self.height), multiple, down=True)
        self.width = to_multiple(int(self.width), multiple, down=True)
