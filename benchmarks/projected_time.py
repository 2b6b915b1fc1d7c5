"""Projected wall-clock of a 100k-env-step cartpole-swingup run, from measured parts.

    python benchmarks/projected_time.py --batch-size 128 --mode exact

Measures on this machine: one agent step of the env (8 physics steps + render), one
``act`` and one update (sample + crop + update), then adds up a run with the paper's
schedule: 1000 random agent steps, 11,500 agent steps with an update each, and an
evaluation of 10 episodes (125 agent steps each) every ``--eval-every`` env steps.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from curlrl.agents import AgentConfig, CurlSacAgent
from curlrl.envs import make_env


def timed(fn, n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--mode", default="exact", help="exact (the default) or fused")
    p.add_argument("--env-steps", type=int, default=100_000)
    p.add_argument("--eval-every", type=int, default=10_000)
    p.add_argument("--updates", type=int, default=20)
    args = p.parse_args()
    from update_speed import filled_replay  # benchmarks/ is the script's folder

    repeat, episode = 8, 125
    env = make_env("cartpole-swingup", 100, repeat, 3, seed=0)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    env_s = timed(lambda: env.step(rng.uniform(-1, 1, 1).astype(np.float32)), 200)
    agent = CurlSacAgent((9, 100, 100), 1, AgentConfig(update_mode=args.mode,
                                                       encoder_adam="shared" if args.mode == "fused" else "reference"))
    act_s = timed(lambda: agent.act(obs, sample=True), 200)
    replay = filled_replay(1, 100)
    update_s = timed(lambda: agent.update(replay.sample(args.batch_size)), args.updates)

    agent_steps = args.env_steps // repeat
    seed_steps = 1000
    train_s = seed_steps * env_s + (agent_steps - seed_steps) * (env_s + act_s + update_s)
    evals = args.env_steps // args.eval_every + 1
    eval_s = evals * 10 * episode * (env_s + act_s)
    total = train_s + eval_s
    print(f"# cartpole-swingup, action repeat {repeat}, batch {args.batch_size}, mode {args.mode}, "
          f"threads {torch.get_num_threads()}")
    print(f"env_ms_per_agent_step={1000 * env_s:.1f} act_ms={1000 * act_s:.1f} update_ms={1000 * update_s:.1f}")
    print(f"projected_hours={total / 3600:.2f} (training {train_s / 3600:.2f} h, {evals} evals {eval_s / 3600:.2f} h) "
          f"for {args.env_steps} env steps")


if __name__ == "__main__":
    main()
