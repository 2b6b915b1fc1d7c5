"""Environment throughput with rendering at the training size (random actions).

    python benchmarks/env_speed.py --task cartpole-swingup --action-repeat 8 --agent-steps 500

Prints ms per agent step (physics x action_repeat + one render + frame stacking),
agent steps/s and env steps/s, and the cost of one render alone.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from curlrl.envs import make_env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="cartpole-swingup")
    p.add_argument("--action-repeat", type=int, default=8)
    p.add_argument("--image-size", type=int, default=100)
    p.add_argument("--agent-steps", type=int, default=500)
    args = p.parse_args()
    env = make_env(args.task, args.image_size, args.action_repeat, frame_stack=3, seed=0)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(10):
        env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
    t0 = time.perf_counter()
    for _ in range(args.agent_steps):
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        if term or trunc:
            env.reset()
    dt = (time.perf_counter() - t0) / args.agent_steps
    t0 = time.perf_counter()
    for _ in range(100):
        env._frame()
    render_ms = (time.perf_counter() - t0) * 10
    import os
    print(f"# task {args.task}, action_repeat {args.action_repeat}, image {args.image_size}, "
          f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}")
    print(f"ms_per_agent_step={1000 * dt:.2f} agent_steps_per_s={1 / dt:.1f} "
          f"env_steps_per_s={args.action_repeat / dt:.1f} render_ms={render_ms:.2f}")


if __name__ == "__main__":
    main()
