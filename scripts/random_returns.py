"""The return of uniformly random actions on DeepMind Control tasks, at each task's action
repeat: the scale every learning result is read against (curlrl.jobs.published.RANDOM_POLICY
holds this script's output). No pixels are rendered: a random policy does not look.

    .venv/bin/python scripts/random_returns.py [--episodes 20] [TASK:ACTION_REPEAT ...]
"""
from __future__ import annotations

import argparse

import numpy as np

DEFAULT = ["cartpole-swingup:8", "cartpole-balance:8", "finger-spin:2", "walker-walk:2", "walker-stand:2",
           "cheetah-run:4", "reacher-easy:4", "ball_in_cup-catch:4"]


def random_returns(task: str, action_repeat: int, episodes: int, seed: int = 0) -> list[float]:
    from dm_control import suite

    domain, name = task.split("-", 1)
    env = suite.load(domain, name, task_kwargs={"random": seed})
    spec, rng, returns = env.action_spec(), np.random.default_rng(seed), []
    for _ in range(episodes):
        ts, total = env.reset(), 0.0
        while not ts.last():
            action = rng.uniform(spec.minimum, spec.maximum)
            for _ in range(action_repeat):
                ts = env.step(action)
                total += ts.reward or 0.0
                if ts.last():
                    break
        returns.append(total)
    return returns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="*", default=DEFAULT, help="TASK:ACTION_REPEAT")
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    print("RANDOM_POLICY = {  # task: (mean, std, episodes, action repeat)")
    for item in args.tasks:
        task, _, ar = item.partition(":")
        r = random_returns(task, int(ar or 1), args.episodes)
        print(f'    "{task}": ({np.mean(r):.1f}, {np.std(r):.1f}, {args.episodes}, {int(ar or 1)}),')
    print("}")


if __name__ == "__main__":
    main()
