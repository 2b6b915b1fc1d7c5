"""Time DER and CURL-DER updates on the CPU and project the wall-clock of an Atari-100k run.

Each timed iteration is what training does per agent step after learn_start: draw a
prioritised batch of 32 from a :class:`curlrl.per.PrioritizedReplay` filled with real game
frames, update the agent, write the new priorities back. The env is timed separately (agent
steps per second of the training env under random actions, resets included), and so is
acting (one observation, fresh noise). The projection adds up a run as Kaixhin/curl_rainbow
run it: 100k agent steps (env + act + replay add), 100k - learn_start updates, and
evaluations of ``--eval-episodes`` episodes in all (10 evaluations x 10 episodes: 100)
of an assumed length (episodes end at the game's end, not at a life loss; the 108k-frame
cap makes 27k agent steps the worst case, printed beside it).

    OMP_NUM_THREADS=1 python benchmarks/der_update_speed.py --threads 1,2 --game atari-pong

The machine may be shared: the load average is printed with the numbers.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from curlrl.agents.der import DerAgent, DerConfig
from curlrl.envs.atari import make_atari_env
from curlrl.per import PrioritizedReplay

TOTAL_STEPS = 100_000   # Atari-100k: agent steps (400k frames)
CAP_STEPS = 27_000      # 108k frames / 4


def fill_replay(game: str, steps: int, seed: int) -> tuple[PrioritizedReplay, float, int]:
    """A replay of ``steps`` random-action transitions of the training env; returns it, the
    env's agent steps per second meanwhile (adds included) and the number of actions."""
    env = make_atari_env(game, seed=seed, training=True)
    replay = PrioritizedReplay(max(steps, 1000), n_step=20, discount=0.99, seed=seed)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset()
    start = time.perf_counter()
    for _ in range(steps):
        action = int(rng.integers(env.action_space.n))
        nxt, reward, terminated, truncated, _ = env.step(action)
        replay.add(obs, action, reward, nxt, terminated, truncated)
        obs = env.reset()[0] if terminated or truncated else nxt
    return replay, steps / (time.perf_counter() - start), int(env.action_space.n)


def time_updates(agent: DerAgent, replay: PrioritizedReplay, batch_size: int, warmup: int, repeats: int
                 ) -> tuple[float, float]:
    """Median ms of (sample + update + priorities) and of the update alone."""
    full, update_only = [], []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        batch = replay.sample(batch_size, agent.beta)
        t1 = time.perf_counter()
        metrics = agent.update(batch)
        t2 = time.perf_counter()
        replay.update_priorities(batch["index"], metrics["priorities"])
        t3 = time.perf_counter()
        if i >= warmup:
            full.append((t3 - t0) * 1e3)
            update_only.append((t2 - t1) * 1e3)
    return statistics.median(full), statistics.median(update_only)


def update_gflop(agent: DerAgent, replay: PrioritizedReplay, batch_size: int) -> float:
    """GFLOP of one update (torch's FlopCounterMode: forward and backward of every op)."""
    batch = replay.sample(batch_size, agent.beta)
    with FlopCounterMode(display=False) as counter:
        agent.update(batch)
    return counter.get_total_flops() / 1e9


def time_act(agent: DerAgent, obs: np.ndarray, repeats: int = 200, eval: bool = False) -> float:
    for _ in range(10):
        agent.act(obs, eval=eval)
    t0 = time.perf_counter()
    for _ in range(repeats):
        agent.act(obs, eval=eval)
    return (time.perf_counter() - t0) / repeats * 1e3


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma list of torch CPU thread counts")
    parser.add_argument("--game", default="atari-pong")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=40, help="timed updates per setting")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--fill", type=int, default=5000, help="replay transitions (random actions) to sample from")
    parser.add_argument("--eval-episodes", type=int, default=100, help="evaluation episodes in a run, all together")
    parser.add_argument("--eval-episode-steps", type=int, default=3000,
                        help="assumed mean agent steps of an evaluation episode (an assumption, not measured)")
    args = parser.parse_args()

    cfg = DerConfig.for_game(args.game)
    updates = TOTAL_STEPS - cfg.learn_start
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f} (the CPU may be shared: times are upper bounds)")
    replay, env_sps, num_actions = fill_replay(args.game, args.fill, seed=0)
    print(f"env {args.game}: {env_sps:.0f} agent steps/s (training env, random actions, replay adds included)")
    obs = replay.sample(1, 0.4)["obs"][0]
    results = {}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from update_speed import matmul_gflops

    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        rate = matmul_gflops("cpu")
        print(f"threads={threads} matmul calibration: {rate:.1f} GFLOP/s (fp32 2048x2048)")
        for name, curl in (("DER", False), ("CURL-DER", True)):
            agent = DerAgent(num_actions, DerConfig.for_game(args.game, curl=curl), seed=0)
            gflop = update_gflop(agent, replay, args.batch_size)
            full, update_only = time_updates(agent, replay, args.batch_size, args.warmup, args.repeats)
            act_ms, eval_act_ms = time_act(agent, obs), time_act(agent, obs, eval=True)
            results[threads, name] = (full, act_ms, eval_act_ms)
            achieved = gflop / (update_only / 1e3)
            print(f"threads={threads} {name:8s} batch {args.batch_size}: {update_only:6.1f} ms/update, "
                  f"{full:6.1f} ms with PER sample + priorities; act {act_ms:.2f} ms (eval {eval_act_ms:.2f} ms); "
                  f"{gflop:.2f} GFLOP/update, {achieved:.1f} GFLOP/s = {achieved / rate:.2f} of the matmul rate")
    step_s = 1.0 / env_sps
    print(f"\n# projected run: {TOTAL_STEPS} agent steps, {updates} updates, {args.eval_episodes} eval episodes of "
          f"{args.eval_episode_steps} steps (assumed; at the 27k cap: worst case)")
    for (threads, name), (full, act_ms, eval_act_ms) in results.items():
        train_s = TOTAL_STEPS * (step_s + act_ms / 1e3) + updates * full / 1e3
        eval_step_s = step_s + eval_act_ms / 1e3
        assumed = args.eval_episodes * args.eval_episode_steps * eval_step_s
        worst = args.eval_episodes * CAP_STEPS * eval_step_s
        print(f"threads={threads} {name:8s}: training {hours(train_s)} + evaluation {hours(assumed)} = "
              f"{hours(train_s + assumed)} (evaluation at the cap: {hours(worst)}, total {hours(train_s + worst)})")


if __name__ == "__main__":
    main()
