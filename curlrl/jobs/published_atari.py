"""Published Atari-100k scores, for the run summary and ``curlrl report --compare published``.

Per game (raw game scores, 100k agent steps = 400k frames):

- ``human``, ``random``: the reference scores of human-normalised scores (HNS =
  (score - random) / (human - random)), exactly rliable's HUMAN/RANDOM values;
- ``der``: data-efficient Rainbow (van Hasselt et al. 2019) as the CURL paper's Table 2 quotes it;
- ``curl``, ``curl_std``: CURL paper Table 2 and Tables 6-7: mean and std over 20 seeds, each
  seed scored by its **best** of the evaluations during training;
- ``rliable_final``, ``rliable_best``: CURL's code re-run by rliable's authors (Agarwal et al.
  2021, 100 runs per game), mean of the **final** evaluation and of the best of 10 evaluations.

Aggregates over the 26 games (IQM with rliable's definition, 95% stratified-bootstrap CIs,
computed from rliable's released runs): CURL final 0.113 [0.108, 0.118], CURL best-of-10
0.150 [0.144, 0.156], DER (Dopamine, rliable's protocol) 0.183. Source of every number:
the project's Atari notes (shared/ATARI.md, section 1).
"""
from __future__ import annotations

from typing import NamedTuple


class AtariPublished(NamedTuple):
    human: float
    random: float
    der: float
    curl: float
    curl_std: float
    rliable_final: float
    rliable_best: float


ATARI_PUBLISHED: dict[str, AtariPublished] = {k: AtariPublished(*v) for k, v in {
    "alien": (7127.7, 227.8, 739.9, 558.2, 160.3, 711.0, 803.3),
    "amidar": (1719.5, 5.8, 188.6, 142.1, 20.0, 113.7, 130.7),
    "assault": (742.0, 222.4, 431.2, 600.6, 89.5, 500.9, 528.6),
    "asterix": (8503.3, 210.0, 470.8, 734.5, 129.8, 567.2, 684.3),
    "bank_heist": (753.1, 14.2, 51.0, 131.6, 94.4, 65.3, 77.9),
    "battle_zone": (37187.5, 2360.0, 10124.6, 14870.0, 5964.3, 8997.8, 11773.4),
    "boxing": (12.1, 0.1, 0.2, 1.2, 10.0, 0.9, 2.9),
    "breakout": (30.5, 1.7, 1.9, 4.9, 1.4, 2.6, 3.4),
    "chopper_command": (7387.8, 811.0, 861.8, 1058.5, 299.1, 783.5, 933.1),
    "crazy_climber": (35829.4, 10780.5, 16185.3, 12146.5, 4765.6, 9154.4, 9548.4),
    "demon_attack": (1971.0, 152.1, 508.0, 817.6, 176.6, 646.5, 810.4),
    "freeway": (29.6, 0.0, 27.9, 26.7, 2.4, 28.3, 28.5),
    "frostbite": (4334.7, 65.2, 866.8, 1181.3, 856.2, 1226.5, 1421.3),
    "gopher": (2412.5, 257.6, 349.5, 669.3, 220.6, 400.9, 515.7),
    "hero": (30826.4, 1027.0, 6857.0, 6279.3, 1871.5, 4987.7, 5437.3),
    "jamesbond": (302.8, 29.0, 301.6, 471.0, 226.2, 331.0, 364.7),
    "kangaroo": (3035.0, 52.0, 779.3, 872.5, 600.1, 740.2, 813.1),
    "krull": (2665.5, 1598.0, 2851.5, 4229.6, 2540.6, 3049.2, 3711.6),
    "kung_fu_master": (22736.3, 258.5, 14346.1, 14307.8, 7919.3, 8155.6, 9445.7),
    "ms_pacman": (6951.6, 307.3, 1204.1, 1465.5, 397.5, 1064.0, 1332.9),
    "pong": (14.6, -20.7, -19.3, -16.5, 2.9, -18.5, -17.9),
    "private_eye": (69571.3, 24.9, 97.8, 218.4, 417.9, 81.9, 224.3),
    "qbert": (13455.0, 163.9, 1152.9, 1042.4, 828.4, 727.0, 906.1),
    "road_runner": (7845.0, 11.5, 9600.0, 5661.0, 3289.3, 5006.1, 5177.7),
    "seaquest": (42054.7, 68.4, 354.1, 384.5, 170.2, 315.2, 347.1),
    "up_n_down": (11693.2, 533.4, 2877.4, 2955.2, 1181.1, 2646.4, 3054.0),
}.items()}

# IQM of human-normalised scores over the 26 games (rliable's runs; see the module docstring)
ATARI_IQM = {"CURL (rliable, final)": (0.113, 0.108, 0.118), "CURL (rliable, best of 10)": (0.150, 0.144, 0.156),
             "DER (Dopamine, rliable)": (0.183, None, None)}


def game_of(task: str) -> str:
    """``"atari-boxing"`` -> ``"boxing"``."""
    return task.lower().removeprefix("atari-")


def hns(task_or_game: str, score: float) -> float:
    """The human-normalised score of a raw game score."""
    p = ATARI_PUBLISHED[game_of(task_or_game)]
    return (score - p.random) / (p.human - p.random)


def atari_scale_text(task: str) -> str | None:
    """One line of the game's reference scores for a run summary, or None for another task."""
    p = ATARI_PUBLISHED.get(game_of(task))
    if p is None:
        return None
    return (f"random {p.random:g}, human {p.human:g}; at 100k: CURL paper {p.curl:g} ± {p.curl_std:g} (best of "
            f"evaluations, 20 seeds), DER {p.der:g}, CURL re-run by rliable {p.rliable_final:g} (final evaluation)")
