"""Peak resident memory of training with a full 100k-capacity replay at 100x100.

    python benchmarks/peak_rss.py --capacity 100000 --batch-size 128
    python benchmarks/peak_rss.py --capacity 100000 --batch-size 128 --compress --frames cartpole-swingup

Two figures:
  * ``short_run``: a real ``curlrl train cartpole-swingup`` subprocess for a few
    thousand env steps with ``replay_capacity=capacity`` (its replay is mostly empty);
  * ``full_replay``: this process builds the agent and a replay of ``capacity``,
    fills it completely (episodes of 125 transitions) and runs updates: the memory a
    100k-env-step run reaches once its replay is full. Frames are random noise, or with
    ``--frames TASK`` real renders (see replay_memory.py); ``--compress`` keeps them
    LZ4-compressed (``replay_compress=true``, the training default), which only pays
    on real renders.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile

import numpy as np
import torch


def short_run(capacity: int, batch_size: int, compress: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "curlrl.cli", "train", "cartpole-swingup", "--run-dir", tmp,
                        f"replay_capacity={capacity}", f"batch_size={batch_size}", "env_steps=2400",
                        "init_steps=1600", "eval_every=800", "eval_episodes=1", "checkpoint_every=800",
                        "save_replay=false", "video=false", f"replay_compress={compress}"],
                       check=True, capture_output=True)
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def full_replay(capacity: int, batch_size: int, updates: int, compress: bool, kind: str) -> float:
    from curlrl import ReplayBuffer
    from curlrl.agents import CurlSacAgent
    from replay_memory import source_frames  # benchmarks/ is on sys.path when run as a script

    replay = ReplayBuffer(capacity, (3, 100, 100), 1, frame_stack=3, compress=compress)
    frames = source_frames(kind, 2000 if kind != "random" else 16, 100)
    n = len(frames)
    stack = lambda t: np.concatenate([frames[(t - d) % n] for d in (2, 1, 0)])  # noqa: E731
    for t in range(capacity + 125):
        replay.add(stack(t), np.zeros(1, np.float32), 0.0, stack(t + 1), False, t % 125 == 124)
    agent = CurlSacAgent((9, 100, 100), 1)
    for _ in range(updates):
        agent.update(replay.sample(batch_size))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--capacity", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--updates", type=int, default=5)
    p.add_argument("--skip-short-run", action="store_true")
    p.add_argument("--compress", action="store_true", help="LZ4-compressed replay frames")
    p.add_argument("--frames", default="random", help="'random' or a DMC task to render")
    args = p.parse_args()
    torch.set_num_threads(2)
    print(f"# capacity {args.capacity}, batch {args.batch_size}, 100x100 frames ({args.frames}), frame stack 3, "
          f"{'lz4-compressed' if args.compress else 'raw'} replay")
    if not args.skip_short_run:
        print(f"short_run_peak_rss_mb={short_run(args.capacity, args.batch_size, args.compress):.0f}")
    peak = full_replay(args.capacity, args.batch_size, args.updates, args.compress, args.frames)
    print(f"full_replay_peak_rss_mb={peak:.0f}")


if __name__ == "__main__":
    main()
