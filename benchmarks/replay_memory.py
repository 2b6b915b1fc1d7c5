"""Replay memory per transition and sampling time, raw and LZ4-compressed frames.

    python benchmarks/replay_memory.py --capacity 100000
    python benchmarks/replay_memory.py --capacity 100000 --frames cartpole-swingup --compress

Fills a ReplayBuffer of the training shape completely with episodes of
``--episode-length`` transitions (125: cartpole at action repeat 8) and prints bytes per
transition (against the reference's separate obs/next_obs stacks), the resident memory it
took, and the median time of ``sample(batch)`` (the stacks of obs and next_obs rebuilt,
decompressed when compressed). Frames are random noise (incompressible, the worst case)
or, with ``--frames TASK``, real renders of that DMC task under random actions (a few
thousand distinct frames, cycled; each frame is compressed on its own, so its size does
not depend on the cycling).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np

from curlrl import ReplayBuffer


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def source_frames(kind: str, count: int, size: int) -> np.ndarray:
    if kind == "random":
        return np.random.default_rng(0).integers(0, 256, (count, 3, size, size), dtype=np.uint8)
    from curlrl.envs import make_env
    env = make_env(kind, image_size=size, action_repeat=1, frame_stack=1, seed=0)
    out, (obs, _) = [], env.reset(seed=0)
    while len(out) < count:
        out.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return np.stack(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capacity", type=int, default=100_000)
    p.add_argument("--image-size", type=int, default=100)
    p.add_argument("--action-dim", type=int, default=1)
    p.add_argument("--episode-length", type=int, default=125)
    p.add_argument("--frames", default="random", help="'random' or a DMC task to render, e.g. cartpole-swingup")
    p.add_argument("--distinct-frames", type=int, default=2000, help="frames rendered (or drawn) and cycled")
    p.add_argument("--compress", action="store_true", help="LZ4-compressed frames (replay_compress=true)")
    p.add_argument("--batch-sizes", default="128,512", help="batch sizes to time sample() at")
    args = p.parse_args()
    s, a = args.image_size, args.action_dim
    reference = 2 * 9 * s * s + 4 * a + 4 + 4  # uint8 obs + next_obs stacks, float32 action, reward, not_done
    frames = source_frames(args.frames, args.distinct_frames, s)
    n = len(frames)
    stack = lambda t: np.concatenate([frames[(t - d) % n] for d in (2, 1, 0)])  # noqa: E731
    before = rss_mb()
    replay = ReplayBuffer(args.capacity, (3, s, s), a, frame_stack=3, compress=args.compress)
    t = 0
    while replay.transitions_written < args.capacity + args.episode_length:
        last = t % args.episode_length == args.episode_length - 1
        replay.add(stack(t), np.zeros(a, np.float32), 0.0, stack(t + 1), False, last)
        t += 1
    used = rss_mb() - before
    per = replay.nbytes / len(replay)
    print(f"# capacity {args.capacity}, frames {s}x{s} ({args.frames}), episodes of {args.episode_length} "
          f"transitions, {'lz4-compressed' if args.compress else 'raw'}")
    print(f"transitions_held={len(replay)} buffer_bytes={replay.nbytes} rss_increase_mb={used:.0f}")
    for batch in (int(v) for v in args.batch_sizes.split(",")):
        replay.sample(batch)
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            replay.sample(batch)
            times.append(time.perf_counter() - t0)
        print(f"sample_ms_batch_{batch}={1000 * statistics.median(times):.1f}")
    print(f"bytes_per_transition={per:.0f} reference_bytes_per_transition={reference} "
          f"reduction={reference / per:.2f}x")


if __name__ == "__main__":
    main()
