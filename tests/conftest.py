import sys
from pathlib import Path

# Tests import their helpers (scenes.py, analytic.py) and the package from the checkout.
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import torch  # noqa: E402

# Tiny models run fastest on one thread; more threads only fight over the CI machine's two cores.
torch.set_num_threads(1)
