"""Replay memory per transition, against the reference's separate obs/next_obs stacks.

    python benchmarks/replay_memory.py --capacity 100000

Allocates a ReplayBuffer of the training shape, fills it completely with DMC-length
episodes (125 transitions: cartpole at action repeat 8) of synthetic frames, and
prints bytes per transition, the resident memory it took, and the transitions it holds.
"""
from __future__ import annotations

import argparse
import resource

import numpy as np

from curlrl import ReplayBuffer


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capacity", type=int, default=100_000)
    p.add_argument("--image-size", type=int, default=100)
    p.add_argument("--action-dim", type=int, default=1)
    p.add_argument("--episode-length", type=int, default=125)
    args = p.parse_args()
    s, a = args.image_size, args.action_dim
    reference = 2 * 9 * s * s + 4 * a + 4 + 4  # uint8 obs + next_obs stacks, float32 action, reward, not_done
    before = rss_mb()
    replay = ReplayBuffer(args.capacity, (3, s, s), a, frame_stack=3)
    frames = np.random.default_rng(0).integers(0, 256, (16, 3, s, s), dtype=np.uint8)
    stack = lambda t: np.concatenate([frames[(t - d) % 16] for d in (2, 1, 0)])  # noqa: E731
    t = 0
    while replay.transitions_written < args.capacity + args.episode_length:
        last = t % args.episode_length == args.episode_length - 1
        replay.add(stack(t), np.zeros(a, np.float32), 0.0, stack(t + 1), False, last)
        t += 1
    used = rss_mb() - before
    per = replay.nbytes / len(replay)
    print(f"# capacity {args.capacity}, frames {s}x{s}, episodes of {args.episode_length} transitions")
    print(f"transitions_held={len(replay)} buffer_bytes={replay.nbytes} rss_increase_mb={used:.0f}")
    print(f"bytes_per_transition={per:.0f} reference_bytes_per_transition={reference} "
          f"reduction={reference / per:.2f}x")


if __name__ == "__main__":
    main()
