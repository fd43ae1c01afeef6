"""Several users streaming from one model at once: frames per second with each call alone against calls shared
(``share_calls``), in one run.

    python bench/sharing.py --threads 1                                   # tiny-sd15, CPU
    python bench/sharing.py --full-size --preset sd15 --users 1,2,4,8     # on a GPU, eager

For each number of users, the same streams (one thread each, a different scene and seed each) run for --seconds,
first with every network call alone (the model lock only), then with calls that wait at the same time joined into one
(semantic_draw/shared_calls.py). The table gives the frames per second of all users together, the fewest and most
frames of one user (fair shares), the network calls per frame and the share of calls that served several users.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_model_args, build_model, machine_lines, markdown_table, write_outputs  # noqa: E402
from bench.stream import canvas, synthetic_scene, tile_size  # noqa: E402
from semantic_draw import Background  # noqa: E402
from semantic_draw.shared_calls import CallPool  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    parser.add_argument("--users", default="1,2,4,8", help="comma-separated numbers of streaming users")
    parser.add_argument("--layers", type=int, default=1, help="brushes of each user's scene")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per configuration")
    parser.add_argument("--max-items", type=int, default=None, help="views of one shared call (default: library's)")
    parser.add_argument("--regions", default="latent", help="latent or attention (attention calls are not shared)")
    return parser.parse_args(argv)


def run_users(model, scenes, args) -> dict:
    """Every user streams on a thread of its own for args.seconds (after one untimed frame each)."""
    sessions = [model.stream(scene, seed=k, regions=args.regions, tile_size=args.tile)
                for k, scene in enumerate(scenes)]
    for s in sessions:
        s.next_frame()                      # the filling frame, untimed
    counts, stop, start = [0] * len(sessions), threading.Event(), threading.Barrier(len(sessions) + 1)

    def user(k):
        start.wait()
        while not stop.is_set():
            sessions[k].next_frame()
            counts[k] += 1

    threads = [threading.Thread(target=user, args=(k,), daemon=True) for k in range(len(sessions))]
    for t in threads:
        t.start()
    calls, pool = model.calls, model.shared
    joined = pool.joined if pool is not None else 0
    start.wait()
    began = time.perf_counter()
    time.sleep(args.seconds)
    stop.set()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - began
    for s in sessions:
        s.close()
    frames = sum(counts)
    made = model.calls - calls
    return {"fps": frames / seconds, "min": min(counts), "max": max(counts), "calls/frame": made / max(1, frames),
            "joined": 0.0 if pool is None else (pool.joined - joined) / max(1, made)}


def main(argv=None):
    args = parse_args(argv)
    model = build_model(args)
    height, width = canvas(args, model)
    args.tile = tile_size(args, height, width)
    users = [int(u) for u in args.users.split(",")]
    base = synthetic_scene(args.layers, height, width)
    scenes = [replace(base, background=Background(f"a wooden table, soft light, picture {k + 1}"))
              for k in range(max(users))]
    print("\n".join(machine_lines(model, args)))
    headers = ["users", "calls", "frames/s (all users)", "fewest / most frames of a user", "network calls / frame",
               "calls that served several users", "shared / alone"]
    rows = []
    for n in users:
        model.shared = None
        alone = run_users(model, scenes[:n], args)
        model.shared = CallPool(args.max_items) if args.max_items else CallPool()
        shared = run_users(model, scenes[:n], args)
        for name, r in (("alone", alone), ("shared", shared)):
            rows.append([n, name, f"{r['fps']:.2f}", f"{r['min']} / {r['max']}", f"{r['calls/frame']:.2f}",
                         f"{100 * r['joined']:.0f} %", f"{shared['fps'] / alone['fps']:.2f}x" if name == "shared"
                         else ""])
            print(markdown_table(headers, rows[-1:]).splitlines()[-1], flush=True)
    table = markdown_table(headers, rows)
    print("\n" + table)
    for path in write_outputs(args.out, "sharing", "\n".join(machine_lines(model, args)) + "\n\n" + table):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
