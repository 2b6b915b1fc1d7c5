"""Published DeepMind Control results, for side-by-side comparison in ``curlrl report``.

Source: the CURL paper (Srinivas, Laskin & Abbeel, 2020), Table 1, as collected in the
project's reference notes. Returns are episode returns (0..1000), ``(mean, std)`` over
seeds at 100k and 500k **environment steps**. Only the cells the paper gives are present:
pixel SAC, SAC+AE and state SAC are quoted at 100k only.
"""
from __future__ import annotations

PLANET_TASKS: tuple[str, ...] = ("cartpole-swingup", "finger-spin", "walker-walk", "cheetah-run",
                                 "reacher-easy", "ball_in_cup-catch")

# algorithm -> task -> env_step -> (mean, std)
PUBLISHED: dict[str, dict[str, dict[int, tuple[float, float]]]] = {
    "CURL": {
        "finger-spin": {100_000: (767, 56), 500_000: (926, 45)},
        "cartpole-swingup": {100_000: (582, 146), 500_000: (841, 45)},
        "reacher-easy": {100_000: (538, 233), 500_000: (929, 44)},
        "cheetah-run": {100_000: (299, 48), 500_000: (518, 28)},
        "walker-walk": {100_000: (403, 24), 500_000: (902, 43)},
        "ball_in_cup-catch": {100_000: (769, 43), 500_000: (959, 27)},
    },
    "pixel SAC": {
        "finger-spin": {100_000: (179, 66)},
        "cartpole-swingup": {100_000: (419, 40)},
        "reacher-easy": {100_000: (145, 30)},
        "cheetah-run": {100_000: (197, 15)},
        "walker-walk": {100_000: (42, 12)},
        "ball_in_cup-catch": {100_000: (312, 63)},
    },
    "SAC+AE": {
        "finger-spin": {100_000: (740, 64)},
        "cartpole-swingup": {100_000: (311, 11)},
        "reacher-easy": {100_000: (274, 14)},
        "cheetah-run": {100_000: (267, 24)},
        "walker-walk": {100_000: (394, 22)},
        "ball_in_cup-catch": {100_000: (391, 82)},
    },
    "DrQ": {
        "finger-spin": {100_000: (901, 104), 500_000: (938, 103)},
        "cartpole-swingup": {100_000: (759, 92), 500_000: (868, 10)},
        "reacher-easy": {100_000: (601, 213), 500_000: (942, 71)},
        "cheetah-run": {100_000: (344, 67), 500_000: (660, 96)},
        "walker-walk": {100_000: (612, 164), 500_000: (921, 45)},
        "ball_in_cup-catch": {100_000: (913, 53), 500_000: (963, 9)},
    },
    "state SAC": {
        "finger-spin": {100_000: (811, 46)},
        "cartpole-swingup": {100_000: (835, 22)},
        "reacher-easy": {100_000: (746, 25)},
        "cheetah-run": {100_000: (616, 18)},
        "walker-walk": {100_000: (891, 82)},
        "ball_in_cup-catch": {100_000: (746, 91)},
    },
}

# Seeds behind each published figure, where the paper says (None: not stated there).
PUBLISHED_SEEDS: dict[str, int | None] = {"CURL": 10, "pixel SAC": None, "SAC+AE": None, "DrQ": None,
                                          "state SAC": None}

SOURCE = ("CURL paper (Srinivas et al. 2020), Table 1: mean ± std over seeds (CURL: 10 seeds); "
          "a 5-seed re-run of the reference code reported finger-spin 828±137 and ball_in_cup-catch "
          "846±103 at 500k, so treat single published means with care.")


# Uniformly random actions held for the task's action repeat: the scale a learning curve is
# read against. Regenerate with `python scripts/random_returns.py` (dm_control's own RNG seeded,
# episodes from task seed 0: the same numbers on every machine).
RANDOM_POLICY: dict[str, tuple[float, float, int, int]] = {  # task: (mean, std, episodes, action repeat)
    "cartpole-swingup": (140.1, 66.3, 20, 8),
    "cartpole-balance": (273.4, 46.3, 20, 8),
    "finger-spin": (0.8, 1.7, 20, 2),
    "walker-walk": (39.8, 7.1, 20, 2),
    "walker-stand": (130.7, 10.9, 20, 2),
    "cheetah-run": (13.1, 4.7, 20, 4),
    "reacher-easy": (71.2, 65.0, 20, 4),
    "ball_in_cup-catch": (30.4, 86.1, 20, 4),
}


def random_policy(task: str) -> tuple[float, float, int, int] | None:
    """``(mean, std, episodes, action_repeat)`` of the random policy's return, or None."""
    return RANDOM_POLICY.get(task)


def published(algorithm: str, task: str, env_step: int) -> tuple[float, float] | None:
    """``(mean, std)`` of a published result, or None where the paper gives none."""
    return PUBLISHED.get(algorithm, {}).get(task, {}).get(env_step)
