"""The prioritised n-step replay (curlrl.per) against hand computations and brute force."""
import io

import numpy as np
import pytest

from curlrl.errors import CheckpointError, ConfigError, DivergenceError
from curlrl.per import PrioritizedReplay, SumTree

SHAPE = (6, 5)  # small frames: the replay does not care about 84x84


def frame(code: int) -> np.ndarray:
    """A frame that carries its id in its first three pixels (base 256)."""
    f = np.zeros(SHAPE, dtype=np.uint8)
    f.flat[:3] = [code % 256, code // 256 % 256, code // 65536]
    return f


def code_of(f: np.ndarray) -> int:
    a, b, c = (int(v) for v in f.flat[:3])
    return a + 256 * b + 65536 * c


class Episodes:
    """Feeds a replay like an env with a frame stack padded at reset; keeps the truth."""

    def __init__(self, replay: PrioritizedReplay, stack: int = 4) -> None:
        self.replay, self.stack, self.next_code = replay, stack, 1
        self.stacks: dict[int, list[int]] = {}  # frame code -> the stack (codes) the env showed

    def run(self, rewards, end: str = "terminated") -> list[int]:
        codes = [self._new()]
        stack = [codes[0]] * self.stack
        self.stacks[codes[0]] = list(stack)
        for i, r in enumerate(rewards):
            codes.append(self._new())
            nxt = stack[1:] + [codes[-1]]
            self.stacks[codes[-1]] = list(nxt)
            last = i == len(rewards) - 1
            self.replay.add(self._obs(stack), i % 3, r, self._obs(nxt), last and end == "terminated",
                            last and end == "truncated")
            stack = nxt
        return codes

    def _new(self) -> int:
        self.next_code += 1
        return self.next_code - 1

    @staticmethod
    def _obs(codes) -> np.ndarray:
        return np.stack([frame(c) for c in codes])


def decode(stack: np.ndarray) -> list[int]:
    return [code_of(f) for f in stack]


def test_n_step_returns_stop_at_a_termination_and_bootstrap_through_a_truncation():
    rep = PrioritizedReplay(100, SHAPE, frame_stack=4, n_step=3, discount=0.5)
    ep = Episodes(rep)
    a = ep.run([1.0, 2.0, 3.0, 4.0], "terminated")  # frames a0..a4
    b = ep.run([1.0, 1.0], "truncated")             # frames b0..b2
    assert len(rep) == 6
    # slots: a0..a4 = 0..4, b0..b2 = 5..7; transitions start at 0..3 and 5..6
    got = rep.batch_at(np.array([0, 1, 2, 3, 5, 6]))
    # by hand, gamma = 0.5, n = 3
    np.testing.assert_allclose(got["returns"], [1 + 0.5 * 2 + 0.25 * 3,   # a0: full window
                                                2 + 0.5 * 3 + 0.25 * 4,   # a1: full window, ends on the terminal step
                                                3 + 0.5 * 4,              # a2: the termination cuts it at m = 2
                                                4.0,                      # a3
                                                1 + 0.5 * 1,              # b0: the truncation cuts it at m = 2
                                                1.0])                     # b1
    # the termination sets the discount to 0 only when it lies inside the window: a1's window (a1, a2, a3)
    # ends with the terminal transition, so a1 does not bootstrap either
    np.testing.assert_allclose(got["discount"], [0.125, 0.0, 0.0, 0.0, 0.25, 0.5])
    assert [decode(s)[-1] for s in got["next_obs"]] == [a[3], a[4], a[4], a[4], b[2], b[2]]
    for obs, nxt, t in zip(got["obs"], got["next_obs"], [a[0], a[1], a[2], a[3], b[0], b[1]]):
        assert decode(obs) == ep.stacks[t]                 # rebuilt stacks = the env's, padded at the start
        assert decode(nxt) == ep.stacks[decode(nxt)[-1]]
    assert decode(got["obs"][4]) == [b[0]] * 4             # never reaches into the previous episode


def test_a_transition_waits_for_its_n_steps():
    rep = PrioritizedReplay(100, SHAPE, frame_stack=2, n_step=3, discount=0.9)
    ep = Episodes(rep, stack=2)
    stack = [ep._new()] * 2
    for i in range(4):
        nxt = stack[1:] + [ep._new()]
        rep.add(ep._obs(stack), 0, 1.0, ep._obs(nxt), False, False)
        stack = nxt
        assert len(rep) == max(0, i - 1)  # transition t is complete once t + 3 is written
    with pytest.raises(ConfigError, match="not a stored, complete transition"):
        rep.batch_at(np.array([2]))
    np.testing.assert_allclose(rep.batch_at(np.array([0]))["returns"], [1 + 0.9 + 0.81])
    np.testing.assert_allclose(rep.batch_at(np.array([0]))["discount"], [0.9 ** 3], rtol=1e-6)


def test_sampling_frequencies_match_p_alpha_over_the_sum():
    from scipy.stats import chi2

    alpha = 0.5
    rep = PrioritizedReplay(100, SHAPE, frame_stack=1, n_step=1, alpha=alpha, seed=3)
    Episodes(rep, stack=1).run([0.0] * 8)
    index = np.arange(8)
    priorities = np.array([1.0, 4.0, 9.0, 0.25, 16.0, 2.0, 0.0, 6.0])
    rep.update_priorities(index, priorities)
    expected = priorities ** alpha / (priorities ** alpha).sum()
    counts = np.zeros(8)
    draws = 0
    for _ in range(2000):
        batch = rep.sample(16, beta=0.4)
        np.add.at(counts, batch["index"], 1)
        draws += 16
        np.testing.assert_allclose(batch["probability"], expected[batch["index"]])
    assert counts[6] == 0  # priority 0: never drawn
    keep = expected > 0
    stat = ((counts[keep] - draws * expected[keep]) ** 2 / (draws * expected[keep])).sum()
    assert stat < chi2.ppf(0.999, keep.sum() - 1), (counts / draws, expected)


def test_importance_weights_follow_the_formula():
    rep = PrioritizedReplay(100, SHAPE, frame_stack=1, n_step=1, alpha=0.5, seed=0)
    Episodes(rep, stack=1).run([0.0] * 10)
    p = np.linspace(0.5, 5.0, 10)
    rep.update_priorities(np.arange(10), p)
    for beta in (0.4, 0.7, 1.0):
        batch = rep.sample(8, beta)
        prob = (p ** 0.5 / (p ** 0.5).sum())[batch["index"]]
        w = (10 * prob) ** -beta
        np.testing.assert_allclose(batch["weight"], w / w.max(), rtol=1e-6)
        assert batch["weight"].max() == pytest.approx(1.0)


def test_new_transitions_enter_at_the_running_max_priority():
    rep = PrioritizedReplay(100, SHAPE, frame_stack=1, n_step=1, alpha=0.5)
    ep = Episodes(rep, stack=1)
    ep.run([0.0] * 3)
    np.testing.assert_allclose(rep.tree.leaves[:3], 1.0)  # the first max is 1
    rep.update_priorities(np.array([0, 1]), np.array([16.0, 0.01]))  # 16 ** 0.5 = 4
    rep.update_priorities(np.array([0]), np.array([1.0]))            # the running max stays 4
    ep.run([0.0])
    assert rep.tree.leaves[4] == pytest.approx(4.0)
    assert rep.tree.total == pytest.approx(1.0 + 0.1 + 1.0 + 4.0)


def test_stratified_sampling_takes_one_draw_per_segment():
    rep = PrioritizedReplay(100, SHAPE, frame_stack=1, n_step=1, seed=0)
    Episodes(rep, stack=1).run([0.0] * 4)
    # equal priorities, batch 4: each quarter of the mass holds one transition, each is drawn once
    for _ in range(20):
        assert sorted(rep.sample(4, 0.4)["index"]) == [0, 1, 2, 3]


def test_the_sum_tree_is_exact_and_finds_only_positive_leaves():
    tree = SumTree(5)
    tree.set(np.array([0, 1, 2, 3, 4]), np.array([0.0, 1.0, 0.0, 2.0, 0.0]))
    assert tree.total == 3.0
    assert tree.find(np.array([0.0, 0.99, 1.0, 2.999])).tolist() == [1, 1, 3, 3]
    tree.set(np.array([3, 3]), np.array([5.0, 0.5]))  # the later duplicate wins
    assert tree.total == 1.5
    rebuilt = SumTree(5)
    rebuilt.leaves[:] = tree.leaves
    rebuilt.rebuild()
    assert np.array_equal(rebuilt.nodes, tree.nodes)


def test_a_small_ring_overwrites_old_frames_and_every_sample_stays_true():
    rng = np.random.default_rng(0)
    n, gamma = 3, 0.9
    rep = PrioritizedReplay(20, SHAPE, frame_stack=4, n_step=n, discount=gamma, seed=1)  # 27 slots
    ep = Episodes(rep)
    truth = {}  # obs code -> (return, discount, next code)
    for _ in range(30):
        rewards = rng.normal(size=int(rng.integers(1, 12))).round(2).tolist()
        end = "terminated" if rng.random() < 0.5 else "truncated"
        codes = ep.run(rewards, end)
        for t in range(len(rewards)):
            m = min(n, len(rewards) - t)
            ret = sum(gamma ** k * rewards[t + k] for k in range(m))
            disc = 0.0 if (end == "terminated" and t + m == len(rewards)) else gamma ** m
            truth[codes[t]] = (ret, disc, codes[t + m])
        assert len(rep) <= rep.slots
        batch = rep.sample(8, 0.5)
        for obs, nxt, ret, disc in zip(batch["obs"], batch["next_obs"], batch["returns"], batch["discount"]):
            t = decode(obs)[-1]
            assert decode(obs) == ep.stacks[t]
            assert decode(nxt) == ep.stacks[truth[t][2]]
            assert ret == pytest.approx(truth[t][0], abs=1e-5) and disc == pytest.approx(truth[t][1])
    assert rep.written > rep.slots  # it did wrap


def _filled(seed=0) -> tuple[PrioritizedReplay, Episodes]:
    rep = PrioritizedReplay(40, SHAPE, frame_stack=4, n_step=3, discount=0.9, seed=seed)
    ep = Episodes(rep)
    rng = np.random.default_rng(seed)
    for _ in range(8):
        ep.run(rng.normal(size=int(rng.integers(2, 9))).tolist(), "terminated" if rng.random() < 0.5 else "truncated")
    return rep, ep


def _step(rep: PrioritizedReplay, ep: Episodes, i: int) -> dict:
    batch = rep.sample(6, 0.5)
    rep.update_priorities(batch["index"], np.abs(batch["returns"]) + i)
    ep.run([float(i), -1.0], "truncated")
    return batch


def test_state_dict_resumes_exactly_through_an_npz_file():
    rep, ep = _filled()
    for i in range(3):
        _step(rep, ep, i)
    buf = io.BytesIO()
    np.savez(buf, **rep.state_dict())
    buf.seek(0)
    saved = dict(np.load(buf))
    next_code = ep.next_code
    expected = [_step(rep, ep, i) for i in range(3, 8)]

    other = PrioritizedReplay(40, SHAPE, frame_stack=4, n_step=3, discount=0.9, seed=99)
    other.load_state_dict(saved)
    ep.replay, ep.next_code = other, next_code
    for i, want in zip(range(3, 8), expected):
        got = _step(other, ep, i)
        assert want.keys() == got.keys()
        for key in want:
            assert np.array_equal(want[key], got[key]), key
    assert np.array_equal(other.tree.nodes, rep.tree.nodes)


def test_bad_inputs_raise_curlrl_errors():
    with pytest.raises(ConfigError, match="replay n_step must be >= 1, got 0"):
        PrioritizedReplay(10, SHAPE, n_step=0)
    with pytest.raises(ConfigError, match="discount must be in"):
        PrioritizedReplay(10, SHAPE, discount=1.5)
    rep = PrioritizedReplay(10, SHAPE, frame_stack=2, n_step=1)
    good = np.stack([frame(1), frame(1)])
    with pytest.raises(ConfigError, match="no transition can be sampled yet"):
        rep.sample(4, 0.4)
    with pytest.raises(ConfigError, match="uint8 of shape"):
        rep.add(good.astype(np.float32), 0, 0.0, good, False, False)
    with pytest.raises(ConfigError, match="must repeat one frame"):
        rep.add(np.stack([frame(0), frame(1)]), 0, 0.0, good, False, False)
    rep.add(good, 0, 0.0, np.stack([frame(1), frame(2)]), False, False)
    with pytest.raises(ConfigError, match="does not continue the previous next_obs"):
        rep.add(good, 0, 0.0, good, False, False)
    rep.add(np.stack([frame(1), frame(2)]), 0, 0.0, np.stack([frame(2), frame(3)]), True, False)
    with pytest.raises(ConfigError, match="beta must be in"):
        rep.sample(2, 1.5)
    with pytest.raises(DivergenceError, match="not finite"):
        rep.update_priorities(np.array([0]), np.array([np.nan]))
    with pytest.raises(ConfigError, match="1 indices but 2 priorities"):
        rep.update_priorities(np.array([0]), np.array([1.0, 2.0]))
    with pytest.raises(CheckpointError, match="replay with"):
        PrioritizedReplay(10, SHAPE, frame_stack=2, n_step=2).load_state_dict(rep.state_dict())
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        rep.load_state_dict({"config": "{}"})


def test_a_replay_reloads_its_own_live_state():
    rep, _ = _filled()
    before = {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in rep.state_dict().items()}
    nodes = rep.tree.nodes.copy()
    rep.load_state_dict(rep.state_dict())  # the state's arrays are views of the replay's own
    for key, value in rep.state_dict().items():
        assert np.array_equal(value, before[key]) if isinstance(value, np.ndarray) else value == before[key], key
    assert np.array_equal(rep.tree.nodes, nodes)
