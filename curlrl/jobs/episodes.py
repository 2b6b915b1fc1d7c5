"""Episodes: the reset seed of every training and evaluation episode, and the mean-action
evaluation episodes a training run makes (a layer below every job that runs an agent)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from curlrl.jobs.logs import write_video

if TYPE_CHECKING:
    from curlrl.agents.curl_sac import CurlSacAgent


def episode_seed(seed: int, episode: int, salt: int = 0) -> int:
    """Reset seed of a training (salt 0) or evaluation episode: a resumed run replays it."""
    return (seed * 1_000_003 + salt * 7_919 + episode) % (2**31 - 1)


def evaluate(agent: "CurlSacAgent", env, episodes: int, seed: int, eval_index: int,
             video_path: Path | None = None) -> list[float]:
    """Mean-action returns of ``episodes`` episodes; the first one is filmed if asked.

    Episode ``ep`` of evaluation ``eval_index`` always starts from the same reset seed."""
    returns, frames = [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=episode_seed(seed, eval_index * 1000 + ep, salt=1))
        done, total = False, 0.0
        while not done:
            if ep == 0 and video_path is not None:
                frames.append(obs[-3:].transpose(1, 2, 0))
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, sample=False))
            total += reward
            done = terminated or truncated
        returns.append(total)
    if video_path is not None and frames:
        write_video(video_path, frames)
    return returns
